"""Diagnostics of a gain regression: variance inflation, leave-one-language-out R², Spearman
correlations with Holm's correction."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

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
