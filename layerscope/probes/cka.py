"""Centred kernel alignment (CKA): every variant, its Gram and HSIC functions, minibatch CKA.

Pure functions on tensors; nothing here knows about models or files.

Shapes and dtypes
-----------------
A representation is a matrix of shape (n, d): n examples (sentences, words) by d features.
A layer stack is of shape (L, n, d). Every public function accepts torch tensors or numpy
arrays of any real dtype, validates them once (raising :class:`LayerscopeError` with the
shapes in the message), and then computes in float64 on the device of the input. Scalar
metrics are returned as Python floats, matrices as float64 tensors.

Definitions used throughout
---------------------------
* Biased HSIC: ``HSIC_b(K, L) = tr(K H L H) / (n - 1)^2`` with ``H = I - 11ᵀ/n``.
* Unbiased HSIC (Song et al. 2012), with ``K̃, L̃`` the Grams with zeroed diagonals::

      HSIC_u(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1] / (n(n-3))

  It equals ``<U(K), U(L)> / (n(n-3))`` where ``U`` is the U-centring of Székely & Rizzo
  (2014), so ``HSIC_u(K, K) >= 0``; ``HSIC_u(K, L)`` itself can be slightly negative.
* CKA (Kornblith et al. 2019): ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. Linear CKA uses
  ``K = XXᵀ`` of column-centred X, i.e. ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)``; debiased CKA uses
  ``HSIC_u``. Both are invariant to orthogonal maps, isotropic scaling and translation.

CKA is undefined for a constant input (every row the same); that raises an error rather than
returning NaN. Inputs are column-centred and divided by their largest entry before any
product is formed (CKA is invariant to both), so neither overflow nor underflow occurs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import LayerscopeError
from ._checks import (
    ArrayLike,
    _array,
    _check_bandwidth,
    _check_chunk,
    _check_finite,
    _check_method,
    _check_sigma,
    _shape,
    _validated_gram,
    _validated_grams,
    _validated_pair,
)
from ._gram import (
    _bandwidths,
    _centre_scale,
    _centred_linear_grams,
    _cka_from_grams,
    _debiased_cka,
    _h_centre,
    _kernel_rows,
    _linear_cka,
    _rbf_sq_norms,
    _u_centre,
    _unbiased_gram_terms,
)

__all__ = [
    "linear_cka",
    "debiased_linear_cka",
    "rbf_cka",
    "hsic_biased",
    "hsic_unbiased",
    "gram_linear",
    "gram_rbf",
    "center_gram",
    "cka_matrix",
    "cka_per_layer",
    "MinibatchCKA",
]

# --------------------------------------------------------------------------- public: Grams


def gram_linear(x: ArrayLike) -> Tensor:
    """Linear Gram matrix ``K = XXᵀ`` (not centred).

    Parameters
    ----------
    x : tensor or array of shape (n, d)

    Returns
    -------
    float64 tensor of shape (n, n)
    """
    tx = _array(x, "x", 2)
    _check_finite(tx, "x")
    return tx @ tx.T


def gram_rbf(x: ArrayLike, sigma: float = 1.0, *, bandwidth: str = "kornblith") -> Tensor:
    """RBF Gram matrix ``K_ij = exp(-‖x_i - x_j‖² / (2 b²))``.

    By default (``bandwidth="kornblith"``) ``b² = sigma² × median(D²)`` with the median over the
    whole n × n matrix D² of squared distances, diagonal zeros included: the ``gram_rbf(x,
    threshold)`` of Kornblith et al.'s reference code with ``threshold = sigma``. With
    ``bandwidth="pairs"``, ``b = sigma × median Euclidean distance over the pairs i < j``.

    Parameters
    ----------
    x : tensor or array of shape (n, d), n >= 2
    sigma : float, default 1.0
        Bandwidth as a multiple of the median (squared) distance's scale.
    bandwidth : {"kornblith", "pairs"}, default "kornblith"
        Which median sets the bandwidth (see above).

    Returns
    -------
    float64 tensor of shape (n, n), ones on the diagonal.
    """
    sigma = _check_sigma(sigma)
    bandwidth = _check_bandwidth(bandwidth)
    tx = _array(x, "x", 2)
    if tx.shape[0] < 2:
        raise LayerscopeError(f"an RBF Gram needs at least 2 rows (n >= 2), got x of shape {_shape(tx)}")
    _check_finite(tx, "x")
    xs = _centre_scale(tx, "x")[None]
    bw = _bandwidths(xs, sigma, "x", bandwidth)
    n = tx.shape[0]
    return _kernel_rows(xs, 0, n, kernel="rbf", sq_norms=_rbf_sq_norms(xs, bw), bandwidth=bw, zero_diag=False)[0]


def center_gram(k: ArrayLike, *, unbiased: bool = False) -> Tensor:
    """Centre a Gram matrix.

    Parameters
    ----------
    k : tensor or array of shape (n, n), symmetric
    unbiased : bool, default False
        False: ``HKH`` with ``H = I - 11ᵀ/n``. True: the U-centring of Székely & Rizzo (2014)
        (zero diagonal), for which ``⟨U(K), U(L)⟩ / (n(n-3))`` is the unbiased HSIC; needs n >= 4.

    Returns
    -------
    float64 tensor of shape (n, n)
    """
    tk = _validated_gram(k, "k", 4 if unbiased else 1, "unbiased centring")
    return _u_centre(tk) if unbiased else _h_centre(tk)


def hsic_biased(k: ArrayLike, l: ArrayLike) -> float:
    """Biased HSIC estimator ``tr(K H L H) / (n - 1)²`` (Gretton et al. 2005).

    Parameters
    ----------
    k, l : tensors or arrays of shape (n, n), symmetric Gram matrices, n >= 2
    """
    tk, tl = _validated_grams(k, l, 2, "biased HSIC")
    n = tk.shape[0]
    return float((_h_centre(tk) * _h_centre(tl)).sum() / (n - 1) ** 2)


def hsic_unbiased(k: ArrayLike, l: ArrayLike) -> float:
    """Unbiased HSIC estimator of Song et al. (2012)::

        [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1] / (n(n-3))

    with ``K̃, L̃`` the Grams with zeroed diagonals, computed as ``⟨U(K), U(L)⟩ / (n(n-3))``.

    Parameters
    ----------
    k, l : tensors or arrays of shape (n, n), symmetric Gram matrices, n >= 4
    """
    tk, tl = _validated_grams(k, l, 4, "unbiased HSIC")
    n = tk.shape[0]
    return float((_u_centre(tk) * _u_centre(tl)).sum() / (n * (n - 3)))


# --------------------------------------------------------------------------- public: CKA


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Linear CKA (Kornblith et al. 2019): ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` of column-centred
    X and Y; computed in feature space when n >= max(d1, d2), through n × n Grams otherwise.

    Parameters
    ----------
    x : tensor or array of shape (n, d1), n >= 2
    y : tensor or array of shape (n, d2)

    Returns
    -------
    float in [0, 1]. Strongly biased upwards when n ≲ d (see :func:`debiased_linear_cka`).
    """
    tx, ty = _validated_pair(x, y, names=("x", "y"), ndim=2, min_rows=2, what="linear CKA")
    return _linear_cka(_centre_scale(tx, "x"), _centre_scale(ty, "y"))


def debiased_linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    """Debiased linear CKA: CKA with the unbiased HSIC estimator of Song et al. (2012).

    ``HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))`` with ``K = XXᵀ``, ``L = YYᵀ``. In
    O(n·d²) feature space without n × n matrices when n > max(d1, d2), through Grams otherwise.

    Parameters
    ----------
    x : tensor or array of shape (n, d1), n >= 4
    y : tensor or array of shape (n, d2)

    Returns
    -------
    float; ≈ 0 for independent features at any n. Not clipped: it can be slightly negative.
    """
    tx, ty = _validated_pair(x, y, names=("x", "y"), ndim=2, min_rows=4, what="debiased CKA")
    return _debiased_cka(_centre_scale(tx, "x"), _centre_scale(ty, "y"))


def rbf_cka(
    x: ArrayLike, y: ArrayLike, sigma: float = 1.0, debiased: bool = False, *, bandwidth: str = "kornblith"
) -> float:
    """CKA with the RBF Grams of :func:`gram_rbf` (bandwidth of x and y set separately).

    The default bandwidth follows Kornblith et al.'s reference code (``threshold = sigma``,
    median over the whole matrix of squared distances); ``bandwidth="pairs"`` uses
    ``sigma × median Euclidean distance over the pairs i < j``.

    Parameters
    ----------
    x : tensor or array of shape (n, d1), n >= 2 (n >= 4 when debiased)
    y : tensor or array of shape (n, d2)
    sigma : float, default 1.0
    debiased : bool, default False
        Use the unbiased HSIC estimator instead of the centred (biased) one.
    bandwidth : {"kornblith", "pairs"}, default "kornblith"

    Returns
    -------
    float. Memory: the Grams are accumulated over row chunks for large n (see :func:`cka_matrix`).
    """
    sigma = _check_sigma(sigma)
    bandwidth = _check_bandwidth(bandwidth)
    what = "debiased RBF CKA" if debiased else "RBF CKA"
    tx, ty = _validated_pair(x, y, names=("x", "y"), ndim=2, min_rows=4 if debiased else 2, what=what)
    xs, ys = _centre_scale(tx, "x")[None], _centre_scale(ty, "y")[None]
    bx, by = _bandwidths(xs, sigma, "x", bandwidth), _bandwidths(ys, sigma, "y", bandwidth)
    out = _cka_from_grams(xs, ys, kernel="rbf", unbiased=debiased, names=("x", "y"), bw_a=bx, bw_b=by)
    return float(out[0, 0])


def cka_matrix(
    a: ArrayLike,
    b: ArrayLike,
    *,
    method: str = "debiased",
    sigma: float = 1.0,
    chunk_size: int | None = None,
    bandwidth: str = "kornblith",
) -> Tensor:
    """CKA between every layer of ``a`` and every layer of ``b``.

    All pairs come from one batched operation on Gram matrices: per row chunk, the (diagonal-
    zeroed, for "debiased") Gram rows of every layer are flattened to (L, c·n) and one matmul
    gives the inner products of all layer pairs; the centring (or unbiased) correction terms are
    then added for all pairs at once from the Gram row sums.

    Parameters
    ----------
    a : tensor or array of shape (La, n, d1)
    b : tensor or array of shape (Lb, n, d2); may be ``a`` itself (computed once)
    method : {"linear", "debiased", "rbf"}, default "debiased"
        Linear CKA, debiased linear CKA (n >= 4), or RBF CKA with centred HSIC and the
        bandwidth of :func:`gram_rbf` for each layer.
    sigma : float, default 1.0
        RBF bandwidth multiplier (ignored for the linear methods).
    bandwidth : {"kornblith", "pairs"}, default "kornblith"
        RBF bandwidth rule of :func:`gram_rbf` (ignored for the linear methods).
    chunk_size : int, optional
        Gram rows per chunk. By default all n rows at once while one layer stack's Grams fit in
        2**25 float64 entries (256 MiB; e.g. n <= 5792 for one layer, n <= 1606 for 13 layers),
        and chunks of ``2**25 // (L·n)`` rows beyond that, so memory stays bounded for any n
        (each chunk costs O(L·c·n) memory; the result is the same up to rounding). For "rbf",
        finding the median distance holds the n(n-1)/2 distances of one layer at a time.

    Returns
    -------
    float64 tensor of shape (La, Lb)
    """
    method = _check_method(method)
    sigma = _check_sigma(sigma)
    bandwidth = _check_bandwidth(bandwidth)
    chunk_size = _check_chunk(chunk_size)
    debiased = method == "debiased"
    ta, tb = _validated_pair(
        a, b, names=("a", "b"), ndim=3, min_rows=4 if debiased else 2, what=f"{method} CKA"
    )
    xa = _centre_scale(ta, "a")
    xb = None if b is a else _centre_scale(tb, "b")
    kernel = "rbf" if method == "rbf" else "linear"
    bw_a = bw_b = None
    if kernel == "rbf":
        bw_a = _bandwidths(xa, sigma, "a", bandwidth)
        bw_b = None if xb is None else _bandwidths(xb, sigma, "b", bandwidth)
    return _cka_from_grams(
        xa, xb, kernel=kernel, unbiased=debiased, names=("a", "b"), bw_a=bw_a, bw_b=bw_b, chunk_size=chunk_size
    )


def cka_per_layer(
    a: ArrayLike, b: ArrayLike, *, method: str = "debiased", sigma: float = 1.0, bandwidth: str = "kornblith"
) -> Tensor:
    """CKA between layer l of ``a`` and layer l of ``b`` for every l: the diagonal of
    :func:`cka_matrix`, at the cost of L (not L²) comparisons; the linear methods use the
    O(n·d²) feature-space forms when n > d.

    Parameters
    ----------
    a : tensor or array of shape (L, n, d1)
    b : tensor or array of shape (L, n, d2)
    method : {"linear", "debiased", "rbf"}, default "debiased"
    sigma : float, default 1.0
        RBF bandwidth multiplier (ignored for the linear methods).
    bandwidth : {"kornblith", "pairs"}, default "kornblith"
        RBF bandwidth rule of :func:`gram_rbf` (ignored for the linear methods).

    Returns
    -------
    float64 tensor of shape (L,)
    """
    method = _check_method(method)
    sigma = _check_sigma(sigma)
    bandwidth = _check_bandwidth(bandwidth)
    ta, tb = _validated_pair(
        a,
        b,
        names=("a", "b"),
        ndim=3,
        min_rows=4 if method == "debiased" else 2,
        what=f"{method} CKA",
        same_layers=True,
    )
    xa, xb = _centre_scale(ta, "a"), _centre_scale(tb, "b")
    out = torch.empty(xa.shape[0], dtype=torch.float64, device=xa.device)
    for layer in range(xa.shape[0]):
        names = (f"layer {layer} of a", f"layer {layer} of b")
        x, y = xa[layer], xb[layer]
        if method == "linear":
            out[layer] = _linear_cka(x, y, names)
        elif method == "debiased":
            out[layer] = _debiased_cka(x, y, names)
        else:
            bx = _bandwidths(x[None], sigma, names[0], bandwidth)
            by = _bandwidths(y[None], sigma, names[1], bandwidth)
            out[layer] = _cka_from_grams(
                x[None], y[None], kernel="rbf", unbiased=False, names=names, bw_a=bx, bw_b=by
            )[0, 0]
    return out


class MinibatchCKA:
    """Debiased linear CKA over minibatches (Nguyen et al. 2021), for every layer pair.

    Each :meth:`update` adds, in float64, the unbiased HSIC of the minibatch for every pair
    (i, j) of a layer of ``a`` and a layer of ``b``, and the self terms HSIC_u(K_i, K_i) and
    HSIC_u(L_j, L_j). :meth:`compute` divides once at the end::

        CKA_ij = Σ_batches HSIC_u(K_i, L_j) / sqrt(Σ HSIC_u(K_i, K_i) · Σ HSIC_u(L_j, L_j))

    (per-batch ratios are never averaged). The state is O(La·Lb), independent of n. With a
    single batch the result equals :func:`debiased_linear_cka` of that batch.

    Parameters
    ----------
    num_layers_a, num_layers_b : int
        La and Lb, the number of layers of the two stacks.
    """

    def __init__(self, num_layers_a: int, num_layers_b: int) -> None:
        for name, value in (("num_layers_a", num_layers_a), ("num_layers_b", num_layers_b)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise LayerscopeError(f"{name} must be a positive integer, got {value!r}")
        self.num_layers_a = int(num_layers_a)
        self.num_layers_b = int(num_layers_b)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.num_batches = 0
        self.num_examples = 0
        self._dims: tuple[int, int] | None = None
        self._cross: Tensor | None = None
        self._self_a: Tensor | None = None
        self._self_b: Tensor | None = None

    def update(self, a_batch: ArrayLike, b_batch: ArrayLike) -> MinibatchCKA:
        """Add one minibatch.

        Parameters
        ----------
        a_batch : tensor or array of shape (La, m, d1), m >= 4
        b_batch : tensor or array of shape (Lb, m, d2), the same m examples

        Returns
        -------
        self
        """
        ta, tb = _validated_pair(
            a_batch, b_batch, names=("a_batch", "b_batch"), ndim=3, min_rows=4, what="minibatch CKA",
            check_finite=False,  # done on the Grams' diagonals, far smaller for token-level features
        )
        for name, t, expected in (("a_batch", ta, self.num_layers_a), ("b_batch", tb, self.num_layers_b)):
            if t.shape[0] != expected:
                raise LayerscopeError(f"{name} must have {expected} layers, got shape {_shape(t)}")
        dims = (ta.shape[2], tb.shape[2])
        if self._dims is not None and dims != self._dims:
            raise LayerscopeError(
                f"feature sizes changed between batches: got {_shape(ta)} and {_shape(tb)}, "
                f"earlier batches had d1={self._dims[0]}, d2={self._dims[1]}"
            )
        m = ta.shape[1]
        # Centring is exact for HSIC_u (invariant to translation) and keeps the Grams' entries
        # small; no per-batch rescaling, which would reweight the batches.
        ka = _centred_linear_grams(ta, "a_batch")
        kb = None if b_batch is a_batch else _centred_linear_grams(tb, "b_batch")
        cross, self_a, self_b = _unbiased_gram_terms(ka, kb)
        scale = 1.0 / (m * (m - 3))
        if self._cross is None:
            self._cross = torch.zeros_like(cross)
            self._self_a = torch.zeros_like(self_a)
            self._self_b = torch.zeros_like(self_b)
        elif self._cross.device != cross.device:
            raise LayerscopeError(f"batches moved from {self._cross.device} to {cross.device}")
        assert self._self_a is not None and self._self_b is not None
        self._cross += cross * scale
        self._self_a += self_a * scale
        self._self_b += self_b * scale
        self._dims = dims
        self.num_batches += 1
        self.num_examples += m
        return self

    def compute(self) -> Tensor:
        """The CKA matrix from the accumulated sums: float64 tensor of shape (La, Lb)."""
        if self._cross is None or self._self_a is None or self._self_b is None:
            raise LayerscopeError("MinibatchCKA.compute() called before any update()")
        for name, terms in (("a", self._self_a), ("b", self._self_b)):
            bad = terms <= 0
            if bool(bad.any()):
                layer = int(torch.nonzero(bad)[0])
                raise LayerscopeError(
                    f"the summed self-similarity HSIC of layer {layer} of {name} is not positive "
                    f"({float(terms[layer]):.3g}); that layer is constant and CKA is undefined"
                )
        return self._cross / torch.sqrt(torch.outer(self._self_a, self._self_b))
