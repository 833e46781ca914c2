"""The response of a gain regression and its predictors: gains from compare runs' metrics or from
gains tables, one row per language (× model/task/method), with URIEL distances joined."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..corpora.tables import numeric_column
from ..errors import LayerscopeError
from . import typology

@dataclass(frozen=True)
class Target:
    """``METRIC@LAYER`` with LAYER an int, ``last`` or ``mean`` (mean over layers)."""

    metric: str
    layer: int | str

    def describe(self) -> str:
        where = {"last": "the last layer", "mean": "the mean over layers"}.get(str(self.layer), f"layer {self.layer}")
        return f"{self.metric} at {where}"


def parse_target(spec: str) -> Target:
    """``"retrieval@last"`` -> Target("retrieval", "last"); ``"cka@6"`` -> Target("cka", 6)."""
    text = str(spec).strip()
    metric, sep, layer = text.partition("@")
    if not sep or not metric or not layer:
        raise LayerscopeError(f"target {spec!r} is not METRIC@LAYER (e.g. retrieval@last, cka@6, retrieval@mean)")
    layer = layer.strip().lower()
    if layer in ("last", "mean"):
        return Target(metric.strip(), layer)
    if re.fullmatch(r"\d+", layer):
        return Target(metric.strip(), int(layer))
    raise LayerscopeError(f"target {spec!r}: LAYER must be an integer, 'last' or 'mean'")


def gains_from_metrics(metrics: pd.DataFrame, *, pivot: str, target: str | Target = "retrieval@last",
                       source: object | None = None) -> pd.DataFrame:
    """Per-language gain of a compare run: realigned − base of ``target`` (METRIC@LAYER).

    Returns columns ``lang, gain, baseline`` (baseline = the base model's value), one row per
    target language (the pivot left out). Uses the ``delta`` rows when base/realigned are absent.
    """
    target = parse_target(target) if isinstance(target, str) else target
    for column in ("model", "metric", "layer", "lang", "value"):
        if column not in metrics.columns:
            raise LayerscopeError(f"metrics table lacks column {column!r}", source=source)
    rows = metrics[metrics["metric"] == target.metric]
    known = sorted({str(m) for m in metrics.loc[metrics["model"].isin(["base", "realigned", "delta"]), "metric"]})
    if rows.empty:
        import difflib

        near = difflib.get_close_matches(target.metric, known, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise LayerscopeError(f"metric {target.metric!r} not in the run: metrics are {', '.join(known) or 'none'}{hint}",
                              source=source)
    pivot_label = typology._safe_label(pivot)
    rows = rows[rows["lang"].astype(str).map(typology._safe_label) != pivot_label]
    wide = rows.pivot_table(index=["lang", "layer"], columns="model", values="value", aggfunc="first")
    if wide.empty:
        raise LayerscopeError(f"no values for metric {target.metric!r} in the run", source=source)
    layers = sorted(int(x) for x in wide.index.get_level_values("layer").unique())
    if target.layer == "last":
        wide = wide.xs(layers[-1], level="layer")
    elif target.layer == "mean":
        wide = wide.groupby(level="lang").mean()
    else:
        if target.layer not in layers:
            raise LayerscopeError(f"layer {target.layer} not in the run: layers are {layers[0]}..{layers[-1]}",
                                  source=source)
        wide = wide.xs(target.layer, level="layer")
    if {"base", "realigned"} <= set(wide.columns):
        gain = wide["realigned"] - wide["base"]
        baseline = wide["base"]
    elif "delta" in wide.columns:
        gain, baseline = wide["delta"], pd.Series(np.nan, index=wide.index)
    else:
        raise LayerscopeError(f"no base/realigned or delta rows for metric {target.metric!r}", source=source)
    out = pd.DataFrame({"lang": [str(x) for x in wide.index], "gain": gain.to_numpy(float),
                        "baseline": baseline.to_numpy(float)})
    out = out.dropna(subset=["gain"]).reset_index(drop=True)
    out.attrs["target"] = f"{target.describe()}, realigned − base"
    return out


METRICS_COLUMNS = ("model", "metric", "layer", "lang", "value")


def check_metrics_table(frame: pd.DataFrame, source: object) -> pd.DataFrame:
    """A compare run's tidy metrics table, checked: its columns, integer layers and numeric,
    finite values (empty values are allowed and dropped later). Errors name ``source``."""
    missing = [column for column in METRICS_COLUMNS if column not in frame.columns]
    if missing:
        raise LayerscopeError(f"not a compare metrics table: no column(s) {', '.join(missing)} "
                              f"(expected {', '.join(METRICS_COLUMNS)})", source=source)
    layers = numeric_column(frame, "layer", source)
    if layers.isna().any() or (layers != layers.round()).any():
        row = int(np.flatnonzero((layers.isna() | (layers != layers.round())).to_numpy())[0])
        raise LayerscopeError(f"column 'layer' needs whole numbers: {frame['layer'].iloc[row]!r} in data row "
                              f"{row + 1}", source=source)
    return frame.assign(layer=layers.astype(int), value=numeric_column(frame, "value", source))


def gains_from_table(table: pd.DataFrame, *, methods: Sequence[str] | None = None,
                     source: object | None = None) -> pd.DataFrame:
    """Rows of a gains table (:func:`layerscope.gains.compute_gains` ``.table`` or gains.csv).

    Returns ``lang, model, task, method, gain, baseline`` with gain = method − baseline mean.
    A non-numeric gain or baseline is an error naming ``source``, never silently dropped.
    """
    for column in ("lang", "method", "delta", "baseline_mean"):
        if column not in table.columns:
            raise LayerscopeError(f"gains table lacks column {column!r}", source=source)
    if methods is not None:
        wanted = set(methods)
        missing = sorted(wanted - set(table["method"]))
        if missing:
            raise LayerscopeError(f"method(s) {', '.join(missing)} not in the gains table: methods are "
                                  f"{', '.join(dict.fromkeys(table['method'].astype(str)))}", source=source)
        table = table[table["method"].isin(wanted)]
    out = pd.DataFrame({
        "lang": table["lang"].astype(str).to_numpy(),
        "model": (table["model"] if "model" in table else pd.Series("", index=table.index)).astype(str).to_numpy(),
        "task": (table["task"] if "task" in table else pd.Series("", index=table.index)).fillna("").astype(str).to_numpy(),
        "method": table["method"].astype(str).to_numpy(),
        "gain": numeric_column(table, "delta", source).to_numpy(float),
        "baseline": numeric_column(table, "baseline_mean", source).to_numpy(float),
    })
    return out.dropna(subset=["gain"]).reset_index(drop=True)


def _add_groups(data: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("model", "task", "method") if c in data.columns and data[c].nunique() > 1]
    if not keys:
        return data.assign(group="all")
    from .gains import shorten_labels

    parts = pd.concat([data[k].astype(str).map(shorten_labels(data[k])) for k in keys], axis=1)
    return data.assign(group=parts.agg("/".join, axis=1).to_numpy())


def add_predictors(data: pd.DataFrame, *, pivot: str, kinds: Sequence[str], source: str = "lang2vec",
                   feature_table: Any = None, covariates: Any = None, codes: str = "most-features",
                   missing_as: str = "nan") -> tuple[pd.DataFrame, dict[str, str]]:
    """Join typological distances from ``pivot`` (and covariates) to a gain table by language.

    A ``uriel_code`` column says which URIEL language each row was measured as (``codes``: the
    code table, see :data:`layerscope.stats.uriel.CODE_TABLES`). Languages that typology cannot
    place (unknown code, missing features) are dropped and returned in ``excluded``
    (language -> reason): reported, never a crash.
    """
    excluded: dict[str, str] = {}
    data = data.copy()
    pivot_label = typology.label(pivot)
    keep = []
    for lang in data["lang"].unique():
        try:
            typology.label(lang)
            keep.append(lang)
        except LayerscopeError as exc:
            excluded[str(lang)] = str(exc)
    data = data[data["lang"].isin(keep)].copy()
    data["lang"] = data["lang"].map(typology.label)
    data = data[data["lang"] != pivot_label]
    langs = list(dict.fromkeys(data["lang"]))
    if kinds:
        table = typology.distances(pivot, langs, kinds, source=source, feature_table=feature_table, codes=codes,
                                   missing_as=missing_as)
        for lang, row in table.iterrows():
            lacking = [k for k in kinds if pd.isna(row[k])]
            if lacking:
                reasons = typology.missing(pivot, table.loc[[lang], ["uriel_code", *lacking]], source=source,
                                           feature_table=feature_table, codes=codes, missing_as=missing_as)
                excluded[str(lang)] = "; ".join(reasons)
        data = data.merge(table[["uriel_code", *kinds]], left_on="lang", right_index=True, how="left")
    if covariates is not None:
        extra = typology.read_feature_table(covariates)
        clash = sorted(set(extra.columns) & set(data.columns))
        if clash:
            raise LayerscopeError(f"covariate column(s) {', '.join(clash)} clash with existing columns")
        data = data.merge(extra, left_on="lang", right_index=True, how="left")
        for lang in data.loc[data[list(extra.columns)].isna().any(axis=1), "lang"].unique():
            excluded.setdefault(str(lang), "missing in the covariates table")
    data = data[~data["lang"].isin(excluded)].reset_index(drop=True)
    return data, excluded
