"""Batched extraction of every layer's sentence vectors, pooled, with an on-disk cache.

One forward pass per batch returns all hidden states; the sentence vector of a layer is pooled
over the sentence's tokens (see :data:`POOLS`; default: the mean over real tokens, special
tokens and padding excluded). Sentences are sorted by length
and packed under a token budget, so padding stays small. The result for ``n`` sentences is a
:class:`LayerStack` of shape ``(L+1, n, d)``, float32, in the input order.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .. import progress
from ..errors import LayerscopeError
from ..models.encoder import Encoder
from ..precision import autocast, resolve_precision

log = logging.getLogger(__name__)

CACHE_VERSION = "1"

# pooling -> what it averages (padding is never included)
POOLS = {
    "mean": "mean over the sentence's tokens, special tokens ([CLS], [SEP], <s>, </s>) excluded",
    "mean-with-special": "mean over all the sentence's tokens, special tokens included",
    "first": "the first token's vector ([CLS] / <s> on encoders that add one)",
}


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise LayerscopeError(f"unknown pooling {pool!r}: use one of {', '.join(POOLS)}")
    return pool


def pool_mask(attention: torch.Tensor, special: torch.Tensor, pool: str) -> torch.Tensor:
    """The tokens each sentence's vector averages, (B, T) bool, from the right-padded batch's
    attention mask and special-tokens mask (both (B, T))."""
    check_pool(pool)
    attended = attention.bool()
    if pool == "mean-with-special":
        return attended
    if pool == "first":
        first = torch.zeros_like(attended)
        first[:, 0] = attended[:, 0]
        return first
    real = attended & ~special
    empty_rows = ~real.any(dim=1)
    real[empty_rows] = attended[empty_rows]  # a sentence of only special tokens
    return real


@dataclass
class LayerStack:
    """Sentence vectors of every layer: ``values`` of shape (L+1, n, d), layer 0 = embeddings."""

    values: torch.Tensor
    lang: str
    layer_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise LayerscopeError(f"a layer stack must have shape (L+1, n, d), got {tuple(self.values.shape)}")
        if not self.layer_names:
            self.layer_names = ["embeddings"] + [f"block {i}" for i in range(1, self.values.shape[0])]

    @property
    def num_layers(self) -> int:
        """L + 1, the number of layers including the embeddings."""
        return int(self.values.shape[0])

    @property
    def n(self) -> int:
        return int(self.values.shape[1])

    def layer(self, index: int) -> torch.Tensor:
        """Sentence vectors of one layer, of shape (n, d)."""
        return self.values[index]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LayerscopeError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return resolved


def length_sorted_batches(lengths: Sequence[int], max_tokens: int, max_batch: int = 512) -> list[list[int]]:
    """Indices grouped longest-first so that ``batch size × longest length ≤ max_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * longest > max_tokens or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class _StopForward(Exception):
    """Raised by a ``stop=True`` capture hook: the modules after the captured one do not run."""


@contextlib.contextmanager
def capture_output(module: torch.nn.Module, *, stop: bool = False, before: bool = False) -> Iterator[dict]:
    """Record ``module``'s output (its hidden-state input when ``before``) in ``store["output"]``
    for the duration of the block; the hook is always removed.

    With ``stop``, the forward pass ends right there (the layers above are not run, so a loss
    that reads this layer costs no more than the layers below it); the model call inside the
    block then returns nothing.
    """
    store: dict = {}

    def record(value) -> None:
        store["output"] = value[0] if isinstance(value, tuple) else value
        if stop:
            raise _StopForward

    if before:
        handle = module.register_forward_pre_hook(
            lambda _m, args, kwargs: record(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda _m, _inputs, output: record(output))
    try:
        yield store
    except _StopForward:
        pass
    finally:
        handle.remove()


def tokenize(encoder: Encoder, sentences: Sequence[str], max_length: int) -> dict[str, list[list[int]]]:
    return encoder.tokenizer(
        list(sentences),
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_attention_mask=True,
        return_token_type_ids=False,
    )


def forward_layers(encoder: Encoder, batch: dict[str, torch.Tensor], *, precision: str = "auto") -> torch.Tensor:
    """Hidden states of every layer for one padded batch: shape (L+1, B, T, d).

    Layer L is the raw output of the last block, also on models (GPT-2, Llama) whose
    ``hidden_states[-1]`` has the final norm applied.
    """
    device = encoder.device
    inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
    capture = capture_output(encoder.blocks[-1]) if encoder.final_norm_after_blocks() else contextlib.nullcontext({})
    with capture as store, autocast(device, precision):
        output = encoder.model(**inputs, output_hidden_states=True, return_dict=True)
    hidden = list(output.hidden_states)
    if len(hidden) != encoder.num_layers + 1:
        raise LayerscopeError(
            f"{encoder.name} returned {len(hidden)} hidden states for {encoder.num_layers} blocks"
        )
    if store and "output" in store:
        hidden[-1] = store["output"]
    return torch.stack(hidden, dim=0)


def pool_mean(hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``token_mask`` is true.

    hidden (L+1, B, T, d), token_mask (B, T) -> (L+1, B, d) in float32.
    """
    mask = token_mask.to(hidden.device, torch.float32)
    counts = mask.sum(dim=1).clamp(min=1.0)  # (B,)
    summed = torch.einsum("lbtd,bt->lbd", hidden.float(), mask)
    return summed / counts[None, :, None]


def _cache_key(encoder: Encoder, sentences: Sequence[str], max_length: int, pool: str = "mean",
               precision: str = "fp32") -> str:
    length = min(max_length, encoder.max_positions)
    # fp32 keeps the key it always had, so caches written before precisions were keyed stay valid
    used = "" if precision == "fp32" else f"|{precision}"
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{encoder.source_hash}|{length}|{pool}{used}".encode())
    for sentence in sentences:
        digest.update(sentence.encode() + b"\n")
    return digest.hexdigest()[:32]


def extract(
    encoder: Encoder,
    sentences: Sequence[str],
    *,
    lang: str = "",
    max_tokens: int = 8192,
    max_length: int = 256,
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    bar=None,
    pool: str = "mean",
) -> LayerStack:
    """Pooled sentence vectors of every layer, shape (L+1, n, d), float32, input order.

    ``precision``: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`layerscope.precision`).
    ``pool``: one of :data:`POOLS` (default ``mean``: real tokens, special tokens excluded).
    With ``cache_dir``, results are stored under a key of the model hash, sentences and settings
    (the pooling and the precision used included).
    """
    check_pool(pool)
    if len(sentences) == 0:
        raise LayerscopeError(f"no sentences to encode for {lang or 'this language'}")
    cache_path = None
    if cache_dir is not None:
        used = resolve_precision(encoder.device, precision)
        cache_path = Path(cache_dir) / f"{_cache_key(encoder, sentences, max_length, pool, used)}.safetensors"
        if cache_path.exists():
            from safetensors.torch import load_file

            try:
                values = load_file(str(cache_path))["values"]
                log.debug("activation cache hit %s (%s)", cache_path.name, lang)
                if bar is not None:
                    bar.update(len(sentences))
                return LayerStack(values, lang, encoder.layer_names)
            except Exception:  # a corrupt cache entry is recomputed, never trusted
                log.warning("ignoring unreadable cache entry %s", cache_path)

    encoded = tokenize(encoder, sentences, min(max_length, encoder.max_positions))
    lengths = [len(ids) for ids in encoded["input_ids"]]
    batches = length_sorted_batches(lengths, max_tokens)
    n, d = len(sentences), encoder.hidden_size
    out = torch.empty(encoder.num_layers + 1, n, d, dtype=torch.float32)
    pad_id = encoder.tokenizer.pad_token_id
    own_bar = bar is None
    if own_bar:
        bar = progress.bar(total=n, desc=f"encode {lang}".strip(), unit="sent")
    with torch.inference_mode():
        for batch_indices in batches:
            width = max(lengths[i] for i in batch_indices)
            ids = torch.full((len(batch_indices), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch_indices), width), dtype=torch.long)
            special = torch.ones((len(batch_indices), width), dtype=torch.bool)
            for row, index in enumerate(batch_indices):
                length = lengths[index]
                ids[row, :length] = torch.tensor(encoded["input_ids"][index])
                attention[row, :length] = 1
                special[row, :length] = torch.tensor(encoded["special_tokens_mask"][index], dtype=torch.bool)
            hidden = forward_layers(encoder, {"input_ids": ids, "attention_mask": attention}, precision=precision)
            pooled = pool_mean(hidden, pool_mask(attention, special, pool)).cpu()
            out[:, batch_indices, :] = pooled
            bar.update(len(batch_indices))
    if own_bar:
        bar.close()
    if not torch.isfinite(out).all():
        raise LayerscopeError(f"{encoder.name} produced NaN or Inf activations for {lang or 'the input'}")
    if cache_path is not None:
        from safetensors.torch import save_file

        from ..outputs import atomic_write

        atomic_write(cache_path, lambda tmp: save_file({"values": out.contiguous()}, str(tmp)))
    return LayerStack(out, lang, encoder.layer_names)


def extract_corpus(
    encoder: Encoder,
    corpus,
    *,
    max_tokens: int = 8192,
    max_length: int = 256,
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    pool: str = "mean",
) -> tuple[dict[str, LayerStack], dict[str, LayerStack]]:
    """Layer stacks of the pivot side and the target side of every language of ``corpus``.

    Returns ``(pivots, targets)`` keyed by target language. A pivot side shared by several
    targets (multi-way corpus) is encoded once and the same stack is returned for each.
    """
    pivots: dict[str, LayerStack] = {}
    targets: dict[str, LayerStack] = {}
    encoded_sides: dict[int, LayerStack] = {}
    distinct_pivots = {id(side): len(side) for side in corpus.pivot_sentences.values()}
    total = sum(distinct_pivots.values()) + sum(len(s) for s in corpus.targets.values())
    with progress.bar(total=total, desc=f"encode ({encoder.name})", unit="sent") as bar:
        kwargs = dict(max_tokens=max_tokens, max_length=max_length, precision=precision, cache_dir=cache_dir, bar=bar,
                      pool=pool)
        for lang in corpus.languages:
            side = corpus.pivot_sentences[lang]
            if id(side) not in encoded_sides:
                encoded_sides[id(side)] = extract(encoder, side, lang=corpus.pivot, **kwargs)
            pivots[lang] = encoded_sides[id(side)]
            bar.set_postfix(lang=lang)
            targets[lang] = extract(encoder, corpus.targets[lang], lang=lang, **kwargs)
    return pivots, targets
