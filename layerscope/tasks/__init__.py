"""Fine-tuning and zero-shot evaluation on downstream tasks (PoS, NER, NLI, QA).

=================================  ==============================================================
:func:`finetune`                   the job: (realign →) fine-tune → zero-shot evaluation, per seed
:class:`FinetuneResult`            its tables: per-seed (wide), tidy, run information
:func:`finetune_steps`             the optimiser steps a fine-tuning run takes (``before`` schedule)
:func:`get_task`, ``TASKS``        the task registry (pos, ner, nli, qa)
:func:`load_task_data`             a train/eval spec -> examples per language
:func:`read_conllu_upos`,          readers of UD CoNLL-U, WikiANN IOB2, XNLI TSV, SQuAD JSON
:func:`read_iob2`,
:func:`read_nli_tsv`,
:func:`read_squad`
:class:`TaskModel`                 an encoder with a tagging, pair or span head
:func:`train_task`                 the fine-tuning loop (AdamW, warm-up, accumulation)
:func:`evaluate_language`          predictions and scores on one language
:mod:`~layerscope.tasks.metrics`   accuracy, IOB2 entity F1, SQuAD exact match and F1
=================================  ==============================================================
"""

from __future__ import annotations

from . import metrics
from .config import FinetuneConfig
from .data import (
    NLI_LABELS,
    UPOS_TAGS,
    PairExample,
    QAExample,
    TaggedSentence,
    language_from_filename,
    read_conllu_upos,
    read_iob2,
    read_nli_tsv,
    read_squad,
)
from .evaluate import evaluate_language
from .heads import TaskModel
from .job import FinetuneResult, finetune, finetune_steps, method_name
from .registry import TASKS, Task, get_task, is_xlmr
from .sources import TaskData, load_task_data
from .train import TrainSettings, train_task

__all__ = [
    "finetune",
    "finetune_steps",
    "FinetuneConfig",
    "FinetuneResult",
    "method_name",
    "TASKS",
    "Task",
    "get_task",
    "is_xlmr",
    "TaskData",
    "load_task_data",
    "TaggedSentence",
    "PairExample",
    "QAExample",
    "UPOS_TAGS",
    "NLI_LABELS",
    "read_conllu_upos",
    "read_iob2",
    "read_nli_tsv",
    "read_squad",
    "language_from_filename",
    "TaskModel",
    "TrainSettings",
    "train_task",
    "evaluate_language",
    "metrics",
]
