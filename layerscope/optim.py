"""Adam that updates only the word-embedding rows touched so far, bit for bit the dense Adam.

Why it is exact: Adam (and AdamW with weight decay 0) leaves a row unchanged as long as every
gradient it received was zero — its moments stay 0 and its update is 0 / (0 + eps) = 0. So the
optimiser keeps moments only for the rows of the word-embedding matrix that have had a nonzero
gradient at some step (the *touched* rows, kept for good), and at every step runs torch's own
functional Adam on those rows — the same elementwise operations, flags and global step count
(bias correction) as the dense optimiser — then writes them back. Rows touched once keep moving
exactly as under dense Adam. Lazy/sparse Adam variants, which skip rows after they were touched,
are not exact and are not this.

Gradients. In one process the embedding module is switched to sparse gradients while training
(:meth:`TouchedRowsAdam.sparse_gradients`) and a hook on the weight folds each backward pass's
gradient into a compact ``(k, d)`` block: the rows of one backward are summed in token order
(``index_add_``, the dense embedding backward's own order) and successive backward passes are
added row-wise, as autograd accumulates the dense ``.grad``. Under data parallelism the dense
gradient is all-reduced by DistributedDataParallel first; its rows with any nonzero entry are the
touched ones, so a row touched on any process counts.

Where the equivalence does not hold (weight decay > 0 on the embeddings, amsgrad,
``differentiable``, another optimiser) :func:`adam` returns the dense optimiser and says so in the
log; ``LAYERSCOPE_DENSE_OPTIMIZER=1`` forces the dense one (for comparisons).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.optim.adam import adam as functional_adam

log = logging.getLogger(__name__)

DENSE_ENV = "LAYERSCOPE_DENSE_OPTIMIZER"


def word_embeddings(model: nn.Module) -> list[nn.Embedding]:
    """The model's trainable input-embedding table (empty when frozen or not an ``nn.Embedding``)."""
    try:
        table = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return []
    if isinstance(table, nn.Embedding) and table.weight.requires_grad:
        return [table]
    return []


@dataclass
class _Rows:
    """Adam state of one embedding matrix (V, d), kept for its touched rows only.

    ``index`` (k,) sorted ascending; ``exp_avg`` and ``exp_avg_sq`` (k, d) contiguous, row i
    belongs to row ``index[i]`` of the matrix; ``step`` counts the optimiser steps in which the
    matrix had a gradient (the dense Adam's step of that tensor)."""

    module: nn.Embedding
    group: dict
    index: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: torch.Tensor
    pending_index: torch.Tensor | None = None  # rows with a gradient since zero_grad, sorted
    pending_grad: torch.Tensor | None = None  # (m, d) their summed gradient
    has_grad: bool = False  # the dense optimiser would find a .grad tensor
    hook: object = None  # the gradient hook while inside sparse_gradients()

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    def add(self, grad: torch.Tensor) -> None:
        """Fold one backward pass's gradient (sparse COO or dense (V, d)) into the pending block."""
        self.has_grad = True
        if grad.is_sparse:
            rows, inverse = torch.unique(grad._indices()[0], sorted=True, return_inverse=True)
            block = grad._values().new_zeros((len(rows), grad.shape[1])).index_add_(0, inverse, grad._values())
        else:
            rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)
            block = grad.index_select(0, rows)
        if self.pending_index is None:
            self.pending_index, self.pending_grad = rows, block
            return
        union = torch.unique(torch.cat([self.pending_index, rows]), sorted=True)
        merged = block.new_zeros((len(union), block.shape[1]))
        merged.index_copy_(0, torch.searchsorted(union, self.pending_index), self.pending_grad)
        merged.index_add_(0, torch.searchsorted(union, rows), block)
        self.pending_index, self.pending_grad = union, merged

    def take_grad(self) -> None:
        """Move ``.grad`` (under data parallelism the all-reduced dense one; the hook's empty
        stand-in otherwise) into the pending block."""
        grad = self.weight.grad
        if grad is not None:
            self.add(grad)

    def clear(self, set_to_none: bool) -> None:
        self.pending_index = self.pending_grad = None
        if set_to_none:
            self.has_grad = False

    def update(self) -> None:
        """One Adam step of every touched row (and of the rows touched for the first time)."""
        if not self.has_grad:
            return  # the dense optimiser skips a tensor without gradient: no step, no move
        group = self.group
        d = self.weight.shape[1]
        if self.pending_index is not None and len(self.pending_index):
            union = torch.unique(torch.cat([self.index, self.pending_index]), sorted=True)
            if len(union) > len(self.index):
                where = torch.searchsorted(union, self.index)
                for name in ("exp_avg", "exp_avg_sq"):
                    grown = getattr(self, name).new_zeros((len(union), d))
                    grown.index_copy_(0, where, getattr(self, name))
                    setattr(self, name, grown)
                self.index = union
        if not len(self.index):
            self.step += 1  # every row is untouched: the dense step moves nothing
            return
        grad = self.exp_avg.new_zeros((len(self.index), d))
        if self.pending_index is not None and len(self.pending_index):
            grad.index_copy_(0, torch.searchsorted(self.index, self.pending_index), self.pending_grad)
        with torch.no_grad():
            rows = self.weight.index_select(0, self.index)
            beta1, beta2 = group["betas"]
            functional_adam([rows], [grad], [self.exp_avg], [self.exp_avg_sq], [], [self.step],
                            foreach=group["foreach"], capturable=group["capturable"],
                            differentiable=group["differentiable"], fused=group["fused"],
                            decoupled_weight_decay=group.get("decoupled_weight_decay", False),
                            amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
                            weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])
            self.weight.index_copy_(0, self.index, rows)


class TouchedRowsAdam(torch.optim.Optimizer):
    """A dense ``torch.optim.Adam``/``AdamW`` whose word-embedding matrices are updated on their
    touched rows only (see the module docstring). Build it with :func:`adam`.

    ``param_groups`` are the dense optimiser's, so learning-rate schedulers work unchanged. The
    embedding weights' ``.grad`` is consumed by :meth:`step` (left ``None``).
    """

    def __init__(self, dense: torch.optim.Adam, embeddings: Sequence[nn.Embedding], *, hook: bool) -> None:
        # Optimizer.__init__ is not called: the groups and the state are the dense optimiser's.
        self.dense = dense
        self.defaults = dense.defaults
        self.param_groups = dense.param_groups
        self.state = dense.state
        self._hooked = hook
        self._rows: list[_Rows] = []
        for module in embeddings:
            group = next(g for g in dense.param_groups if any(p is module.weight for p in g["params"]))
            weight = module.weight
            step = (torch.zeros((), dtype=torch.float32, device=weight.device)
                    if group["capturable"] or group["fused"] else torch.tensor(0.0, dtype=torch.float32))
            rows = _Rows(module, group, torch.zeros(0, dtype=torch.long, device=weight.device),
                         weight.new_zeros((0, weight.shape[1])), weight.new_zeros((0, weight.shape[1])), step)
            self._rows.append(rows)

    @staticmethod
    def _receiver(rows: _Rows):
        def receive(grad: torch.Tensor) -> torch.Tensor:
            rows.add(grad)
            # The gradient now lives in the compact block; autograd keeps an empty stand-in.
            return torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.long, device=grad.device),
                                           torch.zeros((0, grad.shape[1]), dtype=grad.dtype, device=grad.device),
                                           grad.shape, check_invariants=False)
        return receive

    @property
    def touched_rows(self) -> list[torch.Tensor]:
        """Sorted indices of the touched rows of each embedding matrix."""
        return [r.index for r in self._rows]

    def _row_params(self) -> set[int]:
        return {id(r.weight) for r in self._rows}

    @contextlib.contextmanager
    def sparse_gradients(self) -> Iterator[None]:
        """While inside, the embeddings emit sparse gradients (cheap for a large vocabulary) that
        a hook folds into the compact block per backward pass. Outside (and under data
        parallelism) the dense ``.grad`` is read at the step instead: slower, just as exact."""
        if not self._hooked:
            yield
            return
        saved = [r.module.sparse for r in self._rows]
        try:
            for r in self._rows:
                r.hook = r.weight.register_hook(self._receiver(r))
                r.module.sparse = not r.module.scale_grad_by_freq  # the frequency scaling differs when sparse
            yield
        finally:
            for r, flag in zip(self._rows, saved):
                r.module.sparse = flag
                if r.hook is not None:
                    r.hook.remove()
                    r.hook = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        for r in self._rows:
            r.clear(set_to_none)
            r.weight.grad = None

    def _collect(self) -> None:
        for r in self._rows:
            r.take_grad()
            r.weight.grad = None

    @torch.no_grad()
    def clip_grad_norm_(self, parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` (2-norm) with the embeddings' compact gradients.

        The dense gradient's untouched rows are zeros, which add nothing to a sum of squares, so
        the compact block's norm is the dense one; that it is so bit for bit (same summation
        order for the nonzero terms) is checked by ``tests/test_optim.py`` on several widths."""
        self._collect()
        by_id = {id(r.weight): r for r in self._rows}
        grads = []
        for p in parameters:
            r = by_id.get(id(p))
            if r is not None:
                if r.has_grad:
                    if r.pending_grad is None:
                        r.pending_index = torch.zeros(0, dtype=torch.long, device=p.device)
                        r.pending_grad = p.new_zeros((0, p.shape[1]))
                    grads.append(r.pending_grad)
            elif p.grad is not None:
                grads.append(p.grad)
        if not grads:
            return torch.tensor(0.0)
        total = torch.nn.utils.get_total_norm(grads, 2.0, False, None)
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coefficient.to(g.device))
        return total

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._collect()
        self.dense.step()
        for r in self._rows:
            r.update()  # the gradient stays until zero_grad, as a dense .grad would
        return loss

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "dense": self.dense.state_dict(),
            "touched_rows": [{"index": r.index.cpu().clone(), "exp_avg": r.exp_avg.cpu().clone(),
                              "exp_avg_sq": r.exp_avg_sq.cpu().clone(), "step": r.step.cpu().clone()}
                             for r in self._rows],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state of this optimiser, or of the dense Adam over the same parameters (the
        embeddings' dense moments are cut down to their nonzero rows, which is exact)."""
        if "touched_rows" not in state_dict:
            self.dense.load_state_dict(state_dict)
            for r in self._rows:
                dense = self.dense.state.pop(r.weight, None)
                if dense:
                    m, v = dense["exp_avg"], dense["exp_avg_sq"]
                    index = (m.ne(0) | v.ne(0)).any(dim=1).nonzero().squeeze(1)
                    r.index = index.to(r.weight.device)
                    r.exp_avg = m.index_select(0, index).to(r.weight.device)
                    r.exp_avg_sq = v.index_select(0, index).to(r.weight.device)
                    r.step = dense["step"].clone()
            return
        self.dense.load_state_dict(state_dict["dense"])
        saved = state_dict["touched_rows"]
        if len(saved) != len(self._rows):
            raise ValueError(f"the saved optimiser has {len(saved)} embedding matrices, this one {len(self._rows)}")
        for r, s in zip(self._rows, saved):
            device = r.weight.device
            r.index = s["index"].to(device)
            r.exp_avg = s["exp_avg"].to(device=device, dtype=r.weight.dtype).contiguous()
            r.exp_avg_sq = s["exp_avg_sq"].to(device=device, dtype=r.weight.dtype).contiguous()
            r.step = s["step"].clone().to(r.step.device)

    def __repr__(self) -> str:
        return f"TouchedRowsAdam({self.dense!r})"


def _why_dense(dense: torch.optim.Optimizer, embeddings: Sequence[nn.Embedding]) -> str | None:
    if os.environ.get(DENSE_ENV, "") not in ("", "0"):
        return f"{DENSE_ENV} is set"
    if type(dense) not in (torch.optim.Adam, torch.optim.AdamW):
        return f"{type(dense).__name__} is not Adam"
    for module in embeddings:
        groups = [g for g in dense.param_groups if any(p is module.weight for p in g["params"])]
        if len(groups) != 1:
            return "the embedding matrix is not in exactly one parameter group"
        group = groups[0]
        if group["weight_decay"]:
            return f"weight decay {group['weight_decay']} moves untouched rows too"
        if group["amsgrad"] or group["differentiable"]:
            return "amsgrad/differentiable Adam"
        if module.weight.is_sparse or module.max_norm is not None:
            return "the embedding renormalises or is sparse already"
    return None


def adam(params, *, embeddings: Sequence[nn.Embedding], decoupled: bool = False, hook: bool = True,
         **options) -> torch.optim.Optimizer:
    """``torch.optim.Adam(params, **options)`` (``AdamW`` when ``decoupled``) with the rows of
    ``embeddings``' weights updated only once touched, or the dense optimiser where that would
    not be exact (logged). ``hook=False`` reads the dense ``.grad`` at the step (data parallelism:
    after the all-reduce); otherwise gradients are gathered per backward pass.
    """
    dense = (torch.optim.AdamW if decoupled else torch.optim.Adam)(params, **options)
    in_optimiser = {id(p) for g in dense.param_groups for p in g["params"]}
    embeddings = [m for m in embeddings if id(m.weight) in in_optimiser]
    if not embeddings:
        return dense
    reason = _why_dense(dense, embeddings)
    if reason is not None:
        log.info("dense %s over the word embeddings: %s", type(dense).__name__, reason)
        return dense
    rows = sum(m.weight.shape[0] for m in embeddings)
    log.info("%s keeps state only for the touched rows of %d embedding rows (exact)", type(dense).__name__, rows)
    return TouchedRowsAdam(dense, embeddings, hook=hook)


def clip_grad_norm_(optimizer: torch.optim.Optimizer, parameters: Iterable[torch.Tensor],
                    max_norm: float) -> torch.Tensor:
    """Clip like ``torch.nn.utils.clip_grad_norm_``, aware of a :class:`TouchedRowsAdam`."""
    if isinstance(optimizer, TouchedRowsAdam):
        return optimizer.clip_grad_norm_(parameters, max_norm)
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def sparse_gradients(optimizer: torch.optim.Optimizer):
    """The optimiser's sparse-gradient context (a no-op for a dense optimiser)."""
    if isinstance(optimizer, TouchedRowsAdam):
        return optimizer.sparse_gradients()
    return contextlib.nullcontext()
