"""Running a sweep: the job function, submitit executors, waiting, and gathering the results.

:func:`run_one` is what a job runs (one :class:`~layerscope.sweep.grid.RunSpec`); :func:`execute`
submits runs through ``submitit.AutoExecutor`` (slurm, local or debug) and waits for them;
:func:`gather` stacks the tables of the finished runs into the per-seed and tidy layouts that
``layerscope gains`` and ``layerscope regress`` read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from ..errors import LayerscopeError
from .config import ExecutorSettings
from .grid import RESULTS, RunSpec, is_done

log = logging.getLogger(__name__)


def run_one(run: RunSpec) -> str:
    """Realign (unless baseline), fine-tune and evaluate one run; write its files.

    ``results.json`` (the run and finetune's settings and provenance) and ``results.tidy.csv``
    first, ``results.csv`` last: its presence marks the run done. Returns its path.
    """
    from ..outputs import atomic_write, atomic_write_json
    from ..tasks.job import finetune

    directory = Path(run.directory)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = finetune(run.source, **run.finetune)
    labels = {"run_id": run.run_id, "schedule": run.schedule or "", "freeze": run.freeze or "",
              "aligner": run.aligner or ""}
    wide = result.wide.assign(**labels)
    atomic_write_json(directory / "results.json", {"run": dataclasses.asdict(run), "finetune": result.run,
                                                   "seconds": round(time.perf_counter() - started, 3)})
    atomic_write(directory / "results.tidy.csv", lambda tmp: result.tidy.assign(**labels).to_csv(tmp, index=False))
    atomic_write(run.results, lambda tmp: wide.to_csv(tmp, index=False))
    return str(run.results)


# --------------------------------------------------------------------------- submitting


@dataclass
class RunOutcome:
    """How a submitted run ended: ``ok``, else ``error`` (last line) and the job's ``log``."""

    run_id: str
    ok: bool
    job_id: str = ""
    error: str | None = None
    log: str | None = None


def make_executor(settings: ExecutorSettings, folder: str | Path, name: str = "layerscope-sweep"):
    """A ``submitit.AutoExecutor`` for ``settings.kind`` (local, slurm, debug) with its parameters."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=settings.kind)
    params: dict[str, Any] = {"name": name, "timeout_min": settings.timeout_min}
    for key in ("cpus_per_task", "gpus_per_node", "mem_gb"):
        if getattr(settings, key) is not None:
            params[key] = getattr(settings, key)
    if settings.kind == "slurm":
        params["slurm_array_parallelism"] = settings.max_parallel
        params.update({f"slurm_{k}": v for k, v in settings.slurm.items()})
    executor.update_parameters(**params)
    return executor


@contextlib.contextmanager
def _workers_import_this_package() -> Iterator[None]:
    """While jobs are submitted, put this source checkout first on PYTHONPATH (submitit copies
    the environment into each job), so that workers run this very layerscope, not another
    installed copy. Nothing changes for an installed package."""
    root = str(Path(__file__).resolve().parents[2])  # the directory holding layerscope/
    if any(part in ("site-packages", "dist-packages") for part in Path(root).parts):
        yield
        return
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _poll(run: RunSpec, job) -> RunOutcome | None:
    """The run's outcome once its job has ended, else None.

    A debug job runs inside ``done()`` and raises its error there (after submitit's post-mortem
    debugger); a failed job's result would run it again, so the error is taken where it appears.
    """
    try:
        if not job.done():
            return None
        job.result()
    except Exception as exc:  # the job's own error, reported per run; the sweep goes on
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        stderr = getattr(getattr(job, "paths", None), "stderr", None)
        return RunOutcome(run.run_id, ok=False, job_id=str(getattr(job, "job_id", "")),
                          error=lines[-1] if lines else type(exc).__name__, log=str(stderr) if stderr else None)
    finished = is_done(run)
    return RunOutcome(run.run_id, ok=finished, job_id=str(job.job_id),
                      error=None if finished else f"the job ended without writing {RESULTS}")


def execute(runs: Sequence[RunSpec], settings: ExecutorSettings, folder: str | Path, *, wait: bool = True,
            name: str = "layerscope-sweep", on_finish: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
    """Submit ``runs`` through submitit and (with ``wait``) wait for them.

    slurm: every run at once as one job array, at most ``max_parallel`` running. local and
    debug: at most ``max_parallel`` runs at a time, the next submitted when one ends (debug runs
    them one by one in this process). ``wait=False`` (slurm only) returns after submitting.
    """
    if not runs:
        return []
    if not wait and settings.kind != "slurm":
        raise LayerscopeError(f"not waiting works with the slurm executor only; the {settings.kind} executor "
                              "needs this process to start the next runs")
    executor = make_executor(settings, folder, name)
    if settings.kind == "slurm":
        with _workers_import_this_package(), executor.batch():
            jobs = [(run, executor.submit(run_one, run)) for run in runs]
        log.info("submitted %d runs to SLURM (at most %d at a time); logs in %s", len(runs), settings.max_parallel,
                 folder)
        if not wait:
            return []
        return _wait(list(jobs), [], settings, executor, on_finish)
    return _wait([], list(runs), settings, executor, on_finish)


def _wait(active: list, queue: list[RunSpec], settings: ExecutorSettings, executor,
          on_finish: Callable[[RunOutcome], None] | None) -> list[RunOutcome]:
    """Poll until every job ended, keeping at most ``max_parallel`` queued runs going."""
    outcomes: list[RunOutcome] = []
    queue = list(queue)
    while active or queue:
        while queue and len(active) < settings.max_parallel:
            run = queue.pop(0)
            with _workers_import_this_package():
                active.append((run, executor.submit(run_one, run)))
            log.info("started %s", run.run_id)
        still = []
        for run, job in active:
            outcome = _poll(run, job)
            if outcome is None:
                still.append((run, job))
                continue
            outcomes.append(outcome)
            log.info("%s %s%s", "finished" if outcome.ok else "FAILED", run.run_id,
                     "" if outcome.ok else f": {outcome.error}")
            if on_finish is not None:
                on_finish(outcome)
        active = still
        if active and (len(active) >= settings.max_parallel or not queue):
            time.sleep(settings.poll_s)
    return outcomes


# --------------------------------------------------------------------------- gathering


@dataclass
class Gathered:
    """The stacked results of the done runs and where they were written.

    ``wide``: one row per run (seed, model, task, method, …, final_eval_<lang>_<metric>, then
    run_id, schedule, freeze, aligner); ``tidy``: seed, model, task, method, lang, metric, score, ….
    """

    wide: pd.DataFrame
    tidy: pd.DataFrame
    paths: dict[str, Path]
    missing: list[str]


def _order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    from ..tasks.results import WIDE_FIXED

    labels = ["run_id", "schedule", "freeze", "aligner"]
    fixed = [c for c in WIDE_FIXED if c in frame.columns]
    scores = [c for c in frame.columns if c not in fixed and c not in labels]
    return frame[fixed + scores + [c for c in labels if c in frame.columns]]


def gather(runs: Sequence[RunSpec], output: str | Path) -> Gathered | None:
    """Stack the per-run tables of the done ``runs`` into ``output``: ``results.csv`` (per seed,
    what ``layerscope gains`` reads), ``results.tidy.csv``, ``tasks/<key>.csv`` per task of the
    sweep when there are several, and ``sweep.json``. None when no run is done yet."""
    from .. import provenance
    from ..outputs import atomic_write, atomic_write_json
    from ..corpora.tables import read_user_csv

    output = Path(output)
    done = [r for r in runs if is_done(r)]
    missing = [r.run_id for r in runs if not is_done(r)]
    if not done:
        return None
    frames = [read_user_csv(r.results, what="run results").assign(run_id=r.run_id) for r in done]
    wide = _order_columns(pd.concat(frames, ignore_index=True))
    tidy_parts = [pd.read_csv(Path(r.directory) / "results.tidy.csv") for r in done
                  if (Path(r.directory) / "results.tidy.csv").is_file()]
    tidy = pd.concat(tidy_parts, ignore_index=True) if tidy_parts else pd.DataFrame()
    paths = {"wide": output / "results.csv", "tidy": output / "results.tidy.csv", "json": output / "sweep.json"}
    atomic_write(paths["wide"], lambda tmp: wide.to_csv(tmp, index=False))
    atomic_write(paths["tidy"], lambda tmp: tidy.to_csv(tmp, index=False))
    by_task: dict[str, list[str]] = {}  # the sweep's task keys (udpos), not finetune's names (pos)
    for run in done:
        by_task.setdefault(run.task, []).append(run.run_id)
    if len(by_task) > 1:
        for key, ids in by_task.items():
            part = wide[wide["run_id"].isin(ids)].dropna(axis=1, how="all")
            paths[f"task:{key}"] = atomic_write(output / "tasks" / f"{key}.csv",
                                                lambda tmp, p=part: p.to_csv(tmp, index=False))
    atomic_write_json(paths["json"], {"runs": len(runs), "done": len(done), "missing": missing,
                                      "files": {k: str(v) for k, v in paths.items()},
                                      "versions": provenance.versions()})
    return Gathered(wide=wide, tidy=tidy, paths=paths, missing=missing)
