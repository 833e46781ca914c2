"""Reading and writing checkpoints, and their provenance hashes.

A layerscope checkpoint is a dict saved with ``torch.save`` that holds only tensors and plain
types, so it loads with ``torch.load(path, weights_only=True)``::

    {"format": "layerscope-checkpoint", "version": 1, "config": <HF config dict>,
     "tokenizer": <tokenizer.json string or None>, "tokenizer_name": <hub id or None>,
     "tokenizer_config": <special tokens etc.>, "state_dict": {...}, "meta": {...}}

Nothing here ever unpickles with ``weights_only=False``: a file that would need it is refused,
because unpickling can run arbitrary code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import LayerscopeError
from ..outputs import atomic_write

FORMAT = "layerscope-checkpoint"
VERSION = 1

_PICKLE_REFUSAL = (
    "refused to load: this file needs arbitrary code execution to unpickle "
    "(torch.load with weights_only=False), and pickles can run code. Re-save it from a trusted "
    "environment as a plain state_dict or .safetensors file"
)


@dataclass
class Checkpoint:
    """A loaded checkpoint: everything needed to rebuild the model, plus provenance."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer_json: str | None = None
    tokenizer_name: str | None = None
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    file_sha256: str | None = None

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "?"))

    def content_hash(self) -> str:
        """Hash of the weights and config, independent of how the file was written."""
        return state_dict_hash(self.state_dict, extra=_stable_repr(self.config))

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config,
            "tokenizer": self.tokenizer_json,
            "tokenizer_name": self.tokenizer_name,
            "tokenizer_config": self.tokenizer_config,
            "state_dict": self.state_dict,
            "meta": self.meta,
        }


@dataclass
class BareStateDict:
    """Weights without architecture: needs ``--model`` (hub id or HF directory) to be used."""

    state_dict: dict[str, torch.Tensor]
    path: Path
    file_sha256: str


def _stable_repr(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)


def state_dict_hash(state_dict: Mapping[str, torch.Tensor], *, extra: str = "") -> str:
    """SHA-256 over sorted parameter names, dtypes, shapes and bytes (first 16 hex digits)."""
    digest = hashlib.sha256(extra.encode())
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def refuse_non_finite(state_dict: Mapping[str, torch.Tensor], source: object) -> None:
    bad = [
        name
        for name, tensor in state_dict.items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise LayerscopeError(f"weights contain NaN or Inf ({shown}); refusing to compute metrics on them", source=source)


_SAFE_MODULES = ("torch", "collections", "numpy.core.multiarray", "numpy", "_codecs", "builtins")
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _pickle_bytes(path: Path) -> bytes | None:
    """The pickle stream of a file: itself, or ``data.pkl`` inside a torch.save zip."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                return archive.read(name) if name else None
        except (zipfile.BadZipFile, OSError, KeyError):
            return None
    return path.read_bytes()


def _needs_code(path: Path) -> bool:
    """Whether the pickle imports anything beyond torch's tensor machinery, read without executing it."""
    import pickletools

    data = _pickle_bytes(path)
    if not data:
        return False
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # not a pickle stream at all (text, random bytes): corrupt, not dangerous
        return False
    strings: list[str] = []
    for opcode, arg, _pos in ops:
        if isinstance(arg, str):
            strings.append(arg)
        if opcode.name == "GLOBAL" and isinstance(arg, str):
            if not arg.split(" ")[0].startswith(_SAFE_MODULES):
                return True
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            if not strings[-2].startswith(_SAFE_MODULES):
                return True
        elif opcode.name in ("INST", "OBJ"):
            return True
    return False


def _first_sentence(exc: BaseException, limit: int = 200) -> str:
    """The first line and sentence of an exception's message, at most ``limit`` characters
    (library messages run long: lists of every dtype, advice on how files get corrupted)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0].strip()
    head, dot, _rest = first.partition(". ")
    head += "." if dot else ""
    return head if len(head) <= limit else head[: limit - 1] + "…"


def _torch_load_safely(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it does not expect; the file is judged below.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or _needs_code(path):
            raise LayerscopeError(_PICKLE_REFUSAL, source=path) from None
        detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if "WeightsUnpickler" in text else text.splitlines()[0]
        raise LayerscopeError(f"not a readable checkpoint file (unpickling failed: {detail})", source=path) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise LayerscopeError(f"truncated or corrupt checkpoint file ({_first_sentence(exc)})", source=path) from None
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler runs no code; any failure means a bad file
        raise LayerscopeError(f"not a readable checkpoint file (neither torch.save nor pickle data: "
                              f"{type(exc).__name__} {_first_sentence(exc)})", source=path) from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LayerscopeError(f"corrupt safetensors file ({_first_sentence(exc)})", source=path) from None


_PAYLOAD_TYPES: dict[str, tuple[type, ...]] = {
    "config": (dict,),
    "state_dict": (dict,),
    "meta": (dict, type(None)),
    "tokenizer": (str, type(None)),
    "tokenizer_name": (str, type(None)),
    "tokenizer_config": (dict, type(None)),
}


def _check_payload(payload: Mapping[str, Any], path: Path) -> None:
    """Refuse a layerscope checkpoint whose fields have the wrong types (hand-edited or foreign)."""
    for key, types in _PAYLOAD_TYPES.items():
        if not isinstance(payload.get(key), types):
            raise LayerscopeError(f"layerscope checkpoint without a valid {key!r} "
                                  f"(found a {type(payload.get(key)).__name__})", source=path)
    for name, value in payload["state_dict"].items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise LayerscopeError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor", source=path)


def read_weights_file(path: str | os.PathLike, *, check_finite: bool = True) -> Checkpoint | BareStateDict:
    """Load a ``.pt`` (layerscope checkpoint or bare state_dict) or ``.safetensors`` file."""
    path = Path(path)
    if not path.exists():
        raise LayerscopeError("no such file", source=path)
    if path.is_dir():
        raise LayerscopeError("is a directory, not a checkpoint file", source=path)
    if path.stat().st_size == 0:
        raise LayerscopeError("empty file, not a checkpoint", source=path)
    sha = file_sha256(path)
    if path.suffix == ".safetensors":
        state = _load_safetensors(path)
        if check_finite:
            refuse_non_finite(state, path)
        return BareStateDict(state, path, sha)

    payload = _torch_load_safely(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        version = payload.get("version")
        if version != VERSION:
            raise LayerscopeError(f"unsupported layerscope checkpoint version {version!r} (this layerscope reads {VERSION})", source=path)
        _check_payload(payload, path)
        state = payload["state_dict"]
        if check_finite:
            refuse_non_finite(state, path)
        return Checkpoint(
            config=payload["config"],
            state_dict=state,
            tokenizer_json=payload.get("tokenizer"),
            tokenizer_name=payload.get("tokenizer_name"),
            tokenizer_config=payload.get("tokenizer_config") or {},
            meta=payload.get("meta") or {},
            path=path,
            file_sha256=sha,
        )
    if isinstance(payload, dict) and "state_dict" in payload and isinstance(payload["state_dict"], dict):
        payload = payload["state_dict"]  # a training-script checkpoint {"state_dict": ..., ...}
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if check_finite:
            refuse_non_finite(payload, path)
        return BareStateDict(dict(payload), path, sha)
    kind = type(payload).__name__
    keys = f" with keys {sorted(map(str, payload))[:5]}" if isinstance(payload, dict) else ""
    raise LayerscopeError(
        f"not a layerscope checkpoint or state_dict (found a {kind}{keys}); "
        "write one with `layerscope snapshot MODEL out.pt`",
        source=path,
    )


def load_checkpoint(path: str | os.PathLike, *, check_finite: bool = True) -> Checkpoint:
    """Load a self-contained layerscope checkpoint (never unpickling code)."""
    loaded = read_weights_file(path, check_finite=check_finite)
    if isinstance(loaded, BareStateDict):
        raise LayerscopeError(
            "a bare state_dict without architecture or tokenizer; pass --model <hub id or HF directory>",
            source=path,
        )
    return loaded


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` atomically; returns the path. Tensors are saved contiguous on CPU."""
    checkpoint.state_dict = {
        name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in checkpoint.state_dict.items()
    }
    payload = checkpoint.to_payload()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    # A checkpoint that cannot be read back with weights_only=True is a bug: check before writing.
    buffer.seek(0)
    torch.load(buffer, map_location="cpu", weights_only=True)
    written = atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    checkpoint.path = written
    checkpoint.file_sha256 = file_sha256(written)
    return written
