"""Readers of task data in their usual file formats, and the examples they return.

==============================  =====================================================================
:func:`read_conllu_upos`        UD CoNLL-U (via ``conllu``) -> :class:`TaggedSentence` (UPOS tags)
:func:`read_iob2`               WikiANN / CoNLL-style ``token TAG`` lines -> :class:`TaggedSentence`
:func:`read_nli_tsv`            XNLI-style TSV (premise, hypothesis, label) -> :class:`PairExample`
:func:`read_squad`              SQuAD / XQuAD JSON -> :class:`QAExample`
:func:`language_from_filename`  ``fr_pud-ud-test.conllu``, ``xquad.de.json``, ``test-ja.tsv`` -> code
==============================  =====================================================================

Every reader checks its input and raises :class:`~layerscope.errors.LayerscopeError` naming the
file and line. Readers return words and labels as strings; turning them into sub-tokens is
:mod:`layerscope.tasks.features`' job.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ..corpora import languages
from ..errors import LayerscopeError

log = logging.getLogger(__name__)

# The 17 universal part-of-speech tags of UD v2, in the order of the UD documentation.
UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
             "PUNCT", "SCONJ", "SYM", "VERB", "X")
NLI_LABELS = ("entailment", "neutral", "contradiction")
_NLI_ALIASES = {"contradictory": "contradiction", "0": "entailment", "1": "neutral", "2": "contradiction"}


@dataclass
class TaggedSentence:
    """Words of one sentence and one label per word (PoS or IOB2 NER)."""

    words: list[str]
    labels: list[str]
    id: str = ""


@dataclass
class PairExample:
    """A premise, a hypothesis and an NLI label."""

    premise: str
    hypothesis: str
    label: str
    id: str = ""


@dataclass
class QAExample:
    """A question on a context with its gold answers (text and character offset)."""

    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int] = field(default_factory=list)


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise LayerscopeError("no such file", source=path)
    if path.is_dir():
        raise LayerscopeError("is a directory, expected a file", source=path)
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LayerscopeError(f"not UTF-8 text (byte {exc.start})", source=path) from None
    except OSError as exc:
        raise LayerscopeError(f"cannot read: {exc.strerror}", source=path) from None


# --------------------------------------------------------------------------- CoNLL-U (PoS)


def _conllu_blocks(path: Path) -> Iterator[tuple[list[str], list[int]]]:
    """Sentence blocks of a CoNLL-U file: their lines and the 1-based line numbers of those lines."""
    lines: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            lines.append(line)
            numbers.append(number)
        elif lines:
            yield lines, numbers
            lines, numbers = [], []
    if lines:
        yield lines, numbers


def read_conllu_upos(path: str | Path, *, limit: int | None = None,
                     tagset: Sequence[str] = UPOS_TAGS) -> list[TaggedSentence]:
    """Words and UPOS tags of a UD CoNLL-U file.

    Multi-word token ranges (``2-3``) and empty nodes (``3.1``) are skipped: the syntactic
    words carry the tags. A line without 10 tab-separated fields, an unparsable line or a tag
    outside ``tagset`` is an error naming the line.
    """
    import conllu
    from conllu.exceptions import ParseException

    path = _require_file(path)
    known = set(tagset)
    sentences: list[TaggedSentence] = []
    for lines, numbers in _conllu_blocks(path):
        token_lines = [(line, n) for line, n in zip(lines, numbers) if not line.startswith("#")]
        for line, number in token_lines:
            fields = line.split("\t")
            if len(fields) != 10:
                raise LayerscopeError(f"line {number}: {len(fields)} tab-separated fields, CoNLL-U needs 10",
                                      source=path)
        try:
            parsed = conllu.parse("\n".join(lines) + "\n\n")
        except ParseException as exc:
            raise LayerscopeError(f"lines {numbers[0]}-{numbers[-1]}: {exc}", source=path) from None
        if not parsed:
            continue
        sentence = parsed[0]
        words, labels = [], []
        for token, (_, number) in zip(sentence, token_lines):
            if not isinstance(token["id"], int):
                continue
            tag = token["upos"]
            if tag not in known:
                raise LayerscopeError(f"line {number}: unknown UPOS tag {tag!r} (known: {', '.join(tagset)})",
                                      source=path)
            words.append(token["form"])
            labels.append(tag)
        if words:
            sentences.append(TaggedSentence(words, labels, str(sentence.metadata.get("sent_id", len(sentences)))))
        if limit is not None and len(sentences) >= limit:
            break
    if not sentences:
        raise LayerscopeError("no sentences in this CoNLL-U file", source=path)
    return sentences


# --------------------------------------------------------------------------- IOB2 (NER)

_IOB2 = re.compile(r"^(O|[BI]-\S+)$")
_LANG_PREFIX = re.compile(r"^([a-z]{2,3}(?:-[a-z]+)?):(.+)$")


def read_iob2(path: str | Path, *, limit: int | None = None) -> list[TaggedSentence]:
    """Sentences of a WikiANN / CoNLL-style file: one ``token TAG`` per line (tab or spaces,
    the tag in the last column), a blank line between sentences.

    The ``xx:`` language prefix of the XTREME WikiANN files (``en:Paris``) is removed when every
    token of the file carries the same one. ``-DOCSTART-`` lines are skipped. Tags must be
    IOB2: ``O``, ``B-TYPE`` or ``I-TYPE``.
    """
    path = _require_file(path)
    rows: list[tuple[int, str, str] | None] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            rows.append(None)
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if len(parts) < 2 or not parts[0] or not parts[-1]:
            raise LayerscopeError(f"line {number}: expected 'token<TAB>TAG', got {line.strip()!r}", source=path)
        tag = parts[-1]
        if not _IOB2.match(tag):
            raise LayerscopeError(f"line {number}: {tag!r} is not an IOB2 tag (O, B-TYPE or I-TYPE)", source=path)
        rows.append((number, parts[0], tag))
    tokens = [row for row in rows if row is not None]
    prefixes = {m.group(1) if (m := _LANG_PREFIX.match(tok)) else None for _, tok, _ in tokens}
    strip = len(prefixes) == 1 and None not in prefixes
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    labels: list[str] = []

    def flush() -> None:
        nonlocal words, labels
        if words:
            sentences.append(TaggedSentence(words, labels, str(len(sentences))))
        words, labels = [], []

    for row in rows:
        if row is None:
            flush()
            if limit is not None and len(sentences) >= limit:
                break
            continue
        _, token, tag = row
        words.append(token.split(":", 1)[1] if strip else token)
        labels.append(tag)
    if limit is None or len(sentences) < limit:
        flush()
    if not sentences:
        raise LayerscopeError("no sentences in this file (expected 'token<TAB>TAG' lines)", source=path)
    return sentences


def iob2_label_list(sentences: Sequence[TaggedSentence]) -> list[str]:
    """``O`` then ``B-X``, ``I-X`` for every entity type X seen, types sorted."""
    kinds = sorted({tag[2:] for s in sentences for tag in s.labels if tag != "O"})
    return ["O"] + [f"{p}-{k}" for k in kinds for p in ("B", "I")]


# --------------------------------------------------------------------------- TSV (NLI)

_PREMISE = ("premise", "sentence1")
_HYPOTHESIS = ("hypothesis", "sentence2")
_LABEL = ("label", "gold_label")


def normalize_nli_label(label: str) -> str | None:
    """``entailment``/``neutral``/``contradiction`` (also ``contradictory``, ``0``/``1``/``2``
    as in the Hugging Face XNLI) -> canonical label; None if unknown."""
    text = label.strip().lower()
    text = _NLI_ALIASES.get(text, text)
    return text if text in NLI_LABELS else None


def read_nli_tsv(path: str | Path, *, limit: int | None = None,
                 language: str | None = None) -> list[PairExample] | dict[str, list[PairExample]]:
    """Premise/hypothesis/label rows of an XNLI-style TSV file.

    With a header naming ``premise``/``sentence1``, ``hypothesis``/``sentence2`` and
    ``label``/``gold_label`` columns, those are used; without one the first three columns are
    premise, hypothesis and label (the XTREME layout). A ``language`` column (the original
    ``xnli.test.tsv`` holds every language in one file) makes the result a dict language ->
    examples; ``language=`` keeps one of them and returns its list.
    """
    path = _require_file(path)
    lines = _read_text(path).splitlines()
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise LayerscopeError("empty file", source=path)
    header = [c.strip().lower() for c in rows[0]]

    def find(names: Sequence[str]) -> int | None:
        return next((header.index(n) for n in names if n in header), None)

    columns = (find(_PREMISE), find(_HYPOTHESIS), find(_LABEL))
    if all(c is not None for c in columns):
        body, first_line = rows[1:], 2
        lang_col = find(("language", "lang"))
    elif any(c is not None for c in columns):
        raise LayerscopeError("header must name premise (or sentence1), hypothesis (or sentence2) and label "
                              "(or gold_label) columns", source=path)
    else:
        columns, body, first_line, lang_col = (0, 1, 2), rows, 1, None
    needed = max(c for c in columns if c is not None) + 1
    by_lang: dict[str, list[PairExample]] = {}
    wanted = languages.normalize(language) if language is not None else None
    for offset, row in enumerate(body):
        number = first_line + offset
        if not any(cell.strip() for cell in row):
            continue
        width = max(needed, (lang_col or 0) + 1)
        if len(row) < width:
            raise LayerscopeError(f"line {number}: {len(row)} tab-separated fields, expected at least {width}",
                                  source=path)
        label = normalize_nli_label(row[columns[2]])
        if label is None:
            raise LayerscopeError(f"line {number}: unknown label {row[columns[2]]!r} "
                                  f"(known: {', '.join(NLI_LABELS)})", source=path)
        lang = languages.normalize(row[lang_col], source=f"{path}:{number}") if lang_col is not None else ""
        if wanted is not None and lang_col is not None and lang != wanted:
            continue
        examples = by_lang.setdefault(lang, [])
        if limit is not None and len(examples) >= limit:
            continue
        examples.append(PairExample(row[columns[0]], row[columns[1]], label, str(number)))
    if not by_lang or not any(by_lang.values()):
        raise LayerscopeError("no examples" + (f" for language {wanted}" if wanted else ""), source=path)
    if lang_col is None:
        return by_lang[""]
    if wanted is not None:
        return by_lang[wanted]
    return by_lang


# --------------------------------------------------------------------------- SQuAD JSON (QA)


def read_squad(path: str | Path, *, limit: int | None = None) -> list[QAExample]:
    """Questions of a SQuAD v1.1 / XQuAD JSON file (``{"data": [{"paragraphs": [...]}]}``).

    Unanswerable SQuAD 2.0 questions (``is_impossible``) are skipped with a note.
    """
    path = _require_file(path)
    try:
        payload = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LayerscopeError(f"invalid JSON at line {exc.lineno}: {exc.msg}", source=path) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise LayerscopeError("not SQuAD JSON: expected an object with a 'data' list", source=path)
    examples: list[QAExample] = []
    skipped = 0
    try:
        for article in payload["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    if qa.get("is_impossible"):
                        skipped += 1
                        continue
                    answers = qa["answers"]
                    if not answers:
                        raise LayerscopeError(f"question {qa['id']!r} has no answer", source=path)
                    examples.append(QAExample(
                        id=str(qa["id"]), question=qa["question"], context=context,
                        answers=[str(a["text"]) for a in answers],
                        answer_starts=[int(a["answer_start"]) for a in answers],
                    ))
                    if limit is not None and len(examples) >= limit:
                        return examples
    except (KeyError, TypeError) as exc:
        raise LayerscopeError(f"not SQuAD JSON: missing or malformed field {exc}", source=path) from None
    if skipped:
        log.info("%s: %d unanswerable questions skipped", path, skipped)
    if not examples:
        raise LayerscopeError("no answerable questions", source=path)
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise LayerscopeError(f"question id {dup!r} appears twice", source=path)
    return examples


# --------------------------------------------------------------------------- file names -> languages

_NAME_PARTS = re.compile(r"[._\-\s]+")


def language_from_filename(path: str | Path) -> str | None:
    """The language a data file is for, from its name: the first part of the name (split at
    ``.``, ``_``, ``-``) that is a known language code (``fr_pud-ud-test.conllu`` -> ``fr``,
    ``xquad.de.json`` -> ``de``, ``test-ja.tsv`` -> ``ja``); None if there is none."""
    name = Path(path).name
    for part in _NAME_PARTS.split(name):
        if 2 <= len(part) <= 3 and part.isalpha() and languages.is_known(part):
            return languages.normalize(part)
    return None
