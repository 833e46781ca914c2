"""Similarity between representations: CKA variants, translation retrieval, baselines, drift.

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

import difflib
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from .errors import LayerscopeError

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
    "retrieval_accuracy",
    "retrieval_per_layer",
    "retrieval_hits_per_layer",
    "shuffled_pairs",
    "relative_weight_change",
]

ArrayLike = Tensor | np.ndarray

METHODS = ("linear", "debiased", "rbf")

# How the RBF bandwidth b of K = exp(-d² / (2b²)) follows from the data (σ = ``sigma``):
# "kornblith": b² = σ² × median of the whole n × n matrix of squared distances, diagonal zeros
#   included, as in the reference ``gram_rbf(x, threshold)`` of Kornblith et al. (2019);
# "pairs": b = σ × median Euclidean distance over the pairs i < j.
RBF_BANDWIDTHS = ("kornblith", "pairs")

# Largest number of float64 Gram entries held per layer stack at once (256 MiB). Below it a
# CKA matrix is one matmul over the flattened Grams; above it the Gram rows are processed in
# chunks and the inner products accumulated, so memory stays bounded for any n.
_GRAM_BUDGET = 2**25

# A self-similarity below this fraction of its leading term is treated as zero (degenerate).
_DEGENERATE_RTOL = 1e-12


# --------------------------------------------------------------------------- validation


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _as_tensor(x: object, name: str) -> Tensor:
    """``x`` as a float64 tensor (on its own device when it is a tensor)."""
    if isinstance(x, Tensor):
        if x.is_complex():
            raise LayerscopeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        return x.detach().to(torch.float64)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise LayerscopeError(
            f"{name} must be a torch tensor or numpy array, got {type(x).__name__}"
        ) from exc
    if arr.dtype.kind not in "biuf":
        raise LayerscopeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return torch.tensor(arr, dtype=torch.float64)


def _check_finite(t: Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise LayerscopeError(f"{name} contains NaN or Inf (shape {_shape(t)})")


def _array(x: object, name: str, ndim: int) -> Tensor:
    t = _as_tensor(x, name)
    layout = "(n, d)" if ndim == 2 else "(L, n, d)"
    kind = "a 2-D matrix" if ndim == 2 else "a 3-D layer stack"
    if t.ndim != ndim:
        raise LayerscopeError(f"{name} must be {kind} of shape {layout}, got shape {_shape(t)}")
    if t.shape[-1] == 0 or (ndim == 3 and t.shape[0] == 0):
        raise LayerscopeError(f"{name} is empty: got shape {_shape(t)}, expected {layout}")
    return t


def _validated_pair(
    x: object,
    y: object,
    *,
    names: tuple[str, str],
    ndim: int,
    min_rows: int,
    what: str,
    same_dim: bool = False,
    same_layers: bool = False,
    check_finite: bool = True,
) -> tuple[Tensor, Tensor]:
    """Convert and check two matrices (ndim=2) or layer stacks (ndim=3) that share rows."""
    nx, ny = names
    tx = _array(x, nx, ndim)
    ty = _array(y, ny, ndim)
    row = ndim - 2
    if tx.shape[row] != ty.shape[row]:
        raise LayerscopeError(
            f"{nx} and {ny} must have the same number of rows, got {_shape(tx)} and {_shape(ty)}"
        )
    if same_layers and tx.shape[0] != ty.shape[0]:
        raise LayerscopeError(
            f"{nx} and {ny} must have the same number of layers, got {_shape(tx)} and {_shape(ty)}"
        )
    if same_dim and tx.shape[-1] != ty.shape[-1]:
        raise LayerscopeError(
            f"{nx} and {ny} must have the same number of columns, got {_shape(tx)} and {_shape(ty)}"
        )
    if tx.shape[row] < min_rows:
        raise LayerscopeError(
            f"{what} needs at least {min_rows} rows (n >= {min_rows}), "
            f"got {nx} of shape {_shape(tx)}"
        )
    if tx.device != ty.device:
        raise LayerscopeError(f"{nx} is on {tx.device} but {ny} is on {ty.device}")
    if check_finite:
        _check_finite(tx, nx)
        _check_finite(ty, ny)
    return tx, ty


def _validated_gram(k: object, name: str, min_rows: int, what: str) -> Tensor:
    t = _as_tensor(k, name)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise LayerscopeError(f"{name} must be a square Gram matrix of shape (n, n), got {_shape(t)}")
    if t.shape[0] < min_rows:
        raise LayerscopeError(
            f"{what} needs at least {min_rows} rows (n >= {min_rows}), got {name} of shape {_shape(t)}"
        )
    _check_finite(t, name)
    asym = float((t - t.T).abs().max())
    if asym > 1e-6 * float(t.abs().max()):
        raise LayerscopeError(
            f"{name} must be symmetric (a Gram matrix), but max |{name} - {name}ᵀ| = {asym:.3g}"
        )
    return t


def _validated_grams(k: object, l: object, min_rows: int, what: str) -> tuple[Tensor, Tensor]:
    tk = _validated_gram(k, "k", min_rows, what)
    tl = _validated_gram(l, "l", min_rows, what)
    if tk.shape != tl.shape:
        raise LayerscopeError(f"k and l must have the same shape, got {_shape(tk)} and {_shape(tl)}")
    if tk.device != tl.device:
        raise LayerscopeError(f"k is on {tk.device} but l is on {tl.device}")
    return tk, tl


def _check_method(method: str) -> str:
    if method in METHODS:
        return method
    hint = difflib.get_close_matches(str(method), METHODS, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    known = ", ".join(repr(m) for m in METHODS)
    raise LayerscopeError(f"unknown CKA method {method!r}{did_you_mean}; choose one of {known}")


def _check_sigma(sigma: float) -> float:
    try:
        value = float(sigma)
    except (TypeError, ValueError) as exc:
        raise LayerscopeError(f"sigma must be a positive number, got {sigma!r}") from exc
    if not (math.isfinite(value) and value > 0):
        raise LayerscopeError(f"sigma must be a positive number, got {sigma!r}")
    return value


def _check_bandwidth(bandwidth: str) -> str:
    if bandwidth in RBF_BANDWIDTHS:
        return bandwidth
    known = ", ".join(repr(b) for b in RBF_BANDWIDTHS)
    raise LayerscopeError(f"unknown RBF bandwidth rule {bandwidth!r}; choose one of {known}")


def _check_chunk(chunk_size: int | None) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise LayerscopeError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


# --------------------------------------------------------------------------- kernels
# Private functions below assume validated float64 inputs.


def _centre(x: Tensor) -> Tensor:
    """Subtract the column means of (..., n, d); exactly constant columns become exactly 0
    (the rounded mean of equal values can differ from them by an ulp)."""
    constant = (x == x[..., :1, :]).all(dim=-2, keepdim=True)
    return (x - x.mean(dim=-2, keepdim=True)).masked_fill_(constant, 0.0)


def _centre_scale(x: Tensor, name: str) -> Tensor:
    """Column-centre a matrix (n, d) or every layer of a stack (L, n, d), then divide each
    matrix by its largest absolute entry. Raises if a matrix is constant."""
    x = _centre(x)
    scale = x.abs().amax(dim=(-2, -1), keepdim=True)
    if bool((scale == 0).any()):
        n = x.shape[-2]
        if x.ndim == 2:
            where = name
        else:
            where = f"layer {int(torch.nonzero(scale.flatten() == 0)[0])} of {name}"
        raise LayerscopeError(
            f"{where} is constant (all {n} rows are the same), so its similarity is undefined"
        )
    return x / scale


def _median(v: Tensor) -> Tensor:
    """Median of a 1-D tensor; the mean of the two middle values for an even count (as numpy)."""
    m = v.numel()
    lo = torch.kthvalue(v, (m + 1) // 2).values
    if m % 2:
        return lo
    hi = torch.kthvalue(v, m // 2 + 1).values
    return (lo + hi) / 2


def _median_of_full_matrix(pair_values: Tensor, n: int) -> Tensor:
    """Median (numpy's, over n² entries) of the symmetric n × n matrix with zeros on the diagonal
    and ``pair_values`` (the n(n-1)/2 entries i < j, 1-D) off it, without forming the matrix:
    sorted, that matrix reads n zeros, then every pair value twice."""

    def entry(k: int) -> Tensor:  # k-th smallest (0-based) entry of the full matrix
        if k < n:
            return pair_values.new_zeros(())
        return torch.kthvalue(pair_values, (k - n) // 2 + 1).values

    total = n * n
    if total % 2:
        return entry(total // 2)
    return (entry(total // 2 - 1) + entry(total // 2)) / 2


def _bandwidths(x: Tensor, sigma: float, name: str, rule: str = "kornblith") -> Tensor:
    """The RBF bandwidth of each layer of x (L, n, d) under ``rule`` (see RBF_BANDWIDTHS): (L,)."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for layer in range(x.shape[0]):
        dist = torch.pdist(x[layer])
        if rule == "pairs":
            med = _median(dist)
        else:
            med = _median_of_full_matrix(dist.square_(), x.shape[1]).sqrt()
        if float(sigma * med) <= 0:
            where = name if x.shape[0] == 1 else f"layer {layer} of {name}"
            what = "pairwise distance" if rule == "pairs" else "squared distance (n × n, diagonal included)"
            raise LayerscopeError(
                f"the median {what} of {where} (shape {_shape(x[layer])}) is 0 "
                "(most pairs of rows are identical), so the RBF bandwidth is undefined"
            )
        out[layer] = sigma * med
    return out


def _kernel_rows(
    x: Tensor,
    r0: int,
    r1: int,
    *,
    kernel: str,
    sq_norms: Tensor | None,
    bandwidth: Tensor | None,
    zero_diag: bool,
) -> Tensor:
    """Rows r0:r1 of the Gram of every layer of x (L, n, d): shape (L, r1 - r0, n).

    RBF distances come from ‖a‖² + ‖b‖² - 2aᵀb (one matmul) when ``sq_norms`` is given; with
    ``sq_norms=None`` they are computed exactly from differences (slower; used when the bandwidth
    is so small against the norms that the matmul form would lose precision).
    """
    idx = torch.arange(r1 - r0, device=x.device)
    if kernel == "rbf":
        assert bandwidth is not None
        bw = bandwidth[:, None, None]
        if sq_norms is None:
            dist = torch.cdist(x[:, r0:r1], x, compute_mode="donot_use_mm_for_euclid_dist")
            k = torch.exp(dist.div_(bw).square_().mul_(-0.5))  # overflow gives exp(-inf) = 0
        else:
            d2 = sq_norms[:, r0:r1, None] + sq_norms[:, None, :] - 2 * (x[:, r0:r1] @ x.transpose(1, 2))
            k = torch.exp(d2.clamp_min_(0).div_(bw.square()).mul_(-0.5))
        k[:, idx, idx + r0] = 1.0
    else:
        k = x[:, r0:r1] @ x.transpose(1, 2)
    if zero_diag:
        k[:, idx, idx + r0] = 0
    return k


def _rbf_sq_norms(x: Tensor, bandwidth: Tensor | None) -> Tensor | None:
    """Row norms² of x (L, n, d) for the matmul form of RBF distances, or None when some
    bandwidth² is below 1e-8 × the largest norm², where rounding in ‖a‖² + ‖b‖² - 2aᵀb
    (about 1e-16 × norm²) would no longer be negligible against it."""
    assert bandwidth is not None
    sq = x.square().sum(-1)
    if bool((bandwidth.square() < 1e-8 * sq.amax(-1)).any()):
        return None
    return sq


def _default_chunk(n: int, layers: int) -> int:
    return max(1, min(n, _GRAM_BUDGET // max(1, layers * n)))


def _gram_inner(
    a: Tensor,
    b: Tensor | None,
    *,
    kernel: str,
    unbiased: bool,
    bw_a: Tensor | None = None,
    bw_b: Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Centred inner products between the Grams of every layer of two stacks.

    a (La, n, d1), b (Lb, n, d2) or None for b = a. Returns ``cross`` (La, Lb), ``self_a``
    (La,), ``self_b`` (Lb,) and the uncorrected leading terms ``raw_a``, ``raw_b``, where
    ``cross[i, j]`` is ``(n - 1)^2 HSIC_b`` (biased) or ``n(n - 3) HSIC_u`` (unbiased) of the
    Grams of a[i] and b[j]. One pass over row chunks of the Grams: each chunk adds
    ``flat(K̃_chunk) @ flat(L̃_chunk)ᵀ`` (one matmul for all layer pairs) and fills the row
    sums; the centring terms are added at the end from the row sums, batched over pairs.
    """
    same = b is None
    bb = a if b is None else b
    la, n, _ = a.shape
    lb = bb.shape[0]
    chunk = chunk_size or _default_chunk(n, max(la, lb))
    bw_b = bw_a if same else bw_b
    sq_a = _rbf_sq_norms(a, bw_a) if kernel == "rbf" else None
    sq_b = sq_a if same else (_rbf_sq_norms(bb, bw_b) if kernel == "rbf" else None)
    cross = a.new_zeros(la, lb)
    raw_a, raw_b = a.new_zeros(la), a.new_zeros(lb)
    rows_a, rows_b = a.new_zeros(la, n), a.new_zeros(lb, n)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        ka = _kernel_rows(a, r0, r1, kernel=kernel, sq_norms=sq_a, bandwidth=bw_a, zero_diag=unbiased)
        fa = ka.reshape(la, -1)
        rows_a[:, r0:r1] = ka.sum(-1)
        raw_a += fa.square().sum(1)
        if same:
            fb = fa
        else:
            kb = _kernel_rows(bb, r0, r1, kernel=kernel, sq_norms=sq_b, bandwidth=bw_b, zero_diag=unbiased)
            fb = kb.reshape(lb, -1)
            rows_b[:, r0:r1] = kb.sum(-1)
            raw_b += fb.square().sum(1)
        cross += fa @ fb.T
        del fa, fb
    if same:
        rows_b, raw_b = rows_a, raw_a
    cross, self_a, self_b = _centring_terms(cross, raw_a, raw_b, rows_a, rows_b, n, unbiased)
    return cross, self_a, self_b, raw_a, raw_b


def _centring_terms(cross: Tensor, raw_a: Tensor, raw_b: Tensor, rows_a: Tensor, rows_b: Tensor, n: int,
                    unbiased: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Add the centring terms to the plain inner products of two Gram stacks.

    ``cross`` (La, Lb) = <K_i, L_j>, ``raw_a`` (La,) = ‖K_i‖², ``rows_a`` (La, n) the row sums
    of K_i (likewise for b), with zeroed diagonals when ``unbiased``. Returns cross, self_a,
    self_b as ``n(n - 3) HSIC_u`` (unbiased) or ``(n - 1)^2 HSIC_b`` (biased)."""
    tot_a, tot_b = rows_a.sum(1), rows_b.sum(1)
    if unbiased:
        c_tot, c_row = 1.0 / ((n - 1) * (n - 2)), 2.0 / (n - 2)
    else:
        c_tot, c_row = 1.0 / n**2, 2.0 / n
    cross = cross + c_tot * torch.outer(tot_a, tot_b) - c_row * (rows_a @ rows_b.T)
    self_a = raw_a + c_tot * tot_a.square() - c_row * rows_a.square().sum(1)
    self_b = raw_b + c_tot * tot_b.square() - c_row * rows_b.square().sum(1)
    return cross, self_a, self_b


def _centred_linear_grams(x: Tensor, name: str) -> Tensor:
    """H (X Xᵀ) H for every layer of x (L, m, d): (L, m, m), the Grams of the column-centred X.

    Centring the Gram costs O(L·m²) where centring X costs O(L·m·d), which matters for
    token-level features (d ≫ m). A NaN or Inf anywhere in a row shows on the Gram's diagonal,
    so the input itself is not scanned."""
    k = x @ x.transpose(-1, -2)
    if not bool(torch.isfinite(torch.diagonal(k, dim1=-2, dim2=-1)).all()):
        raise LayerscopeError(f"{name} contains NaN or Inf (shape {_shape(x)})")
    rows = k.mean(-1, keepdim=True)
    return k - rows - rows.transpose(-1, -2) + rows.mean(-2, keepdim=True)


def _unbiased_gram_terms(ka: Tensor, kb: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``n(n - 3) HSIC_u`` of every pair of Grams of ka (La, n, n) and kb (Lb, n, n) (kb None: ka),
    and the self terms of each."""
    n = ka.shape[-1]
    fa = ka.clone()
    torch.diagonal(fa, dim1=-2, dim2=-1).zero_()
    rows_a, fa = fa.sum(-1), fa.reshape(ka.shape[0], -1)
    if kb is None:
        fb, rows_b = fa, rows_a
    else:
        fb = kb.clone()
        torch.diagonal(fb, dim1=-2, dim2=-1).zero_()
        rows_b, fb = fb.sum(-1), fb.reshape(kb.shape[0], -1)
    raw_a = fa.square().sum(1)
    raw_b = raw_a if kb is None else fb.square().sum(1)
    return _centring_terms(fa @ fb.T, raw_a, raw_b, rows_a, rows_b, n, unbiased=True)


def _check_self(self_terms: Tensor, raw: Tensor, name: str) -> None:
    bad = self_terms <= _DEGENERATE_RTOL * raw
    if bool(bad.any()):
        layer = int(torch.nonzero(bad)[0])
        where = name if self_terms.numel() == 1 else f"layer {layer} of {name}"
        raise LayerscopeError(
            f"the self-similarity HSIC of {where} is not positive "
            f"({float(self_terms[layer]):.3g}); the input is (nearly) degenerate and CKA is undefined"
        )


def _cka_from_grams(
    a: Tensor,
    b: Tensor | None,
    *,
    kernel: str,
    unbiased: bool,
    names: tuple[str, str],
    bw_a: Tensor | None = None,
    bw_b: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """CKA matrix (La, Lb) of two preprocessed stacks through their Gram matrices."""
    cross, self_a, self_b, raw_a, raw_b = _gram_inner(
        a, b, kernel=kernel, unbiased=unbiased, bw_a=bw_a, bw_b=bw_b, chunk_size=chunk_size
    )
    _check_self(self_a, raw_a, names[0])
    _check_self(self_b, raw_b, names[1])
    return cross / torch.sqrt(torch.outer(self_a, self_b))


def _linear_cka(x: Tensor, y: Tensor, names: tuple[str, str] = ("x", "y")) -> float:
    """Linear CKA of centred, scaled x (n, d1), y (n, d2): feature form when n >= d."""
    n = x.shape[0]
    if n >= max(x.shape[1], y.shape[1]):
        num = (y.T @ x).square().sum()
        den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
        return float(num / den)
    return float(_cka_from_grams(x[None], y[None], kernel="linear", unbiased=False, names=names)[0, 0])


def _debiased_cka(x: Tensor, y: Tensor, names: tuple[str, str] = ("x", "y")) -> float:
    """Debiased linear CKA of centred, scaled x (n, d1), y (n, d2).

    For n > d it never forms an n × n matrix: with k_ii = ‖x_i‖², s = Xᵀ1,
    tr(K̃L̃) = ‖XᵀY‖²_F − Σ k_ii l_ii, 1ᵀK̃1 = ‖s‖² − Σ k_ii and K̃1 = Xs − diag(K), O(n d²).
    """
    n = x.shape[0]
    if n <= max(x.shape[1], y.shape[1]):
        return float(_cka_from_grams(x[None], y[None], kernel="linear", unbiased=True, names=names)[0, 0])
    kd, ld = x.square().sum(1), y.square().sum(1)
    sx, sy = x.sum(0), y.sum(0)
    k1, l1 = x @ sx - kd, y @ sy - ld
    tk, tl = sx @ sx - kd.sum(), sy @ sy - ld.sum()
    c_tot, c_row = 1.0 / ((n - 1) * (n - 2)), 2.0 / (n - 2)

    def hsic(frob2: Tensor, diag: Tensor, ta: Tensor, tb: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
        # n(n-3) · HSIC_u from the feature-space pieces
        return frob2 - diag + c_tot * ta * tb - c_row * (r1 @ r2)

    xx = (x.T @ x).square().sum()
    yy = (y.T @ y).square().sum()
    cross = hsic((x.T @ y).square().sum(), kd @ ld, tk, tl, k1, l1)
    self_x = hsic(xx, kd @ kd, tk, tk, k1, k1)
    self_y = hsic(yy, ld @ ld, tl, tl, l1, l1)
    _check_self(self_x[None], xx[None], names[0])
    _check_self(self_y[None], yy[None], names[1])
    return float(cross / torch.sqrt(self_x * self_y))


def _h_centre(k: Tensor) -> Tensor:
    rows = k.mean(-1)
    return k - rows[:, None] - rows[None, :] + rows.mean()


def _u_centre(k: Tensor) -> Tensor:
    """U-centring (Székely & Rizzo 2014): ⟨U(K), U(L)⟩ / (n(n-3)) = HSIC_u(K, L)."""
    n = k.shape[0]
    k = k.clone()
    k.fill_diagonal_(0)
    rows = k.sum(-1)
    means = rows / (n - 2) - rows.sum() / (2 * (n - 1) * (n - 2))
    k -= means[:, None]
    k -= means[None, :]
    k.fill_diagonal_(0)
    return k


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


# --------------------------------------------------------------------------- public: retrieval


def _unit_rows(x: Tensor) -> Tensor:
    """Rows divided by their norms (x: (L, n, d)); an all-zero row stays zero (cosine 0)."""
    scale = x.abs().amax(dim=(-2, -1), keepdim=True)
    x = x / torch.where(scale > 0, scale, torch.ones_like(scale))
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def _retrieval(a: Tensor, b: Tensor, *, center: bool, margin: bool, k: int, names: tuple[str, str]) -> Tensor:
    """Top-1 retrieval hits (L, 2, n), bool, of validated stacks a, b (L, n, d): [:, 0, i] is
    whether a_i retrieves b_i, [:, 1, j] whether b_j retrieves a_j."""
    n = a.shape[1]
    if center:
        a, b = _centre(a), _centre(b)
    a, b = _unit_rows(a), _unit_rows(b)
    target = torch.arange(n, device=a.device)
    kk = min(k, n)
    out = torch.empty(a.shape[0], 2, n, dtype=torch.bool, device=a.device)
    group = max(1, _GRAM_BUDGET // (n * n))
    for g0 in range(0, a.shape[0], group):
        g1 = min(a.shape[0], g0 + group)
        score = a[g0:g1] @ b[g0:g1].transpose(1, 2)  # cos(a_i, b_j): (G, n, n)
        if margin:
            # mean similarity of each a_i to its k nearest b's and of each b_j to its k nearest a's
            r_a = score.topk(kk, dim=2).values.sum(2) / (2 * kk)
            r_b = score.topk(kk, dim=1).values.sum(1) / (2 * kk)
            den = r_a[:, :, None] + r_b[:, None, :]
            if bool((den <= 0).any()):
                layer = g0 + int(torch.nonzero((den <= 0).flatten(1).any(1))[0])
                where = "" if a.shape[0] == 1 else f" (layer {layer})"
                raise LayerscopeError(
                    f"ratio-margin scoring needs a positive mean similarity to the {kk} nearest "
                    f"neighbours, but {names[0]} and {names[1]}{where} have pairs where it is <= 0; "
                    "use margin=False"
                )
            score = score / den
        out[g0:g1, 0] = score.argmax(2) == target
        out[g0:g1, 1] = score.argmax(1) == target
    return out


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise LayerscopeError(f"k must be a positive integer, got {k!r}")
    return int(k)


def retrieval_accuracy(
    x: ArrayLike, y: ArrayLike, *, center: bool = False, margin: bool = False, k: int = 4
) -> tuple[float, float]:
    """Top-1 translation retrieval accuracy by cosine similarity, in both directions.

    Row i of ``x`` (pivot) translates row i of ``y`` (target). Query x_i is correct when its
    highest-scoring y is y_i, and likewise for the queries y_j; ties go to the first index.

    Parameters
    ----------
    x : tensor or array of shape (n, d), n >= 2
    y : tensor or array of shape (n, d)
    center : bool, default False
        Subtract each side's own mean vector first (removes the language-identity component).
    margin : bool, default False
        Ratio-margin scoring as in BUCC (Artetxe & Schwenk 2019)::

            score(x, y) = cos(x, y) / (Σ_{z∈NN_k(x)} cos(x, z) / 2k + Σ_{z∈NN_k(y)} cos(y, z) / 2k)

        where NN_k(x) are the k most similar rows of y, and NN_k(y) those of x. Needs the
        denominators to be positive (as for real sentence embeddings), else raises.
    k : int, default 4
        Neighbourhood size for the margin, capped at n.

    Returns
    -------
    (x→y accuracy, y→x accuracy), floats in [0, 1]. All-zero rows have cosine 0 with everything.
    """
    k = _check_k(k)
    tx, ty = _validated_pair(x, y, names=("x", "y"), ndim=2, min_rows=2, what="retrieval", same_dim=True)
    out = _retrieval(tx[None], ty[None], center=center, margin=margin, k=k, names=("x", "y")).double().mean(-1)
    return float(out[0, 0]), float(out[0, 1])


def retrieval_per_layer(
    a: ArrayLike, b: ArrayLike, *, center: bool = False, margin: bool = False, k: int = 4
) -> Tensor:
    """:func:`retrieval_accuracy` for every layer, batched over layers.

    Parameters
    ----------
    a : tensor or array of shape (L, n, d), the pivot language
    b : tensor or array of shape (L, n, d), its translations (row i of b translates row i of a)
    center, margin, k : as in :func:`retrieval_accuracy`

    Returns
    -------
    float64 tensor of shape (L, 2): column 0 is a→b, column 1 is b→a.
    """
    return retrieval_hits_per_layer(a, b, center=center, margin=margin, k=k).double().mean(-1)


def retrieval_hits_per_layer(
    a: ArrayLike, b: ArrayLike, *, center: bool = False, margin: bool = False, k: int = 4
) -> Tensor:
    """Which sentences are retrieved, per layer and direction (what intervals resample).

    Parameters
    ----------
    a, b, center, margin, k : as in :func:`retrieval_per_layer`

    Returns
    -------
    bool tensor of shape (L, 2, n): ``[l, 0, i]`` whether a_i's nearest b is b_i, ``[l, 1, j]``
    whether b_j's nearest a is a_j. Its mean over the last axis is :func:`retrieval_per_layer`.
    """
    k = _check_k(k)
    ta, tb = _validated_pair(
        a, b, names=("a", "b"), ndim=3, min_rows=2, what="retrieval", same_dim=True, same_layers=True
    )
    return _retrieval(ta, tb, center=center, margin=margin, k=k, names=("a", "b"))


# --------------------------------------------------------------------------- public: baselines, drift


def shuffled_pairs(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random derangement of ``range(n)`` (a permutation with no fixed points).

    The "non-translation" baseline: compare x with ``y[shuffled_pairs(n, g)]``, where no row is
    paired with its own translation. Drawn by rejection from ``torch.randperm`` (on average
    e ≈ 2.7 draws), so it is reproducible from the generator's state.

    Parameters
    ----------
    n : int, n >= 2
    generator : torch.Generator, optional
        Source of randomness; the global torch generator when None.

    Returns
    -------
    int64 tensor of shape (n,)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise LayerscopeError(f"a derangement needs an integer n >= 2, got {n!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise LayerscopeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if generator is not None else torch.device("cpu")
    identity = torch.arange(int(n), device=device)
    while True:
        perm = torch.randperm(int(n), generator=generator, device=device)
        if not bool((perm == identity).any()):
            return perm


def relative_weight_change(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor]) -> float:
    """Relative change ``‖W_b - W_a‖_F / ‖W_a‖_F`` over all floating-point entries.

    The norms run over every entry of every floating-point tensor of the state dicts together
    (integer and boolean buffers, e.g. position ids, are ignored), accumulated in float64.

    Parameters
    ----------
    state_a : mapping of name to tensor, the reference weights (e.g. the base model)
    state_b : mapping of name to tensor with the same keys and shapes (e.g. the realigned model)

    Returns
    -------
    float >= 0
    """
    if not isinstance(state_a, Mapping) or not isinstance(state_b, Mapping):
        raise LayerscopeError(
            f"state_a and state_b must be mappings of name to tensor, got "
            f"{type(state_a).__name__} and {type(state_b).__name__}"
        )
    only_a = sorted(set(state_a) - set(state_b))
    only_b = sorted(set(state_b) - set(state_a))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"missing from state_b: {', '.join(map(str, only_a))}")
        if only_b:
            parts.append(f"missing from state_a: {', '.join(map(str, only_b))}")
        raise LayerscopeError("state_a and state_b must have the same keys; " + "; ".join(parts))
    diff_sq = 0.0
    base_sq = 0.0
    used = 0
    for key in state_a:
        wa, wb = torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])
        float_a, float_b = wa.is_floating_point(), wb.is_floating_point()
        if float_a != float_b:
            raise LayerscopeError(f"{key!r} is floating-point in one state and not the other ({wa.dtype} vs {wb.dtype})")
        if not float_a:
            continue
        if wa.shape != wb.shape:
            raise LayerscopeError(f"{key!r} has shape {_shape(wa)} in state_a but {_shape(wb)} in state_b")
        wa64 = wa.detach().to(device="cpu", dtype=torch.float64)
        wb64 = wb.detach().to(device="cpu", dtype=torch.float64)
        _check_finite(wa64, f"state_a[{key!r}]")
        _check_finite(wb64, f"state_b[{key!r}]")
        diff_sq += float((wb64 - wa64).square().sum())
        base_sq += float(wa64.square().sum())
        used += 1
    if used == 0:
        raise LayerscopeError("state_a and state_b hold no floating-point tensors")
    if base_sq == 0:
        raise LayerscopeError("state_a has norm 0, so the relative weight change is undefined")
    return math.sqrt(diff_sq) / math.sqrt(base_sq)
