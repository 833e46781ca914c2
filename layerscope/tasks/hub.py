"""Task data from the Hugging Face hub (``datasets``), behind the same interface as local files.

A spec ``hf:[DATASET:]CONFIG[,CONFIG…][@SPLIT]`` names configurations of the task's dataset:

=====  ===============================  ============================  ==========================
task   dataset (default)                configurations                splits (train / evaluation)
=====  ===============================  ============================  ==========================
pos    universal_dependencies           treebanks: en_ewt, fr_pud …   train / test
ner    unimelb-nlp/wikiann              languages: en, fr …           train / test
nli    facebook/xnli                    languages: en, fr …           train / test
qa     rajpurkar/squad (training),      ``plain_text`` / languages    train / validation
       google/xquad (evaluation)        (``de`` = ``xquad.de``)
=====  ===============================  ============================  ==========================

``datasets`` is imported only here and only when such a spec is used; without it, or without
internet, the error says so in one line and points to local files.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..corpora import languages
from ..errors import LayerscopeError
from . import data
from .registry import Task

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^hf:(?:(?P<dataset>[^:@]+):)?(?P<configs>[^@]*)(?:@(?P<split>[\w.\[\]:%+-]+))?$")


def parse_hf_spec(spec: str, task: Task, *, role: str) -> tuple[str, list[str], str]:
    """``hf:[DATASET:]CONFIGS[@SPLIT]`` -> (dataset, configurations, split) with the task's defaults."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise LayerscopeError(f"cannot read Hugging Face spec {spec!r}: write hf:[DATASET:]CONFIG[,CONFIG...][@SPLIT]")
    training = role == "train"
    dataset = match.group("dataset") or (task.hf_train_dataset if training and task.hf_train_dataset
                                         else task.hf_dataset)
    split = match.group("split") or (task.hf_train_split if training else task.hf_eval_split)
    configs = [c.strip() for c in match.group("configs").split(",") if c.strip()]
    if not configs:
        if dataset == task.hf_train_dataset and task.name == "qa":
            configs = ["plain_text"]
        else:
            raise LayerscopeError(f"{spec!r} names no configuration: e.g. hf:en_ewt (pos), hf:en,fr (ner, nli), "
                                  "hf:de,ru (qa evaluation)")
    return dataset, configs, split


def _language_of_config(task: Task, config: str, dataset: str) -> str:
    if task.name == "qa" and dataset == task.hf_train_dataset:
        return "en"
    code = config.split(".")[-1] if task.name == "qa" else config.split("_")[0] if task.name == "pos" else config
    return languages.normalize(code, source=f"{dataset}:{config}")


def _dataset_config(task: Task, config: str, dataset: str) -> str | None:
    if task.name == "qa":
        if dataset == task.hf_train_dataset:
            return config if config != "en" else "plain_text"
        return config if config.startswith("xquad.") else f"xquad.{config}"
    return config


def _load(dataset: str, config: str | None, split: str):
    try:
        import datasets
    except ImportError:
        raise LayerscopeError("Hugging Face datasets specs (hf:...) need the datasets package: "
                              "pip install datasets (or layerscope[datasets]); or give local files") from None
    try:
        return datasets.load_dataset(dataset, config, split=split)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # network, missing config, hub errors: one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LayerscopeError(f"cannot load {dataset} ({config}, split {split}) from the Hugging Face hub: {first}; "
                              "without internet, give local files instead") from None


def _names(ds: Any, column: str) -> list[str] | None:
    """ClassLabel names of a column (or of the items of a sequence column), if it has them."""
    features = getattr(ds, "features", None) or {}
    feature = features.get(column) if hasattr(features, "get") else None
    for candidate in (getattr(feature, "feature", None), feature):
        names = getattr(candidate, "names", None)
        if names:
            return list(names)
    return None


def _label(value: Any, names: list[str] | None) -> str:
    if isinstance(value, int) and names is not None:
        return names[value]
    return str(value)


def _convert(task: Task, ds: Any, limit: int | None, where: str) -> list:
    out: list = []
    if task.name in ("pos", "ner"):
        column = "upos" if task.name == "pos" else "ner_tags"
        names = _names(ds, column)
        for i, row in enumerate(ds):
            words, labels = [], []
            for word, value in zip(row["tokens"], row[column]):
                tag = _label(value, names)
                if task.name == "pos" and tag == "_":
                    continue  # multi-word token surface forms carry no UPOS tag
                words.append(word)
                labels.append(tag)
            if words:
                out.append(data.TaggedSentence(words, labels, str(row.get("id", i))))
            if limit is not None and len(out) >= limit:
                break
    elif task.name == "nli":
        names = _names(ds, "label")
        for i, row in enumerate(ds):
            label = data.normalize_nli_label(_label(row["label"], names))
            if label is None:
                continue  # HF uses -1 for examples without a gold label
            out.append(data.PairExample(row["premise"], row["hypothesis"], label, str(i)))
            if limit is not None and len(out) >= limit:
                break
    elif task.name == "qa":
        for row in ds:
            answers = row["answers"]
            if not answers["text"]:
                continue
            out.append(data.QAExample(id=str(row["id"]), question=row["question"], context=row["context"],
                                      answers=list(answers["text"]),
                                      answer_starts=[int(s) for s in answers["answer_start"]]))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise LayerscopeError(f"{where}: no usable examples")
    return out


def load_hf(task: Task, spec: str, *, role: str, limit: int | None = None) -> dict[str, list]:
    """Examples per language from a ``hf:`` spec (see the module docstring)."""
    dataset, configs, split = parse_hf_spec(spec, task, role=role)
    out: dict[str, list] = {}
    for config in configs:
        lang = _language_of_config(task, config, dataset)
        if lang in out:
            raise LayerscopeError(f"{spec}: two configurations for language {lang}")
        ds = _load(dataset, _dataset_config(task, config, dataset), split)
        out[lang] = _convert(task, ds, limit, f"{dataset}:{config}@{split}")
        log.info("%s:%s@%s: %d examples", dataset, config, split, len(out[lang]))
    return out
