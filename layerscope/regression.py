"""The regress job: gain tables from compare runs, gains tables or task results, the gain regression
of :mod:`layerscope.stats.regression` on them, and the report that writes its tables and figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ._callable import promote
from .errors import LayerscopeError
from .show.regression import regression_figures
from .stats import typology
from .stats.regression import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_FEATURES,
    DEFAULT_PERMUTATIONS,
    RegressionResult,
    _default_formula,
    _formula_variables,
    fit_gain_regression,
)
from .stats.targets import _add_groups, add_predictors, check_metrics_table, gains_from_metrics, gains_from_table


@dataclass
class RegressionReport(RegressionResult):
    """A gain regression as the regress job hands it out: ``write`` also draws the figures."""

    def write(self, directory: str | Path, *, figures: bool = True) -> list[Path]:
        """Write the tables of :meth:`RegressionResult.write` and the figures (PNG + SVG) into ``directory``."""
        written = super().write(directory)
        if figures:
            written += regression_figures(self.data, self.coefficients, self.predictors, target=self.target,
                                          formula=self.formula, directory=Path(directory))
        return written


def _fit_table(data: pd.DataFrame, *, target_text: str, pivot: str, features: Sequence[str] | str | None,
               formula: str | None, source: str, feature_table: Any, covariates: Any, seed: int,
               n_permutations: int, n_bootstrap: int, codes: str = "most-features",
               missing_as: str = "nan") -> RegressionReport:
    data = _add_groups(data)
    if formula is not None:
        _, variables = _formula_variables(formula)
        kinds = [v for v in variables if v in typology.ALL_KINDS + ("custom",)]
    else:
        kinds = list(typology.check_kinds(features)) if features else []
        extra = [k for k in kinds if k not in typology.ALL_KINDS + ("custom",)]
        if extra:
            raise LayerscopeError(f"unknown feature(s) {', '.join(extra)}")
    joined, excluded = add_predictors(data, pivot=pivot, kinds=kinds, source=source,
                                      feature_table=feature_table, covariates=covariates, codes=codes,
                                      missing_as=missing_as)
    if formula is None:
        formula = _default_formula(kinds, joined)
    result = fit_gain_regression(joined, formula=formula, target=target_text, pivot=typology.label(pivot),
                                 excluded=excluded, seed=seed, n_permutations=n_permutations, n_bootstrap=n_bootstrap)
    result.settings = {"source": source, "features": kinds, "seed": seed, "codes": codes, "missing_as": missing_as,
                       "pivot_code": typology.uriel_code(pivot, codes)}
    return promote(result, RegressionReport)


def regress_run_metrics(
    metrics: pd.DataFrame,
    *,
    pivot: str,
    target: str = "retrieval@last",
    features: Sequence[str] = DEFAULT_FEATURES,
    formula: str | None = None,
    seed: int = 0,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    source: str = "lang2vec",
    codes: str = "most-features",
    missing_as: str = "nan",
) -> RegressionReport:
    """The default regression of a compare run: gain of ``target`` (METRIC@LAYER) on typology.

    ``metrics`` is the tidy table of ``layerscope compare`` (model, metric, layer, lang, value).
    Raises LayerscopeError when fewer than :data:`MIN_LANGUAGES` languages remain.
    """
    gains = gains_from_metrics(metrics, pivot=pivot, target=target)
    return _fit_table(gains, target_text=gains.attrs["target"], pivot=pivot, features=features, formula=formula,
                      source=source, feature_table=None, covariates=None, seed=seed,
                      n_permutations=n_permutations, n_bootstrap=n_bootstrap, codes=codes, missing_as=missing_as)


def _is_metrics(frame: pd.DataFrame) -> bool:
    return {"model", "metric", "layer", "lang", "value"} <= set(frame.columns)


def _is_gains(frame: pd.DataFrame) -> bool:
    return {"lang", "method", "delta", "baseline_mean"} <= set(frame.columns)


def regress(
    inputs: str | Path | pd.DataFrame | Sequence[str | Path | pd.DataFrame],
    *,
    target: str | None = None,
    features: Sequence[str] | str = DEFAULT_FEATURES,
    formula: str | None = None,
    pivot: str | None = None,
    baseline: str = "baseline",
    methods: Sequence[str] | str | None = None,
    metric: str | None = None,
    covariates: str | Path | pd.DataFrame | None = None,
    feature_table: str | Path | pd.DataFrame | None = None,
    source: str = "lang2vec",
    seed: int = 0,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    codes: str = "most-features",
    missing_as: str = "nan",
) -> RegressionReport:
    """Regress realignment gains on typology; returns the tables ``layerscope regress`` writes.

    ``inputs``: compare run directories (or their metrics tables), gains tables (gains.csv of
    ``layerscope gains``) or per-seed task results (gains are computed against ``baseline`` for
    ``methods``). Several inputs are stacked; their rows form blocks (model/task/method or run).
    ``target``: METRIC@LAYER for runs (default retrieval@last); for task results the gain is the
    method's mean minus the baseline's mean. ``formula``: statsmodels style, e.g.
    ``"gain ~ syntactic + genetic + baseline"``; default ``gain ~ <features>`` (+ ``C(group)``).
    ``codes``: which URIEL code a macrolanguage means (``most-features`` or ``published``, the
    codes of the published AlignFreeze regression); ``missing_as``: ``nan`` (languages without
    the features are dropped, and said so) or ``uriel`` (URIEL's constant distance).
    """
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not items:
        raise LayerscopeError("no input given")
    run_parts, task_inputs, gain_parts, pivots, gain_texts = [], [], [], [], []
    for item in items:
        if isinstance(item, pd.DataFrame):
            frame, name, where = item, "table", None
        else:
            path = Path(item)
            if path.is_dir():
                metrics_file = path / "metrics.csv"
                if not metrics_file.is_file():
                    raise LayerscopeError("not a compare run directory (no metrics.csv)", source=path)
                frame, name, where = check_metrics_table(_read_csv(metrics_file), metrics_file), path.name, metrics_file
                pivots.append(_run_pivot(path / "run.json"))
            elif path.is_file():
                frame, name, where = _read_csv(path), path.stem, path
                if _is_metrics(frame):
                    frame = check_metrics_table(frame, path)
            else:
                raise LayerscopeError("no such file or directory", source=path)
        if _is_metrics(frame):
            run_parts.append((name, frame, where))
        elif _is_gains(frame):
            gain_parts.append(gains_from_table(frame, methods=_method_list(methods),
                                               source=item if not isinstance(item, pd.DataFrame) else None))
            gain_texts.append(_gains_description(item))
        else:
            task_inputs.append(item)
    if run_parts and (gain_parts or task_inputs):
        raise LayerscopeError("mix of compare runs and task results: regress one kind at a time")
    found = {p for p in pivots if p}
    if pivot is None:
        if len(found) > 1:
            raise LayerscopeError(f"runs have different pivots ({', '.join(sorted(found))}); pass --pivot")
        pivot = found.pop() if found else "en"
    if run_parts:
        target = target or "retrieval@last"
        parts = []
        for name, frame, where in run_parts:
            part = gains_from_metrics(frame, pivot=pivot, target=target, source=where)
            text = part.attrs["target"]
            if len(run_parts) > 1:
                part = part.assign(model=name)
            parts.append(part)
        data = pd.concat(parts, ignore_index=True)
    else:
        if target not in (None, "gain", "delta"):
            raise LayerscopeError(f"target {target!r}: task gains are always method − baseline means "
                                  "(METRIC@LAYER is for compare runs)")
        if task_inputs:
            from .stats.gains import compute_gains

            result = compute_gains(task_inputs, baseline=baseline, methods=methods, metric=metric)
            gain_parts.append(gains_from_table(result.table))
            text = f"Δ {result.metric} to {baseline} ({result.unit}), mean over seeds"
        else:
            text = "; ".join(dict.fromkeys(gain_texts))
        data = pd.concat(gain_parts, ignore_index=True)
    if data.empty:
        raise LayerscopeError("no gains to regress")
    return _fit_table(data, target_text=text, pivot=pivot, features=features, formula=formula, source=source,
                      feature_table=feature_table, covariates=covariates, seed=seed,
                      n_permutations=n_permutations, n_bootstrap=n_bootstrap, codes=codes, missing_as=missing_as)


def _run_pivot(run_file: Path) -> str | None:
    """The pivot a compare run recorded in its run.json (None without one)."""
    if not run_file.is_file():
        return None
    from .corpora.tables import read_json_object

    run = read_json_object(run_file)
    pivot = run.get("pivot")
    if pivot is not None and not isinstance(pivot, str):
        raise LayerscopeError(f"run.json has a pivot that is not a language code: {pivot!r}", source=run_file)
    return pivot


def _gains_description(item: Any) -> str:
    """What the delta of a gains table measures, from the gains.json written beside it."""
    if not isinstance(item, pd.DataFrame):
        meta_file = Path(item).parent / "gains.json"
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            return f"Δ {meta['metric']} to {meta['baseline']} ({meta['unit']}), mean over seeds"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return "Δ to the baseline mean (gains table)"


def _method_list(methods: Sequence[str] | str | None) -> list[str] | None:
    if methods is None:
        return None
    return [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LayerscopeError(f"cannot read CSV: {exc}", source=path) from None
