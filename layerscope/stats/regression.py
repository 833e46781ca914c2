"""Gain regressions: which languages does realignment help, and does typology say why?

A gain table has one row per language (a compare run: realigned − base of a probe metric at a
layer) or one row per language × model/task/method (task gains over a baseline). Predictors are
URIEL distances from the pivot (:mod:`layerscope.stats.typology`), the baseline score, and any user
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .. import outputs
from ..errors import LayerscopeError
from .diagnostics import lolo_r2, spearman_holm, variance_inflation
from .fitting import MixedRegression, OLSRegression
from .resampling import bootstrap_ci, permutation_test

log = logging.getLogger(__name__)

MIN_LANGUAGES = 8  # fewer languages (after exclusions) than this: no regression
LANGUAGES_PER_PREDICTOR = 5  # fewer per predictor: a warning in the output
DEFAULT_FEATURES = ("syntactic", "genetic", "geographic")
DEFAULT_PERMUTATIONS = 2000
DEFAULT_BOOTSTRAP = 2000
GROUP_TERM = "C(group)"


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

    def write(self, directory: str | Path) -> list[Path]:
        """Write summary.txt, coefficients.csv, data.csv, spearman.csv, lolo.csv, mixed.csv (if
        fitted) and settings.json into ``directory`` (the figures are drawn by the regress job,
        :class:`layerscope.regression.RegressionReport`)."""
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
        return written


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
