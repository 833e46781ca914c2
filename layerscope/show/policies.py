"""Freeze policies side by side: where each moved cross-lingual alignment, and how far each layer drifted.

Input: the ``metrics.csv`` table of one ``compare`` run per policy (base against the model
realigned with that policy, on the same corpus). :func:`policy_profile` reduces a run to one row
per layer; :func:`policies_figure` draws the profiles of all policies in one figure.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .heatmaps import layer_labels, metric_label  # noqa: E402

ALIGNMENT_METRICS = ("retrieval", "cka")
POLICY_COLOURS = {"none": "#1b9e77", "lower": "#d95f02", "upper": "#7570b3"}
POLICY_NAMES = {"none": "full realignment", "lower": "lower half frozen (AlignFreeze)",
                "upper": "upper half frozen"}


def policy_profile(metrics: pd.DataFrame, metrics_shown: Sequence[str] = ALIGNMENT_METRICS) -> pd.DataFrame:
    """Per layer of one compare run: the change of each alignment metric (mean over target
    languages, with its minimum and maximum) and the drift ``1 − CKA(base, realigned)`` of the
    same sentences (mean over all languages, the pivot included).

    Returns columns ``layer``, ``quantity`` (``delta_<metric>`` or ``drift``), ``mean``, ``low``, ``high``.
    """
    rows = []
    for metric in metrics_shown:
        delta = metrics[(metrics["model"] == "delta") & (metrics["metric"] == metric)]
        if delta.empty:
            raise ValueError(f"the compare table has no delta rows for {metric!r}")
        stats = delta.groupby("layer")["value"].agg(["mean", "min", "max"]).reset_index()
        rows += [{"layer": int(r.layer), "quantity": f"delta_{metric}", "mean": r["mean"], "low": r["min"],
                  "high": r["max"]} for _, r in stats.iterrows()]
    drift = metrics[(metrics["model"] == "drift") & (metrics["metric"] == "drift_cka")]
    if drift.empty:
        raise ValueError("the compare table has no drift_cka rows")
    moved = drift.assign(value=1.0 - drift["value"]).groupby("layer")["value"].agg(["mean", "min", "max"])
    rows += [{"layer": int(layer), "quantity": "drift", "mean": r["mean"], "low": r["min"], "high": r["max"]}
             for layer, r in moved.iterrows()]
    return pd.DataFrame(rows, columns=["layer", "quantity", "mean", "low", "high"])


def fixed_layers(frozen_blocks: Sequence[int], freeze_embeddings: bool) -> set[int]:
    """Layers whose producing parameters were frozen: layer 0 (embeddings) and layer ``i`` (block ``i−1``)."""
    layers = {block + 1 for block in frozen_blocks}
    if freeze_embeddings:
        layers.add(0)
    return layers


def policies_figure(profiles: Mapping[str, pd.DataFrame], fixed: Mapping[str, set[int]] | None = None,
                    *, title: str = "") -> plt.Figure:
    """One row of panels: Δ of each alignment metric per layer, then drift per layer; one line
    per policy (band: range over languages). Hollow markers are layers produced by frozen parameters."""
    quantities = [q for q in next(iter(profiles.values()))["quantity"].unique() if q != "drift"] + ["drift"]
    fig, axes = plt.subplots(1, len(quantities), figsize=(4.2 * len(quantities), 3.8), constrained_layout=True)
    fixed = fixed or {}
    num_layers = 1 + max(int(p["layer"].max()) for p in profiles.values())
    for ax, quantity in zip(axes, quantities):
        for policy, profile in profiles.items():
            colour = POLICY_COLOURS.get(policy, None)
            part = profile[profile["quantity"] == quantity].sort_values("layer")
            line, = ax.plot(part["layer"], part["mean"], marker="o", ms=5, lw=1.8, color=colour,
                            label=POLICY_NAMES.get(policy, policy))
            ax.fill_between(part["layer"], part["low"], part["high"], color=line.get_color(), alpha=0.12, lw=0)
            hollow = part[part["layer"].isin(fixed.get(policy, set()))]
            ax.plot(hollow["layer"], hollow["mean"], ls="none", marker="o", ms=7, mfc="white",
                    mec=line.get_color(), mew=1.6)
        if quantity == "drift":
            ax.set_title("drift from the base (same sentences)", fontsize=9)
            ax.set_ylabel("1 − CKA(base, realigned)")
        else:
            metric = quantity.removeprefix("delta_")
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_title(f"change in cross-lingual {metric_label(metric)}", fontsize=9)
            ax.set_ylabel(f"Δ {metric_label(metric)} (realigned − base)")
        ax.set_xticks(range(num_layers), layer_labels(num_layers), fontsize=8)
        ax.set_xlabel("layer (emb = embeddings, i = after i blocks)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
