"""From a parallel corpus to realignment batches.

Word pairs of every sentence pair (see :mod:`~layerscope.realign.pairs`) become
:class:`Example` objects that hold sub-token ids cut at ``max_length``, the position of the
first sub-token of each aligned word and of every word of both sentences (the loss's
candidates). :class:`RoundRobinSampler` draws batches of sentence
pairs round-robin over the languages: slot *k* of the stream comes from language *k* mod *n*,
each language walking through its own seeded permutation, reshuffled every pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .. import progress
from ..errors import LayerscopeError
from ..provenance import grouped_hash
from .links import Link
from .loss import check_negatives
from .pairs import PairSource
from .words import Words, encode_words, get_segmenter, split_words

log = logging.getLogger(__name__)


@dataclass
class Example:
    """One sentence pair ready for the model; ``links`` are (source position, target position)
    of the first sub-tokens of aligned words; ``src_words``/``tgt_words`` the first-sub-token
    positions of every word of each sentence (distinct, sorted; empty: the linked words only)."""

    lang: str
    src_ids: list[int]
    tgt_ids: list[int]
    links: list[tuple[int, int]]
    src_words: list[int] = field(default_factory=list)
    tgt_words: list[int] = field(default_factory=list)


@dataclass
class RealignmentData:
    """Examples per language and how many sentence pairs and word pairs each one has."""

    examples: dict[str, list[Example]]
    sentences: dict[str, int] = field(default_factory=dict)  # sentence pairs read
    word_pairs: dict[str, int] = field(default_factory=dict)  # word pairs usable after tokenisation

    @property
    def languages(self) -> list[str]:
        return list(self.examples)

    def content_hash(self) -> str:
        return grouped_hash(self.examples,
                            lambda ex: repr((ex.src_ids, ex.tgt_ids, ex.links, ex.src_words, ex.tgt_words)))


def build_examples(tokenizer, lang: str, src: Sequence[Words], tgt: Sequence[Words],
                   links: Sequence[Sequence[Link]], max_length: int, *,
                   keep_space_tokens: bool = False, negatives: str = "batch-words") -> list[Example]:
    """Tokenise sentence pairs and map word links to first-sub-token positions.

    Links whose word was cut off by ``max_length`` are dropped; when two words share their
    first sub-token (a token spanning characters of two words) only the first link is kept,
    so links stay one-to-one on tokens. Sentence pairs left without a link are dropped.
    Standalone ``▁`` tokens are deleted from the input, as published, unless ``keep_space_tokens``.
    ``negatives="batch-words"`` records every word's first sub-token (the loss's candidates, as
    published); ``"aligned"`` records none, so that the aligned words are the only candidates.
    """
    every_word = check_negatives(negatives) == "batch-words"
    drop = not keep_space_tokens
    enc_src = encode_words(tokenizer, src, max_length, drop_space_tokens=drop)
    enc_tgt = encode_words(tokenizer, tgt, max_length, drop_space_tokens=drop)
    examples = []
    for es, et, pairs in zip(enc_src, enc_tgt, links):
        used_src: set[int] = set()
        used_tgt: set[int] = set()
        positions = []
        for i, j in pairs:
            a, b = es.first[i], et.first[j]
            if a is None or b is None or a in used_src or b in used_tgt:
                continue
            used_src.add(a)
            used_tgt.add(b)
            positions.append((a, b))
        if positions:
            examples.append(Example(lang, es.input_ids, et.input_ids, positions,
                                    _word_positions(es.first) if every_word else [],
                                    _word_positions(et.first) if every_word else []))
    return examples


def _word_positions(first: Sequence[int | None]) -> list[int]:
    """Distinct first-sub-token positions of the words that survived the cut."""
    return sorted({t for t in first if t is not None})


def extract_pairs(tokenizer, corpus, source: PairSource, *, max_length: int = 96,
                  segmenter: str | None = None, keep_space_tokens: bool = False,
                  negatives: str = "batch-words") -> RealignmentData:
    """Word pairs of every language of ``corpus`` (a ParallelCorpus), tokenised for the model
    (standalone ``▁`` tokens deleted unless ``keep_space_tokens``; the loss's candidates chosen
    by ``negatives``, see :func:`build_examples`).

    Raises LayerscopeError for a language with no usable pair, naming it, before any training.
    """
    split = get_segmenter(segmenter)
    data = RealignmentData(examples={})
    with progress.bar(total=len(corpus.languages), desc="word pairs", unit="lang") as bar:
        for lang in corpus.languages:
            pivot_side = corpus.pivot_sentences[lang]
            target_side = corpus.targets[lang]
            if len(pivot_side) != len(target_side):
                raise LayerscopeError(
                    f"{lang} has {len(target_side)} sentences but its {corpus.pivot} side has "
                    f"{len(pivot_side)}; parallel sides must be line-aligned",
                    source=corpus.spec or corpus.name,
                )
            src_words = [split_words(s, corpus.pivot, segmenter=split) for s in pivot_side]
            tgt_words = [split_words(s, lang, segmenter=split) for s in target_side]
            links = source.align(src_words, tgt_words, lang=lang, pivot=corpus.pivot)
            examples = build_examples(tokenizer, lang, src_words, tgt_words, links, max_length,
                                      keep_space_tokens=keep_space_tokens, negatives=negatives)
            data.examples[lang] = examples
            data.sentences[lang] = len(target_side)
            data.word_pairs[lang] = sum(len(ex.links) for ex in examples)
            bar.update(1)
    empty = [lang for lang, examples in data.examples.items() if not examples]
    if empty:
        details = ", ".join(f"{lang} ({data.sentences[lang]} sentence pairs)" for lang in empty)
        raise LayerscopeError(
            f"no usable word pair for {details} from the {source.name} pair source; check the "
            "dictionary/aligner for these languages or drop them with --langs"
        )
    return data


class RoundRobinSampler:
    """Batches of ``batch_size`` (language, index) draws, round-robin over languages.

    Deterministic given ``seed``; its whole state is a few integers (:meth:`state_dict`), so
    an interrupted run resumes with exactly the batches it would have seen.
    """

    def __init__(self, sizes: dict[str, int], batch_size: int = 16, seed: int = 0) -> None:
        if not sizes:
            raise ValueError("RoundRobinSampler needs at least one language")
        empty = [lang for lang, n in sizes.items() if n < 1]
        if empty:
            raise ValueError(f"languages without examples: {', '.join(empty)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.languages = list(sizes)
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.slot = 0  # next language, as an index into self.languages
        self.position = {lang: 0 for lang in self.languages}
        self.epoch = {lang: 0 for lang in self.languages}
        self._perm_cache: dict[str, tuple[int, list[int]]] = {}

    def _permutation(self, lang: str) -> list[int]:
        epoch = self.epoch[lang]
        cached = self._perm_cache.get(lang)
        if cached is None or cached[0] != epoch:
            index = self.languages.index(lang)
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index * 7_919 + epoch) % (2**63))
            cached = (epoch, torch.randperm(self.sizes[lang], generator=generator).tolist())
            self._perm_cache[lang] = cached
        return cached[1]

    def _draw(self) -> tuple[str, int]:
        lang = self.languages[self.slot]
        self.slot = (self.slot + 1) % len(self.languages)
        item = self._permutation(lang)[self.position[lang]]
        self.position[lang] += 1
        if self.position[lang] == self.sizes[lang]:
            self.position[lang] = 0
            self.epoch[lang] += 1
        return lang, item

    def next_batch(self) -> list[tuple[str, int]]:
        return [self._draw() for _ in range(self.batch_size)]

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"slot": self.slot, "position": dict(self.position), "epoch": dict(self.epoch),
                "languages": list(self.languages), "sizes": dict(self.sizes), "seed": self.seed,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if list(state["languages"]) != self.languages or dict(state["sizes"]) != self.sizes:
            raise LayerscopeError("the saved batch order belongs to other data (languages or sizes differ)")
        self.slot = int(state["slot"])
        self.position = {k: int(v) for k, v in state["position"].items()}
        self.epoch = {k: int(v) for k, v in state["epoch"].items()}


@dataclass
class Batch:
    """A padded batch: source rows first, then target rows. ``src_index``/``tgt_index`` are
    (row, position) of the aligned words' first sub-tokens, pair ``k`` of one with ``k`` of the
    other. ``word_index`` is (row, position) of the first sub-token of every word of every
    sentence (M words), and ``src_word``/``tgt_word`` (N,) the aligned pairs' rows among them."""

    input_ids: torch.Tensor  # (2B, T)
    attention_mask: torch.Tensor  # (2B, T)
    src_index: tuple[torch.Tensor, torch.Tensor]
    tgt_index: tuple[torch.Tensor, torch.Tensor]
    word_index: tuple[torch.Tensor, torch.Tensor]  # (M,), (M,)
    src_word: torch.Tensor  # (N,)
    tgt_word: torch.Tensor  # (N,)

    @property
    def num_pairs(self) -> int:
        return int(self.src_index[0].numel())

    @property
    def num_words(self) -> int:
        return int(self.word_index[0].numel())

    def to(self, device) -> "Batch":
        pair = lambda index: tuple(t.to(device) for t in index)  # noqa: E731
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), pair(self.src_index),
                     pair(self.tgt_index), pair(self.word_index), self.src_word.to(device), self.tgt_word.to(device))


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Pad the source and target sentences of ``examples`` into one (2B, T) batch and list the
    words of every sentence (the linked words at least) with the aligned pairs among them."""
    sequences = [ex.src_ids for ex in examples] + [ex.tgt_ids for ex in examples]
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, :len(ids)] = 1
    b = len(examples)
    word_of: dict[tuple[int, int], int] = {}  # (row, position) -> word number

    def add_words(row: int, positions) -> None:
        for position in positions:
            word_of.setdefault((row, position), len(word_of))

    for row, ex in enumerate(examples):
        add_words(row, sorted(set(ex.src_words) | {a for a, _ in ex.links}))
    for row, ex in enumerate(examples):
        add_words(b + row, sorted(set(ex.tgt_words) | {c for _, c in ex.links}))
    src_rows, src_pos, tgt_rows, tgt_pos = [], [], [], []
    for row, ex in enumerate(examples):
        for a, c in ex.links:
            src_rows.append(row)
            src_pos.append(a)
            tgt_rows.append(b + row)
            tgt_pos.append(c)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    words = list(word_of)
    return Batch(input_ids, attention, (as_long(src_rows), as_long(src_pos)), (as_long(tgt_rows), as_long(tgt_pos)),
                 (as_long([r for r, _ in words]), as_long([p for _, p in words])),
                 as_long([word_of[k] for k in zip(src_rows, src_pos)]),
                 as_long([word_of[k] for k in zip(tgt_rows, tgt_pos)]))
