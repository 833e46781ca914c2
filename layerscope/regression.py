"""Gain regressions: which languages does realignment help, and does typology say why?

A gain table has one row per language (a compare run: realigned − base of a probe metric at a
layer) or one row per language × model/task/method (task gains over a baseline). Predictors are
URIEL distances from the pivot (:mod:`layerscope.typology`), the baseline score, and any user
covariates. The models (DESIGN.md, "Typology and gain regression"):

- OLS on standardized predictors (coefficient = change in gain per 1 SD) with HC3 errors;
- variance inflation factors;
- leave-one-language-out cross-validated R² against the mean predictor
  (``1 − Σ(y − ŷ₋ℓ)² / Σ(y − ȳ₋ℓ)²``, all rows of a language held out together);
- permutation p-values: the gain is permuted across languages (the same permutation of
  languages in every model/task/method block when the table is balanced, else within blocks);
  statistics R² and each coefficient's |t| (HC3); ``p = (1 + #{perm ≥ obs}) / (1 + n)``;
- percentile bootstrap CIs over languages (all rows of a resampled language together);
- Spearman correlations of the per-language mean gain with each predictor, Holm-corrected;
- a mixed model with a random intercept per language when languages have several rows.

When rows span several models/tasks/methods the default formula adds ``C(group)``, a fixed
effect per block, so that typology explains differences between languages, not between methods.
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import typology
from .errors import LayerscopeError
from .tables import numeric_column

log = logging.getLogger(__name__)

MIN_LANGUAGES = 8  # fewer languages (after exclusions) than this: no regression
LANGUAGES_PER_PREDICTOR = 5  # fewer per predictor: a warning in the output
DEFAULT_FEATURES = ("syntactic", "genetic", "geographic")
DEFAULT_PERMUTATIONS = 2000
DEFAULT_BOOTSTRAP = 2000
GROUP_TERM = "C(group)"


# ---------------------------------------------------------------------------------------------
# targets and gain tables


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
    code table, see :data:`layerscope.typology.CODE_TABLES`). Languages that typology cannot
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


# ---------------------------------------------------------------------------------------------
# numeric kernels (checked inputs: X (n, p) float64, y (n,) or (n, m) float64)


def _pinv_parts(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(A = (XᵀX)⁻¹Xᵀ of shape (p, n), leverages h of shape (n,), rank)."""
    A = np.linalg.pinv(X)
    h = np.einsum("ij,ji->i", X, A)
    return A, h, int(np.linalg.matrix_rank(X))


def _ols_hc3(X: np.ndarray, Y: np.ndarray, A: np.ndarray | None = None, h: np.ndarray | None = None):
    """Coefficients (p, m), HC3 standard errors (p, m) and R² (m,) for each column of Y."""
    if A is None or h is None:
        A, h, _ = _pinv_parts(X)
    Y2 = Y.reshape(len(Y), -1)
    B = A @ Y2
    E = Y2 - X @ B
    scale = np.maximum(1.0 - h, 1e-12) ** 2
    se = np.sqrt((A ** 2) @ (E ** 2 / scale[:, None]))
    centred = Y2 - Y2.mean(axis=0)
    sst = (centred ** 2).sum(axis=0)
    r2 = 1.0 - (E ** 2).sum(axis=0) / np.where(sst > 0, sst, np.nan)
    return B, se, r2


# ---------------------------------------------------------------------------------------------
# estimators


class OLSRegression:
    """OLS with heteroscedasticity-robust (HC3 by default) errors, via statsmodels.

    Parameters are stored by ``__init__``; ``fit(X, y)`` with X of shape (n, p) (include the
    intercept column yourself) returns self and sets ``coef_``, ``bse_``, ``conf_int_`` (p, 2),
    ``pvalues_``, ``rsquared_``, ``rsquared_adj_``, ``n_obs_`` and ``feature_names_``.
    """

    def __init__(self, cov_type: str = "HC3", alpha: float = 0.05) -> None:
        self.cov_type = cov_type
        self.alpha = alpha

    def fit(self, X, y, feature_names: Sequence[str] | None = None) -> "OLSRegression":
        import statsmodels.api as sm

        X, y = _check_xy(X, y)
        result = sm.OLS(y, X).fit(cov_type=self.cov_type)
        self.coef_ = np.asarray(result.params, dtype=float)
        self.bse_ = np.asarray(result.bse, dtype=float)
        self.conf_int_ = np.asarray(result.conf_int(alpha=self.alpha), dtype=float)
        self.pvalues_ = np.asarray(result.pvalues, dtype=float)
        self.rsquared_ = float(result.rsquared)
        self.rsquared_adj_ = float(result.rsquared_adj)
        self.n_obs_ = int(result.nobs)
        self.feature_names_ = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(X.shape[1])]
        return self

    def predict(self, X) -> np.ndarray:
        return np.asarray(X, dtype=float) @ self.coef_


class MixedRegression:
    """Linear mixed model with a random intercept per group (language), via statsmodels MixedLM.

    ``fit(X, y, groups)`` returns self and sets ``coef_``, ``bse_``, ``conf_int_``, ``pvalues_``
    (fixed effects), ``group_var_`` (random-intercept variance), ``scale_`` (residual variance),
    ``converged_`` and ``feature_names_``.
    """

    def __init__(self, reml: bool = True, alpha: float = 0.05) -> None:
        self.reml = reml
        self.alpha = alpha

    def fit(self, X, y, groups, feature_names: Sequence[str] | None = None) -> "MixedRegression":
        import statsmodels.api as sm
        from statsmodels.tools.sm_exceptions import ConvergenceWarning

        X, y = _check_xy(X, y)
        groups = np.asarray(groups)
        if groups.shape != (len(y),):
            raise ValueError(f"groups must have shape ({len(y)},), got {groups.shape}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            result = sm.MixedLM(y, X, groups=groups).fit(reml=self.reml)
        k = X.shape[1]
        self.coef_ = np.asarray(result.fe_params, dtype=float)
        self.bse_ = np.asarray(result.bse_fe, dtype=float)
        self.conf_int_ = np.asarray(result.conf_int(alpha=self.alpha), dtype=float)[:k]
        self.pvalues_ = np.asarray(result.pvalues, dtype=float)[:k]
        self.group_var_ = float(np.asarray(result.cov_re).ravel()[0])
        self.scale_ = float(result.scale)
        self.converged_ = bool(result.converged) and not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        self.feature_names_ = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(k)]
        return self


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"X must have shape (n, p) and y shape (n,), got {X.shape} and {y.shape}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite")
    return X, y


# ---------------------------------------------------------------------------------------------
# diagnostics


def variance_inflation(X: np.ndarray, names: Sequence[str]) -> pd.Series:
    """VIF of every non-intercept column of the design X of shape (n, p) (statsmodels)."""
    from statsmodels.stats.outliers_influence import variance_inflation_factor

    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, name in enumerate(names):
            if name != "Intercept":
                out[name] = float(variance_inflation_factor(X, j))
    return pd.Series(out, name="vif", dtype=float)


def lolo_r2(X: np.ndarray, y: np.ndarray, langs: np.ndarray, X_null: np.ndarray) -> tuple[float, pd.DataFrame]:
    """Leave-one-language-out R² of the model X against the null design (mean predictor).

    Returns (R², table of per-row held-out predictions: lang, y, predicted, null_predicted).
    """
    pred = np.full(len(y), np.nan)
    null = np.full(len(y), np.nan)
    for lang in dict.fromkeys(langs):
        test = langs == lang
        train = ~test
        pred[test] = X[test] @ (np.linalg.pinv(X[train]) @ y[train])
        null[test] = X_null[test] @ (np.linalg.pinv(X_null[train]) @ y[train])
    sse, sse0 = float(((y - pred) ** 2).sum()), float(((y - null) ** 2).sum())
    r2 = 1.0 - sse / sse0 if sse0 > 0 else math.nan
    return r2, pd.DataFrame({"lang": langs, "gain": y, "predicted": pred, "null_predicted": null})


def permutation_indices(langs: np.ndarray, blocks: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, rows) indices that permute the target across languages (see the module docstring)."""
    lang_ids, lang_codes = np.unique(langs, return_inverse=True)
    block_ids, block_codes = np.unique(blocks, return_inverse=True)
    cell = np.full((len(lang_ids), len(block_ids)), -1)
    cell[lang_codes, block_codes] = np.arange(len(langs))
    counts = np.zeros_like(cell)
    np.add.at(counts, (lang_codes, block_codes), 1)
    balanced = bool((counts == 1).all())
    out = np.empty((n, len(langs)), dtype=np.int64)
    for i in range(n):
        if balanced:
            perm = rng.permutation(len(lang_ids))
            out[i] = cell[perm[lang_codes], block_codes]
        else:
            index = np.arange(len(langs))
            for b in range(len(block_ids)):
                rows = np.flatnonzero(block_codes == b)
                index[rows] = rows[rng.permutation(len(rows))]
            out[i] = index
    return out


def permutation_test(X: np.ndarray, y: np.ndarray, langs: np.ndarray, blocks: np.ndarray, *,
                     n_permutations: int, seed: int) -> tuple[float, np.ndarray]:
    """Permutation p-values: (p for R², p per column for |t| with HC3 errors)."""
    rng = np.random.default_rng(seed)
    A, h, _ = _pinv_parts(X)
    B, se, r2 = _ols_hc3(X, y[:, None], A, h)
    t_obs = np.abs(B[:, 0] / se[:, 0])
    index = permutation_indices(langs, blocks, n_permutations, rng)
    exceed_r2 = 0
    exceed_t = np.zeros(X.shape[1])
    for start in range(0, n_permutations, 500):
        Y = y[index[start:start + 500]].T  # (n, chunk)
        Bp, sep, r2p = _ols_hc3(X, Y, A, h)
        exceed_r2 += int((r2p >= r2[0] - 1e-12).sum())
        exceed_t += (np.abs(Bp / sep) >= t_obs[:, None] - 1e-12).sum(axis=1)
    return (1 + exceed_r2) / (1 + n_permutations), (1 + exceed_t) / (1 + n_permutations)


def bootstrap_ci(X: np.ndarray, y: np.ndarray, langs: np.ndarray, *, n_bootstrap: int, seed: int,
                 alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, int]:
    """Percentile CIs of the OLS coefficients, resampling languages with replacement.

    Replicates whose design is rank-deficient are skipped; returns (low, high, n_used).
    """
    rng = np.random.default_rng(seed)
    unique = list(dict.fromkeys(langs))
    rows_of = [np.flatnonzero(langs == lang) for lang in unique]
    p = X.shape[1]
    draws = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, len(unique), len(unique))
        rows = np.concatenate([rows_of[i] for i in pick])
        Xb = X[rows]
        if np.linalg.matrix_rank(Xb) < p:
            continue
        draws.append(np.linalg.lstsq(Xb, y[rows], rcond=None)[0])
    if not draws:
        return np.full(p, np.nan), np.full(p, np.nan), 0
    draws = np.array(draws)
    low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high, len(draws)


def spearman_holm(per_lang: pd.DataFrame, target: str, predictors: Sequence[str]) -> pd.DataFrame:
    """Spearman ρ of ``target`` with each predictor over languages, Holm-corrected p-values."""
    from scipy.stats import spearmanr
    from statsmodels.stats.multitest import multipletests

    rows = []
    for name in predictors:
        pair = per_lang[[target, name]].dropna()
        if len(pair) < 3 or pair[name].nunique() < 2 or pair[target].nunique() < 2:
            rows.append({"predictor": name, "rho": math.nan, "p": math.nan, "n": len(pair)})
            continue
        result = spearmanr(pair[name], pair[target])
        rows.append({"predictor": name, "rho": float(result.statistic), "p": float(result.pvalue), "n": len(pair)})
    out = pd.DataFrame(rows, columns=["predictor", "rho", "p", "n"])
    ok = out["p"].notna()
    out["p_holm"] = np.nan
    if ok.any():
        out.loc[ok, "p_holm"] = multipletests(out.loc[ok, "p"], method="holm")[1]
    return out


# ---------------------------------------------------------------------------------------------
# the full analysis


@dataclass
class RegressionResult:
    """Everything a gain regression reports; ``write(directory)`` writes the regression/ folder."""

    formula: str
    target: str
    pivot: str
    data: pd.DataFrame
    coefficients: pd.DataFrame
    fit: dict[str, Any]
    spearman: pd.DataFrame
    lolo: pd.DataFrame
    predictors: list[str]
    excluded: dict[str, str] = field(default_factory=dict)
    mixed: pd.DataFrame | None = None
    mixed_info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary_text(self) -> str:
        return _summary_text(self)

    def write(self, directory: str | Path, *, figures: bool = True) -> list[Path]:
        """Write summary.txt, coefficients.csv, data.csv, spearman.csv, lolo.csv, mixed.csv (if
        fitted), settings.json and the figures (PNG + SVG) into ``directory``."""
        from . import outputs

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = [outputs.atomic_write_text(directory / "summary.txt", self.summary_text() + "\n")]
        tables = {"coefficients.csv": self.coefficients, "data.csv": self.data, "spearman.csv": self.spearman,
                  "lolo.csv": self.lolo}
        if self.mixed is not None:
            tables["mixed.csv"] = self.mixed
        for name, frame in tables.items():
            written.append(outputs.atomic_write(directory / name,
                                                lambda tmp, f=frame: f.to_csv(tmp, index=False, float_format="%.6g")))
        meta = {"formula": self.formula, "target": self.target, "pivot": self.pivot, "fit": self.fit,
                "excluded": self.excluded, "warnings": self.warnings, "mixed": self.mixed_info, **self.settings}
        written.append(outputs.atomic_write_json(directory / "settings.json", json.loads(json.dumps(meta, default=str))))
        if figures:
            from .plots import regression as plots

            per_lang = self.data.groupby("lang", sort=False)[["gain", *self.predictors]].mean()
            written += plots.save_figure(plots.gain_scatter(self.data, self.predictors, target_label=_short(self.target)),
                                         directory, "gain_vs_predictors")
            written += plots.save_figure(plots.coefficient_plot(self.coefficients, title=self.formula),
                                         directory, "coefficients")
            written += plots.save_figure(plots.correlation_heatmap(per_lang[[*self.predictors, "gain"]]),
                                         directory, "predictor_correlations")
        return written


def _short(text: str) -> str:
    return text if len(text) < 60 else text[:57] + "..."


def _formula_variables(formula: str) -> tuple[str, list[str]]:
    lhs, sep, rhs = formula.partition("~")
    if not sep or not lhs.strip() or not rhs.strip():
        raise LayerscopeError(f"formula {formula!r} is not 'gain ~ predictor + ...'")
    return lhs.strip(), list(dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", rhs)))


def fit_gain_regression(
    data: pd.DataFrame,
    *,
    formula: str,
    target: str | None = None,
    pivot: str = "en",
    excluded: dict[str, str] | None = None,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    alpha: float = 0.05,
) -> RegressionResult:
    """Fit every model of the module docstring on a gain table with predictors joined.

    ``data`` has a ``lang`` column, the formula's response (usually ``gain``) and its variables;
    a ``group`` column marks model/task/method blocks. Numeric variables are standardized
    (mean 0, sample SD 1) before the formula is applied. ``target`` describes the gain in the
    summary (default: the response's name).
    """
    import statsmodels.formula.api as smf

    excluded = dict(excluded or {})
    response, variables = _formula_variables(formula)
    if response not in data.columns:
        raise LayerscopeError(f"formula response {response!r} is not a column: columns are {', '.join(data.columns)}")
    used = [v for v in variables if v in data.columns]
    numeric = [v for v in used if v not in ("lang", "group") and pd.api.types.is_numeric_dtype(data[v])]
    frame = data.copy()
    if "group" not in frame:
        frame["group"] = "all"
    lacking = frame[[response, *used]].isna().any(axis=1)
    for lang in frame.loc[lacking, "lang"].unique():
        missing_cols = [c for c in [response, *used] if frame.loc[frame["lang"] == lang, c].isna().any()]
        excluded.setdefault(str(lang), f"missing {', '.join(missing_cols)}")
    frame = frame[~frame["lang"].isin(excluded)].reset_index(drop=True)
    n_langs = frame["lang"].nunique()
    if n_langs < MIN_LANGUAGES:
        raise LayerscopeError(f"{n_langs} languages left for the regression; at least {MIN_LANGUAGES} are needed"
                              + (f" (excluded: {', '.join(sorted(excluded))})" if excluded else ""))
    standardized = frame.copy()
    scales = {}
    for name in numeric:
        sd = float(frame[name].std(ddof=1))
        if not sd > 0:
            raise LayerscopeError(f"predictor {name!r} is constant over the languages; leave it out")
        scales[name] = (float(frame[name].mean()), sd)
        standardized[name] = (frame[name] - scales[name][0]) / sd
    try:
        model = smf.ols(formula, data=standardized)
    except Exception as exc:  # formula syntax or unknown names, reported in one line
        raise LayerscopeError(f"cannot use formula {formula!r}: {exc}; columns are "
                              f"{', '.join(c for c in frame.columns)}") from None
    X = np.asarray(model.exog, dtype=np.float64)
    y = np.asarray(model.endog, dtype=np.float64)
    names = list(model.exog_names)
    if len(y) != len(frame):
        raise LayerscopeError(f"formula {formula!r} dropped rows with missing values; check the predictors")
    langs = frame["lang"].astype(str).to_numpy()
    blocks = frame["group"].astype(str).to_numpy()
    structural = [i for i, n in enumerate(names) if n == "Intercept" or n.startswith(GROUP_TERM)]
    predictors_terms = [n for i, n in enumerate(names) if i not in structural]
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise LayerscopeError(f"the design of {formula!r} is rank-deficient (collinear predictors or too few rows)")

    ols = OLSRegression(alpha=alpha).fit(X, y, names)
    vif = variance_inflation(X, names) if X.shape[1] > 1 else pd.Series(dtype=float)
    X_null = X[:, structural] if structural else np.ones((len(y), 1))
    cv_r2, lolo = lolo_r2(X, y, langs, X_null)
    p_r2, p_coef = permutation_test(X, y, langs, blocks, n_permutations=n_permutations, seed=seed) \
        if n_permutations > 0 else (math.nan, np.full(X.shape[1], np.nan))
    boot_low, boot_high, n_boot_ok = bootstrap_ci(X, y, langs, n_bootstrap=n_bootstrap, seed=seed + 1, alpha=alpha) \
        if n_bootstrap > 0 else (np.full(X.shape[1], np.nan), np.full(X.shape[1], np.nan), 0)

    coefficients = pd.DataFrame({
        "term": names, "coef": ols.coef_, "se_hc3": ols.bse_, "ci_low": ols.conf_int_[:, 0],
        "ci_high": ols.conf_int_[:, 1], "p_hc3": ols.pvalues_, "boot_ci_low": boot_low, "boot_ci_high": boot_high,
        "p_perm": p_coef, "vif": [float(vif.get(n, np.nan)) for n in names],
    })
    # permuting the gain within blocks tests the predictors, not the intercept or block effects
    coefficients.loc[[i in structural for i in range(len(names))], "p_perm"] = np.nan

    per_lang = frame.groupby("lang", sort=False)[[response, *numeric]].mean()
    spearman = spearman_holm(per_lang, response, numeric)

    mixed, mixed_info = None, {}
    rows_per_lang = len(frame) / n_langs
    if rows_per_lang > 1:
        try:
            mm = MixedRegression(alpha=alpha).fit(X, y, langs, names)
            mixed = pd.DataFrame({"term": names, "coef": mm.coef_, "se": mm.bse_, "ci_low": mm.conf_int_[:, 0],
                                  "ci_high": mm.conf_int_[:, 1], "p": mm.pvalues_})
            mixed_info = {"language_variance": mm.group_var_, "residual_variance": mm.scale_,
                          "converged": mm.converged_}
        except (np.linalg.LinAlgError, ValueError) as exc:
            mixed_info = {"error": str(exc)}

    notes = []
    k = len(numeric) if numeric else len(predictors_terms)
    if k and n_langs / k < LANGUAGES_PER_PREDICTOR:
        notes.append(f"only {n_langs} languages for {k} predictors ({n_langs / k:.1f} per predictor, fewer than "
                     f"{LANGUAGES_PER_PREDICTOR}): coefficients are unstable; use fewer predictors")
    if rows_per_lang > 1:
        notes.append("languages have several rows (models/tasks/methods): OLS rows are not independent; trust the "
                     "language-level bootstrap and permutation and the mixed model more than the HC3 p-values")
    if n_bootstrap and n_boot_ok < 0.9 * n_bootstrap:
        notes.append(f"{n_bootstrap - n_boot_ok} of {n_bootstrap} bootstrap samples were rank-deficient and skipped")
    if mixed_info.get("converged") is False:
        notes.append("the mixed model did not converge cleanly; read its estimates with care")
    for note in notes:  # also in the summary text and settings.json
        log.info("regression: %s", note)

    fit = {"n_rows": int(len(y)), "n_languages": int(n_langs), "n_predictors": int(k), "r2": ols.rsquared_,
           "r2_adj": ols.rsquared_adj_, "lolo_r2": cv_r2, "p_perm_r2": p_r2, "n_permutations": int(n_permutations),
           "n_bootstrap": int(n_bootstrap), "n_bootstrap_used": int(n_boot_ok), "seed": int(seed),
           "standardization": {k2: {"mean": m, "sd": s} for k2, (m, s) in scales.items()}}
    columns = ["lang", *[c for c in ("uriel_code", "model", "task", "method", "group") if c in frame], response,
               *[c for c in used if c not in ("lang", "group", response)]]
    return RegressionResult(formula=formula, target=target or response, pivot=pivot,
                            data=frame[list(dict.fromkeys(columns))], coefficients=coefficients, fit=fit,
                            spearman=spearman, lolo=lolo, predictors=numeric, excluded=excluded, mixed=mixed,
                            mixed_info=mixed_info, warnings=notes)


def _default_formula(features: Sequence[str], data: pd.DataFrame, response: str = "gain") -> str:
    terms = list(features)
    if "group" in data and data["group"].nunique() > 1:
        terms.append(GROUP_TERM)
    return f"{response} ~ " + (" + ".join(terms) if terms else "1")


def _fit_table(data: pd.DataFrame, *, target_text: str, pivot: str, features: Sequence[str] | str | None,
               formula: str | None, source: str, feature_table: Any, covariates: Any, seed: int,
               n_permutations: int, n_bootstrap: int, codes: str = "most-features",
               missing_as: str = "nan") -> RegressionResult:
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
    return result


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
) -> RegressionResult:
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
) -> RegressionResult:
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
            from .gains import compute_gains

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
    from .tables import read_json_object

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


# ---------------------------------------------------------------------------------------------
# text


def _p(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _summary_text(result: RegressionResult) -> str:
    fit = result.fit
    lines = [f"Gain regression: gain = {result.target}; distances from {result.pivot}"]
    if result.settings.get("codes"):
        used = result.data.drop_duplicates("lang") if "uriel_code" in result.data else None
        shown = "" if used is None else ": " + ", ".join(f"{r.lang}={r.uriel_code}" for r in used.itertuples())
        lines.append(f"URIEL codes ({result.settings['codes']}; missing features as {result.settings.get('missing_as')})"
                     f"{shown}")
    per = f"{fit['n_rows'] / fit['n_languages']:.0f} rows each" if fit["n_rows"] != fit["n_languages"] else "1 row each"
    lines.append(f"{fit['n_languages']} languages ({per})")
    if result.excluded:
        lines.append("excluded: " + "; ".join(f"{lang}: {why}" for lang, why in sorted(result.excluded.items())))
    lines.append(f"formula: {result.formula}   (numeric predictors standardized: coefficient = change in gain "
                 "per 1 SD of the predictor)")
    lines.append(f"{fit['n_languages']} languages and {fit['n_predictors']} predictor(s): with so few languages, "
                 "keep to a few predictors and read the CIs, not the point estimates")
    lines.append("")
    lines.append(f"OLS, HC3 errors: R² = {fit['r2']:.3f} (adjusted {fit['r2_adj']:.3f}); leave-one-language-out "
                 f"R² = {fit['lolo_r2']:.3f} against the mean predictor; permutation p(R²) = {_p(fit['p_perm_r2'])} "
                 f"({fit['n_permutations']} permutations of the gain across languages)")
    table = result.coefficients
    header = ["term", "coef", "95% CI (HC3)", "p (HC3)", f"95% CI (bootstrap, {fit['n_bootstrap_used']})",
              "p (perm)", "VIF"]
    rows = []
    for r in table.itertuples():
        rows.append([r.term, f"{r.coef:+.4f}", f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]", _p(r.p_hc3),
                     f"[{r.boot_ci_low:+.4f}, {r.boot_ci_high:+.4f}]" if np.isfinite(r.boot_ci_low) else "-",
                     _p(r.p_perm), f"{r.vif:.2f}" if np.isfinite(r.vif) else "-"])
    lines += _columns(header, rows)
    if len(result.spearman):
        lines.append("")
        lines.append("Spearman correlation with the per-language mean gain (Holm-corrected over predictors):")
        rows = [[r.predictor, f"{r.rho:+.3f}" if np.isfinite(r.rho) else "-", _p(r.p), _p(r.p_holm), str(r.n)]
                for r in result.spearman.itertuples()]
        lines += _columns(["predictor", "rho", "p", "p (Holm)", "n"], rows)
    if result.mixed is not None:
        info = result.mixed_info
        lines.append("")
        lines.append(f"Mixed model, random intercept per language (REML): language variance "
                     f"{info['language_variance']:.4g}, residual variance {info['residual_variance']:.4g}"
                     + ("" if info.get("converged", True) else " (did not converge cleanly)"))
        rows = [[r.term, f"{r.coef:+.4f}", f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]", _p(r.p)]
                for r in result.mixed.itertuples()]
        lines += _columns(["term", "coef", "95% CI", "p"], rows)
    elif result.mixed_info.get("error"):
        lines.append(f"mixed model failed: {result.mixed_info['error']}")
    if result.warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def _columns(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return ["  " + line for line in out]
