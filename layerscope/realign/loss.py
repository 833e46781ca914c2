"""The realignment objective: a projection head and a symmetric contrastive (InfoNCE) loss.

Shapes: the candidate words of a batch are ``(M, d)`` before the head and ``(M, 128)`` after
it; two index vectors ``(N,)`` name the rows of the N aligned pairs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PROJECTION_SIZE = 128
TEMPERATURE = 0.1


class RealignmentHead(nn.Module):
    """``Linear(d, d, bias=False) → ReLU → Linear(d, 128, bias=False)``, trained with the model
    during realignment and discarded afterwards."""

    def __init__(self, hidden_size: int, projection_size: int = PROJECTION_SIZE) -> None:
        super().__init__()
        if hidden_size < 1 or projection_size < 1:
            raise ValueError(f"head sizes must be positive, got hidden_size={hidden_size}, "
                             f"projection_size={projection_size}")
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size, bias=False),
            nn.ReLU(),
            nn.Linear(hidden_size, projection_size, bias=False),
        )

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, projection_size)."""
        return self.net(vectors)


NEGATIVES = ("batch-words", "aligned")
"""Candidate sets of the loss: ``batch-words`` (every word of every sentence of the batch, both
languages, as published) or ``aligned`` (only the 2N aligned words)."""


def check_negatives(negatives: str) -> str:
    """``negatives`` if it names a candidate set, else a one-line error listing them."""
    if negatives not in NEGATIVES:
        from ..errors import LayerscopeError

        raise LayerscopeError(f"unknown negatives {negatives!r}: use {' or '.join(NEGATIVES)}")
    return negatives


def contrastive_alignment_loss(words: torch.Tensor, src_index: torch.Tensor, tgt_index: torch.Tensor,
                               temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE over cosine similarities, as in AlignFreeze.

    Parameters
    ----------
    words : (M, k) projected vectors of the candidate words: as published, every word of every
        sentence of the batch in both languages (each word's first sub-token).
    src_index, tgt_index : (N,) rows of ``words``; ``words[src_index[i]]`` and
        ``words[tgt_index[i]]`` are an aligned pair. The 2N rows must be distinct.
    temperature : the softmax temperature τ (0.1 in AlignFreeze).

    Each of the 2N aligned words is a query; its partner is the positive and every other row
    of ``words`` a negative (only the query itself is left out). The loss is the mean over the
    2N queries of ``−log softmax_c(cos(q, c)/τ)[partner]``: English→X and X→English. With
    ``words = cat(src, tgt)`` and the indices ``0…N−1`` / ``N…2N−1`` the candidates are the
    aligned words only.
    """
    if words.ndim != 2:
        raise ValueError(f"words must have shape (M, k); got {tuple(words.shape)}")
    src_index = torch.as_tensor(src_index, device=words.device)
    tgt_index = torch.as_tensor(tgt_index, device=words.device)
    if src_index.ndim != 1 or src_index.shape != tgt_index.shape:
        raise ValueError(f"src_index and tgt_index must both have shape (N,); got {tuple(src_index.shape)} "
                         f"and {tuple(tgt_index.shape)}")
    if src_index.numel() == 0:
        raise ValueError("contrastive_alignment_loss needs at least one aligned pair (N >= 1)")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    queries = torch.cat([src_index, tgt_index]).long()  # (2N,)
    m = words.shape[0]
    if int(queries.min()) < 0 or int(queries.max()) >= m:
        raise ValueError(f"pair indices must be rows of words (0 … {m - 1})")
    if torch.unique(queries).numel() != queries.numel():
        raise ValueError("an aligned word appears twice in src_index/tgt_index; the 2N rows must be distinct")
    partners = torch.cat([tgt_index, src_index]).long()
    z = F.normalize(words, dim=1)  # (M, k)
    logits = (z[queries] @ z.T) / temperature  # (2N, M)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(queries.numel(), device=words.device), queries] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, partners)
