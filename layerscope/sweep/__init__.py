"""Sweeps: a grid of AlignFreeze experiments described by one TOML file, run through submitit.

The grid is models × tasks × (schedules × freeze policies × aligners, plus the baseline) × seeds.
One **run** fine-tunes one model on one task with one seed and evaluates it zero-shot on every
evaluation language (:func:`layerscope.finetune`); before that it realigns the model
(``before`` schedule: :func:`layerscope.realign.before_schedule`, as many realignment steps as
fine-tuning steps, as published) with one freeze policy on the word pairs of one aligner, or not
at all (the ``baseline``). Method labels follow the published results: ``baseline``,
``before_<aligner>`` (nothing frozen), ``freeze_realign_unfreeze_<aligner>`` (lower half frozen),
``freeze_realign_unfreeze_last_half_<aligner>`` (upper half frozen), and ``during_*`` for the
joint schedule.

Each run owns ``OUTPUT/runs/<run id>/`` (``<model>__<task>__<method>__seed<seed>``) and writes
``results.json``, ``results.tidy.csv`` and, last and atomically, ``results.csv``: a run whose
``results.csv`` exists is done and is skipped by the next sweep. :func:`gather` stacks the
per-run tables into ``OUTPUT/results.csv`` (the per-seed layout ``layerscope gains`` reads) and
``OUTPUT/results.tidy.csv``.

Configuration: see ``docs/sweep.md``. Relative paths in the file are relative to the file's
directory. Every error names the file and the key, in one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import LayerscopeError
from .config import (EXECUTORS, AlignerEntry, ExecutorSettings, ModelEntry, SweepConfig, TaskEntry, load_config,
                     parse_config)
from .grid import (RunSpec, canonical_policy, check_inputs, expand, grid_shape, is_done, method_label,
                   missing_inputs, run_id)
from .runner import Gathered, RunOutcome, execute, gather, make_executor, run_one

__all__ = ["sweep", "SweepResult", "SweepConfig", "ModelEntry", "TaskEntry", "AlignerEntry", "ExecutorSettings",
           "load_config", "parse_config", "RunSpec", "expand", "method_label", "canonical_policy", "run_id",
           "grid_shape", "is_done", "missing_inputs", "check_inputs", "run_one", "execute", "make_executor",
           "gather", "Gathered", "RunOutcome"]


@dataclass
class SweepResult:
    """What :func:`sweep` returns: the grid, what was done before, the outcomes, the gathered tables."""

    config: SweepConfig
    runs: list[RunSpec]
    done_before: set[str]
    outcomes: list[RunOutcome] = field(default_factory=list)
    gathered: Gathered | None = None

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def format_grid(self) -> str:
        """One line per run (done / pending) under a summary of the grid."""
        done = sum(r.run_id in self.done_before for r in self.runs)
        lines = [f"{self.config.path}: {len(self.runs)} runs = {grid_shape(self.config)}; "
                 f"{done} done, {len(self.runs) - done} pending; output {self.config.output}"]
        lines += [f"  {'done   ' if r.run_id in self.done_before else 'pending'}  {r.run_id}" for r in self.runs]
        return "\n".join(lines)


def _override(config: SweepConfig, executor: str | None, output: str | Path | None,
              seeds: Sequence[int] | None = None) -> SweepConfig:
    if seeds is not None:
        unknown = [s for s in seeds if s not in config.seeds]
        if unknown or not seeds:
            raise LayerscopeError(f"--seeds {','.join(map(str, seeds))}: the sweep's seeds are "
                                  f"{','.join(map(str, config.seeds))}", source=config.path)
        config = dataclasses.replace(config, seeds=tuple(dict.fromkeys(seeds)))
    if executor is not None:
        if executor not in EXECUTORS:
            raise LayerscopeError(f"unknown executor {executor!r}: use {', '.join(EXECUTORS)}")
        config = dataclasses.replace(config, executor=dataclasses.replace(config.executor, kind=executor))
    if output is not None:
        config = dataclasses.replace(config, output=Path(output).resolve())
    return config


def sweep(config: str | Path | SweepConfig, *, executor: str | None = None, output: str | Path | None = None,
          dry_run: bool = False, wait: bool = True, gather_only: bool = False,
          seeds: Sequence[int] | None = None, on_finish: Callable[[RunOutcome], None] | None = None) -> SweepResult:
    """Run a sweep: expand the grid, skip done runs, submit the others, wait, gather.

    ``config``: a TOML file or a :class:`SweepConfig`. ``executor`` (local, slurm, debug) and
    ``output`` override the file. ``dry_run``: only expand and look which runs are done.
    ``wait=False`` (slurm): return after submitting; gather later with ``gather_only=True``.
    ``seeds``: only these seeds of the file (a subset), e.g. one complete seed of
    every method before the next; the gathered tables then hold only their runs.
    """
    config = _override(config if isinstance(config, SweepConfig) else load_config(config), executor, output,
                       seeds)
    runs = expand(config)
    result = SweepResult(config=config, runs=runs, done_before={r.run_id for r in runs if is_done(r)})
    if dry_run:
        return result
    if not gather_only:
        check_inputs(config)
        pending = [r for r in runs if r.run_id not in result.done_before]
        result.outcomes = execute(pending, config.executor, config.output / "submitit", wait=wait,
                                  name=config.name, on_finish=on_finish)
    if wait or gather_only:
        result.gathered = gather(runs, config.output)
    return result


from .._callable import make_callable  # noqa: E402

make_callable(__name__, sweep)
