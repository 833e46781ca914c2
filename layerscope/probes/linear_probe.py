"""Linear probes: per-layer representations of a task's examples and the classifier fitted on them.

Representations come from one forward pass per batch (every layer at once, as in
:mod:`layerscope.probes.activations`):

- **per word** for tagging tasks (PoS, NER): the hidden state of each word's first sub-token
  (the words and labels of :func:`layerscope.tasks.features.encode_tagging`);
- **per example** for sentence-pair tasks (NLI): the mean over the real (non-special) tokens.

The classifier is scikit-learn's multinomial logistic regression on standardised features; the
job that trains one per layer and language is :func:`layerscope.probing.probe`.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import LayerscopeError

log = logging.getLogger(__name__)

METRIC = "probe_accuracy"
COLUMNS = ["model", "metric", "layer", "lang", "value", "ci_low", "ci_high"]
DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
CACHE_VERSION = "probe-1"


@dataclass
class Encoded:
    """Probe inputs of one language: ``values`` (L+1, N, d) float32, ``labels`` (N,) and the
    sentence each row came from, ``sentence`` (N,), both int64."""

    values: torch.Tensor
    labels: np.ndarray
    sentence: np.ndarray
    sentences: int




# --------------------------------------------------------------------------- representations


def _features(encoder, task, examples: Sequence, label_to_id: dict[str, int], max_length: int, where: str):
    from ..tasks import features

    if task.kind == "tagging":
        return features.encode_tagging(encoder.tokenizer, examples, label_to_id, max_length=max_length, where=where)
    if task.kind == "pair":
        return features.encode_pairs(encoder.tokenizer, examples, label_to_id, max_length=max_length, where=where)
    raise LayerscopeError(f"task {task.name} has no per-token or per-sentence label ({task.kind}); "
                          "the probe handles tagging (pos, ner) and sentence-pair (nli) tasks")


def encode(encoder, task, examples: Sequence, label_to_id: dict[str, int], *, max_length: int = 128,
           max_tokens: int = 8192, precision: str = "auto", where: str = "data", bar=None,
           cache_dir: str | Path | None = None) -> Encoded:
    """Every layer's representation of each labelled word (tagging) or example (pairs).

    With ``cache_dir``, the result is stored under a key of the model's content hash, the
    examples, the label ids and the settings, and read back on the next call.
    """
    cache_path = None
    if cache_dir is not None:
        digest = hashlib.sha256(f"{CACHE_VERSION}|{encoder.source_hash}|{task.name}|{max_length}|"
                                f"{sorted(label_to_id.items())}|{list(examples)!r}".encode())
        cache_path = Path(cache_dir) / f"probe-{digest.hexdigest()[:32]}.safetensors"
        if cache_path.is_file():
            from safetensors.torch import load_file

            try:
                stored = load_file(str(cache_path))
                if bar is not None:
                    bar.update(len(examples))
                return Encoded(stored["values"], stored["labels"].numpy(), stored["sentence"].numpy(), len(examples))
            except Exception:  # a corrupt entry is recomputed, never trusted
                log.warning("ignoring unreadable cache entry %s", cache_path)
    result = _encode(encoder, task, examples, label_to_id, max_length=max_length, max_tokens=max_tokens,
                     precision=precision, where=where, bar=bar)
    if cache_path is not None:
        from safetensors.torch import save_file

        from ..outputs import atomic_write

        tensors = {"values": result.values.contiguous(), "labels": torch.from_numpy(result.labels),
                   "sentence": torch.from_numpy(result.sentence)}
        atomic_write(cache_path, lambda tmp: save_file(tensors, str(tmp)))
    return result


def _encode(encoder, task, examples: Sequence, label_to_id: dict[str, int], *, max_length: int, max_tokens: int,
            precision: str, where: str, bar) -> Encoded:
    from .activations import forward_layers, length_sorted_batches, pool_mean
    from ..tasks.features import IGNORE

    feats = _features(encoder, task, examples, label_to_id, max_length, where)
    lengths = [len(f.input_ids) for f in feats]
    pad_id = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else 0
    per_feature: list[tuple[torch.Tensor, list[int]] | None] = [None] * len(feats)
    with torch.inference_mode():
        for batch in length_sorted_batches(lengths, max_tokens):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                ids[row, :lengths[index]] = torch.tensor(feats[index].input_ids)
                attention[row, :lengths[index]] = 1
            hidden = forward_layers(encoder, {"input_ids": ids, "attention_mask": attention}, precision=precision)
            if task.kind == "pair":
                real = attention.bool().clone()
                for row, index in enumerate(batch):
                    special = encoder.tokenizer.get_special_tokens_mask(feats[index].input_ids,
                                                                        already_has_special_tokens=True)
                    if not all(special):
                        real[row, :lengths[index]] &= ~torch.tensor(special, dtype=torch.bool)
                pooled = pool_mean(hidden, real).cpu()
                for row, index in enumerate(batch):
                    per_feature[index] = (pooled[:, row:row + 1], feats[index].labels)
            else:
                for row, index in enumerate(batch):
                    positions = [p for p, label in enumerate(feats[index].labels) if label != IGNORE]
                    per_feature[index] = (hidden[:, row, positions, :].float().cpu(),
                                          [feats[index].labels[p] for p in positions])
            if bar is not None:
                bar.update(len({feats[i].example for i in batch}))
    values = torch.cat([v for v, _ in per_feature], dim=1)
    labels = np.array([label for _, labs in per_feature for label in labs], dtype=np.int64)
    sentence = np.concatenate([np.full(len(labs), f.example, dtype=np.int64)
                               for (_, labs), f in zip(per_feature, feats)])
    if not torch.isfinite(values).all():
        raise LayerscopeError(f"{encoder.name} produced NaN or Inf activations for {where}")
    return Encoded(values, labels, sentence, len(examples))


# --------------------------------------------------------------------------- the classifier


class LinearProbe:
    """Multinomial logistic regression on standardised features, C chosen on held-out data.

    ``fit(x, y, x_dev, y_dev)`` trains one classifier per C of ``cs`` on (x, y), keeps the one
    with the best accuracy on (x_dev, y_dev) (the smaller C on ties). Fitted attributes:
    ``C_``, ``dev_accuracy_`` (per C), ``classifier_``, ``mean_``, ``scale_``.
    x: (n, d) features; y: (n,) integer labels.
    """

    def __init__(self, cs: Sequence[float] = DEFAULT_CS, max_iter: int = 300, seed: int = 0) -> None:
        self.cs = tuple(cs)
        self.max_iter = max_iter
        self.seed = seed

    def _standardise(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_

    def fit(self, x, y, x_dev, y_dev) -> "LinearProbe":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        xs, xd = self._standardise(x), self._standardise(x_dev)
        y, y_dev = np.asarray(y), np.asarray(y_dev)
        if len(np.unique(y)) < 2:
            raise LayerscopeError("the probe's training data has a single label; it needs at least two")
        best = None
        self.dev_accuracy_: dict[float, float] = {}
        # along the C path from strong to weak regularisation, each fit starts from the last
        classifier = LogisticRegression(max_iter=self.max_iter, random_state=self.seed, warm_start=True)
        for c in sorted(self.cs):
            classifier.set_params(C=c)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                classifier.fit(xs, y)
            accuracy = float((classifier.predict(xd) == y_dev).mean())
            self.dev_accuracy_[c] = accuracy
            if best is None or accuracy > best[0]:
                best = (accuracy, c, copy.deepcopy(classifier))
        _, self.C_, self.classifier_ = best
        return self

    def predict(self, x) -> np.ndarray:
        return self.classifier_.predict(self._standardise(x))


# --------------------------------------------------------------------------- scoring


def _per_sentence(correct: np.ndarray, sentence: np.ndarray, sentences: int) -> np.ndarray:
    """Correct predictions per sentence: (layers, N) booleans -> (layers, S) counts."""
    out = np.zeros((correct.shape[0], sentences))
    for layer in range(correct.shape[0]):
        out[layer] = np.bincount(sentence, weights=correct[layer], minlength=sentences)
    return out


def bootstrap_interval(hits: np.ndarray, totals: np.ndarray, *, resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``Σ hits / Σ totals`` resampling sentences with replacement.

    hits (layers, S) per-sentence counts (or differences of counts, for a paired Δ), totals (S,)
    -> (low, high), each (layers,).
    """
    layers, s = hits.shape
    if resamples <= 0 or s < 2:
        nan = np.full(layers, math.nan)
        return nan, nan
    rng = np.random.default_rng(seed)
    low, high = np.empty(layers), np.empty(layers)
    draws = rng.integers(0, s, size=(resamples, s))
    denominators = totals[draws].sum(axis=1)  # (B,)
    alpha = (1 - level) / 2
    for layer in range(layers):
        stats = hits[layer][draws].sum(axis=1) / denominators
        low[layer], high[layer] = np.quantile(stats, [alpha, 1 - alpha])
    return low, high


def _rows(model: str, lang: str, values, low, high) -> list[tuple]:
    return [(model, METRIC, layer, lang, float(v), float(a), float(b)) for layer, (v, a, b) in
            enumerate(zip(values, low, high))]
