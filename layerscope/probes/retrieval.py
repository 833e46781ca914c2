"""Translation retrieval between sentence vectors, and its shuffled-pairs baseline.

Pure functions on tensors; nothing here knows about models or files. Inputs are validated as
in :mod:`layerscope.probes.cka` and compared in float64 on the device of the input.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import LayerscopeError
from ._checks import ArrayLike, _validated_pair
from ._gram import _GRAM_BUDGET, _centre

__all__ = ["retrieval_accuracy", "retrieval_per_layer", "retrieval_hits_per_layer", "shuffled_pairs"]

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
