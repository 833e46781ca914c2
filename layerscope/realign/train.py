"""The realignment training loop and the realignment loss of one batch.

:class:`Realigner` owns the projection head, the Adam optimiser (constant learning rate) and
the batch order; its whole state (:meth:`Realigner.state_dict`) is tensors and plain types, so
a run saved at step *k* and resumed continues bit-identically on CPU. The optimiser keeps Adam
state only for the word-embedding rows touched so far (:mod:`layerscope.optim`), bit for bit the
dense Adam. The freeze policy is
applied by the caller (:func:`layerscope.models.apply_freeze`) before the optimiser is built:
frozen parameters are never handed to it.

:class:`RealignmentObjective` is the same loss for the ``during`` schedule: a task loop adds
``0.1 × objective.loss()`` to its own loss at every step.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import torch

from .. import optim, progress
from ..distributed import SINGLE, Workers
from ..errors import LayerscopeError
from ..models.encoder import Encoder
from ..kernels import optimizer_options, training_kernels
from ..precision import autocast, full_precision
from ..probes.activations import capture_output
from .data import Batch, Example, RoundRobinSampler, collate
from .loss import TEMPERATURE, RealignmentHead, contrastive_alignment_loss

log = logging.getLogger(__name__)

DURING_WEIGHT = 0.1


def hidden_at_layer(encoder: Encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    layer: int) -> torch.Tensor:
    """Hidden states of ``layer`` (0 = embeddings, i = raw output of block i): shape (B, T, d).

    Gradients flow; the last layer is the last block's output before any final norm, as in
    :func:`layerscope.probes.activations.forward_layers`. The forward pass stops at ``layer``.
    """
    module = encoder.blocks[max(layer, 1) - 1]
    with capture_output(module, stop=True, before=layer == 0) as store:
        encoder.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    if "output" not in store:
        raise LayerscopeError(f"block {max(layer, 1) - 1} of {encoder.name} did not run")
    return store["output"]


def realignment_loss(encoder: Encoder, head: RealignmentHead, batch: Batch, layer: int,
                     temperature: float = TEMPERATURE, precision: str = "fp32",
                     kernels: str = "torch") -> torch.Tensor:
    """The contrastive realignment loss of one batch (gradients reach the encoder and head).

    The candidates are the batch's words (``batch.word_index``): every word of every sentence
    as published, or the aligned words only when the examples were built with
    ``negatives="aligned"`` (see :func:`~layerscope.realign.data.extract_pairs`). The encoder's
    forward pass runs in ``precision`` with ``kernels`` (:mod:`layerscope.kernels`); the
    head and the loss always in float32."""
    batch = batch.to(encoder.device)
    with autocast(encoder.device, precision), training_kernels(encoder.device, kernels):
        hidden = hidden_at_layer(encoder, batch.input_ids, batch.attention_mask, layer)
    words = hidden[batch.word_index[0], batch.word_index[1]]  # (M, d)
    with full_precision(encoder.device):
        return contrastive_alignment_loss(head(words.float()), batch.src_word, batch.tgt_word, temperature)


def resolve_layer(encoder: Encoder, layer: int | None) -> int:
    """``None`` -> the last layer L; negative values count from the end (-1 = L)."""
    num_layers = encoder.num_layers
    if layer is None:
        return num_layers
    resolved = num_layers + 1 + layer if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise LayerscopeError(
            f"realignment layer {layer} is outside 0-{num_layers} (0 = embeddings, {num_layers} = last block)"
        )
    return resolved


class _Batches:
    """Examples per language drawn by a round-robin sampler, collated for the model.

    Under data parallelism every process runs the same sampler over the global batch
    (``batch_size × world_size`` draws) and keeps its own slice, so the examples of one step
    are those a single process would see in ``world_size`` consecutive batches.
    """

    def __init__(self, examples: dict[str, list[Example]], batch_size: int, seed: int, pad_id: int,
                 workers: Workers = SINGLE) -> None:
        self.examples = examples
        self.workers = workers
        self.sampler = RoundRobinSampler({lang: len(items) for lang, items in examples.items()},
                                         batch_size * workers.world_size, seed)
        self.pad_id = pad_id

    def next(self) -> Batch:
        draws = self.workers.shard(self.sampler.next_batch())
        return collate([self.examples[lang][index] for lang, index in draws], self.pad_id)


class _LossModule(torch.nn.Module):
    """Encoder and head as one module whose forward is the realignment loss of a batch, so
    that DistributedDataParallel can wrap (and all-reduce the gradients of) both."""

    def __init__(self, encoder: Encoder, head: RealignmentHead, layer: int, temperature: float,
                 precision: str = "fp32", kernels: str = "torch") -> None:
        super().__init__()
        self.precision = precision
        self.kernels = kernels
        self.model = encoder.model
        self.head = head
        self.encoder = encoder
        self.layer = layer
        self.temperature = temperature

    def forward(self, batch: Batch) -> torch.Tensor:
        return realignment_loss(self.encoder, self.head, batch, self.layer, self.temperature, self.precision,
                                 self.kernels)


class Realigner:
    """Realign ``encoder`` on ``examples``: head, Adam (constant lr), round-robin batches.

    Seeds the global torch generator with ``seed`` (dropout draws from it) and builds the head
    right after, so a run is reproducible on CPU. ``precision`` (``fp32``, ``bf16``, ``auto``) is
    that of the encoder's forward pass (:mod:`layerscope.precision`), ``kernels`` (``torch``,
    ``fast``, ``auto``) how its dropout, attention and optimiser step are computed
    (:mod:`layerscope.kernels`).

    One optimiser step averages the gradients of ``accumulation`` micro-batches of
    ``batch_size`` sentence pairs on each of the ``workers``' processes (each micro-batch's mean
    loss weighs the same), so two processes with batch 8 take the same steps as one process
    with batch 8 and ``accumulation=2``. Each process draws its own dropout stream.
    """

    def __init__(self, encoder: Encoder, examples: dict[str, list[Example]], *, layer: int, lr: float,
                 batch_size: int = 16, seed: int = 0, temperature: float = TEMPERATURE,
                 accumulation: int = 1, workers: Workers = SINGLE, precision: str = "fp32",
                 kernels: str = "torch") -> None:
        if not isinstance(accumulation, int) or accumulation < 1:
            raise LayerscopeError(f"gradient accumulation must be a positive integer, got {accumulation!r}")
        self.encoder = encoder
        self.layer = layer
        self.temperature = temperature
        self.accumulation = accumulation
        self.workers = workers
        torch.manual_seed(seed)
        self.head = RealignmentHead(encoder.hidden_size).to(encoder.device)
        if workers.distributed:
            torch.manual_seed(seed * 1_000_003 + 7_919 * (workers.rank + 1))
        self.batches = _Batches(examples, batch_size, seed, encoder.tokenizer.pad_token_id, workers)
        trainable = [p for p in encoder.model.parameters() if p.requires_grad]
        if not trainable:
            raise LayerscopeError("the freeze policy leaves no trainable parameter in the model")
        # In one process the embedding gradients are gathered per backward pass; under data
        # parallelism they are read after DistributedDataParallel's all-reduce.
        self.optimizer = optim.adam([*trainable, *self.head.parameters()], lr=lr,
                                    embeddings=optim.word_embeddings(encoder.model), hook=not workers.distributed,
                                    **optimizer_options(encoder.device, kernels))
        self.loss_module = workers.wrap(_LossModule(encoder, self.head, layer, temperature, precision,
                                                            kernels))
        self.step = 0
        self.history: list[float] = []

    def train_step(self) -> tuple[float, int]:
        """One optimiser step; returns (loss averaged over micro-batches and processes, word
        pairs in the step's batches on all processes)."""
        self.encoder.model.train()
        self.head.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, pairs = 0.0, 0
        for micro in range(self.accumulation):
            batch = self.batches.next()
            with self.workers.no_sync(self.loss_module, last=micro == self.accumulation - 1):
                loss = self.loss_module(batch)
                (loss / self.accumulation).backward()
            total += float(loss.detach())
            pairs += batch.num_pairs
        value = self.workers.mean(total / self.accumulation)
        if not math.isfinite(value):
            raise LayerscopeError(f"realignment loss became {value} at step {self.step + 1}; "
                                  "lower the learning rate")
        self.optimizer.step()
        self.step += 1
        self.history.append(value)
        return value, int(self.workers.sum(pairs))

    def run(self, steps: int, *, save_every: int | None = None, save: Callable[["Realigner"], None] | None = None,
            on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """Train until ``steps`` optimiser steps are done (continuing from :attr:`step`).

        ``save(self)`` is called every ``save_every`` steps (not after the last one);
        ``on_step(step, loss)`` after every step.
        """
        start = time.perf_counter()
        pairs_seen = 0
        with progress.bar(total=steps, initial=self.step, desc="realign", unit="step",
                          main=self.workers.is_main) as bar, optim.sparse_gradients(self.optimizer):
            while self.step < steps:
                value, pairs = self.train_step()
                pairs_seen += pairs
                elapsed = max(time.perf_counter() - start, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", pairs_s=f"{pairs_seen / elapsed:.0f}")
                if on_step is not None:
                    on_step(self.step, value)
                if save is not None and save_every and self.step % save_every == 0 and self.step < steps:
                    save(self)
        self.encoder.model.eval()
        return self.history

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically, except the model weights.

        Under data parallelism every process must call it (the random states are gathered)."""
        state = {
            "step": self.step,
            "history": list(self.history),
            "head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.batches.sampler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.workers.distributed:
            state["rng_per_rank"] = self.workers.gather_objects(torch.get_rng_state())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.history = [float(x) for x in state["history"]]
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.sampler.load_state_dict(state["sampler"])
        per_rank = state.get("rng_per_rank")
        if self.workers.distributed and per_rank is not None and len(per_rank) == self.workers.world_size:
            torch.set_rng_state(per_rank[self.workers.rank])
        else:
            torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


class RealignmentObjective:
    """The realignment loss for the ``during`` schedule (task loss + 0.1 × realignment loss).

    Usage in a fine-tuning loop::

        objective = during_objective(encoder, parallel="tatoeba:...", pairs="dict:muse/")
        optimizer = torch.optim.AdamW([*model.parameters(), *objective.parameters()], lr=...)
        loss = objective.joint(task_loss)          # task_loss + 0.1 * objective.loss()
        loss.backward(); optimizer.step()
    """

    def __init__(self, encoder: Encoder, examples: dict[str, list[Example]], *, layer: int | None = None,
                 batch_size: int = 16, seed: int = 0, temperature: float = TEMPERATURE,
                 weight: float = DURING_WEIGHT) -> None:
        self.encoder = encoder
        self.layer = resolve_layer(encoder, layer)
        self.temperature = temperature
        self.weight = weight
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        self.head = RealignmentHead(encoder.hidden_size).to(encoder.device)
        torch.set_rng_state(generator_state)  # leave the task loop's random stream alone
        self.batches = _Batches(examples, batch_size, seed, encoder.tokenizer.pad_token_id)

    def parameters(self):
        """The head's parameters: add them to the task optimiser."""
        return self.head.parameters()

    def loss(self) -> torch.Tensor:
        """Realignment loss of the next round-robin batch (a scalar tensor with gradients)."""
        batch = self.batches.next()
        return realignment_loss(self.encoder, self.head, batch, self.layer, self.temperature)

    def joint(self, task_loss: torch.Tensor) -> torch.Tensor:
        """``task_loss + weight × loss()`` (weight 0.1 as published)."""
        return task_loss + self.weight * self.loss()
