"""The sweep file: TOML read with :mod:`tomllib`, validated once into a :class:`SweepConfig`.

Sections: ``[sweep]`` (seeds, freeze policies, schedules, baseline, defaults), ``[models.KEY]``,
``[tasks.KEY]``, ``[aligners.KEY]`` and ``[executor]`` (with ``[executor.slurm]``); see
``docs/sweep.md``. Relative paths are relative to the file's directory; which keys name local
files is remembered (``SweepConfig.local_paths``) so that they can be checked before anything is
submitted, while a dry run or this validation never touches them. Every error is one
:class:`~layerscope.errors.LayerscopeError` naming the file and the dotted key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import LayerscopeError
from .grid import canonical_policy, expand

EXECUTORS = ("local", "slurm", "debug")
SCHEDULES = ("before", "during")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
KERNELS = ("auto", "fast", "torch")  # layerscope.kernels.KERNELS, without importing torch to read a file
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_CORPUS_KINDS_WITH_PATH = ("flores", "tatoeba", "pud", "tsv")
_CHECKPOINT_SUFFIXES = (".pt", ".safetensors", ".bin")


@dataclass(frozen=True)
class ModelEntry:
    """``[models.KEY]``: what to load (``source``), the ``model`` column (``name``) and the
    model-specific realignment settings."""

    key: str
    source: str
    name: str
    arch: str | None = None
    realign_lr: float | None = None
    realign_layer: int | None = None


@dataclass(frozen=True)
class TaskEntry:
    """``[tasks.KEY]``: the task, its data specs and fine-tuning options (keywords of finetune)."""

    key: str
    task: str
    train: list[str]
    eval: list[str]
    dev: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    aligners: tuple[str, ...] | None = None  # the aligners realigned with for this task; None = all


@dataclass(frozen=True)
class AlignerEntry:
    """``[aligners.KEY]``: a word-pair source (``pairs``) and the parallel corpus it reads."""

    key: str
    pairs: str
    parallel: str
    realign_langs: str | list[str] | None = None


@dataclass(frozen=True)
class ExecutorSettings:
    """``[executor]``: where runs go (``kind``), their resources and ``[executor.slurm]``."""

    kind: str = "local"
    timeout_min: int = 240
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: float | None = None
    max_parallel: int = 1
    poll_s: float = 10.0
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep file. ``local_paths`` maps dotted keys to the local files they name."""

    path: Path
    name: str
    output: Path
    seeds: tuple[int, ...]
    freeze: tuple[str, ...]
    schedules: tuple[str, ...]
    baseline: bool
    device: str
    precision: str
    kernels: str
    models: dict[str, ModelEntry]
    tasks: dict[str, TaskEntry]
    aligners: dict[str, AlignerEntry]
    executor: ExecutorSettings
    local_paths: dict[str, Path] = field(default_factory=dict)
    realign_options: dict[str, Any] = field(default_factory=dict)  # finetune keywords of realigned runs


_MISSING = object()


class _Table:
    """One TOML table being read: refuses unknown keys (with a suggestion) and wrong types,
    naming the file and the dotted key."""

    def __init__(self, data: Any, where: str, path: Path, known: Sequence[str]):
        self.where, self.path = where, path
        if not isinstance(data, dict):
            raise LayerscopeError(f"{where or 'top level'}: must be a table ([{where}])", source=path)
        self.data = data
        for key in data:
            if key not in known:
                near = difflib.get_close_matches(key, list(known), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(known)}"
                raise self.error(key, f"unknown key{hint}")

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str) -> LayerscopeError:
        return LayerscopeError(f"{self.name(key)}: {message}", source=self.path)

    def get(self, key: str, kind: str, default: Any = _MISSING) -> Any:
        """The value of ``key``, checked to be of ``kind`` (see :func:`_check_kind`)."""
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, f"missing ({'an' if kind[0] in 'aeiou' else 'a'} {kind} is required)")
            return default
        value = self.data[key]
        if not _check_kind(value, kind):
            article = "an" if kind[0] in "aeiou" else "a"
            raise self.error(key, f"must be {article} {kind}, got {value!r}")
        return value

    def positive(self, key: str, kind: str = "integer", default: Any = None) -> Any:
        value = self.get(key, kind, default)
        if value is not None and not value > 0:
            raise self.error(key, f"must be positive, got {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.get(key, "string", default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value


def _check_kind(value: Any, kind: str) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str) and bool(v.strip()),
        "integer": lambda v: is_int,
        "number": lambda v: is_int or isinstance(v, float),
        "boolean": lambda v: isinstance(v, bool),
        "table": lambda v: isinstance(v, dict),
        "list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v),
        "string or list of strings": lambda v: (isinstance(v, str) and bool(v.strip())) or (
            isinstance(v, list) and bool(v) and all(isinstance(x, str) and x.strip() for x in v)),
        "integer or list of integers": lambda v: is_int or (
            isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)),
    }
    return checks[kind](value)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class _Paths:
    """Resolves relative paths against the config file's directory and remembers which keys
    name local files, so that they can be checked before anything is submitted."""

    def __init__(self, base: Path):
        self.base = base
        self.found: dict[str, Path] = {}

    def path(self, text: str, key: str) -> str:
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else self.base / path).resolve()
        self.found.setdefault(key, path)
        return str(path)

    def data_items(self, value: str | list[str], key: str) -> list[str]:
        """A task data spec (``FILE``, ``LANG=FILE``, ``DIR``, ``hf:...``) as a list of items."""
        items: list[str] = []
        for entry in _as_list(value):
            entry = entry.strip()
            parts = [entry] if entry.startswith("hf:") else [p.strip() for p in entry.split(",") if p.strip()]
            for part in parts:
                lang, sep, rest = part.partition("=")
                if part.startswith("hf:"):
                    items.append(part)
                elif sep:
                    items.append(f"{lang.strip()}={self.path(rest.strip(), f'{key}[{lang.strip()}]')}")
                else:
                    items.append(self.path(part, f"{key}[{len(items)}]" if len(parts) > 1 else key))
        return items

    def prefixed(self, spec: str, kinds: Sequence[str], key: str) -> str:
        """``kind:PATH`` with PATH resolved when ``kind`` names a local location."""
        kind, sep, location = spec.partition(":")
        if sep and kind.strip().lower() in kinds and location.strip():
            return f"{kind.strip().lower()}:{self.path(location.strip(), key)}"
        return spec.strip()

    def model_source(self, text: str, key: str) -> str:
        """A checkpoint or directory (``./x``, ``/x``, ``~/x``, ``*.pt`` or existing) or a hub id."""
        local = text.startswith((".", "/", "~")) or text.endswith(_CHECKPOINT_SUFFIXES) \
            or (self.base / text).exists()
        return self.path(text, key) if local else text


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file (TOML). Raises LayerscopeError naming the file and key."""
    path = Path(path)
    if not path.exists():
        raise LayerscopeError("no such sweep configuration file", source=path)
    if not path.is_file():
        raise LayerscopeError("is not a file; give a .toml sweep configuration", source=path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise LayerscopeError(f"not valid TOML: {exc}", source=path) from None
    except UnicodeDecodeError:
        raise LayerscopeError("not valid TOML: the file is not UTF-8 text", source=path) from None
    return parse_config(data, path=path)


def parse_config(data: dict[str, Any], *, path: str | Path, base: str | Path | None = None) -> SweepConfig:
    """Validate the parsed TOML ``data`` of ``path`` (relative paths against ``base``, default
    the file's directory)."""
    path = Path(path)
    paths = _Paths(Path(base) if base is not None else path.resolve().parent)
    top = _Table(data, "", path, ("sweep", "models", "tasks", "aligners", "executor"))
    sweep = _Table(top.get("sweep", "table"), "sweep", path,
                   ("name", "output", "seeds", "freeze", "schedules", "baseline", "parallel", "realign_langs",
                    "device", "precision", "kernels", *_REALIGN_OPTIONS))
    seeds = _seeds(sweep)
    schedules = tuple(_as_list(sweep.get("schedules", "string or list of strings", ["before"])))
    for schedule in schedules:
        if schedule not in SCHEDULES:
            raise sweep.error("schedules", f"unknown schedule {schedule!r}: use {' or '.join(SCHEDULES)}")
    freeze = _freeze_policies(sweep)
    default_parallel = sweep.get("parallel", "string", None)
    default_langs = sweep.get("realign_langs", "string or list of strings", None)
    models = _models(top, path, paths)
    aligners = _aligners(top, path, paths, default_parallel, default_langs)
    tasks = _tasks(top, path, paths, aligners)
    baseline = sweep.get("baseline", "boolean", True)
    if not baseline and not aligners:
        raise top.error("aligners", "no aligner and baseline = false: the grid is empty")
    for task in tasks.values():
        if not baseline and task.aligners == ():
            raise LayerscopeError(f"tasks.{task.key}.aligners: empty and baseline = false: the task has no run",
                                  source=path)
    output = sweep.get("output", "string", None)
    config = SweepConfig(
        path=path, name=sweep.get("name", "string", path.stem), seeds=seeds, freeze=freeze, schedules=schedules,
        output=Path(paths.path(output, "sweep.output")) if output else paths.base / "runs" / path.stem,
        baseline=baseline, device=sweep.choice("device", DEVICES, "auto"),
        precision=sweep.choice("precision", PRECISIONS, "auto"), kernels=sweep.choice("kernels", KERNELS, "auto"),
        models=models, tasks=tasks, aligners=aligners,
        executor=_executor(top, path), local_paths={}, realign_options=_realign_options(sweep),
    )
    paths.found.pop("sweep.output", None)
    object.__setattr__(config, "local_paths", dict(paths.found))
    expand(config)  # refuses grids whose run ids would collide
    return config


_REALIGN_OPTIONS = {  # [sweep] key -> kind; finetune keywords of every realigned run
    "realign_negatives": "string", "realign_keep_space_tokens": "boolean", "realign_casefold": "boolean",
}


def _realign_options(sweep: _Table) -> dict[str, Any]:
    from ..realign.loss import NEGATIVES

    options = {key: sweep.get(key, kind) for key, kind in _REALIGN_OPTIONS.items() if key in sweep.data}
    if "realign_negatives" in options:
        sweep.choice("realign_negatives", NEGATIVES, NEGATIVES[0])
    return options


def _seeds(sweep: _Table) -> tuple[int, ...]:
    value = sweep.get("seeds", "integer or list of integers")
    seeds = tuple([value] if isinstance(value, int) else value)
    if not seeds:
        raise sweep.error("seeds", "is empty")
    if len(set(seeds)) != len(seeds):
        raise sweep.error("seeds", f"a seed is listed twice: {seeds}")
    if any(s < 0 for s in seeds):
        raise sweep.error("seeds", f"seeds must be >= 0, got {seeds}")
    return seeds


def _freeze_policies(sweep: _Table) -> tuple[str, ...]:
    from ..models.freezing import parse_freeze_policy

    policies = tuple(p.strip() for p in _as_list(sweep.get("freeze", "string or list of strings", ["lower"])))
    for policy in policies:
        try:
            parse_freeze_policy(policy, 10_000)  # names and syntax; ranges are checked per model at run time
        except LayerscopeError as exc:
            raise sweep.error("freeze", str(exc)) from None
    canonical = [canonical_policy(p) for p in policies]
    for i, name in enumerate(canonical):
        if name in canonical[:i]:
            raise sweep.error("freeze", f"{policies[i]!r} is the same policy as {policies[canonical.index(name)]!r}")
    return policies


def _entries(top: _Table, section: str, path: Path) -> dict[str, Any]:
    tables = top.get(section, "table", {})
    for key in tables:
        if not _KEY.match(key):
            raise LayerscopeError(f"{section}.{key}: names may hold letters, digits, '.' and '-' only "
                                  "(they become parts of run ids and directory names)", source=path)
    return tables


def _models(top: _Table, path: Path, paths: _Paths) -> dict[str, ModelEntry]:
    models = {}
    for key, value in _entries(top, "models", path).items():
        t = _Table(value, f"models.{key}", path, ("source", "name", "model", "realign_lr", "realign_layer"))
        lr = t.positive("realign_lr", "number")
        if lr is not None and not lr < 1:
            raise t.error("realign_lr", f"must be in (0, 1), got {lr!r}")
        layer = t.get("realign_layer", "integer", None)  # negative: from the end (-2 = L-1), checked at run time
        arch = t.get("model", "string", None)
        models[key] = ModelEntry(key=key, source=paths.model_source(t.get("source", "string"), t.name("source")),
                                 name=t.get("name", "string", key), realign_lr=lr, realign_layer=layer,
                                 arch=paths.model_source(arch, t.name("model")) if arch else None)
    if not models:
        raise top.error("models", "no model: add a [models.NAME] table with source = \"...\"")
    return models


_TASK_OPTIONS = {  # finetune keyword -> kind
    "epochs": "number", "steps": "integer", "lr": "number", "batch_size": "integer", "micro_batch_size": "integer",
    "max_length": "integer", "limit": "integer", "eval_limit": "integer", "warmup": "number",
    "weight_decay": "number", "labels": "list of strings", "realign_steps": "integer", "source_lang": "string",
    "max_grad_norm": "number",
}
_NON_NEGATIVE = ("warmup", "weight_decay", "max_grad_norm")


def _task_aligners(t: _Table, aligners: dict[str, AlignerEntry]) -> tuple[str, ...] | None:
    if "aligners" not in t.data:
        return None
    chosen = tuple(t.get("aligners", "list of strings"))
    for key in chosen:
        if key not in aligners:
            near = difflib.get_close_matches(key, list(aligners), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise t.error("aligners", f"no [aligners.{key}] table{hint} (defined: {', '.join(aligners) or 'none'})")
    if len(set(chosen)) != len(chosen):
        raise t.error("aligners", f"an aligner is listed twice: {', '.join(chosen)}")
    return chosen


def _tasks(top: _Table, path: Path, paths: _Paths, aligners: dict[str, AlignerEntry]) -> dict[str, TaskEntry]:
    from ..tasks.registry import get_task

    tasks = {}
    for key, value in _entries(top, "tasks", path).items():
        t = _Table(value, f"tasks.{key}", path, ("task", "train", "eval", "dev", "aligners", *_TASK_OPTIONS))
        name = t.get("task", "string", key)
        try:
            task = get_task(name).name
        except LayerscopeError as exc:
            if "task" in t.data:
                raise t.error("task", str(exc)) from None
            raise LayerscopeError(f"{t.where}: {exc} (the table's name is the task unless task = \"...\" "
                                  "says otherwise)", source=path) from None
        options: dict[str, Any] = {}
        for option, kind in _TASK_OPTIONS.items():
            if option in t.data:
                value = t.get(option, kind)
                if kind in ("integer", "number") and not (value >= 0 if option in _NON_NEGATIVE else value > 0):
                    raise t.error(option, f"must be {'>= 0' if option in _NON_NEGATIVE else 'positive'}, "
                                          f"got {value!r}")
                options[option] = value
        dev = t.get("dev", "string or list of strings", None)
        tasks[key] = TaskEntry(
            key=key, task=task, options=options, aligners=_task_aligners(t, aligners),
            train=paths.data_items(t.get("train", "string or list of strings"), t.name("train")),
            eval=paths.data_items(t.get("eval", "string or list of strings"), t.name("eval")),
            dev=paths.data_items(dev, t.name("dev")) if dev is not None else None,
        )
    if not tasks:
        raise top.error("tasks", "no task: add a [tasks.NAME] table with train and eval")
    return tasks


def _check_pairs(spec: str, t: _Table) -> None:
    from ..realign.pairs import ALIASES, PAIR_SOURCES, pair_source

    kind, _, argument = spec.strip().partition(":")
    kind = ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if kind == "dict":
        if not argument.strip():
            raise t.error("pairs", "dict needs a location: dict:DIR with en-xx.txt files")
        return
    try:
        pair_source(spec)  # eflomal and embed: syntax only, nothing is read
    except LayerscopeError as exc:
        raise t.error("pairs", f"{exc} (known sources: {', '.join(PAIR_SOURCES)})") from None


def _aligners(top: _Table, path: Path, paths: _Paths, default_parallel: str | None,
              default_langs: str | list[str] | None) -> dict[str, AlignerEntry]:
    from ..corpora.parallel import READERS

    aligners = {}
    for key, value in _entries(top, "aligners", path).items():
        t = _Table(value, f"aligners.{key}", path, ("pairs", "parallel", "realign_langs"))
        pairs = t.get("pairs", "string")
        _check_pairs(pairs, t)
        parallel = t.get("parallel", "string", default_parallel)
        if parallel is None:
            raise t.error("parallel", "missing: give the parallel corpus here or as sweep.parallel "
                                      "(tatoeba:DIR, flores:DIR, tsv:FILE, pud:DIR or sample)")
        kind = parallel.partition(":")[0].strip().lower()
        if kind not in READERS:
            near = difflib.get_close_matches(kind, list(READERS), n=1)
            hint = f"; did you mean {near[0]}:?" if near else ""
            raise t.error("parallel", f"unknown corpus kind {kind!r}: use one of "
                                      f"{', '.join(k + ':' for k in READERS)}{hint}")
        where = t.name("parallel") if "parallel" in t.data else "sweep.parallel"
        pairs_key = t.name("pairs")
        aligners[key] = AlignerEntry(
            key=key, pairs=paths.prefixed(pairs, ("dict", "dictionary", "dico", "muse"), pairs_key),
            parallel=paths.prefixed(parallel, _CORPUS_KINDS_WITH_PATH, where),
            realign_langs=t.get("realign_langs", "string or list of strings", default_langs),
        )
    return aligners


def _executor(top: _Table, path: Path) -> ExecutorSettings:
    t = _Table(top.get("executor", "table", {}), "executor", path,
               ("kind", "timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "max_parallel", "poll_s",
                "slurm"))
    slurm = dict(t.get("slurm", "table", {}))
    if slurm:
        from submitit.slurm.slurm import SlurmExecutor

        known = sorted(SlurmExecutor._valid_parameters())
        _Table(slurm, "executor.slurm", path, known)
    gpus = t.get("gpus_per_node", "integer", None)
    if gpus is not None and gpus < 0:
        raise t.error("gpus_per_node", f"must be >= 0, got {gpus!r}")
    return ExecutorSettings(
        kind=t.choice("kind", EXECUTORS, "local"), timeout_min=t.positive("timeout_min", default=240),
        cpus_per_task=t.positive("cpus_per_task"), gpus_per_node=gpus, mem_gb=t.positive("mem_gb", "number"),
        max_parallel=t.positive("max_parallel", default=1), poll_s=t.positive("poll_s", "number", 10.0),
        slurm=slurm,
    )
