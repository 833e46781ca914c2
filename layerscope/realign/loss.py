"""The realignment objective: a projection head and a symmetric contrastive (InfoNCE) loss.

Shapes: word vectors are ``(N, d)`` before the head and ``(N, 128)`` after it; row ``k`` of
the source side and row ``k`` of the target side form an aligned pair.
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


def contrastive_alignment_loss(src_vecs: torch.Tensor, tgt_vecs: torch.Tensor,
                               temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE over cosine similarities of aligned word pairs.

    Parameters
    ----------
    src_vecs, tgt_vecs : tensors of shape (N, k); row ``i`` of each side is an aligned pair.
    temperature : the softmax temperature τ (0.1 in AlignFreeze).

    Each of the 2N words is a query; its partner is the positive and every other word of the
    batch, in both languages, a negative (only the query itself is left out). The loss is the
    mean over the 2N queries of ``−log softmax(cos(q, ·)/τ)[partner]``: English→X and X→English.
    """
    if src_vecs.ndim != 2 or tgt_vecs.ndim != 2 or src_vecs.shape != tgt_vecs.shape:
        raise ValueError(
            f"src_vecs and tgt_vecs must both have shape (N, k); got {tuple(src_vecs.shape)} "
            f"and {tuple(tgt_vecs.shape)}"
        )
    if src_vecs.shape[0] == 0:
        raise ValueError("contrastive_alignment_loss needs at least one aligned pair (N >= 1)")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = src_vecs.shape[0]
    z = F.normalize(torch.cat([src_vecs, tgt_vecs], dim=0), dim=1)  # (2N, k)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)
