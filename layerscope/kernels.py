"""Training kernels for the CPU: the same computation, with less time lost around the matmuls.

Training (realignment, fine-tuning) keeps the model's dropout on, as the published code did. On
a CPU that costs more than it should, and most of all in bf16 (docs/benchmarks.md, "bf16 on the
CPU"): PyTorch draws dropout masks with ``bernoulli_``, which runs on one thread (about 150 M
draws/s here); with dropout on, the CPU ``scaled_dot_product_attention`` has no fused kernel and
takes a math path that runs in float32 whatever autocast asks, with a safe softmax and four
extra casts per layer; and autocast casts the input of the query, key and value projections to
bf16 three times. The optimiser step adds a fixed cost that bf16 does not shorten: PyTorch's
default ``foreach`` Adam makes several passes over every parameter. ``kernels="fast"`` changes
these four things and nothing else:

- **Dropout masks** are drawn 64 bits at a time from torch's default generator (``random_`` on
  int64) and read as four 16-bit uniform integers; an element is kept when its integer is below
  ``round((1 - p) * 65536)``. The keep probability is thus ``1 - p`` rounded to a multiple of
  2**-16 (p = 0.1 keeps 0.899994), and kept values are scaled by the inverse of that
  probability, so that the expectation is exactly the input, as in inverted dropout. (On a
  bf16 tensor the scale is a bf16 number, 1.109375 for p = 0.1, as in PyTorch's own dropout.)
- **Attention with dropout** is computed here, in the autocast dtype under autocast, as Hugging
  Face's eager attention does (scores, softmax output and dropout in bf16, the softmax reducing
  in float32), and in float32 (float64 for float64 inputs) otherwise; the weights of a query
  with every key masked are 0, as PyTorch's safe softmax gives.
- **Under autocast**, a float32 activation read by several linear layers in a row (the query,
  key and value projections) is cast once, not once per layer; and the weights of frozen linear
  layers are cast once per run, not at every forward pass (a weight changed in place is cast
  again). These casts are the very roundings autocast makes.
- **The optimiser step** (Adam, AdamW) runs PyTorch's fused CPU kernel (``fused=True``): one
  pass over each parameter instead of several ``foreach`` passes (0.107 s -> 0.032 s for
  multilingual-e5-small's fine-tuning step on two threads). It is the same update; its float32
  results can differ from the ``foreach`` ones in the last bit.

Draws come from torch's default generator, so a seed fixes them and a saved generator state
resumes them. ``kernels="torch"`` keeps PyTorch's own kernels (bit-identical to layerscope before
this option); ``auto`` is ``fast`` on a CPU and ``torch`` elsewhere (GPUs fuse dropout and
attention). Evaluation and extraction run without dropout and do not use this module.
"""

from __future__ import annotations

import contextlib
import math
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .errors import LayerscopeError

KERNELS = ("auto", "torch", "fast")
_LEVELS = 1 << 16  # 16-bit uniform integers


def check_kernels(kernels: str) -> str:
    if kernels not in KERNELS:
        raise LayerscopeError(f"unknown training kernels {kernels!r}: use auto, torch or fast")
    return kernels


def resolve_kernels(device: torch.device | str, kernels: str) -> str:
    """The kernels a run on ``device`` uses: ``fast`` or ``torch`` (``auto``: fast on a CPU)."""
    check_kernels(kernels)
    if kernels == "auto":
        return "fast" if torch.device(device).type == "cpu" else "torch"
    return kernels


def keep_threshold(p: float) -> int:
    """How many of the 2**16 integer levels keep an element: round((1 - p) * 2**16)."""
    return round((1.0 - p) * _LEVELS)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """A boolean mask of ``shape`` (True = kept) and the scale of kept values, 2**16 / threshold.

    Each element is kept with probability ``keep_threshold(p) / 2**16``, independently.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    count = math.prod(shape)
    threshold = keep_threshold(p)
    if threshold <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=device), 0.0
    if threshold >= _LEVELS:  # p below 2**-17: nothing is dropped (and nothing drawn)
        return torch.ones(shape, dtype=torch.bool, device=device), 1.0
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    levels = words.view(torch.int16)[:count].view(shape)  # uniform over -2**15 … 2**15 - 1
    return levels < threshold - _LEVELS // 2, _LEVELS / threshold


def fast_dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """Inverted dropout of ``x`` (any shape) with a :func:`keep_mask`; the identity when not training."""
    if not training or p == 0.0:
        return x
    keep, scale = keep_mask(x.shape, p, x.device)
    factor = keep.to(x.dtype).mul_(scale)
    return x.mul_(factor) if inplace else x * factor


def _compute_dtype(query: torch.Tensor) -> torch.dtype:
    device = query.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(query.dtype, torch.float32)


def attention_with_dropout(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                           is_causal: bool = False, scale: float | None = None,
                           enable_gqa: bool = False) -> torch.Tensor:
    """``scaled_dot_product_attention`` with :func:`keep_mask` dropout on the attention weights.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev). Computed in the
    autocast dtype under autocast, else in float32 (float64 for float64 inputs). ``attn_mask``
    is boolean (True = attend) or additive, broadcastable to (..., L, S); a query row whose keys
    are all masked gets zero weights, as PyTorch's safe softmax gives.
    """
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    compute = _compute_dtype(query)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    length, source = query.shape[-2], key.shape[-2]
    allowed = None
    if is_causal:
        allowed = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        allowed = attn_mask if allowed is None else allowed & attn_mask
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.to(compute) * scale, key.to(compute).transpose(-2, -1))  # (..., L, S)
        empty_rows = None  # (..., L, 1), of the mask's own (small) shape
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            scores = scores + attn_mask.to(compute)
            empty_rows = torch.isneginf(attn_mask).all(dim=-1, keepdim=True)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
            no_key = ~allowed.any(dim=-1, keepdim=True)
            empty_rows = no_key if empty_rows is None else empty_rows | no_key
        weights = torch.softmax(scores, dim=-1)
        if empty_rows is not None and bool(empty_rows.any()):
            weights = weights.masked_fill(empty_rows, 0.0)
        if dropout_p > 0.0:
            keep, keep_scale = keep_mask(weights.shape, dropout_p, weights.device)
            weights = weights * keep.to(compute)
        output = torch.matmul(weights, value.to(compute))
        if dropout_p > 0.0:
            output = output * keep_scale
    return output


class FastKernelsMode(TorchFunctionMode):
    """Inside it, dropout, attention with dropout and autocast's casts of linear inputs take the
    ``fast`` kernels of this module (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._cast_source: weakref.ref | None = None
        self._cast_key: tuple | None = None
        self._cast: torch.Tensor | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            return self._linear(*args, **kwargs)
        if func is torch.dropout:  # torch.dropout(input, p, train)
            return fast_dropout(*_arguments(args, kwargs, ("input", "p", "train"), {}))
        if func is F.dropout:
            return fast_dropout(*_arguments(args, kwargs, ("input", "p", "training", "inplace"),
                                            {"p": 0.5, "training": True, "inplace": False}))
        if func is F.scaled_dot_product_attention:
            bound = dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"), args))
            bound.update(kwargs)
            if bound.get("dropout_p", 0.0) > 0.0:
                return attention_with_dropout(**bound)
        return func(*args, **kwargs)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        device = x.device.type
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = self._shared_cast(x, dtype), _frozen_cast(weight, dtype)
            bias = _frozen_cast(bias, dtype) if bias is not None else None
        return F.linear(x, weight, bias)

    def _shared_cast(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``x`` cast to ``dtype`` once for all the linear layers that read it in a row."""
        if x.dtype != torch.float32:
            return x
        key = (x._version, x.shape, x.stride(), x.storage_offset())
        if self._cast_source is not None and self._cast_source() is x and self._cast_key == key:
            return self._cast
        self._cast = x.to(dtype)
        self._cast_source, self._cast_key = weakref.ref(x), key
        return self._cast

    def __exit__(self, *exc):
        self._cast_source = self._cast = None
        return super().__exit__(*exc)


# id(weight) -> (weak reference to it, its version, dtype, the cast); an entry leaves with its weight
_FROZEN_CASTS: dict[int, tuple[weakref.ref, int, torch.dtype, torch.Tensor]] = {}


def _frozen_cast(param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float32 tensor that takes no gradient, cast to ``dtype`` once while it is unchanged."""
    if param.requires_grad or param.dtype != torch.float32 or dtype == torch.float32:
        return param
    key = id(param)
    entry = _FROZEN_CASTS.get(key)
    if entry is not None and entry[0]() is param and entry[1] == param._version and entry[2] == dtype:
        return entry[3]
    cast = param.detach().to(dtype)
    _FROZEN_CASTS[key] = (weakref.ref(param, lambda _, key=key: _FROZEN_CASTS.pop(key, None)),
                          param._version, dtype, cast)
    return cast


def _arguments(args, kwargs, names, defaults) -> list:
    values = dict(zip(names, args))
    values.update(kwargs)
    return [values[name] if name in values else defaults[name] for name in names]


def optimizer_options(device: torch.device | str, kernels: str) -> dict[str, bool]:
    """Keyword options for ``torch.optim.Adam``/``AdamW`` of a run on ``device`` with ``kernels``:
    ``{"fused": True}`` with the fast kernels on a CPU, else none (PyTorch's default)."""
    if resolve_kernels(device, kernels) == "fast" and torch.device(device).type == "cpu":
        return {"fused": True}
    return {}


def training_kernels(device: torch.device | str, kernels: str):
    """The context of a training forward pass on ``device`` with ``kernels`` (see the module docstring)."""
    if resolve_kernels(device, kernels) == "fast":
        return FastKernelsMode()
    return contextlib.nullcontext()
