"""CCA-based and Procrustes similarity between representations: SVCCA, PWCCA, orthogonal Procrustes.

Pure functions on tensors, beside the CKA family of :mod:`layerscope.probes.cka`. A
representation is a matrix of shape (n, d): n examples by d features; the two sides share
their rows (the i-th row of x and of y describe the same example) and may differ in width.
Inputs of any real dtype are converted once and computed in float64.

Definitions (x, y column-centred; ``U_x`` an orthonormal basis of the column space of x)
-----------------------------------------------------------------------------------------
* **CCA correlations** ``ρ_1 ≥ ρ_2 ≥ …``: the singular values of ``U_xᵀ U_y``, one for each of
  ``min(k_x, k_y)`` canonical pairs. They are invariant to any invertible linear map of either
  side (the column spaces do not change).
* **SVCCA** (Raghu et al. 2017): replace each side by its top singular directions, the fewest
  that explain ``variance`` (default 99 %) of its total variance, or a fixed number ``dims``;
  then the mean of the CCA correlations. Symmetric. The truncation is not invariant to
  non-orthogonal maps; with ``variance=1.0`` (keep every direction) SVCCA is mean CCA.
* **PWCCA** (Morcos et al. 2018): ``Σ α_i ρ_i`` with ``α_i ∝ Σ_j |⟨h_i, x_j⟩|``, ``h_i`` the
  i-th unit canonical variate of x and ``x_j`` its j-th (centred) feature: a canonical
  direction counts as much as the first side's features load on it. Asymmetric by design.
  Invariant to any invertible linear map of y, to permutation, sign flip and isotropic scaling
  of x's features, but not to a general rotation of x (the L1 weights are per feature).
* **Orthogonal Procrustes**: with x, y scaled to unit Frobenius norm (the narrower side padded
  with zero columns), ``min_Q ‖x − yQ‖_F`` over orthogonal Q is ``sqrt(2 − 2‖xᵀy‖_*)``
  (nuclear norm). The similarity ``‖xᵀy‖_*`` lies in [0, 1]; the angular distance
  ``arccos ‖xᵀy‖_*`` in [0, π/2] is a metric (Williams et al. 2021). Symmetric; invariant to
  rotations, isotropic scaling and translation of either side, not to other linear maps.

Sample requirement
------------------
Centred data of n rows span at most n − 1 dimensions, so when ``k_x + k_y ≥ n`` some canonical
correlations are 1 whatever the data; well before that they are inflated toward 1 (sample
canonical correlations of independent data are of order ``sqrt(k/n)``). The CCA measures
therefore **refuse** (raise :class:`LayerscopeError`) unless ``n ≥ min_ratio × (k_x + k_y)``
and ``n > k_x + k_y``, with ``min_ratio = 2`` by default; they do not regularise. Procrustes
has no such degeneracy but is likewise biased upward when n is not above the width.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..errors import LayerscopeError
from ._checks import ArrayLike, _validated_pair

__all__ = [
    "cca_correlations",
    "svcca",
    "pwcca",
    "procrustes_similarity",
    "procrustes_distance",
    "METRICS",
    "per_layer",
]

DEFAULT_VARIANCE = 0.99
DEFAULT_MIN_RATIO = 2.0

# A singular value below this fraction of the largest (times the size) counts as zero: rank.
_RANK_RTOL = 1e-10


def _centred_scaled(x: Tensor, name: str) -> Tensor:
    xc = x - x.mean(dim=0, keepdim=True)
    scale = float(xc.abs().max())
    if scale == 0.0:
        raise LayerscopeError(f"{name} is constant (every row the same, shape {tuple(x.shape)}): "
                              "its similarity is undefined")
    return xc / scale


def _basis(xc: Tensor, *, variance: float | None, dims: int | None) -> Tensor:
    """Orthonormal (n, k) basis of the top-k singular directions of centred xc."""
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    rank = int((s > s[0] * _RANK_RTOL * max(xc.shape)).sum())
    if dims is not None:
        k = min(dims, rank)
    elif variance is None or variance >= 1.0:
        k = rank
    else:
        energy = torch.cumsum(s[:rank] ** 2, 0) / (s[:rank] ** 2).sum()
        # the fewest directions whose share reaches `variance` (tolerant to rounding at the edge)
        k = int(torch.searchsorted(energy, torch.tensor(variance - 1e-12, dtype=energy.dtype))) + 1
        k = min(k, rank)
    return u[:, :k]


def _check_variance(variance: float) -> float:
    value = float(variance)
    if not (0.0 < value <= 1.0):
        raise LayerscopeError(f"variance must be a share in (0, 1], got {variance!r}")
    return value


def _check_dims(dims: int | None) -> int | None:
    if dims is None:
        return None
    if isinstance(dims, bool) or int(dims) != dims or dims < 1:
        raise LayerscopeError(f"dims must be a positive integer or None, got {dims!r}")
    return int(dims)


def _check_samples(n: int, kx: int, ky: int, what: str, min_ratio: float) -> None:
    if min_ratio < 0 or not math.isfinite(min_ratio):
        raise LayerscopeError(f"min_ratio must be a non-negative number, got {min_ratio!r}")
    need = max(kx + ky + 1, math.ceil(min_ratio * (kx + ky)))
    if n < need:
        raise LayerscopeError(
            f"{what} needs n ≥ {need} samples for k_x = {kx} and k_y = {ky} directions "
            f"(n ≥ {min_ratio:g} × (k_x + k_y), CCA correlations go to 1 as n approaches k_x + k_y); "
            f"got n = {n}: use more sentences, fewer directions (dims) or a lower min_ratio")


def _canonical(ux: Tensor, uy: Tensor) -> tuple[Tensor, Tensor]:
    """CCA correlations (m,) and the x-side unit canonical variates (n, m), m = min(k_x, k_y)."""
    a, rho, _ = torch.linalg.svd(ux.T @ uy, full_matrices=False)
    return rho.clamp(0.0, 1.0), ux @ a


def _pair(x: ArrayLike, y: ArrayLike, what: str) -> tuple[Tensor, Tensor]:
    tx, ty = _validated_pair(x, y, names=("x", "y"), ndim=2, min_rows=3, what=what)
    return _centred_scaled(tx, "x"), _centred_scaled(ty, "y")


def cca_correlations(x: ArrayLike, y: ArrayLike, *, variance: float | None = None, dims: int | None = None,
                     min_ratio: float = DEFAULT_MIN_RATIO) -> Tensor:
    """Canonical correlations of x and y, largest first, after optional SVD truncation.

    Parameters
    ----------
    x : tensor or array of shape (n, d1)
    y : tensor or array of shape (n, d2)
    variance : share of each side's variance kept by its top singular directions (None: all)
    dims : keep this many top directions per side instead (overrides ``variance``)
    min_ratio : refuse unless n ≥ min_ratio × (k_x + k_y) (see the module docstring)

    Returns
    -------
    float64 tensor of shape (min(k_x, k_y),), values in [0, 1].
    """
    xc, yc = _pair(x, y, "CCA")
    variance = None if variance is None else _check_variance(variance)
    dims = _check_dims(dims)
    ux, uy = _basis(xc, variance=variance, dims=dims), _basis(yc, variance=variance, dims=dims)
    _check_samples(xc.shape[0], ux.shape[1], uy.shape[1], "CCA", min_ratio)
    return _canonical(ux, uy)[0]


def svcca(x: ArrayLike, y: ArrayLike, *, variance: float = DEFAULT_VARIANCE, dims: int | None = None,
          min_ratio: float = DEFAULT_MIN_RATIO) -> float:
    """SVCCA (Raghu et al. 2017): mean CCA correlation between the top singular directions.

    Parameters
    ----------
    x : tensor or array of shape (n, d1), n ≥ 3
    y : tensor or array of shape (n, d2)
    variance : float, default 0.99
        Each side keeps its fewest top singular directions explaining this share of its variance.
    dims : int, optional
        Keep exactly this many directions per side (at most the rank) instead.
    min_ratio : float, default 2
        Refuse (LayerscopeError) unless n ≥ min_ratio × (k_x + k_y).

    Returns
    -------
    float in [0, 1]; 1 when one side is an invertible linear map of the other (no truncation).
    """
    return float(cca_correlations(x, y, variance=_check_variance(variance), dims=dims, min_ratio=min_ratio).mean())


def pwcca(x: ArrayLike, y: ArrayLike, *, min_ratio: float = DEFAULT_MIN_RATIO) -> float:
    """PWCCA (Morcos et al. 2018): CCA correlations weighted by x's loading on each direction.

    Parameters
    ----------
    x : tensor or array of shape (n, d1), n ≥ 3; the side whose features set the weights
    y : tensor or array of shape (n, d2)
    min_ratio : float, default 2
        Refuse (LayerscopeError) unless n ≥ min_ratio × (rank x + rank y).

    Returns
    -------
    float in [0, 1]. Not symmetric: ``pwcca(x, y) != pwcca(y, x)`` in general.
    """
    xc, yc = _pair(x, y, "PWCCA")
    ux, uy = _basis(xc, variance=None, dims=None), _basis(yc, variance=None, dims=None)
    _check_samples(xc.shape[0], ux.shape[1], uy.shape[1], "PWCCA", min_ratio)
    rho, h = _canonical(ux, uy)
    weights = (h.T @ xc).abs().sum(dim=1)  # (m,): Σ_j |⟨h_i, x_j⟩|
    return float((weights * rho).sum() / weights.sum())


def _narrow(xc: Tensor) -> Tensor:
    """x with more columns than rows replaced by ``U S`` of its thin SVD: same Gram, width ≤ n."""
    if xc.shape[1] <= xc.shape[0]:
        return xc
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    return u * s


def _nuclear_similarity(x: ArrayLike, y: ArrayLike) -> float:
    xc, yc = _pair(x, y, "Procrustes")
    xc, yc = _narrow(xc / torch.linalg.norm(xc)), _narrow(yc / torch.linalg.norm(yc))
    return float(min(1.0, float(torch.linalg.svdvals(xc.T @ yc).sum())))


def procrustes_similarity(x: ArrayLike, y: ArrayLike) -> float:
    """Orthogonal Procrustes similarity ``‖xᵀy‖_*`` of centred, unit-Frobenius-norm x and y.

    Parameters
    ----------
    x : tensor or array of shape (n, d1), n ≥ 3
    y : tensor or array of shape (n, d2)

    Returns
    -------
    float in [0, 1]; 1 exactly when y is a rotated, scaled and translated copy of x.
    """
    return _nuclear_similarity(x, y)


def procrustes_distance(x: ArrayLike, y: ArrayLike, *, angular: bool = False) -> float:
    """Normalised orthogonal Procrustes distance: ``min_Q ‖x − yQ‖_F`` for unit-norm centred x, y.

    Parameters
    ----------
    x : tensor or array of shape (n, d1), n ≥ 3
    y : tensor or array of shape (n, d2)
    angular : bool, default False
        Return ``arccos ‖xᵀy‖_*`` in [0, π/2] instead of ``sqrt(2 − 2‖xᵀy‖_*)`` in [0, √2].

    Returns
    -------
    float; 0 exactly when y is a rotated, scaled and translated copy of x.
    """
    similarity = _nuclear_similarity(x, y)
    if angular:
        return math.acos(similarity)
    return math.sqrt(max(0.0, 2.0 - 2.0 * similarity))


# --------------------------------------------------------------------------- per layer, by name

# metric name -> (function of (x, y), description)
METRICS: dict[str, tuple[Callable[[Tensor, Tensor], float], str]] = {
    "svcca": (svcca, "SVCCA with the pivot: mean CCA correlation of the top directions (99 % variance)"),
    "pwcca": (pwcca, "PWCCA with the pivot (weights from the pivot side)"),
    "procrustes": (procrustes_similarity, "orthogonal Procrustes similarity with the pivot, ‖XᵀY‖_*"),
    "procrustes_distance": (procrustes_distance, "normalised orthogonal Procrustes distance to the pivot "
                                                 "(lower is more aligned)"),
    "procrustes_angular": (lambda x, y: procrustes_distance(x, y, angular=True),
                           "angular Procrustes distance to the pivot, radians (lower is more aligned)"),
}


def per_layer(metric: str, a: ArrayLike, b: ArrayLike, *, on_refusal: Callable[[str], None] | None = None) -> list[float]:
    """``metric`` between a[i] and b[i] for every layer i of two stacks of shape (L, n, d).

    A CCA measure refused for too few samples gives NaN for that layer and calls
    ``on_refusal(message)`` (other errors propagate).
    """
    if metric not in METRICS:
        raise LayerscopeError(f"unknown CCA/Procrustes metric {metric!r}: known are {', '.join(METRICS)}")
    function = METRICS[metric][0]
    values = []
    for i in range(a.shape[0]):
        try:
            values.append(function(a[i], b[i]))
        except LayerscopeError as exc:
            if on_refusal is None or "needs n ≥" not in str(exc):
                raise
            on_refusal(f"{metric}, layer {i}: {exc}")
            values.append(math.nan)
    return values
