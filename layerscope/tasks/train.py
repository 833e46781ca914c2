"""The fine-tuning loop: AdamW, linear warm-up then linear decay, gradient accumulation.

One optimiser step sees an effective batch of ``batch_size`` examples (32 by default), in one
forward pass per process by default or split into micro-batches of ``micro_batch_size``
(gradient accumulation, when memory is short) whose summed losses are divided by the effective
batch's total units (labelled tokens or examples), so the step is the same however the batch
is split. The learning rate rises linearly from 0 over the first ``warmup`` fraction of steps
and falls linearly to 0 at the last step (the Hugging Face ``linear`` schedule). Gradients are
clipped only when ``max_grad_norm`` is set (the official scripts do not clip). The example
order is a fresh permutation per epoch from a generator seeded with ``seed``, and the global
generator (dropout) is seeded too: a run is deterministic on CPU.

Under ``accelerate launch`` every process builds the same effective batch and takes every
``world_size``-th micro-batch of it; each scales its summed loss by ``world_size / units`` and
DistributedDataParallel averages the gradients, so a step is the one a single process would take
(up to the order of floating-point sums).

For the ``during`` schedule a realignment objective
(:func:`layerscope.realign.during_objective`) adds ``weight × realignment loss`` of one
realignment batch at every optimiser step; with ``realign_params`` that gradient reaches only
those parameters (the rest stay frozen for realignment, never for the task).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .. import optim, progress
from ..distributed import SINGLE, Workers
from ..errors import LayerscopeError
from ..kernels import optimizer_options, training_kernels
from ..precision import autocast, full_precision
from .features import IGNORE, Feature
from .heads import TaskModel, batch_loss


@dataclass(frozen=True)
class TrainSettings:
    """How to fine-tune. ``steps`` wins over ``epochs`` when both are given."""

    epochs: float = 3.0
    steps: int | None = None
    batch_size: int = 32
    micro_batch_size: int | None = None  # None: the whole batch of a process in one pass
    lr: float = 2e-5
    warmup: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping, as published
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise LayerscopeError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.micro_batch_size is not None and (
                not isinstance(self.micro_batch_size, int) or self.micro_batch_size < 1):
            raise LayerscopeError(f"micro-batch size must be a positive integer, got {self.micro_batch_size!r}")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise LayerscopeError(f"batch size {self.batch_size} is not a multiple of the micro-batch size "
                                  f"{self.micro_batch_size}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise LayerscopeError(f"steps must be a positive integer, got {self.steps!r}")
        if not self.epochs > 0:
            raise LayerscopeError(f"epochs must be positive, got {self.epochs!r}")
        if not 0 < self.lr < 1:
            raise LayerscopeError(f"learning rate must be in (0, 1), got {self.lr!r}")
        if not 0 <= self.warmup < 1:
            raise LayerscopeError(f"warm-up fraction must be in [0, 1), got {self.warmup!r}")
        if self.weight_decay < 0:
            raise LayerscopeError(f"weight decay must be >= 0, got {self.weight_decay!r}")

    def micro_batch(self, world_size: int = 1) -> int:
        """Examples per forward pass: ``micro_batch_size``, or by default the share of the batch
        of each of ``world_size`` processes (``batch_size`` in one process: no accumulation)."""
        if self.micro_batch_size is not None:
            return self.micro_batch_size
        if self.batch_size % world_size:
            raise LayerscopeError(f"batch size {self.batch_size} does not split over {world_size} processes")
        return self.batch_size // world_size

    def accumulation(self, world_size: int = 1) -> int:
        """Micro-batches per optimiser step, over all processes."""
        return self.batch_size // self.micro_batch(world_size)

    def total_steps(self, n_examples: int) -> int:
        """Optimiser steps of the run: ``steps``, or ⌈epochs × ⌈n / batch_size⌉⌉."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * math.ceil(n_examples / self.batch_size)))


def linear_schedule(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor at 0-based ``step``: ``step / warmup`` during warm-up, then linear
    decay from 1 to 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def collate(features: Sequence[Feature], pad_id: int, kind: str,
            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Pad features into tensors: input_ids, attention_mask (B, T), labels ((B, T) for tagging,
    (B, 1) for pairs, (B, 2) for spans) and token_type_ids when the tokenizer makes them."""
    width = max(len(f.input_ids) for f in features)
    n = len(features)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    per_token = kind == "tagging"
    if per_token:
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
    else:
        labels = torch.tensor([f.labels for f in features], dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if features[0].token_type_ids is not None else None
    for i, f in enumerate(features):
        length = len(f.input_ids)
        input_ids[i, :length] = torch.tensor(f.input_ids)
        mask[i, :length] = 1
        if per_token:
            labels[i, :length] = torch.tensor(f.labels)
        if types is not None:
            types[i, :length] = torch.tensor(f.token_type_ids)
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if types is not None:
        batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class TrainHistory:
    """Per optimiser step: task loss (mean over the effective batch), realignment loss
    (``during`` only), learning rate; and the wall time."""

    task_loss: list[float] = field(default_factory=list)
    realign_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.task_loss)


def _batches(n: int, settings: TrainSettings, total: int) -> list[list[int]]:
    """Example indices of each optimiser step: per-epoch permutations cut into batches."""
    generator = torch.Generator().manual_seed(settings.seed)
    out: list[list[int]] = []
    while len(out) < total:
        order = torch.randperm(n, generator=generator).tolist()
        out += [order[i:i + settings.batch_size] for i in range(0, n, settings.batch_size)]
    return out[:total]


def _units(features: Sequence[Feature], indices: Sequence[int], kind: str) -> int:
    """Loss units of a batch: labelled tokens for tagging, examples otherwise."""
    if kind == "tagging":
        return max(1, sum(1 for i in indices for label in features[i].labels if label != IGNORE))
    return len(indices)


def train_task(model: TaskModel, features: Sequence[Feature], settings: TrainSettings, *, pad_id: int,
               objective=None, realign_params: Sequence[torch.nn.Parameter] | None = None,
               device: torch.device | str = "cpu", precision: str = "auto", kernels: str = "auto",
               on_step: Callable[[int, float], None] | None = None, desc: str = "fine-tune",
               workers: Workers = SINGLE) -> TrainHistory:
    """Fine-tune ``model`` on ``features``; returns the loss history.

    ``objective``: a :class:`layerscope.realign.RealignmentObjective` for the ``during``
    schedule (its head is trained too); ``realign_params``: the encoder parameters the
    realignment gradient may reach (default: all). Forward passes run in ``precision``
    (:mod:`layerscope.precision`) with ``kernels`` (``auto``: the fast CPU kernels of
    :mod:`layerscope.kernels` on a CPU).
    """
    if not features:
        raise LayerscopeError("no training examples")
    micro = settings.micro_batch(workers.world_size)
    if workers.distributed:
        if objective is not None:
            raise LayerscopeError("the 'during' schedule runs in one process; launch it without accelerate")
        if (settings.batch_size // micro) % workers.world_size:
            raise LayerscopeError(
                f"{settings.batch_size // micro} micro-batches per step (batch {settings.batch_size} / micro-batch "
                f"{micro}) do not split over {workers.world_size} processes")
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    model.to(device)
    wrapped = workers.wrap(model)
    if workers.distributed:
        torch.manual_seed(settings.seed * 1_000_003 + 7_919 * (workers.rank + 1))  # own dropout stream
    total = settings.total_steps(len(features))
    warmup_steps = math.ceil(settings.warmup * total)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if objective is not None:
        groups.append({"params": list(objective.parameters()), "weight_decay": 0.0})
    # AdamW; with weight decay 0 (the default) only the touched word-embedding rows are updated,
    # bit for bit as the dense one (layerscope.optim).
    optimizer = optim.adam(groups, decoupled=True, lr=settings.lr, eps=1e-8,
                           embeddings=optim.word_embeddings(model.base), hook=not workers.distributed,
                           **optimizer_options(device, kernels))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_schedule(step, warmup_steps=warmup_steps, total_steps=total))
    clip_params = [p for group in groups for p in group["params"]]
    extra = list(objective.parameters()) if objective is not None else []

    history = TrainHistory()
    start = time.perf_counter()
    model.train()
    with progress.bar(total=total, desc=desc, unit="step", main=workers.is_main) as bar, \
            optim.sparse_gradients(optimizer):
        for step, indices in enumerate(_batches(len(features), settings, total)):
            indices = sorted(indices, key=lambda i: len(features[i].input_ids))
            micro_indices = [indices[k:k + micro] for k in range(0, len(indices), micro)]
            units = _units(features, indices, model.kind)
            mine = micro_indices[workers.rank::workers.world_size]
            optimizer.zero_grad(set_to_none=True)
            task_total = 0.0
            # One autocast region per step: its cache casts each weight to bf16 once for all the
            # micro-batches (the optimiser changes them only after); losses and backward in fp32.
            with autocast(device, precision):
                for position, chunk in enumerate(mine):
                    batch = collate([features[i] for i in chunk], pad_id, model.kind, device)
                    with workers.no_sync(wrapped, last=position == len(mine) - 1):
                        with training_kernels(device, kernels):
                            logits = wrapped(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
                        with full_precision(device):
                            loss, _ = batch_loss(model.kind, logits, batch["labels"])
                            scaled = loss / units if not workers.distributed else loss * (workers.world_size / units)
                            scaled.backward()
                    task_total += float(loss.detach())
            task_value = workers.sum(task_total) / units
            if not math.isfinite(task_value):
                raise LayerscopeError(f"task loss became {task_value} at step {step + 1}; lower the learning rate")
            if objective is not None:
                with autocast(device, precision), training_kernels(device, kernels):
                    realign = objective.loss()
                scaled = objective.weight * realign.float()
                if realign_params is None:
                    scaled.backward()
                else:
                    targets = [*realign_params, *extra]
                    grads = torch.autograd.grad(scaled, targets, allow_unused=True)
                    for param, grad in zip(targets, grads):
                        if grad is not None:
                            param.grad = grad if param.grad is None else param.grad + grad
                history.realign_loss.append(float(realign.detach()))
            if settings.max_grad_norm:
                optim.clip_grad_norm_(optimizer, clip_params, settings.max_grad_norm)
            history.lr.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            history.task_loss.append(task_value)
            bar.update(1)
            bar.set_postfix(loss=f"{task_value:.3f}")
            if on_step is not None:
                on_step(step + 1, task_value)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
