"""The Gram machinery behind CKA: centring, kernels, bandwidths, HSIC terms, chunked inner products.

Private to :mod:`layerscope.probes.cka`; the definitions are in that module's docstring.
"""

from __future__ import annotations


import torch
from torch import Tensor

from ..errors import LayerscopeError
from ._checks import _shape

# Largest number of float64 Gram entries held per layer stack at once (256 MiB). Below it a
# CKA matrix is one matmul over the flattened Grams; above it the Gram rows are processed in
# chunks and the inner products accumulated, so memory stays bounded for any n.
_GRAM_BUDGET = 2**25

# A self-similarity below this fraction of its leading term is treated as zero (degenerate).
_DEGENERATE_RTOL = 1e-12

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
