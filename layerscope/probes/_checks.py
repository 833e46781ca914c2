"""Input validation shared by the similarity measures (CKA, retrieval, drift).

Every public measure accepts torch tensors or numpy arrays of any real dtype, validates them
once here (raising :class:`LayerscopeError` with the shapes in the message) and then computes
in float64 on the device of the input.
"""

from __future__ import annotations

import difflib
import math

import numpy as np
import torch
from torch import Tensor

from ..errors import LayerscopeError

ArrayLike = Tensor | np.ndarray


METHODS = ("linear", "debiased", "rbf")

# How the RBF bandwidth b of K = exp(-d² / (2b²)) follows from the data (σ = ``sigma``):
# "kornblith": b² = σ² × median of the whole n × n matrix of squared distances, diagonal zeros
#   included, as in the reference ``gram_rbf(x, threshold)`` of Kornblith et al. (2019);
# "pairs": b = σ × median Euclidean distance over the pairs i < j.
RBF_BANDWIDTHS = ("kornblith", "pairs")



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
