"""Property-based tests for layerscope.similarity (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from layerscope.errors import LayerscopeError
from layerscope.similarity import linear_cka, retrieval_accuracy

VALUES = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def paired_arrays(draw, same_dim: bool = False):
    n = draw(st.integers(5, 30))
    d1 = draw(st.integers(1, 10))
    d2 = d1 if same_dim else draw(st.integers(1, 10))
    x = draw(arrays(np.float64, (n, d1), elements=VALUES))
    y = draw(arrays(np.float64, (n, d2), elements=VALUES))
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
