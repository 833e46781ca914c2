"""The realignment loss against an independent float64 reference, closed forms, and the head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.realign import RealignmentHead, contrastive_alignment_loss


def reference_loss(src: np.ndarray, tgt: np.ndarray, temperature: float) -> float:
    """InfoNCE written out query by query in float64: 2N queries, the partner is the positive,
    every other vector of both sides a negative, the query itself excluded."""
    vectors = [np.asarray(v, dtype=np.float64) for v in list(src) + list(tgt)]
    n = len(src)
    total = 0.0
    for q in range(2 * n):
        partner = q + n if q < n else q - n
        scores = {}
        for c in range(2 * n):
            if c == q:
                continue
            cos = vectors[q] @ vectors[c] / (np.linalg.norm(vectors[q]) * np.linalg.norm(vectors[c]))
            scores[c] = cos / temperature
        top = max(scores.values())
        log_norm = top + math.log(sum(math.exp(s - top) for s in scores.values()))
        total += log_norm - scores[partner]
    return total / (2 * n)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,k", [(1, 4), (2, 3), (5, 8), (16, 128)])
def test_matches_float64_reference(seed, n, k):
    rng = np.random.default_rng(seed)
    src, tgt = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    got = contrastive_alignment_loss(torch.tensor(src, dtype=torch.float32), torch.tensor(tgt, dtype=torch.float32))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(reference_loss(src, tgt, 0.1), rel=1e-4, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(2, 6), temperature=st.sampled_from([0.05, 0.1, 0.5, 1.0]),
       seed=st.integers(0, 10_000))
def test_reference_property(n, k, temperature, seed):
    rng = np.random.default_rng(seed)
    src, tgt = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    got = contrastive_alignment_loss(torch.tensor(src, dtype=torch.float64), torch.tensor(tgt, dtype=torch.float64),
                                     temperature)
    assert float(got) == pytest.approx(reference_loss(src, tgt, temperature), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_closed_form_identical_orthonormal_pairs(n, temperature):
    """Pairs e_i ↔ e_i: each query has cosine 1 with its partner and 0 with the 2N−2 others,
    so the loss is log(1 + (2N−2)·exp(−1/τ))."""
    eye = torch.eye(n, dtype=torch.float64)
    got = contrastive_alignment_loss(eye, eye.clone(), temperature)
    assert float(got) == pytest.approx(math.log1p((2 * n - 2) * math.exp(-1 / temperature)), rel=1e-12)


def test_single_pair_has_zero_loss():
    """With N = 1 the partner is the only candidate once the query is masked."""
    got = contrastive_alignment_loss(torch.randn(1, 5), torch.randn(1, 5))
    assert float(got) == pytest.approx(0.0, abs=1e-6)


def test_symmetry_and_invariances():
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    tgt = torch.randn(6, 10, generator=gen, dtype=torch.float64)
    base = contrastive_alignment_loss(src, tgt)
    # English→X and X→English enter symmetrically
    assert float(contrastive_alignment_loss(tgt, src)) == pytest.approx(float(base), rel=1e-12)
    # cosine: positive scaling of any vector changes nothing
    scale = torch.rand(6, 1, generator=gen, dtype=torch.float64) * 5 + 0.1
    assert float(contrastive_alignment_loss(src * scale, tgt)) == pytest.approx(float(base), rel=1e-10)
    # reordering the pairs jointly changes nothing
    perm = torch.randperm(6, generator=gen)
    assert float(contrastive_alignment_loss(src[perm], tgt[perm])) == pytest.approx(float(base), rel=1e-10)
    # a common orthogonal map changes nothing
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    assert float(contrastive_alignment_loss(src @ q, tgt @ q)) == pytest.approx(float(base), rel=1e-10)
    # but breaking the pairing does change it
    assert float(contrastive_alignment_loss(src, tgt[perm])) != pytest.approx(float(base), rel=1e-3)


def test_same_language_words_are_negatives():
    """A query whose same-language neighbour is closer than its partner pays for it: the loss
    sees negatives of its own language, not only of the other side."""
    src = torch.tensor([[1.0, 0.0], [0.99, 0.14]], dtype=torch.float64)  # two near-identical English words
    tgt = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    loss = float(contrastive_alignment_loss(src, tgt))
    assert loss == pytest.approx(reference_loss(src.numpy(), tgt.numpy(), 0.1), rel=1e-10)
    assert loss > 5  # the same-language neighbour dominates the softmax


def test_gradients_flow_to_both_sides():
    src = torch.randn(4, 8, requires_grad=True)
    tgt = torch.randn(4, 8, requires_grad=True)
    contrastive_alignment_loss(src, tgt).backward()
    assert src.grad is not None and src.grad.abs().sum() > 0
    assert tgt.grad is not None and tgt.grad.abs().sum() > 0


@pytest.mark.parametrize("src_shape,tgt_shape", [((3, 4), (2, 4)), ((3, 4), (3, 5)), ((4,), (4,)), ((0, 4), (0, 4))])
def test_bad_shapes_raise_value_error(src_shape, tgt_shape):
    with pytest.raises(ValueError, match="N"):
        contrastive_alignment_loss(torch.zeros(src_shape), torch.zeros(tgt_shape))


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        contrastive_alignment_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=0)


def test_head_architecture():
    head = RealignmentHead(32)
    linear = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(32, 32), (32, 128)]
    assert all(m.bias is None for m in linear)
    assert any(isinstance(m, torch.nn.ReLU) for m in head.modules())
    assert head(torch.randn(5, 32)).shape == (5, 128)
    with pytest.raises(ValueError):
        RealignmentHead(0)
