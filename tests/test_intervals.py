"""Retrieval intervals: coverage by simulation with correlated directions and paired models,
and the closed forms at the two ends (directions that always agree, directions independent)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerscope.stats.intervals import effective_trials, paired_bootstrap_interval, two_direction_interval

Z = 1.959963984540054


def _wilson(k: float, n: float) -> tuple[float, float]:
    """The Wilson score interval written out independently (Wilson 1927)."""
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def _correlated_hits(rng, n: int, p: float, rho: float, datasets: int) -> np.ndarray:
    """(datasets, 2, n) 0/1 hits: each direction right with probability p, correlation rho."""
    c = rho * p * (1 - p)
    joint = [p * p + c, p * (1 - p) - c, p * (1 - p) - c, (1 - p) ** 2 + c]  # 11, 10, 01, 00
    cell = rng.choice(4, size=(datasets, n), p=joint)
    return np.stack([(cell == 0) | (cell == 1), (cell == 0) | (cell == 2)], axis=1)


@pytest.mark.parametrize("p", [0.7, 0.9])
def test_two_direction_interval_covers_at_the_nominal_level(p):
    rng = np.random.default_rng(7)
    hits = _correlated_hits(rng, n=100, p=p, rho=0.66, datasets=1000)
    ci = two_direction_interval(torch.tensor(hits))
    coverage = np.mean([low <= p <= high for low, high in ci])
    assert coverage >= 0.93
    # Wilson on 2n trials, as if the directions were independent, is too narrow here
    naive = np.mean([(lambda low, high: low <= p <= high)(*_wilson(h.mean() * 200, 200)) for h in hits])
    assert naive < 0.91


def test_two_direction_interval_closed_forms_at_both_ends():
    rng = np.random.default_rng(1)
    x = rng.random(60) < 0.8
    same = torch.tensor(np.stack([x, x])[None])  # the directions always agree: n trials
    assert two_direction_interval(same)[0] == pytest.approx(_wilson(x.sum(), 60), abs=1e-12)
    # a quarter right both ways, a quarter wrong both ways, half right one way: the per-sentence
    # mean varies by p(1-p)/2 = 0.125, exactly as for independent directions -> 2n trials
    a = np.array([1, 0, 1, 0] * 10, bool)
    b = np.array([1, 0, 0, 1] * 10, bool)
    assert float(effective_trials(torch.tensor((a + 0.0 + b)[None] / 2))[0]) == pytest.approx(80)
    assert two_direction_interval(torch.tensor(np.stack([a, b])[None]))[0] == pytest.approx(_wilson(40, 80), abs=1e-12)
    # directions that disagree more than chance would give more than 2n: capped at 2n
    a, b = np.array([1, 0, 1, 1] * 10, bool), np.array([0, 1, 1, 1] * 10, bool)  # 120 uncapped
    assert float(effective_trials(torch.tensor((a + 0.0 + b)[None] / 2))[0]) == 80
    # all right: no variance, the cautious n trials
    ones = torch.ones(1, 2, 30, dtype=torch.bool)
    assert two_direction_interval(ones)[0] == pytest.approx(_wilson(30, 30), abs=1e-12)


def test_paired_bootstrap_covers_the_true_change():
    """Base and realigned answer the same sentences; realignment turns some misses into hits."""
    rng = np.random.default_rng(3)
    datasets, n = 600, 150
    base = _correlated_hits(rng, n=n, p=0.6, rho=0.66, datasets=datasets)
    fixed = rng.random((datasets, 2, n)) < 0.25
    realigned = base | fixed
    truth = 0.4 * 0.25  # P(miss) × P(fixed), in each direction
    change = torch.tensor(realigned.mean(1) - base.mean(1), dtype=torch.float64)  # (datasets, n)
    bounds = paired_bootstrap_interval(change, resamples=500, seed=0)
    coverage = float(((bounds[:, 0] <= truth) & (truth <= bounds[:, 1])).double().mean())
    assert coverage >= 0.93
    # treating the two models as independent samples (Wilson on each, difference of the ends) is
    # not what is done; the paired interval is much narrower than an unpaired one
    unpaired_half = Z * np.sqrt((realigned.mean(1).var(1) + base.mean(1).var(1)) / n)
    assert float((bounds[:, 1] - bounds[:, 0]).mean()) < 0.8 * float((2 * unpaired_half).mean())


def test_paired_bootstrap_is_seeded_and_centred():
    values = torch.tensor([[0.0, 0.5, 1.0, 0.5, 0.0, 0.5] * 10])
    first = paired_bootstrap_interval(values, resamples=200, seed=5)
    assert torch.equal(first, paired_bootstrap_interval(values, resamples=200, seed=5))
    assert not torch.equal(first, paired_bootstrap_interval(values, resamples=200, seed=6))
    mean = float(values.mean())
    assert float(first[0, 0]) < mean < float(first[0, 1])
    # a constant per-sentence change has a zero-width interval at that change
    assert paired_bootstrap_interval(torch.full((2, 40), 0.25)).tolist() == [[0.25, 0.25], [0.25, 0.25]]


def _stacks(seed: int, n: int = 40, d: int = 6, layers: int = 3, noise: float = 1.0):
    from layerscope.probes import LayerStack

    g = torch.Generator().manual_seed(seed)
    a = torch.randn(layers, n, d, generator=g)
    b = a + noise * torch.randn(layers, n, d, generator=g)
    return LayerStack(a, "en"), LayerStack(b, "fr")


def test_probe_rows_chance_level_shuffled_spread_and_intervals():
    import layerscope.probes as similarity
    from layerscope.probes import table as probes

    pivot, target = _stacks(0)
    settings = probes.ProbeSettings(metrics=("cka", "retrieval"), shuffles=4, seed=11)
    hits: dict = {}
    rows = probes.crosslingual_table("base", {"fr": pivot}, {"fr": target}, settings, hits)
    chance = rows[rows["metric"] == "retrieval_chance"]
    assert (chance["value"] == 1 / 40).all() and len(chance) == 3
    # the shuffled CKA baseline: mean of 4 successive seeded derangements, ± 1.96 sample std
    g = torch.Generator().manual_seed(11)
    draws = torch.stack([similarity.cka_per_layer(pivot.values, target.values[:, similarity.shuffled_pairs(40, g)])
                         for _ in range(4)]).double()
    shuffled = rows[rows["metric"] == "cka_shuffled"].sort_values("layer")
    np.testing.assert_allclose(shuffled["value"], draws.mean(0), rtol=1e-12)
    np.testing.assert_allclose(shuffled["ci_high"] - shuffled["value"], Z * draws.std(0, correction=1), rtol=1e-9)
    # the two-direction retrieval interval is built from the per-sentence hits it keeps
    retrieval = rows[rows["metric"] == "retrieval"].sort_values("layer")
    np.testing.assert_allclose(retrieval["value"], hits[("retrieval", "fr")].mean(-1), rtol=1e-12)
    assert (retrieval["ci_low"] <= retrieval["value"]).all() and (retrieval["value"] <= retrieval["ci_high"]).all()


def test_delta_rows_have_paired_intervals_for_retrieval_only():
    from layerscope.probes import table as probes

    pivot, target = _stacks(0)
    _, closer = _stacks(0, noise=0.6)  # the "realigned" target: translations nearer the pivot
    settings = probes.ProbeSettings(metrics=("cka", "retrieval"), baselines=False)
    hits = {"base": {}, "realigned": {}}
    import pandas as pd

    table = pd.concat([probes.crosslingual_table("base", {"fr": pivot}, {"fr": target}, settings, hits["base"]),
                       probes.crosslingual_table("realigned", {"fr": pivot}, {"fr": closer}, settings,
                                                 hits["realigned"])])
    delta = probes.delta_table(table, hits=hits, resamples=300, seed=0)
    retrieval = delta[delta["metric"] == "retrieval"]
    assert retrieval["ci_low"].notna().all()
    assert (retrieval["ci_low"] <= retrieval["value"] + 1e-12).all()
    assert (retrieval["value"] <= retrieval["ci_high"] + 1e-12).all()
    assert delta[delta["metric"] == "cka"]["ci_low"].isna().all()
    # the same model twice: every sentence unchanged, a zero-width interval at 0
    same = probes.delta_table(pd.concat([table[table["model"] == "base"],
                                         table[table["model"] == "base"].assign(model="realigned")]),
                              hits={"base": hits["base"], "realigned": hits["base"]}, resamples=100)
    assert (same.loc[same["metric"] == "retrieval", ["ci_low", "ci_high"]] == 0).all().all()
