"""Confidence intervals of retrieval accuracies that respect how the trials are paired.

The two directions of retrieval (pivot → target, target → pivot) are asked of the same
sentences, and base and realigned models are asked of the same sentences too, so neither the
2n trials of a two-direction mean nor the two models' accuracies are independent. Here the unit
of resampling is the sentence:

- :func:`two_direction_interval`: Wilson score interval of the two-direction mean with the
  effective number of trials ``n · p(1 − p) / s²`` (``s²`` the variance over sentences of the
  per-sentence mean of the two hits), kept within [n, 2n]: 2n when the directions are
  independent, n when they always agree.
- :func:`paired_bootstrap_interval`: percentile bootstrap over sentences of a per-sentence
  statistic (e.g. realigned − base hits), seeded, batched over layers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Z95 = 1.959963984540054  # the 97.5 % point of the standard normal


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n`` (``n`` may be fractional)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def effective_trials(per_sentence: Tensor) -> Tensor:
    """Effective number of independent trials behind the mean of ``per_sentence`` (L, n).

    ``per_sentence[l, i]`` is the mean of sentence i's two 0/1 hits at layer l. Returns (L,)
    float64: ``n · p(1 − p) / s²`` within [n, 2n] (n when ``s² = 0``, the cautious end)."""
    m = per_sentence.double()
    n = m.shape[-1]
    p = m.mean(-1)
    s2 = ((m - p[..., None]) ** 2).mean(-1)
    ratio = torch.where(s2 > 0, n * p * (1 - p) / torch.where(s2 > 0, s2, torch.ones_like(s2)),
                        torch.full_like(p, float(n)))
    return ratio.clamp(min=float(n), max=float(2 * n))


def two_direction_interval(hits: Tensor, z: float = Z95) -> list[tuple[float, float]]:
    """Per layer, the 95% interval of the two-direction mean retrieval accuracy.

    ``hits``: bool or 0/1 tensor of shape (L, 2, n) (:func:`~layerscope.probes.retrieval.retrieval_hits_per_layer`).
    """
    per_sentence = hits.double().mean(1)  # (L, n)
    p = per_sentence.mean(-1)
    n_eff = effective_trials(per_sentence)
    return [wilson_interval(float(pl) * float(ne), float(ne), z) for pl, ne in zip(p, n_eff)]


def paired_bootstrap_interval(per_sentence: Tensor, *, resamples: int = 1000, seed: int = 0,
                              level: float = 0.95) -> Tensor:
    """Percentile bootstrap interval of the mean over sentences, per layer.

    ``per_sentence``: (L, n), one value per sentence (e.g. realigned − base hits of that
    sentence, so that the pairing of the two models on one sentence is kept). The same
    ``resamples`` draws of n sentences with replacement (seeded) serve every layer. Returns
    float64 (L, 2): the lower and upper ends.
    """
    values = per_sentence.double()
    n = values.shape[-1]
    generator = torch.Generator().manual_seed(int(seed))
    draws = torch.randint(n, (resamples, n), generator=generator)
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(resamples, n, dtype=torch.float64))
    means = values.cpu() @ counts.T / n  # (L, resamples)
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=torch.float64)
    return torch.quantile(means, q, dim=1).T
