"""From examples to model inputs: sub-tokens, label positions and answer spans.

- **Tagging** (PoS, NER): each word's label goes on its *first* sub-token; every other
  position (later sub-tokens, special tokens, padding) gets ``-100`` and is ignored by the loss
  and the evaluation. A sentence longer than ``max_length`` sub-tokens is cut into chunks of
  whole words, so every word is tagged.
- **Pairs** (NLI): ``tokenizer(premise, hypothesis)`` truncated to ``max_length``.
- **Spans** (QA): question then context, the context cut into windows of ``max_length`` with
  ``doc_stride`` tokens of overlap; the answer's first and last sub-tokens are the targets,
  or position 0 when the answer is not inside a window (the usual SQuAD recipe).

Needs a fast tokenizer (``word_ids`` and offsets).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import LayerscopeError
from .data import PairExample, QAExample, TaggedSentence

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class Feature:
    """One model input. ``labels`` holds, by kind: one id or ``-100`` per sub-token (tagging),
    ``[label id]`` (pairs) or ``[start, end]`` (spans). ``example`` is the index of the example
    it came from; ``words`` maps positions to word indices (tagging, first sub-tokens only);
    ``offsets`` maps positions to character spans of the context (spans, context only)."""

    input_ids: list[int]
    labels: list[int]
    example: int
    token_type_ids: list[int] | None = None
    words: dict[int, int] = field(default_factory=dict)
    offsets: list[tuple[int, int] | None] | None = None


def _require_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise LayerscopeError("fine-tuning needs a fast (Rust) tokenizer for word ids and offsets; "
                              f"{type(tokenizer).__name__} is not one")


def _label_ids(labels: Sequence[str], label_to_id: dict[str, int], where: str) -> list[int]:
    out = []
    for tag in labels:
        if tag not in label_to_id:
            raise LayerscopeError(f"{where}: label {tag!r} is not among the training labels "
                                  f"({', '.join(label_to_id)})")
        out.append(label_to_id[tag])
    return out


def _word_chunks(word_lengths: list[int], budget: int) -> list[tuple[int, int]]:
    """Split words into consecutive (start, end) runs whose sub-token counts fit ``budget``."""
    chunks, start, used = [], 0, 0
    for i, length in enumerate(word_lengths):
        length = min(length, budget)
        if used + length > budget and i > start:
            chunks.append((start, i))
            start, used = i, 0
        used += length
    chunks.append((start, len(word_lengths)))
    return chunks


def encode_tagging(tokenizer, sentences: Sequence[TaggedSentence], label_to_id: dict[str, int], *,
                   max_length: int, where: str = "data") -> list[Feature]:
    """Features for word tagging: labels on first sub-tokens, ``-100`` elsewhere."""
    _require_fast(tokenizer)
    if max_length < 4:
        raise LayerscopeError(f"max_length must be at least 4, got {max_length}")
    features: list[Feature] = []
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, add_special_tokens=True,
                        truncation=False)
    no_tokens = 0
    for index, sentence in enumerate(sentences):
        ids = _label_ids(sentence.labels, label_to_id, f"{where}, sentence {sentence.id or index}")
        word_ids = encoded.word_ids(index)
        if len(word_ids) <= max_length:
            pieces = [(0, len(sentence.words), encoded["input_ids"][index], word_ids)]
        else:
            lengths = [0] * len(sentence.words)
            for w in word_ids:
                if w is not None:
                    lengths[w] += 1
            pieces = []
            for start, end in _word_chunks(lengths, budget):
                enc = tokenizer(sentence.words[start:end], is_split_into_words=True, truncation=True,
                                max_length=max_length)
                pieces.append((start, end, enc["input_ids"], enc.word_ids()))
        for start, _end, input_ids, chunk_word_ids in pieces:
            labels = [IGNORE] * len(input_ids)
            words: dict[int, int] = {}
            previous = None
            for position, w in enumerate(chunk_word_ids):
                if w is not None and w != previous:
                    labels[position] = ids[start + w]
                    words[position] = start + w
                previous = w
            features.append(Feature(list(input_ids), labels, index, words=words))
        covered = {w for f in features[len(features) - len(pieces):] for w in f.words.values()}
        no_tokens += len(sentence.words) - len(covered)
    if no_tokens:
        log.info("%s: %d words have no sub-token (empty after normalisation); they count as untagged",
                 where, no_tokens)
    return features


def encode_pairs(tokenizer, examples: Sequence[PairExample], label_to_id: dict[str, int], *,
                 max_length: int, where: str = "data") -> list[Feature]:
    """Features for sentence-pair classification."""
    _require_fast(tokenizer)
    encoded = tokenizer([e.premise for e in examples], [e.hypothesis for e in examples], truncation=True,
                        max_length=max_length, return_token_type_ids=True)
    features = []
    types = encoded.get("token_type_ids")
    for index, example in enumerate(examples):
        label = _label_ids([example.label], label_to_id, f"{where}, example {example.id or index}")
        features.append(Feature(list(encoded["input_ids"][index]), label, index,
                                token_type_ids=list(types[index]) if types is not None else None))
    return features


def _truncate_question(tokenizer, question: str, max_tokens: int) -> str:
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_tokens:
        return question
    return question[: enc["offset_mapping"][max_tokens - 1][1]]


def encode_spans(tokenizer, examples: Sequence[QAExample], *, max_length: int, doc_stride: int = 128,
                 max_question_tokens: int = 64, training: bool, where: str = "data") -> list[Feature]:
    """Features for extractive QA (question, context window) with answer start/end positions.

    In training, the first gold answer is the target; an answer whose text is not found at its
    ``answer_start`` is looked for in the context (nearest occurrence) and skipped if absent.
    """
    _require_fast(tokenizer)
    max_question_tokens = min(max_question_tokens, max_length // 2)
    questions = [_truncate_question(tokenizer, e.question, max_question_tokens) for e in examples]
    longest = max(len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"])
    window = max_length - longest - tokenizer.num_special_tokens_to_add(pair=True)
    if window < 4:
        raise LayerscopeError(f"max_length {max_length} leaves fewer than 4 sub-tokens of context next to the "
                              "longest question; use a larger --max-length for qa")
    doc_stride = max(0, min(doc_stride, window // 2))  # the tokenizer needs stride < window
    encoded = tokenizer(questions, [e.context for e in examples], truncation="only_second", max_length=max_length,
                        stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                        return_token_type_ids=True)
    types = encoded.get("token_type_ids")
    sample_map = encoded["overflow_to_sample_mapping"]
    features = []
    skipped: set[int] = set()
    answer_spans: dict[int, tuple[int, int] | None] = {}
    for i, sample in enumerate(sample_map):
        example = examples[sample]
        sequence_ids = encoded.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids)]
        start = end = 0
        if training:
            if sample not in answer_spans:
                answer_spans[sample] = _answer_span(example)
            span = answer_spans[sample]
            if span is None:
                skipped.add(sample)
                continue
            first = next((p for p, o in enumerate(offsets) if o is not None), None)
            last = max((p for p, o in enumerate(offsets) if o is not None), default=None)
            if first is not None and offsets[first][0] <= span[0] and offsets[last][1] >= span[1]:
                start = next(p for p in range(first, last + 1)
                             if offsets[p] is not None and offsets[p][1] > span[0])
                end = next(p for p in range(last, first - 1, -1)
                           if offsets[p] is not None and offsets[p][0] < span[1])
        features.append(Feature(list(encoded["input_ids"][i]), [start, end], sample,
                                token_type_ids=list(types[i]) if types is not None else None, offsets=offsets))
    if skipped:
        log.warning("%s: %d questions skipped, their answer text is not in the context", where, len(skipped))
    if not features:
        raise LayerscopeError(f"{where}: no usable question")
    return features


def _answer_span(example: QAExample) -> tuple[int, int] | None:
    """Character span (start, end) of the first gold answer in the context."""
    text = example.answers[0]
    start = example.answer_starts[0] if example.answer_starts else -1
    if start >= 0 and example.context[start:start + len(text)] == text:
        return start, start + len(text)
    found = [i for i in range(len(example.context)) if example.context.startswith(text, i)] if text else []
    if not found:
        return None
    best = min(found, key=lambda i: abs(i - start))
    return best, best + len(text)
