"""Per-layer, per-language probes: layer stacks in, tidy metric rows out.

Every row is ``(model, metric, layer, lang, value, ci_low, ci_high)``. Cross-lingual metrics
compare the pivot side with each target language at the same layer; drift compares one
language's representations in two models. The arithmetic lives in :mod:`layerscope.probes.cka`, :mod:`~layerscope.probes.retrieval` and :mod:`~layerscope.probes.drift`;
this module only decides what is measured against what and labels the results.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd
import torch

from ..errors import LayerscopeError
from ..stats.intervals import Z95, paired_bootstrap_interval, two_direction_interval, wilson_interval
from . import cca
from .activations import LayerStack
from .cka import cka_per_layer, rbf_cka
from .drift import relative_weight_change
from .retrieval import retrieval_hits_per_layer, shuffled_pairs

log = logging.getLogger(__name__)

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
    "cka_shuffled": "debiased CKA on shuffled (non-translation) pairs: mean over derangements, "
                    "ci = mean ± 1.96 std over them",
    "retrieval_chance": "the chance level of retrieval, 1/n",
    "drift_cka": "debiased CKA between base and realigned vectors of the same language",
    "weight_change": "relative weight change of each block, ||W_r - W_b|| / ||W_b||",
}
# SVCCA, PWCCA and Procrustes (layerscope.probes.cca); with drift_ in front, base vs realigned per language
METRICS.update({name: description for name, (_, description) in cca.METRICS.items()})
METRICS.update({f"drift_{name}": f"{name}, base vs realigned vectors of the same language" for name in cca.METRICS})
DEFAULT_METRICS = ("cka", "cka_linear", "retrieval", "retrieval_centered")
MIN_SENTENCES = 8  # below this, debiased CKA and retrieval say nothing


@dataclass(frozen=True)
class ProbeSettings:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    baselines: bool = True
    rbf_sigma: float = 1.0
    seed: int = 0
    shuffles: int = 5  # derangements behind each shuffled baseline
    resamples: int = 1000  # bootstrap draws of the delta rows' intervals


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


def _warn_refusal(lang: str):
    """A CCA measure refused for too few sentences leaves NaN in the table and says why, once per call."""
    said: list[str] = []

    def warn(message: str) -> None:
        if not said:
            log.warning("%s: %s (NaN in the table)", lang, message)
        said.append(message)

    return warn


def _rows(model: str, metric: str, lang: str, values: Sequence[float], ci: Sequence[tuple[float, float]] | None = None):
    for layer, value in enumerate(values):
        low, high = ci[layer] if ci is not None else (math.nan, math.nan)
        yield (model, metric, layer, lang, float(value), low, high)


def crosslingual_rows(model: str, pivot: LayerStack, target: LayerStack, lang: str,
                      settings: ProbeSettings = ProbeSettings(),
                      hits: dict[tuple[str, str], torch.Tensor] | None = None) -> list[tuple]:
    """Rows of every cross-lingual metric for one language at every layer.

    ``hits``, when given, receives per (retrieval metric, lang) the per-sentence hit (mean of the
    two directions for the two-direction metrics), float64 (L+1, n): what :func:`delta_table`
    resamples. The shuffled baselines are over ``settings.shuffles`` seeded derangements.
    """
    a, b = pivot.values, target.values
    n = b.shape[1]
    rows: list[tuple] = []
    wanted = set(settings.metrics)
    if "cka" in wanted:
        rows += _rows(model, "cka", lang, cka_per_layer(a, b, method="debiased").tolist())
    if "cka_linear" in wanted:
        rows += _rows(model, "cka_linear", lang, cka_per_layer(a, b, method="linear").tolist())
    if "cka_rbf" in wanted:
        values = [rbf_cka(a[i], b[i], sigma=settings.rbf_sigma) for i in range(a.shape[0])]
        rows += _rows(model, "cka_rbf", lang, values)
    if wanted & {"retrieval", "retrieval_p2t", "retrieval_t2p"}:
        hit = retrieval_hits_per_layer(a, b)  # (L+1, 2, n)
        acc = hit.double().mean(-1)
        p2t, t2p = acc[:, 0].tolist(), acc[:, 1].tolist()
        mean = acc.mean(1).tolist()
        rows += _rows(model, "retrieval", lang, mean, two_direction_interval(hit))
        rows += _rows(model, "retrieval_p2t", lang, p2t, [wilson_interval(v * n, n) for v in p2t])
        rows += _rows(model, "retrieval_t2p", lang, t2p, [wilson_interval(v * n, n) for v in t2p])
        if hits is not None:
            hits[("retrieval", lang)] = hit.double().mean(1)
            hits[("retrieval_p2t", lang)] = hit[:, 0].double()
            hits[("retrieval_t2p", lang)] = hit[:, 1].double()
    for metric, options in (("retrieval_centered", {"center": True}), ("retrieval_margin", {"margin": True})):
        if metric in wanted:
            hit = retrieval_hits_per_layer(a, b, **options)
            rows += _rows(model, metric, lang, hit.double().mean((1, 2)).tolist(), two_direction_interval(hit))
            if hits is not None:
                hits[(metric, lang)] = hit.double().mean(1)
    for metric in (m for m in cca.METRICS if m in wanted):
        rows += _rows(model, metric, lang, cca.per_layer(metric, a, b, on_refusal=_warn_refusal(lang)))
    if settings.baselines:
        # CKA's chance level has no closed form: the mean and spread over several derangements.
        # Retrieval's is 1/n; retrieval on mispaired rows is ~0 for an aligned model, not chance.
        generator = torch.Generator().manual_seed(settings.seed)
        draws = torch.stack([cka_per_layer(a, b[:, shuffled_pairs(n, generator), :],
                                                      method="debiased").double()
                             for _ in range(max(1, settings.shuffles))])  # (shuffles, L+1)
        centre = draws.mean(0)
        spread = draws.std(0, correction=1) if len(draws) > 1 else torch.full_like(centre, math.nan)
        ci = list(zip((centre - Z95 * spread).tolist(), (centre + Z95 * spread).tolist()))
        rows += _rows(model, "cka_shuffled", lang, centre.tolist(), ci)
        rows += _rows(model, "retrieval_chance", lang, [1.0 / n] * a.shape[0])
    return rows


def crosslingual_table(model: str, pivots: Mapping[str, LayerStack], targets: Mapping[str, LayerStack],
                       settings: ProbeSettings = ProbeSettings(),
                       hits: dict[tuple[str, str], torch.Tensor] | None = None) -> pd.DataFrame:
    rows: list[tuple] = []
    for lang in targets:
        rows += crosslingual_rows(model, pivots[lang], targets[lang], lang, settings, hits)
    return pd.DataFrame(rows, columns=COLUMNS)


def delta_table(table: pd.DataFrame, base: str = "base", realigned: str = "realigned", *,
                hits: Mapping[str, Mapping[tuple[str, str], torch.Tensor]] | None = None,
                resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rows ``model="delta"`` holding realigned − base for every (metric, layer, lang).

    With ``hits`` (``{base: {...}, realigned: {...}}`` as :func:`crosslingual_table` fills them),
    the retrieval rows get a 95% paired bootstrap interval over sentences (``resamples`` draws,
    seeded): both models are resampled on the same sentences, so their correlation is kept.
    Other rows have no interval.
    """
    keys = ["metric", "layer", "lang"]
    left = table[table["model"] == base].set_index(keys)["value"]
    right = table[table["model"] == realigned].set_index(keys)["value"]
    joined = pd.concat({"base": left, "realigned": right}, axis=1).dropna()
    out = (joined["realigned"] - joined["base"]).rename("value").reset_index()
    out.insert(0, "model", "delta")
    out["ci_low"] = math.nan
    out["ci_high"] = math.nan
    if hits:
        before, after = hits.get(base, {}), hits.get(realigned, {})
        position = {key: i for i, key in enumerate(zip(out["metric"], out["layer"], out["lang"]))}
        for key in before.keys() & after.keys():
            bounds = paired_bootstrap_interval(after[key] - before[key], resamples=resamples, seed=seed)
            metric, lang = key
            for layer, (low, high) in enumerate(bounds.tolist()):
                row = position.get((metric, layer, lang))
                if row is not None:
                    out.loc[row, ["ci_low", "ci_high"]] = (low, high)
    return out[COLUMNS]


def drift_table(base_stacks: Mapping[str, LayerStack], realigned_stacks: Mapping[str, LayerStack],
                metrics: Sequence[str] = ()) -> pd.DataFrame:
    """Same-language debiased CKA between base and realigned at every layer, and ``drift_<m>``
    for each CCA/Procrustes metric ``m`` of ``metrics`` (base side first)."""
    rows: list[tuple] = []
    extra = [m for m in cca.METRICS if m in metrics or f"drift_{m}" in metrics]
    for lang, stack in base_stacks.items():
        values = cka_per_layer(stack.values, realigned_stacks[lang].values, method="debiased").tolist()
        rows += _rows("drift", "drift_cka", lang, values)
        for metric in extra:
            values = cca.per_layer(metric, stack.values, realigned_stacks[lang].values, on_refusal=_warn_refusal(lang))
            rows += _rows("drift", f"drift_{metric}", lang, values)
    return pd.DataFrame(rows, columns=COLUMNS)


def weight_change_table(base_groups: Mapping[str, dict[str, torch.Tensor]],
                        realigned_groups: Mapping[str, dict[str, torch.Tensor]]) -> pd.DataFrame:
    """Relative weight change per parameter group; layer 0 = embeddings, layer i = block i."""
    rows = []
    for layer, group in enumerate(base_groups):
        value = relative_weight_change(base_groups[group], realigned_groups[group])
        rows.append(("drift", "weight_change", layer, "all", value, math.nan, math.nan))
    return pd.DataFrame(rows, columns=COLUMNS)
