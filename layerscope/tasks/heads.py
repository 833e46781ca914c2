"""Task heads on top of an encoder's base model, and the loss of one batch.

=========  ==============================================================  ================
kind       head                                                            logits
=========  ==============================================================  ================
tagging    dropout → ``Linear(d, C)`` on every position                    (B, T, C)
pair       pooled token → dropout → ``Linear(d, d)`` → tanh → dropout →     (B, C)
           ``Linear(d, C)``; the pooled token is the first one ([CLS]), or
           the last real one for decoder-only models
span       ``Linear(d, 2)`` on every position: start and end logits         (B, T, 2)
=========  ==============================================================  ================

Heads are initialised like BERT's (normal, std 0.02; zero biases) from the global generator,
so seeding before building a :class:`TaskModel` makes it reproducible.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.nn import functional as F

from ..models.encoder import Encoder
from .features import IGNORE

# Model types that read left to right: their pooled token is the last real one.
CAUSAL_TYPES = frozenset({"gpt2", "gptj", "gpt_neo", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3",
                          "gemma", "gemma2", "gemma3", "phi", "phi3", "bloom", "opt", "falcon", "olmo", "olmo2"})


def is_causal(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_decoder", False)) or getattr(config, "model_type", "") in CAUSAL_TYPES


def _dropout_of(config) -> float:
    for attr in ("hidden_dropout_prob", "dropout", "resid_pdrop", "hidden_dropout"):
        value = getattr(config, attr, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.1


def _init(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class TaskModel(nn.Module):
    """An encoder's base model with a task head (see the module docstring).

    ``encoder.model`` is used in place (not copied): training the TaskModel trains it.
    """

    def __init__(self, encoder: Encoder, kind: str, num_labels: int = 0, dropout: float | None = None) -> None:
        super().__init__()
        if kind not in ("tagging", "pair", "span"):
            raise ValueError(f"unknown head kind {kind!r}")
        if kind != "span" and num_labels < 2:
            raise ValueError(f"a {kind} head needs at least 2 labels, got {num_labels}")
        self.kind = kind
        self.base = encoder.model
        d = encoder.hidden_size
        p = _dropout_of(encoder.model.config) if dropout is None else dropout
        self.dropout = nn.Dropout(p)
        self.causal = is_causal(encoder.model)
        if kind == "tagging":
            self.head = nn.Linear(d, num_labels)
        elif kind == "pair":
            self.head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(p), nn.Linear(d, num_labels))
        else:
            self.head = nn.Linear(d, 2)
        _init(self.head)
        # Segment ids only where the model has more than one segment embedding (BERT, not XLM-R).
        self._takes_types = "token_type_ids" in inspect.signature(self.base.forward).parameters and \
            int(getattr(encoder.model.config, "type_vocab_size", 0) or 0) > 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "return_dict": True}
        if token_type_ids is not None and self._takes_types:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.base(**kwargs).last_hidden_state  # (B, T, d)
        if self.kind == "tagging":
            return self.head(self.dropout(hidden))
        if self.kind == "span":
            logits = self.head(hidden)  # padding can be neither start nor end
            return logits.masked_fill(~attention_mask.bool()[..., None], -1e4)
        if self.causal:
            last = attention_mask.long().sum(dim=1).clamp(min=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            pooled = hidden[:, 0]
        return self.head(self.dropout(pooled))


def batch_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed loss of a batch and the number of units it sums over (labelled tokens, examples).

    Dividing the sums of all micro-batches of an optimiser step by their total units gives the
    mean over the whole effective batch, however it was split.
    """
    logits = logits.float()
    if kind == "tagging":
        flat = labels.reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE, reduction="sum")
        return loss, int((flat != IGNORE).sum())
    if kind == "pair":
        return F.cross_entropy(logits, labels[:, 0], reduction="sum"), int(labels.shape[0])
    start, end = logits[..., 0], logits[..., 1]
    loss = (F.cross_entropy(start, labels[:, 0], reduction="sum")
            + F.cross_entropy(end, labels[:, 1], reduction="sum")) / 2
    return loss, int(labels.shape[0])
