"""The realignment loss against an independent float64 reference, closed forms, and the head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.realign import RealignmentHead, contrastive_alignment_loss


def reference_loss(words: np.ndarray, src: list[int], tgt: list[int], temperature: float) -> float:
    """The published InfoNCE written out query by query in float64: the 2N aligned words are
    the queries, the partner is the positive, every row of ``words`` but the query a candidate."""
    vectors = [np.asarray(v, dtype=np.float64) for v in words]
    queries = list(src) + list(tgt)
    partners = list(tgt) + list(src)
    total = 0.0
    for q, positive in zip(queries, partners):
        scores = {}
        for c in range(len(vectors)):
            if c == q:
                continue
            cos = vectors[q] @ vectors[c] / (np.linalg.norm(vectors[q]) * np.linalg.norm(vectors[c]))
            scores[c] = cos / temperature
        top = max(scores.values())
        log_norm = top + math.log(sum(math.exp(s - top) for s in scores.values()))
        total += log_norm - scores[positive]
    return total / len(queries)


def random_batch(rng, n: int, extra: int, k: int):
    """M = 2N + extra word vectors and N disjoint (source row, target row) pairs among them."""
    m = 2 * n + extra
    words = rng.normal(size=(m, k))
    rows = rng.permutation(m)[: 2 * n]
    return words, [int(r) for r in rows[:n]], [int(r) for r in rows[n:]]


def loss_of(words, src, tgt, temperature=0.1, dtype=torch.float64):
    return contrastive_alignment_loss(torch.tensor(words, dtype=dtype), torch.tensor(src), torch.tensor(tgt),
                                      temperature)


def aligned_only(src: torch.Tensor, tgt: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The ``aligned`` candidate set: the 2N aligned words are all the words."""
    n = src.shape[0]
    return contrastive_alignment_loss(torch.cat([src, tgt]), torch.arange(n), torch.arange(n, 2 * n), temperature)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,extra,k", [(1, 0, 4), (1, 5, 4), (2, 3, 3), (5, 20, 8), (16, 150, 128)])
def test_matches_float64_reference(seed, n, extra, k):
    rng = np.random.default_rng(seed)
    words, src, tgt = random_batch(rng, n, extra, k)
    got = loss_of(words, src, tgt, dtype=torch.float32)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(reference_loss(words, src, tgt, 0.1), rel=1e-4, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), extra=st.integers(0, 8), k=st.integers(2, 6),
       temperature=st.sampled_from([0.05, 0.1, 0.5, 1.0]), seed=st.integers(0, 10_000))
def test_reference_property(n, extra, k, temperature, seed):
    rng = np.random.default_rng(seed)
    words, src, tgt = random_batch(rng, n, extra, k)
    got = loss_of(words, src, tgt, temperature)
    assert float(got) == pytest.approx(reference_loss(words, src, tgt, temperature), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("n,extra", [(1, 0), (2, 0), (3, 4), (8, 10)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_closed_form_orthonormal_words(n, extra, temperature):
    """Pairs e_i ↔ e_i among M = 2N + extra words, the unpaired ones orthonormal to every other
    word: each query has cosine 1 with its partner and 0 with the M−2 others, so the loss is
    log(1 + (M−2)·exp(−1/τ))."""
    d = n + extra
    basis = torch.eye(d, dtype=torch.float64)
    words = torch.cat([basis[:n], basis[:n], basis[n:]])  # sources, targets, unpaired words
    got = contrastive_alignment_loss(words, torch.arange(n), torch.arange(n, 2 * n), temperature)
    m = 2 * n + extra
    assert float(got) == pytest.approx(math.log1p((m - 2) * math.exp(-1 / temperature)), rel=1e-12)


def test_single_pair_without_other_words_has_zero_loss():
    """With N = 1 and no other word the partner is the only candidate once the query is masked."""
    got = aligned_only(torch.randn(1, 5), torch.randn(1, 5))
    assert float(got) == pytest.approx(0.0, abs=1e-6)


def test_more_candidates_never_lower_the_loss():
    """Adding a word to the candidates adds a positive term to every softmax denominator."""
    rng = np.random.default_rng(3)
    words, src, tgt = random_batch(rng, 4, 0, 6)
    smaller = float(loss_of(words, src, tgt))
    bigger = np.vstack([words, rng.normal(size=(3, 6))])
    assert float(loss_of(bigger, src, tgt)) > smaller


def test_symmetry_and_invariances():
    gen = torch.Generator().manual_seed(0)
    words = torch.randn(20, 10, generator=gen, dtype=torch.float64)
    src, tgt = torch.arange(0, 6), torch.arange(6, 12)
    base = contrastive_alignment_loss(words, src, tgt)
    # English→X and X→English enter symmetrically
    assert float(contrastive_alignment_loss(words, tgt, src)) == pytest.approx(float(base), rel=1e-12)
    # cosine: positive scaling of any vector changes nothing
    scale = torch.rand(20, 1, generator=gen, dtype=torch.float64) * 5 + 0.1
    assert float(contrastive_alignment_loss(words * scale, src, tgt)) == pytest.approx(float(base), rel=1e-10)
    # reordering the words (and the indices with them) changes nothing
    perm = torch.randperm(20, generator=gen)
    position = torch.argsort(perm)  # new row of old row r
    got = contrastive_alignment_loss(words[perm], position[src], position[tgt])
    assert float(got) == pytest.approx(float(base), rel=1e-10)
    # a common orthogonal map changes nothing
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    assert float(contrastive_alignment_loss(words @ q, src, tgt)) == pytest.approx(float(base), rel=1e-10)
    # but breaking the pairing does change it
    assert float(contrastive_alignment_loss(words, src, tgt[torch.randperm(6, generator=gen)])) \
        != pytest.approx(float(base), rel=1e-3)


def test_same_language_words_are_negatives():
    """A query whose same-language neighbour is closer than its partner pays for it: the loss
    sees negatives of its own language, not only of the other side."""
    src = torch.tensor([[1.0, 0.0], [0.99, 0.14]], dtype=torch.float64)  # two near-identical English words
    tgt = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    loss = float(aligned_only(src, tgt))
    words = torch.cat([src, tgt]).numpy()
    assert loss == pytest.approx(reference_loss(words, [0, 1], [2, 3], 0.1), rel=1e-10)
    assert loss > 5  # the same-language neighbour dominates the softmax


def test_gradients_flow_to_every_word():
    words = torch.randn(7, 8, requires_grad=True)
    contrastive_alignment_loss(words, torch.tensor([0, 1]), torch.tensor([4, 5])).backward()
    assert words.grad is not None
    assert (words.grad.abs().sum(dim=1) > 0).all()  # unpaired words get a gradient as negatives


@pytest.mark.parametrize("shape,src,tgt", [
    ((4,), [0], [1]),  # words not (M, k)
    ((4, 3), [0, 1], [2]),  # index lengths differ
    ((4, 3), [], []),  # no pair
    ((4, 3), [0], [4]),  # row out of range
    ((4, 3), [0, 1], [1, 2]),  # a row used twice
])
def test_bad_input_raises_value_error(shape, src, tgt):
    with pytest.raises(ValueError):
        contrastive_alignment_loss(torch.zeros(shape), torch.tensor(src, dtype=torch.long),
                                   torch.tensor(tgt, dtype=torch.long))


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        contrastive_alignment_loss(torch.randn(4, 3), torch.tensor([0]), torch.tensor([1]), temperature=0)


def test_head_architecture():
    head = RealignmentHead(32)
    linear = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(32, 32), (32, 128)]
    assert all(m.bias is None for m in linear)
    assert any(isinstance(m, torch.nn.ReLU) for m in head.modules())
    assert head(torch.randn(5, 32)).shape == (5, 128)
    with pytest.raises(ValueError):
        RealignmentHead(0)
