"""Tests for layerscope.probes (CKA, retrieval, drift): mathematics checked against independent numpy references.

The references below are written straight from the papers, in float64 numpy, with explicit
n × n matrices (centering matrix H = I - 11ᵀ/n, Song et al.'s unbiased HSIC formula term by
term, scipy distances for RBF) and share no code with the implementation, which uses
feature-space forms, U-centring and one-pass chunked Gram products instead.

Tolerances: CKA values lie in [-1, 1]; the implementation and the references agree to ~1e-13.
The bounds used (1e-10 mostly) leave room for the references themselves, which form
uncentred n × n products and so lose a few digits to cancellation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from layerscope.errors import LayerscopeError
from layerscope.probes import relative_weight_change
from layerscope.probes import retrieval_accuracy, retrieval_per_layer, shuffled_pairs
from layerscope.probes.cka import (
    MinibatchCKA,
    center_gram,
    cka_matrix,
    cka_per_layer,
    debiased_linear_cka,
    gram_linear,
    gram_rbf,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
    rbf_cka,
)

TOL = 1e-10


# --------------------------------------------------------------------------- references


def centering_matrix(n: int) -> np.ndarray:
    return np.eye(n) - np.ones((n, n)) / n


def ref_hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    n = k.shape[0]
    h = centering_matrix(n)
    return float(np.trace(k @ h @ l @ h) / (n - 1) ** 2)


def ref_hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012), eq. for HSIC_1, term by term."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def ref_cka_from_grams(k: np.ndarray, l: np.ndarray, debiased: bool = False) -> float:
    hsic = ref_hsic_unbiased if debiased else ref_hsic_biased
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def ref_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    return ref_cka_from_grams(x @ x.T, y @ y.T)


def ref_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    return ref_cka_from_grams(x @ x.T, y @ y.T, debiased=True)


def ref_rbf_gram(x: np.ndarray, sigma: float, bandwidth: str = "kornblith") -> np.ndarray:
    """Kornblith et al. (2019)'s reference RBF Gram, exp(-d² / (2 σ² median(d²))) with the median
    over the whole n × n matrix of squared distances (zero diagonal included); or, for "pairs",
    bandwidth σ × the median Euclidean distance over the pairs i < j (scipy)."""
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    if bandwidth == "kornblith":
        return np.exp(-sq / (2 * sigma**2 * np.median(sq)))
    width = sigma * np.median(pdist(x))
    return np.exp(-cdist(x, x, "sqeuclidean") / (2 * width**2))


def ref_rbf_cka(x: np.ndarray, y: np.ndarray, sigma: float = 1.0, debiased: bool = False,
                bandwidth: str = "kornblith") -> float:
    return ref_cka_from_grams(ref_rbf_gram(x, sigma, bandwidth), ref_rbf_gram(y, sigma, bandwidth), debiased)


def ref_retrieval(x, y, *, center=False, margin=False, k=4) -> tuple[float, float]:
    x, y = np.array(x, dtype=float), np.array(y, dtype=float)
    n = x.shape[0]
    if center:
        x, y = x - x.mean(0), y - y.mean(0)
    cos = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            cos[i, j] = x[i] @ y[j] / (np.linalg.norm(x[i]) * np.linalg.norm(y[j]))
    score = cos
    if margin:
        kk = min(k, n)
        r_x = np.sort(cos, axis=1)[:, -kk:].sum(1) / (2 * kk)  # NN_k(x_i) among the y's
        r_y = np.sort(cos, axis=0)[-kk:, :].sum(0) / (2 * kk)  # NN_k(y_j) among the x's
        score = cos / (r_x[:, None] + r_y[None, :])
    fwd = np.mean([np.argmax(score[i, :]) == i for i in range(n)])
    bwd = np.mean([np.argmax(score[:, j]) == j for j in range(n)])
    return float(fwd), float(bwd)


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def related_pair(rng: np.random.Generator, n: int, d1: int, d2: int, noise: float = 1.0):
    """x (n, d1) and y (n, d2) that share structure, plus an offset so centring matters."""
    x = rng.normal(size=(n, d1)) + 2.0
    y = np.tanh(x @ rng.normal(size=(d1, d2))) + noise * rng.normal(size=(n, d2)) - 1.0
    return x, y


REGIMES = [(12, 40, 30), (150, 8, 12), (20, 20, 20)]  # n < d, n > d, n == d
REGIME_IDS = ["n<d", "n>d", "n==d"]


# --------------------------------------------------------------------------- linear CKA


@pytest.mark.parametrize(("n", "d1", "d2"), REGIMES, ids=REGIME_IDS)
def test_linear_cka_matches_reference(n, d1, d2):
    rng = np.random.default_rng(n + d1)
    x, y = related_pair(rng, n, d1, d2)
    value = linear_cka(x, y)
    assert isinstance(value, float)
    assert value == pytest.approx(ref_linear_cka(x, y), abs=TOL)


@pytest.mark.parametrize(("n", "d1", "d2"), REGIMES, ids=REGIME_IDS)
def test_linear_cka_properties(n, d1, d2):
    rng = np.random.default_rng(7 * n + d2)
    x, y = related_pair(rng, n, d1, d2)
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-12)
    # orthogonal maps of either input
    assert linear_cka(x @ random_orthogonal(rng, d1), y) == pytest.approx(base, abs=TOL)
    assert linear_cka(x, y @ random_orthogonal(rng, d2)) == pytest.approx(base, abs=TOL)
    # isotropic scaling of either input, including extreme scales
    assert linear_cka(1e-150 * x, y) == pytest.approx(base, abs=TOL)
    assert linear_cka(x, 3e120 * y) == pytest.approx(base, abs=TOL)
    # translation
    assert linear_cka(x + 5.0, y - rng.normal(size=d2)) == pytest.approx(base, abs=TOL)


def test_linear_cka_not_invariant_to_general_linear_maps():
    rng = np.random.default_rng(3)
    x, y = related_pair(rng, 200, 10, 10)
    # invertible but far from orthogonal: rotate, then stretch the axes unevenly
    a = random_orthogonal(rng, 10) @ np.diag(np.geomspace(0.05, 20.0, 10))
    assert abs(np.linalg.det(a)) > 1e-6
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 1e-2


def test_linear_cka_both_forms_agree_across_the_switch():
    rng = np.random.default_rng(11)
    x, y = related_pair(rng, 30, 29, 31)  # feature form for (x, x[:, :29]), Gram form with y
    assert linear_cka(x, y) == pytest.approx(ref_linear_cka(x, y), abs=TOL)
    assert linear_cka(x, x[:, :20]) == pytest.approx(ref_linear_cka(x, x[:, :20]), abs=TOL)


# --------------------------------------------------------------------------- HSIC and Grams


def test_hsic_estimators_match_reference():
    rng = np.random.default_rng(5)
    x, y = related_pair(rng, 25, 6, 9)
    k, l = x @ x.T, np.exp(-cdist(y, y, "sqeuclidean") / 10)
    # HSIC values scale with the Gram entries (~1e2 here); compare relatively
    assert hsic_biased(k, l) == pytest.approx(ref_hsic_biased(k, l), rel=1e-10)
    assert hsic_unbiased(k, l) == pytest.approx(ref_hsic_unbiased(k, l), rel=1e-9)
    assert hsic_unbiased(k, k) == pytest.approx(ref_hsic_unbiased(k, k), rel=1e-9)


def test_center_gram_matches_reference():
    rng = np.random.default_rng(6)
    x, y = related_pair(rng, 15, 4, 5)
    k, l = x @ x.T, y @ y.T
    h = centering_matrix(15)
    np.testing.assert_allclose(center_gram(k).numpy(), h @ k @ h, atol=1e-10)
    # the U-centred inner product is the unbiased HSIC (Székely & Rizzo 2014)
    uk, ul = center_gram(k, unbiased=True).numpy(), center_gram(l, unbiased=True).numpy()
    assert np.all(np.diag(uk) == 0)
    assert (uk * ul).sum() / (15 * 12) == pytest.approx(ref_hsic_unbiased(k, l), rel=1e-9)


def test_gram_functions_match_reference():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(17, 5)) + 1.0
    lin = gram_linear(x)
    assert lin.dtype == torch.float64 and lin.shape == (17, 17)
    np.testing.assert_allclose(lin.numpy(), x @ x.T, rtol=1e-12)
    for sigma in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(gram_rbf(x, sigma).numpy(), ref_rbf_gram(x, sigma), atol=1e-12)
        np.testing.assert_allclose(gram_rbf(x, sigma, bandwidth="pairs").numpy(),
                                   ref_rbf_gram(x, sigma, "pairs"), atol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 4, 9, 16, 17])
def test_gram_rbf_default_median_is_over_the_whole_matrix(n):
    """The default bandwidth's median counts the n zeros of the diagonal and every pair twice;
    n even and odd give n² even and odd, i.e. numpy's two-middle-value mean or its middle value."""
    rng = np.random.default_rng(100 + n)
    x = rng.normal(size=(n, 3)) * rng.uniform(0.1, 3.0, size=(n, 1))
    np.testing.assert_allclose(gram_rbf(x).numpy(), ref_rbf_gram(x, 1.0), atol=1e-12)


def test_rbf_bandwidth_conventions_differ_and_unknown_rule_is_refused():
    rng = np.random.default_rng(12)
    x, y = related_pair(rng, 30, 5, 8)
    kornblith, pairs = rbf_cka(x, y), rbf_cka(x, y, bandwidth="pairs")
    assert kornblith == pytest.approx(ref_rbf_cka(x, y), abs=TOL)
    assert pairs == pytest.approx(ref_rbf_cka(x, y, bandwidth="pairs"), abs=TOL)
    assert abs(kornblith - pairs) > 1e-5  # so the test above can tell the conventions apart
    for rule, value in (("kornblith", kornblith), ("pairs", pairs)):  # the stack functions pass the rule on
        assert float(cka_matrix(x[None], y[None], method="rbf", bandwidth=rule)[0, 0]) == pytest.approx(value, abs=TOL)
        assert float(cka_per_layer(x[None], y[None], method="rbf", bandwidth=rule)[0]) == pytest.approx(value, abs=TOL)
    with pytest.raises(LayerscopeError, match=r"unknown RBF bandwidth rule 'median'; choose one of 'kornblith', 'pairs'"):
        rbf_cka(x, y, bandwidth="median")


# --------------------------------------------------------------------------- debiased CKA


@pytest.mark.parametrize(("n", "d1", "d2"), REGIMES, ids=REGIME_IDS)
def test_debiased_cka_matches_reference(n, d1, d2):
    rng = np.random.default_rng(100 + n)
    x, y = related_pair(rng, n, d1, d2)
    x -= 2.0  # keep the uncentred reference accurate (see module docstring)
    assert debiased_linear_cka(x, y) == pytest.approx(ref_debiased_cka(x, y), abs=TOL)


@pytest.mark.parametrize(("n", "d1", "d2"), REGIMES, ids=REGIME_IDS)
def test_debiased_cka_properties(n, d1, d2):
    rng = np.random.default_rng(200 + n)
    x, y = related_pair(rng, n, d1, d2)
    base = debiased_linear_cka(x, y)
    assert debiased_linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert debiased_linear_cka(y, x) == pytest.approx(base, abs=1e-12)
    assert debiased_linear_cka(x @ random_orthogonal(rng, d1), 4.0 * y) == pytest.approx(base, abs=TOL)
    # the U-statistic is exactly invariant to translation (adding a constant vector to the rows)
    assert debiased_linear_cka(x + 3.0, y - 7.0) == pytest.approx(base, abs=TOL)


def test_independent_gaussian_features_published_values():
    """Kornblith et al. / Murphy et al.: for independent 768-d Gaussian features plain linear
    CKA is ≈0.93 at n=64 and ≈0.43 at n=1000; debiased CKA is ≈0 at both. The bounds allow
    for seed-to-seed spread (std ≈ 0.005 at n=64 for the plain value)."""
    rng = np.random.default_rng(2024)
    x, y = rng.normal(size=(64, 768)), rng.normal(size=(64, 768))
    assert linear_cka(x, y) > 0.8
    assert abs(debiased_linear_cka(x, y)) < 0.1
    x, y = rng.normal(size=(1000, 768)), rng.normal(size=(1000, 768))
    assert 0.38 < linear_cka(x, y) < 0.48
    assert abs(debiased_linear_cka(x, y)) < 0.05


# --------------------------------------------------------------------------- RBF CKA


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("bandwidth", ["kornblith", "pairs"])
def test_rbf_cka_matches_reference(sigma, debiased, bandwidth):
    rng = np.random.default_rng(int(10 * sigma) + debiased)
    x, y = related_pair(rng, 40, 6, 15)
    expected = ref_rbf_cka(x, y, sigma, debiased, bandwidth)
    assert rbf_cka(x, y, sigma=sigma, debiased=debiased, bandwidth=bandwidth) == pytest.approx(expected, abs=TOL)


def test_rbf_cka_properties():
    rng = np.random.default_rng(9)
    x, y = related_pair(rng, 50, 7, 11)
    base = rbf_cka(x, y)
    assert rbf_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(y, x) == pytest.approx(base, abs=1e-12)
    assert rbf_cka(x @ random_orthogonal(rng, 7), y) == pytest.approx(base, abs=TOL)
    # the bandwidth follows the median distance, so isotropic scaling and translation cancel
    assert rbf_cka(1e-3 * x, 1e4 * y + 2.0) == pytest.approx(base, abs=TOL)
    # but the kernel width relative to the median does matter
    assert abs(rbf_cka(x, y, sigma=0.2) - base) > 1e-3


def test_rbf_cka_with_a_tight_cluster_uses_exact_distances():
    """Median distance ≪ norms: ‖a‖² + ‖b‖² - 2aᵀb would cancel catastrophically, so the
    implementation switches to exact differences; it must still match scipy's distances."""
    rng = np.random.default_rng(10)
    x = np.vstack([1e-6 * rng.normal(size=(30, 4)), rng.normal(size=(5, 4))])
    y = np.vstack([1e-6 * rng.normal(size=(30, 3)), rng.normal(size=(5, 3))]) + x[:, :3]
    for debiased in (False, True):
        assert rbf_cka(x, y, debiased=debiased) == pytest.approx(ref_rbf_cka(x, y, 1.0, debiased), abs=1e-9)
    np.testing.assert_allclose(gram_rbf(x).numpy(), ref_rbf_gram(x, 1.0), atol=1e-9)


def test_constant_columns_are_dropped_exactly():
    """A constant column centres to exactly 0, even when its rounded mean is off by an ulp."""
    rng = np.random.default_rng(12)
    x, y = related_pair(rng, 7, 3, 4)
    padded = np.hstack([x, np.full((7, 1), 7.28779343e-122)])
    assert linear_cka(padded, y) == pytest.approx(linear_cka(x, y), abs=1e-14)
    assert debiased_linear_cka(padded, y) == pytest.approx(debiased_linear_cka(x, y), abs=1e-12)


# --------------------------------------------------------------------------- CKA matrices


def stacks(seed: int = 0):
    """a (3, 30, 8) and b (4, 30, 40): b[1] is a function of a[0]; n > d1 but n < d2."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, 30, 8)) + 1.0
    b = rng.normal(size=(4, 30, 40))
    b[1] = np.tanh(a[0] @ rng.normal(size=(8, 40))) + 0.3 * b[1]
    return a, b


SCALAR = {"linear": linear_cka, "debiased": debiased_linear_cka, "rbf": rbf_cka}


@pytest.mark.parametrize("method", ["linear", "debiased", "rbf"])
def test_cka_matrix_equals_pairwise_loop(method):
    a, b = stacks()
    matrix = cka_matrix(torch.tensor(a, dtype=torch.float32), b, method=method)
    assert matrix.shape == (3, 4) and matrix.dtype == torch.float64
    a32 = a.astype(np.float32).astype(np.float64)  # what the float32 input really holds
    loop = np.array([[SCALAR[method](a32[i], b[j]) for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(matrix.numpy(), loop, atol=TOL)


@pytest.mark.parametrize("method", ["linear", "debiased", "rbf"])
def test_cka_matrix_matches_reference(method):
    a, b = stacks(1)
    a -= 1.0
    ref = {"linear": ref_linear_cka, "debiased": ref_debiased_cka, "rbf": ref_rbf_cka}[method]
    expected = np.array([[ref(a[i], b[j]) for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(cka_matrix(a, b, method=method).numpy(), expected, atol=TOL)


@pytest.mark.parametrize("method", ["linear", "debiased", "rbf"])
@pytest.mark.parametrize("chunk_size", [1, 7, 29])
def test_cka_matrix_row_chunks_give_the_same_result(method, chunk_size):
    a, b = stacks(2)
    full = cka_matrix(a, b, method=method)
    chunked = cka_matrix(a, b, method=method, chunk_size=chunk_size)
    np.testing.assert_allclose(chunked.numpy(), full.numpy(), atol=1e-12)


@pytest.mark.parametrize("method", ["linear", "debiased", "rbf"])
def test_cka_matrix_diagonal_equals_per_layer(method):
    a, b = stacks(3)
    b = b[:3, :, :]
    per_layer = cka_per_layer(a, b, method=method)
    assert per_layer.shape == (3,) and per_layer.dtype == torch.float64
    np.testing.assert_allclose(per_layer.numpy(), torch.diagonal(cka_matrix(a, b, method=method)).numpy(), atol=TOL)
    # feature-space (n > d) forms too
    a2, b2 = a[:, :, :5], b[:, :, :6]
    np.testing.assert_allclose(
        cka_per_layer(a2, b2, method=method).numpy(),
        torch.diagonal(cka_matrix(a2, b2, method=method)).numpy(),
        atol=TOL,
    )


def test_cka_matrix_of_a_stack_with_itself():
    a, _ = stacks(4)
    matrix = cka_matrix(a, a)
    np.testing.assert_allclose(torch.diagonal(matrix).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix.numpy(), matrix.numpy().T, atol=1e-12)
    np.testing.assert_allclose(matrix.numpy(), cka_matrix(a, a.copy()).numpy(), atol=1e-12)


# --------------------------------------------------------------------------- minibatch CKA


def minibatches(seed: int, sizes=(12, 9, 20)):
    rng = np.random.default_rng(seed)
    out = []
    for m in sizes:
        a = rng.normal(size=(2, m, 6))
        b = rng.normal(size=(3, m, 15))
        b[0] = a[1] @ rng.normal(size=(6, 15)) + 0.5 * b[0]
        out.append((a, b))
    return out


def test_minibatch_cka_equals_summed_hsic_reference():
    batches = minibatches(0)
    cka = MinibatchCKA(2, 3)
    for a, b in batches:
        cka.update(torch.tensor(a), b)
    result = cka.compute()
    assert result.shape == (2, 3) and result.dtype == torch.float64
    # reference: sum unbiased HSIC over batches, divide once (Nguyen et al. 2021, eq. 3)
    cross, self_a, self_b = np.zeros((2, 3)), np.zeros(2), np.zeros(3)
    for a, b in batches:
        for i in range(2):
            self_a[i] += ref_hsic_unbiased(a[i] @ a[i].T, a[i] @ a[i].T)
            for j in range(3):
                cross[i, j] += ref_hsic_unbiased(a[i] @ a[i].T, b[j] @ b[j].T)
        for j in range(3):
            self_b[j] += ref_hsic_unbiased(b[j] @ b[j].T, b[j] @ b[j].T)
    expected = cross / np.sqrt(np.outer(self_a, self_b))
    np.testing.assert_allclose(result.numpy(), expected, atol=TOL)
    # and this is not the mean of the per-batch ratios
    per_batch = np.mean([[[ref_debiased_cka(a[i], b[j]) for j in range(3)] for i in range(2)] for a, b in batches], 0)
    assert np.abs(per_batch - expected).max() > 1e-3
    assert cka.num_batches == 3 and cka.num_examples == 41


def test_minibatch_cka_single_batch_equals_debiased_cka():
    (a, b), = minibatches(1, sizes=(25,))
    result = MinibatchCKA(2, 3).update(a, b).compute()
    expected = np.array([[debiased_linear_cka(a[i], b[j]) for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(result.numpy(), expected, atol=TOL)
    np.testing.assert_allclose(result.numpy(), cka_matrix(a, b).numpy(), atol=TOL)


def test_minibatch_cka_with_far_more_features_than_rows():
    """Token-level features (d ≫ m) with a large common offset: centring the Grams must match
    centring the features first (HSIC_u is translation-invariant, so the float64 reference on
    explicit Grams of centred features is the exact value up to rounding). Without any
    centring, the offset alone costs about 1e-5 here."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(2, 12, 3000)) + 50.0
    b = a[::-1] @ rng.normal(size=(3000, 2500)) / 50 + rng.normal(size=(2, 12, 2500)) - 20.0
    result = MinibatchCKA(2, 2).update(a, b).compute().numpy()
    centred = np.array([[ref_debiased_cka(a[i] - a[i].mean(0), b[j] - b[j].mean(0)) for j in range(2)]
                        for i in range(2)])
    np.testing.assert_allclose(result, centred, atol=1e-12)
    uncentred = np.array([[ref_debiased_cka(a[i], b[j]) for j in range(2)] for i in range(2)])
    assert np.abs(uncentred - centred).max() > 1e-7


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_minibatch_cka_refuses_non_finite_batches(bad):
    a, b = minibatches(3, sizes=(8,))[0]
    b = b.copy()
    b[2, 5, 7] = bad
    with pytest.raises(LayerscopeError, match=r"b_batch contains NaN or Inf \(shape \(3, 8, 15\)\)"):
        MinibatchCKA(2, 3).update(a, b)


def test_minibatch_cka_errors_and_reset():
    cka = MinibatchCKA(2, 3)
    with pytest.raises(LayerscopeError, match="before any update"):
        cka.compute()
    a, b = minibatches(2, sizes=(8,))[0]
    with pytest.raises(LayerscopeError, match=r"b_batch must have 3 layers, got shape \(2, 8, 15\)"):
        cka.update(a, b[:2])
    with pytest.raises(LayerscopeError, match=r"n >= 4.*\(2, 3, 6\)"):
        cka.update(a[:, :3], b[:, :3])
    cka.update(a, b)
    with pytest.raises(LayerscopeError, match="feature sizes changed"):
        cka.update(a[:, :, :4], b)
    cka.reset()
    assert cka.num_batches == 0
    with pytest.raises(LayerscopeError, match="num_layers_a must be a positive integer"):
        MinibatchCKA(0, 2)


# --------------------------------------------------------------------------- retrieval


def test_retrieval_identical_inputs_and_shared_rotation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 32))
    q = random_orthogonal(rng, 32)
    for center in (False, True):
        for margin in (False, True):
            assert retrieval_accuracy(x, x, center=center, margin=margin) == (1.0, 1.0)
            # cosines are preserved when both languages are rotated by the same Q
            assert retrieval_accuracy(x @ q, x @ q, center=center, margin=margin) == (1.0, 1.0)
    y = x + 2.0 * rng.normal(size=(100, 32))
    assert retrieval_accuracy(x @ q, y @ q) == retrieval_accuracy(x, y)
    assert retrieval_accuracy(x, y)[0] < 1.0
    # rotating only ONE side is not a symmetry of cosine retrieval: y = x @ Q is not retrieved
    assert max(retrieval_accuracy(x, x @ q)) < 0.2


def test_retrieval_matches_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 16)) + 0.5
    y = x + 1.2 * rng.normal(size=(60, 16))  # noisy enough that accuracy is well below 1
    for center in (False, True):
        for margin in (False, True):
            got = retrieval_accuracy(x, y, center=center, margin=margin, k=3)
            assert got == pytest.approx(ref_retrieval(x, y, center=center, margin=margin, k=3), abs=1e-12)
    assert retrieval_accuracy(x, y)[0] < 0.9


def test_retrieval_chance_level_for_unrelated_pairs():
    rng = np.random.default_rng(2)
    n = 200
    x, y = rng.normal(size=(n, 64)), rng.normal(size=(n, 64))
    assert max(retrieval_accuracy(x, y)) < 0.05
    # shuffled translations: y is a near-perfect translation of x, but rows are mispaired
    translation = x + 0.1 * rng.normal(size=(n, 64))
    assert retrieval_accuracy(x, translation) == (1.0, 1.0)
    perm = shuffled_pairs(n, torch.Generator().manual_seed(0))
    assert max(retrieval_accuracy(x, translation[perm.numpy()])) < 0.05


def test_retrieval_centering_removes_a_language_offset():
    rng = np.random.default_rng(3)
    n, d = 200, 64
    shared = rng.normal(size=(n, d))
    offset = 30.0 * rng.normal(size=d)  # the language-identity component of y
    x = shared + 0.3 * rng.normal(size=(n, d))
    y = shared + offset + 0.3 * rng.normal(size=(n, d))
    plain = retrieval_accuracy(x, y)
    centred = retrieval_accuracy(x, y, center=True)
    assert centred[0] >= plain[0] and centred[1] >= plain[1]
    assert centred == (1.0, 1.0)
    assert plain[1] < 0.5  # the offset really does hurt without centring


def test_margin_scoring_beats_cosine_on_a_hub():
    rng = np.random.default_rng(4)
    n, d = 100, 64
    common = np.zeros(d)
    common[0] = math.sqrt(d)
    z = rng.normal(size=(n, d))
    x = common + z
    y = common + z + 1.5 * rng.normal(size=(n, d))
    y[0] = common  # the hub: cos ≈ 0.71 to every x, above most true translations (≈ 0.69)
    plain = retrieval_accuracy(x, y)
    margin = retrieval_accuracy(x, y, margin=True)
    assert plain[0] < 0.5
    assert margin[0] > 0.85
    assert margin[0] >= plain[0] + 0.4


def test_retrieval_ties_go_to_the_first_index():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    # x_2 ties between y_0 and y_2 -> y_0 (wrong); y_2 ties between x_0 and x_2 -> x_0 (wrong)
    assert retrieval_accuracy(x, y) == pytest.approx((2 / 3, 2 / 3))


def test_retrieval_per_layer_equals_loop():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 40, 12))
    b = a + np.linspace(0.2, 2.0, 4)[:, None, None] * rng.normal(size=(4, 40, 12)) + 1.0
    for center in (False, True):
        for margin in (False, True):
            out = retrieval_per_layer(torch.tensor(a, dtype=torch.float32), b, center=center, margin=margin)
            assert out.shape == (4, 2) and out.dtype == torch.float64
            a32 = a.astype(np.float32).astype(np.float64)
            loop = [retrieval_accuracy(a32[i], b[i], center=center, margin=margin) for i in range(4)]
            np.testing.assert_allclose(out.numpy(), np.array(loop), atol=1e-12)


# --------------------------------------------------------------------------- baselines, drift


def test_shuffled_pairs_is_a_reproducible_derangement():
    for n in (2, 3, 10, 500):
        perm = shuffled_pairs(n, torch.Generator().manual_seed(n))
        assert perm.dtype == torch.int64
        assert sorted(perm.tolist()) == list(range(n))
        assert not bool((perm == torch.arange(n)).any())
    first = shuffled_pairs(50, torch.Generator().manual_seed(1))
    assert torch.equal(first, shuffled_pairs(50, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, shuffled_pairs(50, torch.Generator().manual_seed(2)))
    assert shuffled_pairs(2, torch.Generator()).tolist() == [1, 0]
    with pytest.raises(LayerscopeError, match="n >= 2, got 1"):
        shuffled_pairs(1, torch.Generator())


def test_relative_weight_change():
    a = {"w": torch.tensor([[3.0, 0.0], [0.0, 4.0]]), "b": torch.zeros(2), "ids": torch.arange(3)}
    assert relative_weight_change(a, {k: v.clone() for k, v in a.items()}) == 0.0
    # ‖W_a‖ = 5; differences 1 (in w) and 2 (in b) -> sqrt(1 + 4) / 5; integer buffers ignored
    b = {
        "w": torch.tensor([[3.0, 1.0], [0.0, 4.0]], dtype=torch.float16),
        "b": torch.tensor([0.0, -2.0], dtype=torch.float64),
        "ids": torch.arange(3) + 7,
    }
    assert relative_weight_change(a, b) == pytest.approx(math.sqrt(5) / 5, abs=1e-15)


def test_relative_weight_change_errors():
    a = {"w": torch.ones(2, 2), "x": torch.ones(1)}
    with pytest.raises(LayerscopeError, match="missing from state_b: x; missing from state_a: y"):
        relative_weight_change(a, {"w": torch.ones(2, 2), "y": torch.ones(1)})
    with pytest.raises(LayerscopeError, match=r"'w' has shape \(2, 2\) in state_a but \(4,\) in state_b"):
        relative_weight_change(a, {"w": torch.ones(4), "x": torch.ones(1)})
    with pytest.raises(LayerscopeError, match="norm 0"):
        relative_weight_change({"w": torch.zeros(3)}, {"w": torch.ones(3)})


# --------------------------------------------------------------------------- validation, dtypes


def test_inputs_and_return_types():
    rng = np.random.default_rng(6)
    x, y = related_pair(rng, 30, 5, 7)
    expected = linear_cka(x, y)
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == expected
    # float32 input is computed in float64: exact reference on the float32 values
    x32 = x.astype(np.float32)
    assert linear_cka(torch.from_numpy(x32), y) == pytest.approx(ref_linear_cka(x32.astype(np.float64), y), abs=1e-13)
    assert isinstance(debiased_linear_cka(x, y), float)
    assert isinstance(rbf_cka(x, y), float)
    acc = retrieval_accuracy(x, x)
    assert isinstance(acc, tuple) and all(isinstance(v, float) for v in acc)


X10 = np.arange(40.0).reshape(10, 4) % 7


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear_cka(X10, X10[:9]), r"x and y must have the same number of rows, got (10, 4) and (9, 4)"),
        (lambda: debiased_linear_cka(X10, X10[:9]), r"got (10, 4) and (9, 4)"),
        (lambda: retrieval_accuracy(X10, X10[:9]), r"got (10, 4) and (9, 4)"),
        (lambda: linear_cka(X10[:, 0], X10), r"x must be a 2-D matrix of shape (n, d), got shape (10,)"),
        (lambda: rbf_cka(X10, X10[0]), r"y must be a 2-D matrix of shape (n, d), got shape (4,)"),
        (lambda: debiased_linear_cka(X10[:3], X10[:3]), r"debiased CKA needs at least 4 rows (n >= 4), got x of shape (3, 4)"),
        (lambda: retrieval_accuracy(X10[:1], X10[:1]), r"retrieval needs at least 2 rows (n >= 2), got x of shape (1, 4)"),
        (lambda: linear_cka(X10[:1], X10[:1]), r"n >= 2"),
        (lambda: hsic_unbiased(np.eye(3), np.eye(3)), r"n >= 4"),
        (lambda: linear_cka(np.where(X10 == 3, np.nan, X10), X10), r"x contains NaN or Inf"),
        (lambda: debiased_linear_cka(X10, np.where(X10 == 3, np.inf, X10)), r"y contains NaN or Inf"),
        (lambda: retrieval_accuracy(X10, np.where(X10 == 3, np.nan, X10)), r"y contains NaN or Inf"),
        (lambda: linear_cka(np.ones((10, 4)), X10), r"x is constant (all 10 rows are the same)"),
        (lambda: retrieval_accuracy(X10, X10[:, :3]), r"same number of columns, got (10, 4) and (10, 3)"),
        (lambda: rbf_cka(X10, X10, sigma=0), r"sigma must be a positive number"),
        (lambda: retrieval_accuracy(X10, X10, k=0), r"k must be a positive integer"),
        (lambda: hsic_biased(np.ones((3, 4)), np.ones((3, 4))), r"square Gram matrix of shape (n, n), got (3, 4)"),
        (lambda: hsic_biased(np.triu(np.ones((4, 4))), np.eye(4)), r"k must be symmetric"),
        (lambda: linear_cka(np.array([["a"]]), X10), r"x must hold real numbers"),
    ],
)
def test_error_messages(call, message):
    with pytest.raises(LayerscopeError) as info:
        call()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_stack_error_messages():
    a, b = stacks()
    with pytest.raises(LayerscopeError, match=r"a and b must have the same number of rows, got \(3, 30, 8\) and \(4, 29, 40\)"):
        cka_matrix(a, b[:, :29])
    with pytest.raises(LayerscopeError, match=r"a must be a 3-D layer stack of shape \(L, n, d\), got shape \(30, 8\)"):
        cka_matrix(a[0], b)
    with pytest.raises(LayerscopeError, match=r"same number of layers, got \(3, 30, 8\) and \(4, 30, 40\)"):
        cka_per_layer(a, b)
    with pytest.raises(LayerscopeError, match=r"unknown CKA method 'debaised' \(did you mean 'debiased'\?\); choose one of 'linear', 'debiased', 'rbf'"):
        cka_matrix(a, b, method="debaised")
    c = b.copy()
    c[2] = 1.0
    with pytest.raises(LayerscopeError, match="layer 2 of b is constant"):
        cka_matrix(a, c)
    with pytest.raises(LayerscopeError, match=r"chunk_size must be a positive integer"):
        cka_matrix(a, b, chunk_size=0)


def test_margin_with_non_positive_neighbourhoods_is_refused():
    x = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    with pytest.raises(LayerscopeError, match="ratio-margin scoring needs a positive mean similarity"):
        retrieval_accuracy(x, -x, margin=True, k=4)
