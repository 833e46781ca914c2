"""The fine-tuning job: realign (optionally) → fine-tune on the source language → zero-shot
evaluation on every target language, for several seeds.

:func:`finetune` is what ``layerscope finetune`` calls. It reads and tokenises all data and
checks every setting before the first training step, then for each method (the baseline
and/or the realignment schedule) and seed:

1. copies the starting encoder (each run starts from the same weights);
2. ``realign="before"``: realigns it with the freeze policy (:func:`layerscope.realign.before_schedule`,
   as many steps as the fine-tuning run takes by default), then unfreezes everything;
3. fine-tunes encoder + task head (``realign="during"``: task loss + 0.1 × realignment loss of
   :func:`layerscope.realign.during_objective` at every step, the realignment gradient kept
   out of the blocks the freeze policy names);
4. evaluates on every language of ``eval`` (and on ``dev``, the source-language ``same`` score).

It returns the per-seed table in the layout of the published AlignFreeze results
(``final_eval_<lang>_<metric>`` columns) and a tidy table, which ``layerscope gains`` and
``layerscope regress`` read; with ``output`` they are written as ``results.csv``,
``results.tidy.csv`` and ``results.json`` (configuration, provenance, loss histories).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch

from ..distributed import workers
from ..errors import LayerscopeError
from ..kernels import resolve_kernels
from ..precision import resolve_precision
from .config import DEFAULT_SEEDS, FinetuneConfig
from .evaluate import majority_scores
from .registry import Task
from .results import FinetuneResult, check_outputs, method_name, output_paths, tables, write
from .sources import Spec, TaskData, load_task_data

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers


def _as_encoder(source: Any, model: str | None, device: torch.device, trust_remote_code: bool):
    from ..models.encoder import Encoder, load_encoder

    if isinstance(source, Encoder):
        return source
    return load_encoder(source, model=model, device=device, trust_remote_code=trust_remote_code)


def _fresh_copy(encoder):
    return dataclasses.replace(encoder, model=copy.deepcopy(encoder.model),
                               checkpoint_meta=dict(encoder.checkpoint_meta))


def _label_list(task: Task, train: list, labels: Sequence[str] | None) -> list[str]:
    from .data import iob2_label_list

    if labels is not None:
        if task.name != "ner":
            raise LayerscopeError(f"a label set can be given for ner only; {task.name} has fixed labels")
        labels = list(labels)
        bad = [x for x in labels if not (x == "O" or (x[:2] in ("B-", "I-") and len(x) > 2))]
        if bad or "O" not in labels or len(set(labels)) != len(labels):
            raise LayerscopeError(f"ner labels must be distinct IOB2 tags including O, got {', '.join(labels)}")
        return labels
    if task.fixed_labels is not None:
        return list(task.fixed_labels)
    if task.name == "ner":
        return iob2_label_list(train)
    return []


def _encode(task: Task, tokenizer, examples: list, label_to_id: dict[str, int], config: FinetuneConfig, *,
            training: bool, where: str):
    from . import features

    max_length = config.max_length or task.max_length
    if task.kind == "tagging":
        return features.encode_tagging(tokenizer, examples, label_to_id, max_length=max_length, where=where)
    if task.kind == "pair":
        return features.encode_pairs(tokenizer, examples, label_to_id, max_length=max_length, where=where)
    return features.encode_spans(tokenizer, examples, max_length=max_length, doc_stride=config.doc_stride,
                                 training=training, where=where)


def _realign_params(encoder, policy) -> list[torch.nn.Parameter] | None:
    """Parameters the realignment gradient may reach under ``policy`` (None: all of them)."""
    if not policy.frozen_blocks and not policy.freeze_embeddings:
        return None
    groups = encoder.parameter_groups()
    frozen = {name for block in policy.frozen_blocks for name in groups[f"block.{block}"]}
    if policy.freeze_embeddings:
        frozen |= set(groups["embeddings"])
    return [p for name, p in encoder.model.named_parameters() if name not in frozen]


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


@dataclass
class _Prepared:
    """Everything read and tokenised once for all runs of a job."""

    train_lang: str
    train: list
    train_features: list
    train_data: TaskData
    evals: TaskData
    eval_features: dict[str, list]
    dev: list | None
    dev_features: list | None
    dev_data: TaskData | None
    labels: list[str]


def _read_train(spec: Task, config: FinetuneConfig, tokenizer, train: Spec, labels: Sequence[str] | None):
    """The training data, its label list and features, as a fine-tuning run reads them."""
    train_data = load_task_data(spec, train, role="train", limit=config.limit, default_lang=config.source_lang)
    if len(train_data.examples) != 1:
        raise LayerscopeError(f"training data must be one language, got {', '.join(train_data.languages)}")
    train_lang, train_examples = next(iter(train_data.examples.items()))
    label_list = _label_list(spec, train_examples, labels)
    label_to_id = {label: i for i, label in enumerate(label_list)}
    features = _encode(spec, tokenizer, train_examples, label_to_id, config, training=True,
                       where=f"training data ({train_lang})")
    return train_data, train_lang, train_examples, label_list, label_to_id, features


def _prepare(spec: Task, config: FinetuneConfig, tokenizer, train: Spec, eval: Spec, dev: Spec | None,
             labels: Sequence[str] | None) -> _Prepared:
    train_data, train_lang, train_examples, label_list, label_to_id, train_features = \
        _read_train(spec, config, tokenizer, train, labels)
    eval_data = load_task_data(spec, eval, role="eval", limit=config.eval_limit)
    dev_data = load_task_data(spec, dev, role="dev", limit=config.eval_limit, default_lang=train_lang) \
        if dev is not None else None

    def encode(examples, *, training, where):
        return _encode(spec, tokenizer, examples, label_to_id, config, training=training, where=where)

    eval_features = {lang: encode(items, training=False, where=f"{lang} evaluation data ({eval_data.origins[lang]})")
                     for lang, items in eval_data.examples.items()}
    dev_examples = next(iter(dev_data.examples.values())) if dev_data is not None else None
    dev_features = encode(dev_examples, training=False, where="dev data") if dev_examples is not None else None
    return _Prepared(train_lang, train_examples, train_features, train_data, eval_data, eval_features,
                     dev_examples, dev_features, dev_data, label_list)


def finetune_steps(tokenizer, *, task: str, train: Spec, epochs: float | None = None, steps: int | None = None,
                   batch_size: int = 32, max_length: int | None = None, limit: int | None = None,
                   source_lang: str = "en", labels: Sequence[str] | None = None) -> int:
    """The optimiser steps :func:`finetune` takes with these settings: ⌈epochs × ⌈features /
    batch_size⌉⌉ (a feature is an example, or a QA context window), the task's defaults for
    what is not given. The published ``before`` schedule realigns for this many steps."""
    config = FinetuneConfig(task=task, epochs=epochs, steps=steps, batch_size=batch_size, max_length=max_length,
                            limit=limit, source_lang=source_lang, micro_batch_size=1)
    spec = config.task_spec
    *_, features = _read_train(spec, config, tokenizer, train, labels)
    return config.train_settings(0).total_steps(len(features))


def _realign_before(encoder, config: FinetuneConfig, seed: int, steps: int, pivot: str, device):
    """Realign a copy in place with the freeze policy (the ``before`` schedule)."""
    from ..realign import before_schedule

    result = before_schedule(
        encoder, parallel=config.parallel, pairs=config.pairs, langs=config.realign_langs,
        freeze=config.freeze_policy, steps=steps, batch_size=config.realign_batch_size, lr=config.realign_lr,
        layer=config.realign_layer, max_length=config.realign_max_length, seed=seed, device=device, inplace=True,
        pivot=pivot, negatives=config.realign_negatives, keep_space_tokens=config.realign_keep_space_tokens,
        casefold=config.realign_casefold, precision=config.precision, kernels=config.kernels,
    )
    info = {"steps": steps, "distinct": int(sum(result.sentence_counts.values())),
            "repeated": steps * config.realign_batch_size,
            "first_loss": result.history[0] if result.history else None,
            "final_loss": result.history[-1] if result.history else None, "pair_counts": result.pair_counts}
    return result.encoder, info


def _realign_during(encoder, config: FinetuneConfig, seed: int, steps: int, pivot: str):
    """The ``during`` schedule's realignment objective, bound to ``encoder``."""
    from ..realign import during_objective

    objective = during_objective(
        encoder, config.parallel, pairs=config.pairs, langs=config.realign_langs, pivot=pivot,
        layer=config.realign_layer, batch_size=config.realign_batch_size, max_length=config.realign_max_length,
        seed=seed, weight=config.during_weight, negatives=config.realign_negatives,
        keep_space_tokens=config.realign_keep_space_tokens, casefold=config.realign_casefold,
    )
    batches = getattr(objective, "batches", None)  # sentence pairs with word pairs, for the table
    distinct = sum(len(v) for v in batches.examples.values()) if batches is not None else 0
    info = {"steps": steps, "distinct": int(distinct), "repeated": steps * config.realign_batch_size}
    return objective, info


def _one_run(base, prep: _Prepared, spec: Task, config: FinetuneConfig, *, label: str, schedule: str | None,
             seed: int, policy, total_steps: int, device, model_label: str):
    """Realign (per the schedule), fine-tune and evaluate one copy of ``base`` with one seed.

    Returns the per-seed table row, the run record for ``results.json`` and the loss history."""
    from .evaluate import evaluate_language
    from .heads import TaskModel
    from .train import train_task

    t0 = time.perf_counter()
    encoder = _fresh_copy(base)
    realign_info: dict[str, Any] = {"steps": 0, "distinct": 0, "repeated": 0}
    objective = realign_params = None
    if schedule == "before":
        encoder, realign_info = _realign_before(encoder, config, seed, config.realign_steps or total_steps,
                                                prep.train_lang, device)
    elif schedule == "during":
        objective, realign_info = _realign_during(encoder, config, seed, total_steps, prep.train_lang)
        realign_params = _realign_params(encoder, policy)
    torch.manual_seed(seed)
    model = TaskModel(encoder, spec.kind, len(prep.labels))
    pad_id = encoder.tokenizer.pad_token_id
    history = train_task(model, prep.train_features, config.train_settings(seed), pad_id=pad_id,
                         objective=objective, realign_params=realign_params, device=device,
                         precision=config.precision, kernels=config.kernels, desc=f"{label} seed {seed}", workers=workers(device))

    def evaluate(examples, features):
        return evaluate_language(model, spec.name, examples, features, prep.labels or None, pad_id=pad_id,
                                 batch_size=config.eval_batch_size, device=device, precision=config.precision)

    scores = {lang: evaluate(prep.evals.examples[lang], feats) for lang, feats in prep.eval_features.items()}
    same = evaluate(prep.dev, prep.dev_features) if prep.dev_features is not None else None
    total_loss = [t + config.during_weight * r for t, r in zip(history.task_loss, history.realign_loss)] \
        if objective is not None else history.task_loss
    row: dict[str, Any] = {
        "seed": seed, "model": model_label, "task": spec.name, "method": label,
        "finetuning_steps": history.steps, "realignment_steps": realign_info["steps"],
        "distinct_realignment_samples": realign_info["distinct"],
        "repeated_realignment_samples": realign_info["repeated"],
        "train_loss": _mean(total_loss), "realignment_loss": _mean(history.realign_loss),
        "task_loss": _mean(history.task_loss),
    }
    for lang, values in scores.items():
        for metric in spec.metrics:
            row[f"final_eval_{lang}_{metric}"] = values[metric]
    for metric in spec.metrics:
        row[f"final_eval_avg_{metric}"] = _mean([values[metric] for values in scores.values()])
    if same is not None:
        for metric in spec.metrics:
            row[f"final_eval_same_{metric}"] = same[metric]
    seconds = time.perf_counter() - t0
    record = {"method": label, "seed": seed, "seconds": round(seconds, 3),
              "steps_per_second": history.steps / history.seconds if history.seconds else None,
              "task_loss": history.task_loss, "realign_loss": history.realign_loss, "lr": history.lr,
              "realignment": realign_info, "scores": scores, "same": same}
    log.info("%s seed %d: %s (%.0f s)", label, seed,
             ", ".join(f"{lang} {100 * v[spec.primary]:.1f}" for lang, v in scores.items()), seconds)
    return row, record, history


# --------------------------------------------------------------------------- the job


def finetune(
    source: Any,
    *,
    task: str,
    train: Spec,
    eval: Spec,
    seeds: Sequence[int] | str | int = DEFAULT_SEEDS,
    realign: str | None = None,
    include_baseline: bool = False,
    method: str | None = None,
    dev: Spec | None = None,
    source_lang: str = "en",
    epochs: float | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    micro_batch_size: int | None = None,
    lr: float | None = None,
    warmup: float = 0.1,
    weight_decay: float = 0.0,
    max_grad_norm: float = 0.0,
    max_length: int | None = None,
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    parallel: Any = None,
    pairs: Any = None,
    realign_langs: Sequence[str] | str | None = None,
    freeze: str | None = None,
    realign_steps: int | None = None,
    realign_lr: float | None = None,
    realign_layer: int | None = None,
    realign_batch_size: int = 16,
    realign_negatives: str = "batch-words",
    realign_keep_space_tokens: bool = False,
    realign_casefold: bool = False,
    during_weight: float = 0.1,
    model: str | None = None,
    model_name: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    kernels: str = "auto",
    trust_remote_code: bool = False,
    output: str | os.PathLike | None = None,
    force: bool = False,
    command: list[str] | None = None,
) -> FinetuneResult:
    """Fine-tune on the source language and evaluate zero-shot on each target language.

    Parameters
    ----------
    source : an :class:`~layerscope.models.Encoder` (never modified; every run starts from a
        copy) or anything :func:`~layerscope.models.load_encoder` takes.
    task : ``pos``, ``ner``, ``nli`` or ``qa`` (or ``udpos``, ``wikiann``, ``xnli``, ``xquad``).
    train : the source-language training data: a file, ``LANG=FILE`` or ``hf:CONFIG``
        (a file whose name gives no language is taken to be in ``source_lang``).
    eval : evaluation data of the target languages: files, ``LANG=FILE`` items, a directory of
        files named with language codes, ``hf:CONFIG,CONFIG`` or a dict ``{lang: path}``.
    seeds : one run per seed (default 31, 42, 66); each seeds the head, dropout, data order
        and the realignment, so a run is reproducible on CPU.
    realign : None (fine-tuning only), ``"before"`` (realign, then fine-tune) or ``"during"``
        (task loss + ``during_weight`` × realignment loss at each step).
    include_baseline : also run plain fine-tuning (method ``baseline``) for every seed.
    method : the method label in the tables (default: the published naming, see
        :func:`~layerscope.tasks.results.method_name`).
    dev : source-language evaluation data, reported as ``final_eval_same_<metric>``.
    epochs, steps : training length (default: the task's epochs, 5 for pos, ner and qa, 2 for nli).
    batch_size : effective batch (32); ``micro_batch_size`` splits it into micro-batches whose
        gradients accumulate (default None: the whole batch in one pass per process; the size
        used is in ``run["config"]``).
    lr : AdamW peak learning rate (default 2e-5; 7.5e-6 for XLM-R, told by the model config's
        ``model_type``, as the official scripts set them); ``warmup``: fraction of steps of
        linear warm-up (0.1), then linear decay to 0.
    max_grad_norm : clip the gradient norm to this (default 0: no clipping, as published).
    max_length : sub-tokens per input (96 for every task, as published).
    labels : the label set of ner (default: the labels of the training file).
    limit, eval_limit : use at most this many training examples / examples per evaluation language.
    parallel, pairs, realign_langs, freeze, realign_steps, realign_lr, realign_layer,
    realign_batch_size : the realignment (see :func:`layerscope.realign.realign`); ``freeze``
        defaults to ``lower`` (AlignFreeze) for ``before`` and ``none`` for ``during``, where it
        keeps the realignment gradient out of the frozen blocks; ``realign_steps`` defaults to the
        number of fine-tuning steps.
    realign_negatives, realign_keep_space_tokens, realign_casefold : the realignment's
        conventions, ``negatives``, ``keep_space_tokens`` and ``casefold`` of
        :func:`layerscope.realign.realign` (default: as published).
    model : architecture and tokenizer for bare weights; ``model_name``: the ``model`` column.
    device : ``auto``, ``cpu`` or ``cuda``; ``precision``: ``auto`` (bf16 autocast on a GPU or
        a CPU with native bf16, see :mod:`layerscope.precision`), ``fp32``, ``bf16``; the one used is in ``run``.
    kernels : training kernels: ``auto`` (``fast`` on a CPU, ``torch`` on a GPU), ``fast`` or
        ``torch`` (:mod:`layerscope.kernels`); the one used is in ``run``.
    output : write ``output`` (per-seed CSV), ``<stem>.tidy.csv`` and ``<stem>.json``; they are
        rewritten after every run, so an interrupted job keeps the finished seeds.

    Returns
    -------
    FinetuneResult with ``wide`` (per seed) and ``tidy`` tables, ``run`` (settings and provenance),
    ``histories`` and ``reference`` (majority-label scores per language).
    """
    from .. import provenance
    from ..probes.activations import resolve_device
    from ..models.freezing import parse_freeze_policy

    started = time.perf_counter()
    config = FinetuneConfig(
        task=task, seeds=seeds, realign=realign, include_baseline=include_baseline, method=method,
        source_lang=source_lang, epochs=epochs, steps=steps, batch_size=batch_size,
        micro_batch_size=micro_batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
        max_grad_norm=max_grad_norm, max_length=max_length,
        limit=limit, eval_limit=eval_limit, parallel=parallel, pairs=pairs, realign_langs=realign_langs,
        freeze=freeze, realign_steps=realign_steps, realign_lr=realign_lr, realign_layer=realign_layer,
        realign_batch_size=realign_batch_size, realign_negatives=realign_negatives,
        realign_keep_space_tokens=realign_keep_space_tokens, realign_casefold=realign_casefold,
        during_weight=during_weight, device=device, precision=precision, kernels=kernels,
    )
    spec = config.task_spec
    paths = output_paths(output) if output is not None else {}
    if paths:
        check_outputs(paths, force)
    team = workers(config.device)
    target = team.device or resolve_device(config.device)
    config = dataclasses.replace(config, micro_batch_size=config.train_settings(0).micro_batch(team.world_size))
    if labels is not None:
        _label_list(spec, [], labels)  # a bad label set fails before any data is read
    base = _as_encoder(source, model, target, trust_remote_code)
    base.model.to(target)
    config = dataclasses.replace(config, model_type=getattr(base.model.config, "model_type", None))
    prep = _prepare(spec, config, base.tokenizer, train, eval, dev, labels)
    reference = majority_scores(spec, prep.train, prep.evals.examples)

    policy = parse_freeze_policy(config.freeze_policy, base.num_layers) if config.realign else None
    main_method = config.method or method_name(config.realign, policy.frozen_blocks if policy else (),
                                               base.num_layers, config.pairs,
                                               freeze_embeddings=bool(policy and policy.freeze_embeddings))
    methods: list[tuple[str, str | None]] = []
    if config.include_baseline and config.realign is not None:
        methods.append(("baseline", None))
    methods.append((main_method, config.realign))
    if len({m for m, _ in methods}) != len(methods):
        raise LayerscopeError(f"method name {main_method!r} is the baseline's; choose another")
    total_steps = config.train_settings(0).total_steps(len(prep.train_features))
    model_label = model_name or base.checkpoint_meta.get("name") or base.name
    log.info("%s: %d training examples (%d features) in %s, %d optimiser steps of %d; evaluation: %s",
             spec.name, len(prep.train), len(prep.train_features), prep.train_lang, total_steps, config.batch_size,
             ", ".join(f"{lang} ({len(v)})" for lang, v in prep.evals.examples.items()))

    run_info: dict[str, Any] = {
        "task": spec.name,
        "primary_metric": spec.primary,
        "metrics": list(spec.metrics),
        "model": model_label,
        "source": {"name": base.name, "hash": base.source_hash, "meta": base.checkpoint_meta},
        "config": config.as_dict(),
        "labels": prep.labels,
        "train": {"lang": prep.train_lang, "origin": prep.train_data.origins[prep.train_lang],
                  "examples": len(prep.train), "features": len(prep.train_features),
                  "hash": prep.train_data.content_hash()},
        "eval": {lang: {"origin": prep.evals.origins[lang], "examples": len(items)}
                 for lang, items in prep.evals.examples.items()},
        "eval_hash": prep.evals.content_hash(),
        "dev": ({"origin": next(iter(prep.dev_data.origins.values())), "hash": prep.dev_data.content_hash()}
                if prep.dev_data is not None else None),
        "majority_baseline": reference,
        "finetuning_steps": total_steps,
        "finetuning": {key: getattr(config.train_settings(0), key) for key in ("epochs", "lr", "max_grad_norm")}
        | {"max_length": config.max_length or spec.max_length, "model_type": config.model_type},
        "methods": [m for m, _ in methods],
        "runs": [],
        "command": command,
        "versions": provenance.versions(),
        "git_revision": provenance.git_revision(),
        "device": str(target),
        "precision": resolve_precision(target, config.precision),
        "kernels": resolve_kernels(target, config.kernels),
    }
    result = FinetuneResult(wide=pd.DataFrame(), tidy=pd.DataFrame(), run=run_info, reference=reference,
                            paths=paths)
    rows: list[dict[str, Any]] = []
    for label, schedule in methods:
        for seed in config.seeds:
            row, record, history = _one_run(base, prep, spec, config, label=label, schedule=schedule, seed=seed,
                                            policy=policy, total_steps=total_steps, device=target,
                                            model_label=model_label)
            rows.append(row)
            run_info["runs"].append(record)
            result.histories[(label, seed)] = history
            result.wide, result.tidy = tables(rows, spec)
            run_info["seconds"] = round(time.perf_counter() - started, 3)
            if paths and team.is_main:  # every process holds the same weights and scores
                write(result, paths)
    return result
