"""Freeze policies: which blocks of an encoder take no gradient during realignment.

A policy names blocks by the encoder's ordered block list (:func:`layerscope.models.encoder.find_blocks`),
so "the lower half" means the same blocks on every architecture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import LayerscopeError
from .encoder import Encoder

@dataclass(frozen=True)
class FreezePolicy:
    """Which blocks (0-based) and whether the embeddings are frozen during realignment."""

    spec: str
    frozen_blocks: tuple[int, ...]
    freeze_embeddings: bool = False

    def describe(self, num_layers: int) -> str:
        parts = []
        if self.frozen_blocks:
            parts.append(f"blocks {_ranges(self.frozen_blocks)} of 0-{num_layers - 1} frozen")
        if self.freeze_embeddings:
            parts.append("embeddings frozen")
        return f"{self.spec}: " + ("; ".join(parts) if parts else "nothing frozen")


def _ranges(indices: Iterable[int]) -> str:
    values = sorted(indices)
    out, start = [], None
    for i, value in enumerate(values):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            out.append(f"{start}" if start == value else f"{start}-{value}")
            start = None
    return ",".join(out)


FREEZE_POLICY_NAMES = ("none", "lower", "upper", "embeddings")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_freeze_policy(spec: str, num_layers: int) -> FreezePolicy:
    """Parse ``none``, ``lower``, ``upper``, ``embeddings``, ranges like ``0-5`` or ``0-2,7``,
    and combinations joined by ``+`` or ``,`` (``lower+embeddings``).

    ``lower`` freezes blocks 0 … ⌊L/2⌋−1 (AlignFreeze's front-freezing) and ``upper`` blocks
    ⌊L/2⌋ … L−1 (back-freezing); with odd L the middle block belongs to the upper half.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LayerscopeError("empty freeze policy; use none, lower, upper, embeddings or a block range like 0-5")
    half = num_layers // 2
    blocks: set[int] = set()
    embeddings = False
    for part in re.split(r"[+,]", spec.strip().lower()):
        part = part.strip()
        if part in ("none", ""):
            continue
        if part in ("lower", "front", "first_half"):
            blocks.update(range(0, half))
        elif part in ("upper", "back", "last_half"):
            blocks.update(range(half, num_layers))
        elif part in ("embeddings", "emb"):
            embeddings = True
        elif match := _RANGE.match(part):
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) is not None else start
            if end < start:
                raise LayerscopeError(f"freeze range {part!r} runs backwards")
            if end >= num_layers:
                raise LayerscopeError(
                    f"freeze range {part!r} is outside the model's blocks 0-{num_layers - 1}"
                )
            blocks.update(range(start, end + 1))
        else:
            import difflib

            near = difflib.get_close_matches(part, FREEZE_POLICY_NAMES, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise LayerscopeError(
                f"unknown freeze policy {part!r}: use none, lower, upper, embeddings or a block range like 0-5{hint}"
            )
    return FreezePolicy(spec=spec.strip(), frozen_blocks=tuple(sorted(blocks)), freeze_embeddings=embeddings)


def apply_freeze(encoder: Encoder, policy: FreezePolicy) -> list[str]:
    """Set ``requires_grad=False`` on the parameters the policy freezes; returns their names."""
    groups = encoder.parameter_groups()
    frozen_names: list[str] = []
    for block in policy.frozen_blocks:
        frozen_names += groups[f"block.{block}"]
    if policy.freeze_embeddings:
        frozen_names += groups["embeddings"]
    frozen = set(frozen_names)
    for name, param in encoder.model.named_parameters():
        param.requires_grad_(name not in frozen)
    return frozen_names


def unfreeze_all(encoder: Encoder) -> None:
    for param in encoder.model.parameters():
        param.requires_grad_(True)
