"""Realignment of multilingual encoders with a freeze policy (AlignFreeze).

=====================================  ======================================================
:func:`realign`                         the job: word pairs → contrastive training → checkpoint
:class:`RealignResult`                  its result (encoder, checkpoint, history, pair counts)
:func:`before_schedule`                 realign, then unfreeze everything for fine-tuning
:func:`during_objective`                the realignment term of the ``during`` schedule
:class:`RealignmentHead`                ``Linear(d,d) → ReLU → Linear(d,128)``, no biases
:func:`contrastive_alignment_loss`      symmetric InfoNCE, τ = 0.1, every word of the batch a negative
:class:`RoundRobinSampler`              batches of 16 sentence pairs round-robin over languages
:func:`pair_source`                     ``dict:DIR`` | ``eflomal`` | ``embed[:LAYER]``
:func:`alignment_scores`                precision, recall and AER against gold alignments
:func:`split_words`                     words with a character fallback for zh, ja, th …
=====================================  ======================================================
"""

from __future__ import annotations

from .data import Example, RealignmentData, RoundRobinSampler, build_examples, collate, extract_pairs
from .job import RealignResult, before_schedule, default_lr, during_objective, realign
from .links import (
    AlignmentScores,
    alignment_scores,
    dictionary_links,
    drop_identical,
    grow_diag_final_and,
    one_to_one,
    read_dictionary,
)
from .loss import NEGATIVES, RealignmentHead, contrastive_alignment_loss
from .pairs import (
    PAIR_SOURCES,
    DictionarySource,
    EflomalSource,
    EmbeddingSource,
    PairSource,
    mutual_argmax,
    pair_source,
)
from .train import DURING_WEIGHT, Realigner, RealignmentObjective, hidden_at_layer, realignment_loss
from .words import Words, encode_words, split_words, words_from_tokens

__all__ = [
    "realign",
    "RealignResult",
    "before_schedule",
    "during_objective",
    "default_lr",
    "RealignmentHead",
    "contrastive_alignment_loss",
    "NEGATIVES",
    "realignment_loss",
    "hidden_at_layer",
    "Realigner",
    "RealignmentObjective",
    "DURING_WEIGHT",
    "RoundRobinSampler",
    "Example",
    "RealignmentData",
    "build_examples",
    "collate",
    "extract_pairs",
    "PAIR_SOURCES",
    "PairSource",
    "DictionarySource",
    "EflomalSource",
    "EmbeddingSource",
    "pair_source",
    "AlignmentScores",
    "alignment_scores",
    "dictionary_links",
    "read_dictionary",
    "one_to_one",
    "drop_identical",
    "grow_diag_final_and",
    "mutual_argmax",
    "Words",
    "split_words",
    "words_from_tokens",
    "encode_words",
]

from .._callable import make_callable  # noqa: E402

# ``layerscope.realign(...)`` calls the job even once this package is imported (and so bound).
make_callable(__name__, realign)
