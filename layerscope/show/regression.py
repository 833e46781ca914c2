"""Figures of gains and gain regressions; every function takes tables and returns a Figure.

- :func:`gains_heatmap`: languages × methods, Δ to the baseline (points), diverging colours at 0,
  cells outside the baseline's one-std band marked.
- :func:`gain_scatter`: gain vs each predictor, points labelled with language codes.
- :func:`coefficient_plot`: standardized coefficients with HC3 and bootstrap 95% CIs.
- :func:`correlation_heatmap`: Spearman correlations between the predictors (and the gain).

``save_figure`` writes PNG and SVG atomically and closes the figure. Nothing is computed here
that a table does not already hold, except a least-squares guide line in the scatter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from ..outputs import atomic_write  # noqa: E402

_BAND_MARK = {"above": "+", "below": "−"}


def save_figure(fig: plt.Figure, directory: str | Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically into ``directory``; closes the figure."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for suffix, kwargs in ((".png", {"dpi": 130, "metadata": {"Software": None}}),
                               (".svg", {"metadata": {"Date": None}})):
            path = directory / f"{stem}{suffix}"
            atomic_write(path, lambda tmp, kw=kwargs, s=suffix: fig.savefig(tmp, format=s[1:], **kw))
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def gains_heatmap(result) -> plt.Figure:
    """Δ to the baseline per language (rows) and model · method (columns) of a GainsResult."""
    from ..stats.gains import shorten_labels

    table = result.table
    multi = table[["model", "task"]].drop_duplicates().shape[0] > 1
    methods = table["method"].map(shorten_labels(table["method"]))
    column = methods if not multi else table["model"].map(shorten_labels(table["model"])) + " · " + methods
    table = table.assign(_column=column)
    columns = list(dict.fromkeys(table["_column"]))
    langs = list(dict.fromkeys(table["lang"]))
    grid = table.pivot_table(index="lang", columns="_column", values="delta", aggfunc="first")
    grid = grid.reindex(index=langs, columns=columns)
    bands = table.pivot_table(index="lang", columns="_column", values="band", aggfunc="first")
    bands = bands.reindex(index=langs, columns=columns)
    values = grid.to_numpy(dtype=float)
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    limit = limit or 1.0
    fig, ax = plt.subplots(figsize=(max(4.8, 2.2 + 0.75 * len(columns)), 1.6 + 0.28 * len(langs)), constrained_layout=True)
    image = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit), aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                mark = _BAND_MARK.get(str(bands.iat[i, j]), "")
                ax.text(j, i, f"{values[i, j]:+.1f}{mark}", ha="center", va="center", fontsize=6.5,
                        color="white" if abs(values[i, j]) > 0.6 * limit else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(langs)), langs, fontsize=7)
    ax.set_title(f"Δ {result.metric} to {result.baseline} ({result.unit})\n"
                 f"+ / −: outside the {result.baseline}'s mean ± 1 std band", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.6, label=f"Δ ({result.unit})")
    return fig


def gain_scatter(data: pd.DataFrame, predictors: Sequence[str], *, target: str = "gain",
                 target_label: str = "gain", lang_col: str = "lang") -> plt.Figure:
    """One panel per predictor: per-language mean gain vs the predictor, labelled with codes.

    When a language has several rows (models, tasks, methods) the rows are drawn small and grey
    and the language mean large.
    """
    predictors = list(predictors) or ["_none"]
    n = len(predictors)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, constrained_layout=True)
    per_lang = data.groupby(lang_col, sort=False)[[target, *[p for p in predictors if p in data]]].mean()
    several = len(data) > len(per_lang)
    for ax, name in zip(axes.ravel(), predictors):
        if name not in data:
            ax.set_visible(False)
            continue
        if several:
            ax.scatter(data[name], data[target], s=8, color="0.75", zorder=1)
        x, y = per_lang[name].to_numpy(float), per_lang[target].to_numpy(float)
        ax.scatter(x, y, s=22, color="C0", zorder=2)
        for code, xi, yi in zip(per_lang.index, x, y):
            ax.annotate(str(code), (xi, yi), xytext=(3, 2), textcoords="offset points", fontsize=7)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() >= 3 and np.ptp(x[ok]) > 0:
            slope, intercept = np.polyfit(x[ok], y[ok], 1)
            grid = np.linspace(x[ok].min(), x[ok].max(), 2)
            ax.plot(grid, slope * grid + intercept, color="C3", lw=1, alpha=0.8, zorder=0)
        ax.axhline(0.0, color="0.5", lw=0.6, ls=":")
        ax.set_xlabel(name)
        ax.set_ylabel(target_label)
        ax.grid(alpha=0.25)
    for ax in axes.ravel()[len(predictors):]:
        ax.set_visible(False)
    return fig


def coefficient_plot(coefficients: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Standardized coefficients (intercept and group terms left out) with HC3 and bootstrap CIs."""
    rows = coefficients[~coefficients["term"].isin(["Intercept"]) & ~coefficients["term"].str.startswith("C(group)")]
    rows = rows.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.0, 1.0 + 0.45 * max(len(rows), 1)), constrained_layout=True)
    y = np.arange(len(rows), dtype=float)
    ax.errorbar(rows["coef"], y + 0.12, xerr=[rows["coef"] - rows["ci_low"], rows["ci_high"] - rows["coef"]],
                fmt="o", color="C0", capsize=3, label="95% CI (HC3)")
    if "boot_ci_low" in rows and rows["boot_ci_low"].notna().any():
        ax.errorbar(rows["coef"], y - 0.12,
                    xerr=[rows["coef"] - rows["boot_ci_low"], rows["boot_ci_high"] - rows["coef"]],
                    fmt="s", color="C1", capsize=3, label="95% CI (bootstrap over languages)")
    ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
    ax.set_yticks(y, rows["term"])
    ax.set_xlabel("coefficient (change in gain per 1 SD of the predictor)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.25, axis="x")
    return fig


def correlation_heatmap(frame: pd.DataFrame, *, title: str = "Spearman correlation (per language)") -> plt.Figure:
    """Spearman correlations between the columns of ``frame`` (one row per language)."""
    corr = frame.rank().corr(method="pearson") if len(frame) > 1 else frame.corr()
    names = list(corr.columns)
    fig, ax = plt.subplots(figsize=(1.6 + 0.8 * len(names), 1.2 + 0.7 * len(names)), constrained_layout=True)
    image = ax.imshow(corr.to_numpy(float), cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            value = corr.iat[i, j]
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > 0.6 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.7)
    return fig


def _short(text: str) -> str:
    return text if len(text) < 60 else text[:57] + "..."


def regression_figures(data: pd.DataFrame, coefficients: pd.DataFrame, predictors: Sequence[str], *, target: str,
                       formula: str, directory: Path) -> list[Path]:
    """The three figures of a gain regression (PNG + SVG) from its data and coefficient tables."""
    per_lang = data.groupby("lang", sort=False)[["gain", *predictors]].mean()
    written = save_figure(gain_scatter(data, predictors, target_label=_short(target)), directory, "gain_vs_predictors")
    written += save_figure(coefficient_plot(coefficients, title=formula), directory, "coefficients")
    written += save_figure(correlation_heatmap(per_lang[[*predictors, "gain"]]), directory, "predictor_correlations")
    return written
