"""The task registry: what each downstream task reads, how it is scored, and its defaults.

``get_task("pos")`` returns a :class:`Task`; names of the published results (``udpos``,
``wikiann``, ``xnli``, ``xquad``) are aliases. An unknown name lists the known ones and
suggests the nearest. The fine-tuning defaults are those of the official AlignFreeze scripts:
96 sub-tokens for every task, 5 epochs (2 for NLI), learning rate 2e-5, or 7.5e-6 for XLM-R
(:func:`is_xlmr`, from the model config's ``model_type``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import LayerscopeError
from . import data

KINDS = ("tagging", "pair", "span")
XLMR_MODEL_TYPES = ("xlm-roberta", "xlm-roberta-xl")
LR_XLMR = 7.5e-6  # the published fine-tuning (and realignment) rate of XLM-R


def is_xlmr(model_type: str | None) -> bool:
    """Whether a model config's ``model_type`` is of the XLM-R family (its own published rates)."""
    return str(model_type or "").lower() in XLMR_MODEL_TYPES


@dataclass(frozen=True)
class Task:
    """One downstream task.

    ``kind``: ``tagging`` (a label per word), ``pair`` (a label per sentence pair) or ``span``
    (an answer span in a context). ``metrics``: the scores reported, ``primary`` first among
    them for summaries. ``epochs``/``lr``/``max_length``: defaults of a fine-tuning run, as
    the official AlignFreeze scripts set them (``lr_xlmr`` for XLM-R, see
    :meth:`default_lr`). ``extensions``: file name endings read
    from an evaluation directory. ``hf_*``: the Hugging Face dataset behind ``hf:`` specs.
    """

    name: str
    kind: str
    description: str
    metrics: tuple[str, ...]
    primary: str
    read: Callable[..., object]
    extensions: tuple[str, ...]
    epochs: float
    lr: float
    max_length: int
    lr_xlmr: float = LR_XLMR
    fixed_labels: tuple[str, ...] | None = None
    hf_dataset: str = ""
    hf_train_dataset: str = ""
    hf_train_split: str = "train"
    hf_eval_split: str = "test"
    aliases: tuple[str, ...] = ()

    def default_lr(self, model_type: str | None = None) -> float:
        """The fine-tuning learning rate for a model of ``model_type``: ``lr_xlmr`` for XLM-R."""
        return self.lr_xlmr if is_xlmr(model_type) else self.lr

    def accepts_file(self, path: Path) -> bool:
        name = path.name.lower()
        return path.is_file() and not name.startswith((".", "license", "readme")) and \
            any(name.endswith(ext) for ext in self.extensions)


TASKS: dict[str, Task] = {
    "pos": Task(
        name="pos", kind="tagging", description="part-of-speech tagging, UD CoNLL-U (UPOS), token accuracy",
        metrics=("accuracy",), primary="accuracy", read=data.read_conllu_upos, extensions=(".conllu",),
        epochs=5, lr=2e-5, max_length=96, fixed_labels=data.UPOS_TAGS,
        hf_dataset="universal_dependencies", hf_train_split="train", hf_eval_split="test",
        aliases=("upos", "udpos", "ud"),
    ),
    "ner": Task(
        name="ner", kind="tagging",
        description="named entities, WikiANN-style IOB2 'token TAG' files, entity F1 (seqeval, conlleval mode)",
        metrics=("precision", "recall", "f1", "accuracy"), primary="f1", read=data.read_iob2,
        extensions=(".txt", ".tsv", ".iob", ".iob2", ".conll", ".bio", ".ner"),
        epochs=5, lr=2e-5, max_length=96,
        hf_dataset="unimelb-nlp/wikiann", hf_train_split="train", hf_eval_split="test",
        aliases=("wikiann", "panx", "pan-x"),
    ),
    "nli": Task(
        name="nli", kind="pair", description="natural language inference, XNLI-style TSV, accuracy",
        metrics=("accuracy",), primary="accuracy", read=data.read_nli_tsv, extensions=(".tsv",),
        epochs=2, lr=2e-5, max_length=96, fixed_labels=data.NLI_LABELS,
        hf_dataset="facebook/xnli", hf_train_split="train", hf_eval_split="test",
        aliases=("xnli", "mnli"),
    ),
    "qa": Task(
        name="qa", kind="span", description="extractive question answering, SQuAD/XQuAD JSON, exact match and F1",
        metrics=("em", "f1"), primary="f1", read=data.read_squad, extensions=(".json",),
        epochs=5, lr=2e-5, max_length=96,
        hf_dataset="google/xquad", hf_train_dataset="rajpurkar/squad", hf_train_split="train",
        hf_eval_split="validation", aliases=("xquad", "squad"),
    ),
}


def _index() -> dict[str, str]:
    index = {}
    for task in TASKS.values():
        for key in (task.name, *task.aliases):
            index[key] = task.name
    return index


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (or one of its aliases); unknown names list the known ones."""
    if isinstance(name, Task):
        return name
    key = str(name).strip().lower()
    index = _index()
    if key in index:
        return TASKS[index[key]]
    near = difflib.get_close_matches(key, list(index), n=1)
    hint = f"; did you mean {index[near[0]]!r}?" if near else ""
    raise LayerscopeError(f"unknown task {name!r}: known tasks are {', '.join(TASKS)}{hint}")
