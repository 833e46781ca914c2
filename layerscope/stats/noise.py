"""Which realigned − base changes are larger than their noise.

A Δ row (``model="delta"`` of the tidy metrics table) counts as a change *beyond noise* when

1. it carries an interval (``ci_low``, ``ci_high``) and that interval excludes 0; or, where it
   carries none,
2. ``|Δ|`` exceeds the spread (max − min, the derangements' intervals included) of the
   metric's shuffled-pair baseline (``<metric>_shuffled``) for that language over both models
   and every layer: larger than any difference between two chance-level values seen.

Where neither exists the change cannot be judged and is not named.

:func:`fill_delta_intervals` gives Δ rows without an interval one built from the two models'
own intervals (retrieval's), by Newcombe's (1998) square-and-add recovery of variance (MOVER,
Zou & Donner 2008): for Δ = p₁ − p₀ with intervals [l₁, u₁] and [l₀, u₀],

    low  = Δ − sqrt((p₁ − l₁)² + (u₀ − p₀)²),   high = Δ + sqrt((u₁ − p₁)² + (p₀ − l₀)²).

It treats the two models' scores as independent; scores of the same sentences are positively
correlated, so the true interval is narrower and this one is conservative.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

KEYS = ["metric", "layer", "lang"]

# verdicts of :func:`judge_deltas`
BEYOND, WITHIN, UNJUDGED = "beyond", "within", "unjudged"


def fill_delta_intervals(table: pd.DataFrame, base: str = "base", realigned: str = "realigned") -> pd.DataFrame:
    """``table`` with the missing intervals of its Δ rows recovered from both models' intervals."""
    table = table.copy()
    rows = {label: table[table["model"] == label].set_index(KEYS)[["value", "ci_low", "ci_high"]]
            for label in (base, realigned)}
    is_delta = table["model"] == "delta"
    missing = is_delta & (table["ci_low"].isna() | table["ci_high"].isna())
    if not missing.any():
        return table
    index = pd.MultiIndex.from_frame(table.loc[missing, KEYS])
    b, r = rows[base].reindex(index), rows[realigned].reindex(index)
    delta = table.loc[missing, "value"].to_numpy(dtype=float)
    low = delta - np.sqrt((r["value"] - r["ci_low"]).to_numpy(float) ** 2 + (b["ci_high"] - b["value"]).to_numpy(float) ** 2)
    high = delta + np.sqrt((r["ci_high"] - r["value"]).to_numpy(float) ** 2 + (b["value"] - b["ci_low"]).to_numpy(float) ** 2)
    table.loc[missing, "ci_low"] = low
    table.loc[missing, "ci_high"] = high
    return table


def shuffled_spread(table: pd.DataFrame, metric: str) -> dict[str, float]:
    """Per language, max − min of ``<metric>_shuffled`` over both models and every layer; where
    the baseline carries the spread of several derangements (``ci_low``/``ci_high``), that too."""
    rows = table[(table["metric"] == f"{metric}_shuffled") & (table["model"] != "delta")]
    spread = {}
    for lang, group in rows.groupby("lang"):
        high = pd.concat([group["value"], group["ci_high"]]).max()
        low = pd.concat([group["value"], group["ci_low"]]).min()
        spread[str(lang)] = float(high - low)
    return spread


def judge_deltas(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The Δ rows of ``metric`` with a ``verdict`` column: "beyond", "within" or "unjudged" noise,
    and ``noise`` (the shuffled spread used where the row has no interval; NaN otherwise)."""
    delta = table[(table["model"] == "delta") & (table["metric"] == metric)].copy()
    spread = shuffled_spread(table, metric)
    verdicts, noise = [], []
    for value, low, high, lang in zip(delta["value"], delta["ci_low"], delta["ci_high"], delta["lang"]):
        if not (math.isnan(low) or math.isnan(high)):
            verdicts.append(BEYOND if low > 0 or high < 0 else WITHIN)
            noise.append(math.nan)
        elif str(lang) in spread:
            verdicts.append(BEYOND if abs(value) > spread[str(lang)] else WITHIN)
            noise.append(spread[str(lang)])
        else:
            verdicts.append(UNJUDGED)
            noise.append(math.nan)
    delta["verdict"] = verdicts
    delta["noise"] = noise
    return delta
