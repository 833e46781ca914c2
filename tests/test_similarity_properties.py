"""Property-based tests for the similarity measures of layerscope.probes (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from layerscope.errors import LayerscopeError
from layerscope.probes import linear_cka
from layerscope.probes import retrieval_accuracy

VALUES = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def paired_arrays(draw, same_dim: bool = False, elements=VALUES, rows=(5, 30), max_dim: int = 10):
    """Two matrices (n, d1), (n, d2) with the same rows (d1 = d2 when ``same_dim``)."""
    n = draw(st.integers(*rows))
    d1 = draw(st.integers(1, max_dim))
    d2 = d1 if same_dim else draw(st.integers(1, max_dim))
    x = draw(arrays(np.float64, (n, d1), elements=elements))
    y = draw(arrays(np.float64, (n, d2), elements=elements))
    return x, y


def is_constant(a: np.ndarray) -> bool:
    return bool(np.all(a == a[0]))


@settings(max_examples=40, deadline=None)
@given(paired_arrays())
def test_linear_cka_is_bounded_and_symmetric(pair):
    x, y = pair
    if is_constant(x) or is_constant(y):
        # every row the same: CKA is 0/0, reported as an error rather than NaN
        with pytest.raises(LayerscopeError, match="is constant"):
            linear_cka(x, y)
        return
    value = linear_cka(x, y)
    assert -1e-9 <= value <= 1 + 1e-9
    assert linear_cka(y, x) == pytest.approx(value, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(paired_arrays(same_dim=True), st.booleans())
def test_retrieval_accuracies_are_fractions(pair, center):
    x, y = pair
    n = x.shape[0]
    for value in retrieval_accuracy(x, y, center=center):
        assert 0.0 <= value <= 1.0
        assert (value * n) == pytest.approx(round(value * n))  # a count of correct queries


# Invariances under hypothesis (test_similarity.py checks them on three fixed regimes only).
# Entries are multiples of 1/8 in [-8, 8]: exact in floating point, so a "constant" input is
# exactly constant and rounding is the only source of difference.
GRID = st.integers(-64, 64).map(lambda k: k / 8)


def grid_pair(same_dim: bool = False):
    return paired_arrays(same_dim=same_dim, elements=GRID, rows=(6, 24), max_dim=8)


def _orthogonal(seed: int, d: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@settings(max_examples=40, deadline=None)
@given(grid_pair(), st.integers(0, 2**16), st.floats(1e-3, 1e3), st.floats(-50, 50))
def test_linear_cka_invariant_to_rotation_scale_and_shift(pair, seed, scale, shift):
    x, y = pair
    if is_constant(x) or is_constant(y):
        return
    value = linear_cka(x, y)
    moved = scale * (x @ _orthogonal(seed, x.shape[1])) + shift
    assert linear_cka(moved, y) == pytest.approx(value, abs=1e-6)
    assert linear_cka(y, moved) == pytest.approx(value, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(grid_pair(), st.booleans())
def test_rbf_cka_is_bounded_and_symmetric(pair, debiased):
    from layerscope.probes import rbf_cka

    x, y = pair
    try:
        value = rbf_cka(x, y, debiased=debiased)
    except LayerscopeError as exc:  # constant input, or no positive pairwise distance for a bandwidth
        assert "constant" in str(exc) or "distance" in str(exc) or "bandwidth" in str(exc), str(exc)
        return
    assert np.isfinite(value)
    if not debiased:  # the unbiased estimator is not clipped to [0, 1]
        assert -1e-9 <= value <= 1 + 1e-9
    assert rbf_cka(y, x, debiased=debiased) == pytest.approx(value, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(grid_pair(same_dim=True), st.integers(1, 6))
def test_margin_retrieval_is_a_fraction_or_refused(pair, k):
    x, y = pair
    n = x.shape[0]
    try:
        values = retrieval_accuracy(x, y, margin=True, k=k)
    except LayerscopeError as exc:  # the margin needs positive neighbourhood similarities
        assert "margin" in str(exc), str(exc)
        return
    for value in values:
        assert 0.0 <= value <= 1.0 and (value * n) == pytest.approx(round(value * n))
