"""Task metrics as pure functions: accuracy, IOB2 entity F1, SQuAD exact match and F1.

Inputs are plain Python sequences (labels as strings, answers as text); nothing here knows
about models or files.

- Token / sentence accuracy: correct / total.
- Entity F1 (NER): an entity is a (type, first token, last token) span. Micro-averaged over all
  sentences; ``mode="conlleval"`` (default) reads tags as seqeval's default mode and the
  CoNLL ``conlleval`` script do (an ``I-X`` that does not continue an ``X`` entity opens a
  new one), ``mode="strict"`` as seqeval's strict IOB2 mode (only ``B-X`` opens an entity;
  a stray ``I-X`` belongs to none). Precision, recall or F1 with nothing to divide by is 0.
- SQuAD v1.1 exact match and token F1: answers normalised by lower-casing, removing ASCII
  punctuation and the English articles *a*, *an*, *the*, and collapsing white space; a
  prediction scores its best value over the gold answers.
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass
from typing import Iterable, Sequence

ENTITY_MODES = ("conlleval", "strict")


# --------------------------------------------------------------------------- accuracy


def accuracy(gold: Sequence, predicted: Sequence) -> float:
    """Fraction of positions where ``predicted`` equals ``gold`` (0.0 for empty input)."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold and predicted differ in length: {len(gold)} and {len(predicted)}")
    if not gold:
        return 0.0
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def token_accuracy(gold: Sequence[Sequence], predicted: Sequence[Sequence]) -> float:
    """Accuracy over all tokens of all sentences; sentences must have equal lengths."""
    _check_sentences(gold, predicted)
    flat_gold = [tag for sentence in gold for tag in sentence]
    flat_pred = [tag for sentence in predicted for tag in sentence]
    return accuracy(flat_gold, flat_pred)


def majority_baseline(train: Iterable[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    """Token accuracy of always predicting the most frequent training label."""
    counts = collections.Counter(tag for sentence in train for tag in sentence)
    if not counts:
        raise ValueError("no training labels to take a majority from")
    top = counts.most_common(1)[0][0]
    return token_accuracy(gold, [[top] * len(sentence) for sentence in gold])


def _check_sentences(gold: Sequence[Sequence], predicted: Sequence[Sequence]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} sentences but predicted has {len(predicted)}")
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: gold has {len(g)} tags but predicted has {len(p)}")


# --------------------------------------------------------------------------- entities


def _split_tag(tag: str) -> tuple[str, str]:
    """``B-PER`` -> (``B``, ``PER``); ``O`` -> (``O``, ``""``)."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not kind:
        raise ValueError(f"not an IOB2 tag: {tag!r} (expected O, B-TYPE or I-TYPE)")
    return prefix, kind


def iob2_entities(tags: Sequence[str], *, mode: str = "conlleval") -> list[tuple[str, int, int]]:
    """Entities of one sentence as ``(type, first, last)`` token indices (inclusive).

    ``mode="conlleval"``: an entity starts at ``B-X``, or at ``I-X`` when the previous tag is
    not ``B-X``/``I-X``; it continues over ``I-X`` of the same type. ``mode="strict"``: only
    ``B-X`` starts an entity and ``I-X`` continues one of the same type; any other ``I-X``
    belongs to no entity.
    """
    if mode not in ENTITY_MODES:
        raise ValueError(f"unknown entity mode {mode!r}; known: {', '.join(ENTITY_MODES)}")
    entities: list[tuple[str, int, int]] = []
    current: tuple[str, int] | None = None  # (type, start) of the open entity
    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag)
        continues = prefix == "I" and current is not None and current[0] == kind
        if continues:
            continue
        if current is not None:
            entities.append((current[0], current[1], i - 1))
            current = None
        if prefix == "B" or (prefix == "I" and mode == "conlleval"):
            current = (kind, i)
    if current is not None:
        entities.append((current[0], current[1], len(tags) - 1))
    return entities


@dataclass(frozen=True)
class EntityScores:
    """Micro-averaged entity precision, recall and F1, with the counts they come from."""

    precision: float
    recall: float
    f1: float
    true_positives: int
    predicted: int
    gold: int


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], *,
                  mode: str = "conlleval") -> EntityScores:
    """Entity-level precision, recall and F1 over sentences of IOB2 tags.

    A predicted entity counts only if its type and both boundaries match a gold entity.
    """
    _check_sentences(gold, predicted)
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, predicted):
        gold_set = set(iob2_entities(g, mode=mode))
        pred_set = set(iob2_entities(p, mode=mode))
        tp += len(gold_set & pred_set)
        n_pred += len(pred_set)
        n_gold += len(gold_set)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return EntityScores(precision, recall, f1, tp, n_pred, n_gold)


# --------------------------------------------------------------------------- SQuAD

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse white space."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def answer_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall between the normalised answers
    (tokens counted with multiplicity; 0.0 when they share no token)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    shared = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(shared.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], references: dict[str, Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1 over questions, each the best over its gold answers.

    ``predictions``: question id -> predicted text; ``references``: question id -> gold
    answer texts. A question without a prediction scores 0. Returns ``{"em": …, "f1": …}``
    as fractions in [0, 1].
    """
    if not references:
        raise ValueError("no reference answers to score against")
    em_total = f1_total = 0.0
    for qid, answers in references.items():
        if not answers:
            raise ValueError(f"question {qid!r} has no gold answer")
        prediction = predictions.get(qid, "")
        em_total += max(exact_match(prediction, a) for a in answers)
        f1_total += max(answer_f1(prediction, a) for a in answers)
    return {"em": em_total / len(references), "f1": f1_total / len(references)}
