"""Data-parallel training under Hugging Face Accelerate.

``accelerate launch -m layerscope realign ...`` (or ``torchrun``) starts one process per GPU
(or several CPU processes with gloo); each runs the same command. :func:`workers` notices the
launch (``WORLD_SIZE`` > 1), builds an :class:`accelerate.Accelerator`, and returns a
:class:`Workers` that the training loops use for the few things data parallelism needs:
wrapping the trained module (DistributedDataParallel: gradients are all-reduced in
``backward``), skipping that all-reduce for all but the last micro-batch of a step, averaging
a logged loss across processes, and letting only the main process write files.

In a plain single process none of this is built and the loops run exactly as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

log = logging.getLogger(__name__)

_cached: dict[str, "Workers"] = {}


def launched_world_size() -> int:
    """Processes started by ``accelerate launch`` / ``torchrun`` (1 when run directly)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass
class Workers:
    """The processes of one data-parallel job (a single process when ``accelerator`` is None)."""

    accelerator: Any = None
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device Accelerate assigned to this process (None in a single process)."""
        return self.accelerator.device if self.accelerator is not None else None

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel (itself in a single process)."""
        if not self.distributed:
            return module
        return self.accelerator.prepare_model(module)

    def no_sync(self, wrapped: torch.nn.Module, last: bool) -> ContextManager:
        """Defer the gradient all-reduce except on the ``last`` micro-batch of a step."""
        if not self.distributed or last:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(wrapped)

    def mean(self, value: float) -> float:
        """Mean of a float over processes (the value itself in a single process)."""
        return self._reduce(value, "mean")

    def sum(self, value: float) -> float:
        """Sum of a float over processes (the value itself in a single process)."""
        return self._reduce(value, "sum")

    def _reduce(self, value: float, reduction: str) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction=reduction).item())

    def gather_objects(self, value: Any) -> list[Any]:
        """``value`` of every process, in rank order (``[value]`` in a single process)."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.distributed:
            self.accelerator.wait_for_everyone()

    def shard(self, items: list) -> list:
        """This process's share of a global batch: the ``rank``-th of ``world_size`` equal slices."""
        if not self.distributed:
            return items
        size, extra = divmod(len(items), self.world_size)
        if extra:
            raise ValueError(f"a batch of {len(items)} does not split evenly over {self.world_size} processes")
        return items[self.rank * size:(self.rank + 1) * size]


SINGLE = Workers()


def workers(device: str | torch.device | None = None) -> Workers:
    """The data-parallel context of this process; a single :class:`Workers` when not launched.

    Under a launcher, ``device="cpu"`` keeps every process on the CPU (gloo); otherwise
    Accelerate gives each process its own GPU.
    """
    if launched_world_size() <= 1:
        return SINGLE
    cpu = str(device) == "cpu" or not torch.cuda.is_available()
    key = "cpu" if cpu else "gpu"
    if key not in _cached:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        # Blocks above the realignment layer, and poolers, take no part in the loss.
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
        accelerator = Accelerator(cpu=cpu, kwargs_handlers=handlers)
        _cached[key] = Workers(accelerator, accelerator.process_index, accelerator.num_processes)
        if not accelerator.is_main_process:
            logging.getLogger("layerscope").setLevel(logging.WARNING)
        log.info("data parallel over %d processes (%s)", accelerator.num_processes, accelerator.distributed_type)
    return _cached[key]
