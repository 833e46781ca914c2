"""Figures of a probe run: layer × language heatmap (base, realigned, Δ) and one curve per language.

Takes the tidy table of :func:`layerscope.probing.probe` (metric ``probe_accuracy``);
with two models the heatmap is the three-panel one of ``compare``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..corpora import languages
from . import heatmaps
from .heatmaps import plt

METRIC = "probe_accuracy"


def _languages(table: pd.DataFrame, source: str) -> list[str]:
    langs = [str(x) for x in table["lang"].unique()]
    return [source] * (source in langs) + languages.family_order([x for x in langs if x != source])


def single_heatmap(table: pd.DataFrame, model: str, *, source: str) -> plt.Figure:
    """One panel of probe accuracy: rows are layers, columns languages (source first)."""
    langs = _languages(table, source)
    grid = heatmaps._grid(table, model, METRIC, langs)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(langs) + 2.2), max(3.2, 0.32 * grid.shape[0] + 1.8)),
                           constrained_layout=True)
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, origin="lower")
    heatmaps._annotate(ax, grid, ".2f")
    fig.colorbar(image, ax=ax, shrink=0.9, label="probe accuracy")
    ax.set_xticks(range(len(langs)), langs, rotation=90 if len(langs) > 14 else 0, fontsize=7.5)
    ax.set_yticks(range(grid.shape[0]), heatmaps.layer_labels(grid.shape[0]), fontsize=7.5)
    ax.set_title(f"{model}: linear probe accuracy ({source} = held-out source data)", fontsize=9)
    ax.set_ylabel("layer (emb = embedding output)", fontsize=8)
    return fig


def language_curves(table: pd.DataFrame, *, source: str) -> plt.Figure:
    """One small panel per language: accuracy per layer of each model with its 95 % interval."""
    langs = _languages(table, source)
    columns = min(7, max(1, len(langs)))
    rows = math.ceil(len(langs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns + 0.4, 1.8 * rows + 0.6), sharex=True,
                             sharey=True, constrained_layout=True, squeeze=False)
    colours = {"base": "#555555", "realigned": "#c0392b"}
    for ax, lang in zip(axes.flat, langs):
        for model, colour in colours.items():
            sub = table[(table["model"] == model) & (table["metric"] == METRIC) & (table["lang"] == lang)]
            sub = sub.sort_values("layer")
            if sub.empty:
                continue
            ax.plot(sub["layer"], sub["value"], color=colour, lw=1.2, label=model)
            if sub["ci_low"].notna().all():
                ax.fill_between(sub["layer"], sub["ci_low"], sub["ci_high"], color=colour, alpha=0.2, linewidth=0)
        ax.set_title(lang + (" (source, held out)" if lang == source else ""), fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=6.5)
    for ax in list(axes.flat)[len(langs):]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.supxlabel("layer (0 = embeddings)", fontsize=8)
    fig.supylabel("probe accuracy (band: 95 % bootstrap)", fontsize=8)
    return fig


def write_figures(table: pd.DataFrame, directory: str | Path, *, source: str, order: str = "family") -> list[Path]:
    directory = Path(directory)
    models = set(table["model"])
    if {"base", "realigned", "delta"} <= models:
        fig = heatmaps.heatmap_figure(table, METRIC, order=order, pivot=f"{source}-trained probes")
    else:
        fig = single_heatmap(table, sorted(models)[0], source=source)
    paths = heatmaps.save_figure(fig, directory, f"heatmap_{METRIC}")
    paths += heatmaps.save_figure(language_curves(table, source=source), directory, "probe_curves")
    return paths


__all__ = ["single_heatmap", "language_curves", "write_figures"]
