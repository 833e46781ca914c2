"""Corpora: parallel corpora readers (FLORES, Tatoeba, PUD, TSV, the embedded sample), language
codes and their metadata, and the user tables (CSV, JSON) that the jobs read.

Data enters as files or corpus specs (``flores:devtest/``) and leaves as a
:class:`ParallelCorpus` (pivot + targets, aligned by id), language records or data frames.
Nothing here tokenises for a model.
"""

from .parallel import languages
from .parallel import MAX_CHARS, READERS, ParallelCorpus, read_corpus
from .tables import numeric_column, read_json_object, read_user_csv

__all__ = [
    "MAX_CHARS",
    "READERS",
    "ParallelCorpus",
    "languages",
    "numeric_column",
    "read_corpus",
    "read_json_object",
    "read_user_csv",
]
