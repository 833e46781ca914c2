"""Per-layer, per-language probes: layer stacks in, tidy metric rows out.

Every row is ``(model, metric, layer, lang, value, ci_low, ci_high)``. Cross-lingual metrics
compare the pivot side with each target language at the same layer; drift compares one
language's representations in two models. The arithmetic lives in :mod:`layerscope.similarity`;
this module only decides what is measured against what and labels the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd
import torch

from . import similarity
from .activations import LayerStack
from .errors import LayerscopeError

COLUMNS = ["model", "metric", "layer", "lang", "value", "ci_low", "ci_high"]

# name -> (description, higher is more aligned)
METRICS: dict[str, str] = {
    "cka": "debiased linear CKA with the pivot",
    "cka_linear": "linear CKA with the pivot (biased upward when n < d)",
    "cka_rbf": "RBF CKA with the pivot (bandwidth = median distance)",
    "retrieval": "translation retrieval accuracy, mean of both directions",
    "retrieval_p2t": "retrieval accuracy, pivot -> target",
    "retrieval_t2p": "retrieval accuracy, target -> pivot",
    "retrieval_centered": "retrieval accuracy after per-language mean-centering",
    "retrieval_margin": "retrieval accuracy with ratio-margin scoring",
    "cka_shuffled": "debiased CKA on shuffled (non-translation) pairs: the chance level",
    "retrieval_shuffled": "retrieval accuracy on shuffled pairs: the chance level",
    "drift_cka": "debiased CKA between base and realigned vectors of the same language",
    "weight_change": "relative weight change of each block, ||W_r - W_b|| / ||W_b||",
}
DEFAULT_METRICS = ("cka", "cka_linear", "retrieval", "retrieval_centered")
MIN_SENTENCES = 8  # below this, debiased CKA and retrieval say nothing


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n``."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ProbeSettings:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    baselines: bool = True
    rbf_sigma: float = 1.0
    seed: int = 0


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        import difflib

        hints = [difflib.get_close_matches(name, METRICS, n=1) for name in unknown]
        hint = "".join(f"; did you mean {h[0]}?" for h in hints if h)
        raise LayerscopeError(f"unknown metric(s) {', '.join(unknown)}: known are {', '.join(METRICS)}{hint}")
    return tuple(names)


def check_sizes(sizes: Mapping[str, int], source: object = None) -> None:
    """Every language needs MIN_SENTENCES pairs; checked on the corpus, before any forward pass."""
    for lang, n in sizes.items():
        if n < MIN_SENTENCES:
            raise LayerscopeError(
                f"language {lang} has only {n} sentence pairs; the metrics need at least {MIN_SENTENCES}",
                source=source,
            )


def _rows(model: str, metric: str, lang: str, values: Sequence[float], ci: Sequence[tuple[float, float]] | None = None):
    for layer, value in enumerate(values):
        low, high = ci[layer] if ci is not None else (math.nan, math.nan)
        yield (model, metric, layer, lang, float(value), low, high)


def crosslingual_rows(model: str, pivot: LayerStack, target: LayerStack, lang: str,
                      settings: ProbeSettings = ProbeSettings()) -> list[tuple]:
    """Rows of every cross-lingual metric for one language at every layer."""
    a, b = pivot.values, target.values
    n = b.shape[1]
    rows: list[tuple] = []
    wanted = set(settings.metrics)
    if "cka" in wanted:
        rows += _rows(model, "cka", lang, similarity.cka_per_layer(a, b, method="debiased").tolist())
    if "cka_linear" in wanted:
        rows += _rows(model, "cka_linear", lang, similarity.cka_per_layer(a, b, method="linear").tolist())
    if "cka_rbf" in wanted:
        values = [similarity.rbf_cka(a[i], b[i], sigma=settings.rbf_sigma) for i in range(a.shape[0])]
        rows += _rows(model, "cka_rbf", lang, values)
    if wanted & {"retrieval", "retrieval_p2t", "retrieval_t2p"}:
        acc = similarity.retrieval_per_layer(a, b)  # (L+1, 2)
        p2t, t2p = acc[:, 0].tolist(), acc[:, 1].tolist()
        mean = [(x + y) / 2 for x, y in zip(p2t, t2p)]
        for metric, values in (("retrieval", mean), ("retrieval_p2t", p2t), ("retrieval_t2p", t2p)):
            ci = [wilson_interval(v * (2 * n if metric == "retrieval" else n), 2 * n if metric == "retrieval" else n)
                  for v in values]
            rows += _rows(model, metric, lang, values, ci)
    if "retrieval_centered" in wanted:
        acc = similarity.retrieval_per_layer(a, b, center=True)
        values = acc.mean(dim=1).tolist()
        rows += _rows(model, "retrieval_centered", lang, values, [wilson_interval(v * 2 * n, 2 * n) for v in values])
    if "retrieval_margin" in wanted:
        acc = similarity.retrieval_per_layer(a, b, margin=True)
        values = acc.mean(dim=1).tolist()
        rows += _rows(model, "retrieval_margin", lang, values, [wilson_interval(v * 2 * n, 2 * n) for v in values])
    if settings.baselines:
        generator = torch.Generator().manual_seed(settings.seed)
        perm = similarity.shuffled_pairs(n, generator)
        shuffled = b[:, perm, :]
        rows += _rows(model, "cka_shuffled", lang, similarity.cka_per_layer(a, shuffled, method="debiased").tolist())
        acc = similarity.retrieval_per_layer(a, shuffled)
        rows += _rows(model, "retrieval_shuffled", lang, acc.mean(dim=1).tolist())
    return rows


def crosslingual_table(model: str, pivots: Mapping[str, LayerStack], targets: Mapping[str, LayerStack],
                       settings: ProbeSettings = ProbeSettings()) -> pd.DataFrame:
    rows: list[tuple] = []
    for lang in targets:
        rows += crosslingual_rows(model, pivots[lang], targets[lang], lang, settings)
    return pd.DataFrame(rows, columns=COLUMNS)


def delta_table(table: pd.DataFrame, base: str = "base", realigned: str = "realigned") -> pd.DataFrame:
    """Rows ``model="delta"`` holding realigned − base for every (metric, layer, lang)."""
    keys = ["metric", "layer", "lang"]
    left = table[table["model"] == base].set_index(keys)["value"]
    right = table[table["model"] == realigned].set_index(keys)["value"]
    joined = pd.concat({"base": left, "realigned": right}, axis=1).dropna()
    out = (joined["realigned"] - joined["base"]).rename("value").reset_index()
    out.insert(0, "model", "delta")
    out["ci_low"] = math.nan
    out["ci_high"] = math.nan
    return out[COLUMNS]


def drift_table(base_stacks: Mapping[str, LayerStack], realigned_stacks: Mapping[str, LayerStack]) -> pd.DataFrame:
    """Same-language debiased CKA between base and realigned at every layer."""
    rows: list[tuple] = []
    for lang, stack in base_stacks.items():
        values = similarity.cka_per_layer(stack.values, realigned_stacks[lang].values, method="debiased").tolist()
        rows += _rows("drift", "drift_cka", lang, values)
    return pd.DataFrame(rows, columns=COLUMNS)


def weight_change_table(base_groups: Mapping[str, dict[str, torch.Tensor]],
                        realigned_groups: Mapping[str, dict[str, torch.Tensor]]) -> pd.DataFrame:
    """Relative weight change per parameter group; layer 0 = embeddings, layer i = block i."""
    rows = []
    for layer, group in enumerate(base_groups):
        value = similarity.relative_weight_change(base_groups[group], realigned_groups[group])
        rows.append(("drift", "weight_change", layer, "all", value, math.nan, math.nan))
    return pd.DataFrame(rows, columns=COLUMNS)
