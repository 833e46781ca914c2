"""Forward-pass precision: which autocast a ``--precision`` choice means on a device.

``fp32`` runs everything in float32. ``bf16`` wraps forward passes in ``torch.autocast`` with
bfloat16 on a GPU or a CPU; ``fp16`` in float16 autocast (GPU only; on a CPU it means fp32).
``auto`` is bf16 where the hardware computes it natively — a GPU that supports it, or a CPU with
AVX512-BF16 or AMX-BF16 instructions — and fp32 elsewhere. On the CPU the choice rests on a
measured agreement with fp32 on multilingual-e5-small (docs/benchmarks.md, "bf16 on the CPU").

Only forward passes run under autocast: losses, metrics, Gram matrices and optimiser states
are computed and kept in float32 or float64 by the callers, and extracted activations are
stored as float32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path

import torch

from .errors import LayerscopeError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")
ENV_OVERRIDE = "LAYERSCOPE_CPU_BF16"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise LayerscopeError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    return precision


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = path.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic instructions (AVX512-BF16 or AMX-BF16).

    Asks torch's own CPU feature query (cpuinfo, every OS) where this torch has it, and the
    Linux ``/proc/cpuinfo`` flags otherwise. Without them bf16 is emulated and slower than fp32.
    The environment variable ``LAYERSCOPE_CPU_BF16=0`` (or ``1``) overrides the detection, so
    that ``auto`` means fp32 (or bf16) on this CPU; the test suite sets it to 0.
    """
    override = os.environ.get(ENV_OVERRIDE, "").strip()
    if override in ("0", "1"):
        return override == "1"
    return _native_bf16_cached()


@functools.lru_cache(maxsize=1)
def _native_bf16_cached() -> bool:
    return _detect_native_bf16()


def _detect_native_bf16() -> bool:
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if callable(probe)]
    if probes:
        try:
            return any(bool(probe()) for probe in probes)
        except Exception:  # a private query that changed shape: fall back to the flags
            pass
    return bool(_cpuinfo_flags() & set(_NATIVE_FLAGS))


def _gpu_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(device: torch.device | str, precision: str) -> str:
    """The precision a run on ``device`` actually uses: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` -> ``bf16`` on a GPU or CPU with native bf16, else ``fp32``; ``fp16`` on a CPU -> ``fp32``;
    ``bf16`` stays ``bf16`` everywhere (on a CPU without native bf16 it is emulated, and slow).
    """
    check_precision(precision)
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if _gpu_bf16(device) else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        return "fp32"
    return precision


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def autocast(device: torch.device | str, precision: str):
    """The context manager of forward passes on ``device`` in ``precision`` (see :func:`resolve_precision`)."""
    device = torch.device(device)
    used = resolve_precision(device, precision)
    if used == "fp32" or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    if used == "fp16":
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and not cpu_has_native_bf16():
        _warn_once("bf16 requested on a CPU without native bf16 instructions (avx512_bf16/amx_bf16): "
                   "it is emulated and will be slower than fp32")
    if device.type == "cuda" and not _gpu_bf16(device):
        _warn_once("bf16 requested on a GPU without bf16 support: it will be slow or fail")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def full_precision(device: torch.device | str):
    """Autocast switched off inside an autocast region: losses and heads that must stay float32."""
    device = torch.device(device)
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
