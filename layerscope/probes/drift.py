"""Drift of a model under realignment: relative change of its weights.

(Per-layer CKA between base and realigned representations of the same language is
:func:`layerscope.probes.cka.cka_per_layer`.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import LayerscopeError
from ._checks import _check_finite, _shape

__all__ = ["relative_weight_change"]

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
