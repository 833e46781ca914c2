"""Zero-shot evaluation: run a fine-tuned :class:`~layerscope.tasks.heads.TaskModel` on features
of one language, decode its predictions back to words, labels or answer texts, and score them
with :mod:`layerscope.tasks.metrics`. Scores are fractions in [0, 1].
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from ..precision import autocast
from . import metrics
from .data import QAExample, TaggedSentence
from .features import Feature
from .heads import TaskModel
from .train import collate

UNTAGGED = "_"  # the prediction of a word with no sub-token: wrong for PoS


@torch.no_grad()
def predict_logits(model: TaskModel, features: Sequence[Feature], *, pad_id: int, batch_size: int = 64,
                   device: torch.device | str = "cpu", precision: str = "auto") -> list[torch.Tensor]:
    """Logits of every feature (float32, on the CPU, padding removed): (T, C), (C,) or (T, 2)."""
    device = torch.device(device)
    model.eval()
    model.to(device)
    order = sorted(range(len(features)), key=lambda i: len(features[i].input_ids))
    out: list[torch.Tensor | None] = [None] * len(features)
    for k in range(0, len(order), batch_size):
        chunk = order[k:k + batch_size]
        batch = collate([features[i] for i in chunk], pad_id, model.kind, device)
        with autocast(device, precision):
            logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        logits = logits.float().cpu()
        for row, i in enumerate(chunk):
            length = len(features[i].input_ids)
            out[i] = logits[row] if model.kind == "pair" else logits[row, :length]
    return out  # type: ignore[return-value]


def decode_tags(features: Sequence[Feature], logits: Sequence[torch.Tensor], sentences: Sequence[TaggedSentence],
                id_to_label: Sequence[str], *, fallback: str = UNTAGGED) -> list[list[str]]:
    """Predicted label of each word: argmax at its first sub-token; ``fallback`` for words
    without one."""
    predicted = [[fallback] * len(s.words) for s in sentences]
    for feature, row in zip(features, logits):
        best = row.argmax(dim=-1).tolist()
        for position, word in feature.words.items():
            predicted[feature.example][word] = id_to_label[best[position]]
    return predicted


def decode_answers(features: Sequence[Feature], logits: Sequence[torch.Tensor], examples: Sequence[QAExample], *,
                   n_best: int = 20, max_answer_tokens: int = 30) -> dict[str, str]:
    """Best answer text per question: the context span (start ≤ end, at most
    ``max_answer_tokens`` long) with the highest start + end logit over all of its windows."""
    best: dict[int, tuple[float, str]] = {}
    for feature, row in zip(features, logits):
        offsets = feature.offsets or []
        context = examples[feature.example].context
        start_logits, end_logits = row[:, 0], row[:, 1]
        valid = torch.tensor([o is not None for o in offsets], dtype=torch.bool)
        if not valid.any():
            continue
        k = min(n_best, int(valid.sum()))
        starts = start_logits.masked_fill(~valid, float("-inf")).topk(k).indices.tolist()
        ends = end_logits.masked_fill(~valid, float("-inf")).topk(k).indices.tolist()
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > max_answer_tokens:
                    continue
                score = float(start_logits[s] + end_logits[e])
                current = best.get(feature.example)
                if current is None or score > current[0]:
                    best[feature.example] = (score, context[offsets[s][0]:offsets[e][1]])
    return {examples[i].id: text for i, (_, text) in best.items()}


def score(task_name: str, examples: Sequence, predictions) -> dict[str, float]:
    """Scores of one language: ``predictions`` are per-word labels (pos, ner), labels (nli)
    or question id -> answer text (qa)."""
    if task_name == "pos":
        return {"accuracy": metrics.token_accuracy([s.labels for s in examples], predictions)}
    if task_name == "ner":
        gold = [s.labels for s in examples]
        entity = metrics.entity_scores(gold, predictions)
        return {"f1": entity.f1, "precision": entity.precision, "recall": entity.recall,
                "accuracy": metrics.token_accuracy(gold, predictions)}
    if task_name == "nli":
        return {"accuracy": metrics.accuracy([e.label for e in examples], predictions)}
    if task_name == "qa":
        return metrics.squad_scores(predictions, {e.id: e.answers for e in examples})
    raise ValueError(f"no scorer for task {task_name!r}")


def evaluate_language(model: TaskModel, task_name: str, examples: Sequence, features: Sequence[Feature],
                      id_to_label: Sequence[str] | None, *, pad_id: int, batch_size: int = 64,
                      device: torch.device | str = "cpu", precision: str = "auto") -> dict[str, float]:
    """Predict on one language's features and score against its examples."""
    logits = predict_logits(model, features, pad_id=pad_id, batch_size=batch_size, device=device,
                            precision=precision)
    if model.kind == "tagging":
        predicted = decode_tags(features, logits, examples, id_to_label,
                                fallback="O" if task_name == "ner" else UNTAGGED)
    elif model.kind == "pair":
        predicted = [id_to_label[int(row.argmax())] for row in logits]
    else:
        predicted = decode_answers(features, logits, examples)
    return score(task_name, examples, predicted)


def majority_scores(task, train: list, evals: dict[str, list]) -> dict[str, float]:
    """Per language, the score of always predicting the most frequent training label
    (token accuracy for pos, accuracy for nli; empty for ner and qa)."""
    if task.name == "pos":
        return {lang: metrics.majority_baseline([s.labels for s in train], [s.labels for s in items])
                for lang, items in evals.items()}
    if task.name == "nli":
        top = Counter(e.label for e in train).most_common(1)[0][0]
        return {lang: metrics.accuracy([e.label for e in items], [top] * len(items)) for lang, items in evals.items()}
    return {}
