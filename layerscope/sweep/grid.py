"""The grid of a sweep: one :class:`RunSpec` per model × task × method × seed, with stable ids.

Pure (no file is read) except :func:`is_done`, :func:`missing_inputs` and :func:`check_inputs`.
A run's method label follows the published AlignFreeze results (:func:`method_label`); its id is
``<model>__<task>__<method>__seed<seed>`` and its directory ``OUTPUT/runs/<id>/``.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LayerscopeError
if TYPE_CHECKING:  # annotations only: config.load_config expands the grid to check it
    from .config import AlignerEntry, ModelEntry, SweepConfig, TaskEntry

RESULTS = "results.csv"
_PUBLISHED = {
    "before": {"none": "before", "lower": "freeze_realign_unfreeze", "upper": "freeze_realign_unfreeze_last_half"},
    "during": {"none": "during", "lower": "during_partial_freeze_front", "upper": "during_partial_freeze_back"},
}
_POLICY_ALIASES = {"front": "lower", "first_half": "lower", "back": "upper", "last_half": "upper", "emb": "embeddings"}


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: ``finetune(source, **finetune)`` with its results in ``directory``.

    Only plain values, so that it pickles to a cluster job and prints in a dry run.
    """

    run_id: str
    directory: str
    model: str
    task: str
    method: str
    seed: int
    schedule: str | None
    freeze: str | None
    aligner: str | None
    source: str
    finetune: dict[str, Any]

    @property
    def results(self) -> Path:
        return Path(self.directory) / RESULTS


def canonical_policy(policy: str) -> str:
    """A freeze policy with its aliases replaced (``front`` -> ``lower``), parts joined by ``+``."""
    parts = [p.strip().lower() for p in re.split(r"[+,]", policy) if p.strip()]
    parts = [_POLICY_ALIASES.get(p, p) for p in parts] or ["none"]
    return "+".join(parts)


def method_label(schedule: str | None, freeze: str | None, aligner: str | None) -> str:
    """The method column: ``baseline``, the published names for ``none`` / ``lower`` / ``upper``
    (``before_dico``, ``freeze_realign_unfreeze_dico``, ``freeze_realign_unfreeze_last_half_dico``),
    else ``<schedule>_freeze_<policy>_<aligner>`` with the policy's punctuation turned into ``_``."""
    if schedule is None:
        return "baseline"
    policy = canonical_policy(freeze or "none")
    if policy in _PUBLISHED[schedule]:
        return f"{_PUBLISHED[schedule][policy]}_{aligner}"
    slug = re.sub(r"[^a-z0-9-]+", "_", policy).strip("_")
    return f"{schedule}_freeze_{slug}_{aligner}"


def run_id(model: str, task: str, method: str, seed: int) -> str:
    return f"{model}__{task}__{method}__seed{seed}"


def _task_aligners(config: SweepConfig, task: TaskEntry) -> list[str]:
    return list(task.aligners) if task.aligners is not None else list(config.aligners)


def _methods(config: SweepConfig, task: TaskEntry) -> list[tuple[str | None, str | None, str | None]]:
    """(schedule, freeze policy, aligner key) per method of ``task``; the baseline first."""
    out: list[tuple[str | None, str | None, str | None]] = [(None, None, None)] if config.baseline else []
    out += [(s, f, a) for s in config.schedules for f in config.freeze for a in _task_aligners(config, task)]
    return out


def _finetune_kwargs(config: SweepConfig, model: ModelEntry, task: TaskEntry, method: str, seed: int,
                     schedule: str | None, freeze: str | None, aligner: AlignerEntry | None) -> dict[str, Any]:
    options = dict(task.options)
    kwargs: dict[str, Any] = {"task": task.task, "train": task.train, "eval": task.eval, "seeds": [seed],
                              "method": method, "model_name": model.name, "device": config.device,
                              "precision": config.precision,
                              "kernels": config.kernels}
    if task.dev is not None:
        kwargs["dev"] = task.dev
    if model.arch is not None:
        kwargs["model"] = model.arch
    if aligner is None:
        options.pop("realign_steps", None)
    else:
        kwargs.update(realign=schedule, freeze=freeze, pairs=aligner.pairs, parallel=aligner.parallel,
                      realign_langs=aligner.realign_langs, realign_lr=model.realign_lr,
                      realign_layer=model.realign_layer, **config.realign_options)
    kwargs.update(options)
    return {k: v for k, v in kwargs.items() if v is not None}


def expand(config: SweepConfig) -> list[RunSpec]:
    """Every run of the grid, in a stable order: model, task, method (baseline first), seed.

    Pure: reads no file. The count is ``models × tasks × (baseline + schedules × freeze ×
    aligners) × seeds``.
    """
    runs: list[RunSpec] = []
    seen: dict[str, tuple] = {}
    for model in config.models.values():
        for task in config.tasks.values():
            for schedule, freeze, aligner_key in _methods(config, task):
                method = method_label(schedule, freeze, aligner_key)
                for seed in config.seeds:
                    rid = run_id(model.key, task.key, method, seed)
                    origin = (schedule, freeze, aligner_key)
                    if rid in seen:
                        raise LayerscopeError(f"sweep.freeze: policies {seen[rid][1]!r} and {freeze!r} give the same "
                                              f"run {rid}", source=config.path)
                    seen[rid] = origin
                    aligner = config.aligners[aligner_key] if aligner_key else None
                    runs.append(RunSpec(
                        run_id=rid, directory=str(config.output / "runs" / rid), model=model.key, task=task.key,
                        method=method, seed=seed, schedule=schedule, freeze=freeze, aligner=aligner_key,
                        source=model.source,
                        finetune=_finetune_kwargs(config, model, task, method, seed, schedule, freeze, aligner),
                    ))
    return runs


def grid_shape(config: SweepConfig) -> str:
    """``2 models × 1 task × (baseline + 1 schedule × 3 freeze × 1 aligner) × 2 seeds``, or with
    per-task aligners ``2 models × (pos: baseline + … × 3 aligners; ner: …) × 2 seeds``."""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    def methods(task: TaskEntry) -> str:
        count = len(_task_aligners(config, task))
        inner = f"{n(len(config.schedules), 'schedule')} × {len(config.freeze)} freeze × {n(count, 'aligner')}"
        return f"baseline + {inner}" if config.baseline and count else "baseline" if config.baseline else inner

    shapes = {task.key: methods(task) for task in config.tasks.values()}
    if len(set(shapes.values())) == 1:
        middle = f"{n(len(config.tasks), 'task')} × ({next(iter(shapes.values()))})"
    else:
        middle = "(" + "; ".join(f"{key}: {shape}" for key, shape in shapes.items()) + ")"
    return f"{n(len(config.models), 'model')} × {middle} × {n(len(config.seeds), 'seed')}"


def is_done(run: RunSpec) -> bool:
    """A run is done when its ``results.csv`` exists (it is written last, atomically)."""
    return run.results.is_file()


def missing_inputs(config: SweepConfig) -> list[tuple[str, Path]]:
    """(dotted key, path) of every local file or directory the configuration names that does not exist."""
    return [(key, p) for key, p in config.local_paths.items() if not p.exists()]


def _installed(distribution: str) -> bool:
    """Whether a distribution is installed, asked of its metadata: the import system can be shadowed
    by a same-named script in a console script's ``bin/``, which comes first on ``sys.path``."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def check_inputs(config: SweepConfig) -> None:
    """Refuse, before anything is submitted, missing local inputs and a missing eflomal."""
    missing = missing_inputs(config)
    if missing:
        key, path = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LayerscopeError(f"{key}: no such file or directory: {path}{more}", source=config.path)
    for aligner in config.aligners.values():
        if aligner.pairs.strip().lower() == "eflomal" and not _installed("eflomal"):
            raise LayerscopeError(f"aligners.{aligner.key}.pairs: eflomal is not installed here "
                                  "(pip install eflomal)", source=config.path)
