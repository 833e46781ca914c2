"""The settings of a fine-tuning run (:class:`FinetuneConfig`), checked before any data is read."""


from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..corpora import languages
from ..kernels import check_kernels
from ..errors import LayerscopeError
from .registry import Task, get_task

SCHEDULES = ("before", "during")
DEFAULT_SEEDS = (31, 42, 66)


@dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of a fine-tuning job, validated once (see :func:`finetune` for each)."""

    task: str
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    realign: str | None = None
    include_baseline: bool = False
    method: str | None = None
    source_lang: str = "en"
    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 32
    micro_batch_size: int | None = None  # None: the whole batch per process (TrainSettings.micro_batch)
    lr: float | None = None
    warmup: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0
    max_length: int | None = None
    doc_stride: int = 128
    limit: int | None = None
    eval_limit: int | None = None
    parallel: Any = None
    pairs: Any = None
    realign_langs: Any = None
    freeze: str | None = None
    realign_steps: int | None = None
    realign_lr: float | None = None
    realign_layer: int | None = None
    realign_batch_size: int = 16
    realign_max_length: int = 96
    realign_negatives: str = "batch-words"
    realign_keep_space_tokens: bool = False
    realign_casefold: bool = False
    during_weight: float = 0.1
    device: str = "auto"
    precision: str = "auto"
    kernels: str = "auto"
    eval_batch_size: int = 64
    model_type: str | None = None  # the model config's; picks the learning rate (XLM-R: 7.5e-6)

    def __post_init__(self) -> None:
        seeds = self.seeds
        if isinstance(seeds, int):
            seeds = (seeds,)
        if isinstance(seeds, str):
            seeds = parse_seeds(seeds)
        seeds = tuple(seeds)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise LayerscopeError(f"seeds must be integers, got {self.seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise LayerscopeError(f"a seed is listed twice: {', '.join(map(str, seeds))}")
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "task", get_task(self.task).name)
        if self.realign is not None and self.realign not in SCHEDULES:
            raise LayerscopeError(f"unknown realignment schedule {self.realign!r}: use before, during or none")
        if self.realign is not None and (self.parallel is None or self.pairs is None):
            raise LayerscopeError(f"realign={self.realign!r} needs a parallel corpus and a word-pair source "
                                  "(--parallel SPEC --pairs SOURCE)")
        if self.realign is None and (self.parallel is not None or self.pairs is not None or self.freeze is not None):
            raise LayerscopeError("a parallel corpus, word pairs or a freeze policy were given without a "
                                  "realignment schedule; add --realign before or --realign during")
        for name in ("limit", "eval_limit", "max_length", "realign_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise LayerscopeError(f"{name} must be a positive integer, got {value!r}")
        for name in ("realign_batch_size", "realign_max_length", "eval_batch_size", "doc_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LayerscopeError(f"{name} must be a positive integer, got {value!r}")
        if self.realign_lr is not None and not 0 < self.realign_lr < 1:
            raise LayerscopeError(f"realignment learning rate must be in (0, 1), got {self.realign_lr!r}")
        from ..realign.loss import check_negatives

        check_negatives(self.realign_negatives)
        if not self.max_grad_norm >= 0:
            raise LayerscopeError(f"max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm!r}")
        if not self.during_weight > 0:
            raise LayerscopeError(f"the during weight must be positive, got {self.during_weight!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise LayerscopeError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        check_kernels(self.kernels)
        object.__setattr__(self, "source_lang", languages.normalize(self.source_lang, source="source language"))
        self.train_settings(0)  # validates batch sizes, lr, warm-up, epochs

    @property
    def task_spec(self) -> Task:
        return get_task(self.task)

    def train_settings(self, seed: int):
        from .train import TrainSettings

        task = self.task_spec
        return TrainSettings(epochs=self.epochs if self.epochs is not None else task.epochs, steps=self.steps,
                             batch_size=self.batch_size, micro_batch_size=self.micro_batch_size,
                             lr=self.lr if self.lr is not None else task.default_lr(self.model_type),
                             warmup=self.warmup, weight_decay=self.weight_decay,
                             max_grad_norm=self.max_grad_norm, seed=seed)

    @property
    def freeze_policy(self) -> str:
        """The freeze policy of the schedule: given, else ``lower`` (before) / ``none`` (during)."""
        if self.freeze is not None:
            return self.freeze
        return "lower" if self.realign == "before" else "none"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for results.json; corpus and pair-source objects by their spec or name."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("parallel", "pairs", "realign_langs"):
            value = out[key]
            if value is not None and not isinstance(value, (str, int, float, list, tuple)):
                out[key] = getattr(value, "spec", None) or getattr(value, "name", None) or type(value).__name__
        out["seeds"] = list(self.seeds)
        return out


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"31,42,66"`` -> (31, 42, 66)."""
    try:
        return tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise LayerscopeError(f"seeds must be integers separated by commas, got {text!r}") from None
