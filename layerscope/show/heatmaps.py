"""Figures of a compare run: layer × language heatmaps, per-layer curves, drift.

Each function takes the tidy metrics table and returns a matplotlib Figure; ``save_figure``
writes PNG and SVG atomically. Base and realigned share one colour scale; differences use a
diverging map centred at 0. Languages are ordered by a stated key (family, or Δ).
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

from ..corpora import languages  # noqa: E402
from ..outputs import atomic_write  # noqa: E402

LABELS = {
    "cka": "debiased linear CKA",
    "cka_linear": "linear CKA",
    "cka_rbf": "RBF CKA",
    "retrieval": "retrieval accuracy",
    "retrieval_p2t": "retrieval accuracy (pivot→target)",
    "retrieval_t2p": "retrieval accuracy (target→pivot)",
    "retrieval_centered": "retrieval accuracy (mean-centred)",
    "retrieval_margin": "retrieval accuracy (margin)",
    "drift_cka": "CKA base vs realigned (same language)",
    "weight_change": "relative weight change",
    "svcca": "SVCCA",
    "pwcca": "PWCCA",
    "procrustes": "Procrustes similarity",
    "procrustes_distance": "Procrustes distance",
    "procrustes_angular": "angular Procrustes distance",
    "probe_accuracy": "probe accuracy",
}


def metric_label(metric: str) -> str:
    return LABELS.get(metric, metric)


def layer_labels(num_layers: int) -> list[str]:
    return ["emb"] + [str(i) for i in range(1, num_layers)]


def order_languages(table: pd.DataFrame, metric: str, key: str = "family") -> list[str]:
    """Languages ordered by family (then genus) or by mean Δ of ``metric`` (largest first)."""
    rows = table[(table["metric"] == metric) & table["model"].isin(["base", "realigned", "delta"])]
    langs = [str(x) for x in rows["lang"].unique()]
    if key == "delta":
        delta = table[(table["model"] == "delta") & (table["metric"] == metric)]
        means = delta.groupby("lang")["value"].mean()
        return sorted(langs, key=lambda code: -float(means.get(code, 0.0)))
    return languages.family_order(langs)


def _grid(table: pd.DataFrame, model: str, metric: str, langs: Sequence[str]) -> np.ndarray:
    sub = table[(table["model"] == model) & (table["metric"] == metric)]
    pivot = sub.pivot_table(index="layer", columns="lang", values="value", aggfunc="first")
    pivot = pivot.reindex(columns=list(langs)).sort_index()
    return pivot.to_numpy(dtype=float)


def _annotate(ax, grid: np.ndarray, fmt: str) -> None:
    rows, cols = grid.shape
    if rows * cols > 220:
        return
    finite = grid[np.isfinite(grid)]
    mid = (finite.max() + finite.min()) / 2 if finite.size else 0
    for i in range(rows):
        for j in range(cols):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, format(grid[i, j], fmt), ha="center", va="center", fontsize=6.5,
                        color="white" if grid[i, j] < mid else "black")


def heatmap_figure(table: pd.DataFrame, metric: str, *, order: str = "family", pivot: str = "en") -> plt.Figure:
    """Three panels (base, realigned, Δ) of ``metric``: rows are layers, columns languages."""
    langs = order_languages(table, metric, order)
    base = _grid(table, "base", metric, langs)
    realigned = _grid(table, "realigned", metric, langs)
    delta = _grid(table, "delta", metric, langs)
    num_layers = base.shape[0]
    width = max(9.0, 1.2 + 3 * (0.42 * len(langs) + 1.3))
    height = max(3.2, 0.32 * num_layers + 1.8)
    fig, axes = plt.subplots(1, 3, figsize=(width, height), constrained_layout=True)
    both = np.concatenate([base[np.isfinite(base)], realigned[np.isfinite(realigned)]])
    vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    vmin = min(vmin, 0.0)  # zero is chance-level for retrieval and CKA alike
    label = metric_label(metric)
    for ax, grid, title in ((axes[0], base, "base"), (axes[1], realigned, "realigned")):
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, origin="lower")
        _annotate(ax, grid, ".2f")
        ax.set_title(f"{title}: {label} with {pivot}", fontsize=9)
    fig.colorbar(image, ax=axes[:2], shrink=0.9, label=f"{label} (↑ more aligned)")
    finite = np.abs(delta[np.isfinite(delta)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1e-6
    diff = axes[2].imshow(delta, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), origin="lower")
    _annotate(axes[2], delta, "+.2f")
    axes[2].set_title("Δ realigned − base (red: realignment raised it)", fontsize=9)
    fig.colorbar(diff, ax=axes[2], shrink=0.9, label=f"Δ {label}")
    for ax in axes:
        ax.set_xticks(range(len(langs)), langs, rotation=90 if len(langs) > 14 else 0, fontsize=7.5)
        ax.set_yticks(range(num_layers), layer_labels(num_layers), fontsize=7.5)
        ax.set_xlabel(f"language (ordered by {'family' if order == 'family' else 'mean Δ'})", fontsize=8)
    axes[0].set_ylabel("layer (emb = embedding output)", fontsize=8)
    return fig


def curves_figure(table: pd.DataFrame, metrics: Sequence[str]) -> plt.Figure:
    """Per-layer mean over languages (± one std) of each metric, base vs realigned, with chance."""
    metrics = [m for m in metrics if m in set(table["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 0.6, 3.4), constrained_layout=True,
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for model, colour in (("base", "#555555"), ("realigned", "#c0392b")):
            sub = table[(table["model"] == model) & (table["metric"] == metric)]
            stats = sub.groupby("layer")["value"].agg(["mean", "std"]).sort_index()
            ax.plot(stats.index, stats["mean"], marker="o", ms=3, color=colour, label=model)
            ax.fill_between(stats.index, stats["mean"] - stats["std"].fillna(0), stats["mean"] + stats["std"].fillna(0),
                            color=colour, alpha=0.15, linewidth=0)
        chance = "cka_shuffled" if metric.startswith("cka") else "retrieval_chance"
        sub = table[(table["model"] == "base") & (table["metric"] == chance)]
        if not sub.empty and metric in ("cka", "retrieval", "retrieval_centered"):
            stats = sub.groupby("layer")["value"].mean().sort_index()
            ax.plot(stats.index, stats.values, ls=":", color="#888888",
                    label="shuffled pairs" if chance == "cka_shuffled" else "chance (1/n)")
        num_layers = int(table["layer"].max()) + 1
        ax.set_xticks(range(num_layers), layer_labels(num_layers), fontsize=7)
        ax.set_xlabel("layer")
        ax.set_title(metric_label(metric), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean over languages (± std)")
    axes[0][-1].legend(fontsize=7, loc="best")
    return fig


def drift_figure(table: pd.DataFrame) -> plt.Figure:
    """Left: same-language CKA base vs realigned per layer; right: relative weight change per block."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    drift = table[(table["model"] == "drift") & (table["metric"] == "drift_cka")]
    langs = languages.family_order([str(x) for x in drift["lang"].unique()])
    cmap = plt.get_cmap("tab20", max(len(langs), 1))
    for i, lang in enumerate(langs):
        sub = drift[drift["lang"] == lang].sort_values("layer")
        ax_kwargs = dict(lw=2.2, color="black") if i == 0 and lang == "en" else dict(lw=1, color=cmap(i))
        axes[0].plot(sub["layer"], sub["value"], label=lang, **ax_kwargs)
    num_layers = int(table["layer"].max()) + 1
    axes[0].set_xticks(range(num_layers), layer_labels(num_layers), fontsize=7)
    axes[0].set_ylabel("debiased CKA, base vs realigned")
    axes[0].set_xlabel("layer")
    axes[0].set_title("representation drift (1 = unchanged)", fontsize=9)
    axes[0].grid(alpha=0.3)
    if langs:
        axes[0].legend(fontsize=6, ncol=2, loc="lower left")
    change = table[(table["model"] == "drift") & (table["metric"] == "weight_change")].sort_values("layer")
    axes[1].bar(change["layer"], change["value"], color="#2c7fb8")
    axes[1].set_xticks(range(num_layers), layer_labels(num_layers), fontsize=7)
    axes[1].set_xlabel("parameters of (emb = embeddings, i = block i)")
    axes[1].set_ylabel("‖W_r − W_b‖ / ‖W_b‖")
    axes[1].set_title("relative weight change (0 = frozen or untouched)", fontsize=9)
    axes[1].grid(alpha=0.3, axis="y")
    return fig


def save_figure(fig: plt.Figure, directory: str | Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically into ``directory``; closes the figure."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for suffix, kwargs in ((".png", {"dpi": 130}), (".svg", {})):
            path = directory / f"{stem}{suffix}"
            atomic_write(path, lambda tmp, kw=kwargs, s=suffix: fig.savefig(tmp, format=s[1:], metadata=_metadata(s), **kw))
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def _metadata(suffix: str) -> dict:
    # Fixed metadata keeps figures byte-identical across runs (no timestamps).
    if suffix == ".svg":
        return {"Date": None}
    return {"Software": None} if suffix == ".png" else {}
