"""Parallel corpora: a pivot language and target languages aligned sentence by sentence.

Spec strings pick a reader from a small registry:

=================  ==========================================================================
``flores:DIR``     one line-aligned file per language (``eng_Latn.devtest``, ``fr.txt`` …)
``tatoeba:DIR``    Tatoeba pairs: LASER ``tatoeba.xxx-eng.{xxx,eng}`` or Challenge ``eng-xxx.{xxx,eng}``
``pud:DIR``        UD CoNLL-U treebanks of the same sentences, aligned by ``# sent_id``
``tsv:FILE``       a TSV whose header names one language per column
``sample``         the small corpus embedded in layerscope (``data/sample/parallel.tsv``)
=================  ==========================================================================

In a multi-way corpus (FLORES, PUD, TSV) every target shares one pivot side, which is encoded
once per model. In Tatoeba each language comes with its own English side.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .._resources import data_file
from ..errors import LayerscopeError
from . import languages

log = logging.getLogger(__name__)

MAX_CHARS = 2000  # longer lines are cut (with a warning): no model reads that far anyway


@dataclass
class ParallelCorpus:
    """Pivot-side and target-side sentences per target language, aligned by position.

    ``pivot_sentences[lang][i]`` translates ``targets[lang][i]``. In a multi-way corpus all
    values of ``pivot_sentences`` are the same list object.
    """

    pivot: str
    pivot_sentences: dict[str, list[str]]
    targets: dict[str, list[str]]
    name: str = "corpus"
    spec: str = ""
    ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.targets)

    @property
    def multiway(self) -> bool:
        sides = list(self.pivot_sentences.values())
        return all(side is sides[0] for side in sides)

    def sizes(self) -> dict[str, int]:
        return {lang: len(sents) for lang, sents in self.targets.items()}

    def select(self, langs: Sequence[str] | None) -> "ParallelCorpus":
        """Keep only ``langs`` (codes in any accepted form), in the order given."""
        if langs is None:
            return self
        wanted = [languages.normalize(code, source=self.spec or self.name) for code in langs]
        missing = [code for code in wanted if code not in self.targets]
        if missing:
            pivot_hint = f" ({self.pivot} is the pivot)" if self.pivot in missing else ""
            raise LayerscopeError(
                f"no sentences for language(s) {', '.join(missing)}{pivot_hint}; available: "
                f"{', '.join(self.targets) or 'none'}",
                source=self.spec or self.name,
            )
        return ParallelCorpus(
            pivot=self.pivot,
            pivot_sentences={code: self.pivot_sentences[code] for code in wanted},
            targets={code: self.targets[code] for code in wanted},
            name=self.name,
            spec=self.spec,
            ids={code: self.ids[code] for code in wanted if code in self.ids},
        )

    def head(self, n: int | None) -> "ParallelCorpus":
        """The first ``n`` pairs of every language (keeping multi-way sharing)."""
        if n is None:
            return self
        cache: dict[int, list[str]] = {}
        pivots = {}
        for code, side in self.pivot_sentences.items():
            if id(side) not in cache:
                cache[id(side)] = side[:n]
            pivots[code] = cache[id(side)]
        return ParallelCorpus(self.pivot, pivots, {c: s[:n] for c, s in self.targets.items()}, self.name,
                              self.spec, {c: s[:n] for c, s in self.ids.items()})

    def take(self, rows: Sequence[int]) -> "ParallelCorpus":
        """Only the pairs at positions ``rows`` (the same rows of every language in a multi-way corpus)."""
        rows = list(rows)
        cache: dict[int, list[str]] = {}
        pivots = {}
        for code, side in self.pivot_sentences.items():
            if id(side) not in cache:
                cache[id(side)] = [side[i] for i in rows if i < len(side)]
            pivots[code] = cache[id(side)]
        targets = {code: [sents[i] for i in rows if i < len(sents)] for code, sents in self.targets.items()}
        ids = {code: [ids[i] for i in rows if i < len(ids)] for code, ids in self.ids.items()}
        return ParallelCorpus(self.pivot, pivots, targets, self.name, self.spec, ids)

    def split(self, held_out: int | float) -> tuple["ParallelCorpus", "ParallelCorpus"]:
        """(first part, last ``held_out`` pairs) — a fraction below 1 or a count per language."""
        n = min(len(s) for s in self.targets.values())
        count = int(round(held_out * n)) if isinstance(held_out, float) and held_out < 1 else int(held_out)
        if not 0 < count < n:
            raise LayerscopeError(f"cannot hold out {held_out} of {n} sentence pairs", source=self.spec or self.name)
        return self.take(range(n - count)), self.take(range(n - count, n))

    def content_hash(self) -> str:
        """Hash of every sentence and language code: the key for cached activations."""
        digest = hashlib.sha256(self.pivot.encode())
        for code in self.targets:
            digest.update(f"\x00{code}\x00".encode())
            for sentence in self.pivot_sentences[code]:
                digest.update(sentence.encode() + b"\n")
            digest.update(b"\x01")
            for sentence in self.targets[code]:
                digest.update(sentence.encode() + b"\n")
        return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- file reading


def cut_long(text: str, source: object, number: int) -> str:
    """``text`` cut to MAX_CHARS characters, with a warning naming the file and line."""
    if len(text) <= MAX_CHARS:
        return text
    log.warning("%s: line %d has a sentence of %d characters; cut to %d", source, number, len(text), MAX_CHARS)
    return text[:MAX_CHARS]


def read_lines(path: Path, *, cut: bool = True) -> list[str]:
    """Lines of a UTF-8 text file (BOM tolerated, trailing newline dropped), long lines cut
    (``cut=False`` for formats with several fields per line, which cut each field instead)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LayerscopeError(f"cannot read ({exc.strerror})", source=path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LayerscopeError(f"invalid UTF-8 at line {line} (byte {exc.start})", source=path) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cleaned = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        cleaned.append(cut_long(line, path, number) if cut else line)
    return cleaned


def _drop_empty(pivot: list[str], target: list[str], source: object, lang: str) -> tuple[list[str], list[str], list[int]]:
    keep = [i for i, (a, b) in enumerate(zip(pivot, target)) if a.strip() and b.strip()]
    if len(keep) < len(pivot):
        log.warning("%s: %d empty line(s) for %s skipped with their translations", source, len(pivot) - len(keep), lang)
    return [pivot[i] for i in keep], [target[i] for i in keep], keep


def _multiway(columns: dict[str, list[str]], files: dict[str, object], pivot: str, *, name: str, spec: str,
              ids: list[str] | None = None) -> ParallelCorpus:
    """Build a multi-way corpus from equally long columns; rows with an empty cell are dropped."""
    if pivot not in columns:
        raise LayerscopeError(
            f"pivot language {pivot} is missing; found {', '.join(columns) or 'no languages'}", source=spec
        )
    n = len(columns[pivot])
    for code, column in columns.items():
        if len(column) != n:
            raise LayerscopeError(
                f"has {len(column)} sentences but {files[pivot]} has {n}; parallel files must be line-aligned",
                source=files[code],
            )
    keep = [i for i in range(n) if all(column[i].strip() for column in columns.values())]
    if len(keep) < n:
        log.warning("%s: %d row(s) with an empty sentence skipped in every language", spec, n - len(keep))
    ids = ids if ids is not None else [str(i) for i in range(n)]
    kept_ids = [ids[i] for i in keep]
    pivot_side = [columns[pivot][i].strip() for i in keep]
    targets = {code: [column[i].strip() for i in keep] for code, column in columns.items() if code != pivot}
    return ParallelCorpus(pivot, {code: pivot_side for code in targets}, targets, name=name, spec=spec,
                          ids={code: kept_ids for code in targets})


def _language_of_file(stem: str, source: Path) -> str | None:
    try:
        return languages.normalize(stem)
    except LayerscopeError:
        return None


def _assign_unique(found: dict[str, Path], code: str, path: Path) -> None:
    if code in found:
        raise LayerscopeError(
            f"two files for language {code}: {found[code].name} and {path.name}; keep one per language",
            source=path.parent,
        )
    found[code] = path


def _require_dir(path: Path) -> Path:
    if not path.exists():
        raise LayerscopeError("no such directory", source=path)
    if not path.is_dir():
        raise LayerscopeError("is not a directory", source=path)
    return path


# --------------------------------------------------------------------------- readers


def read_flores(location: str, pivot: str) -> ParallelCorpus:
    """A directory with one line-aligned file per language, the stem naming the language."""
    directory = _require_dir(Path(location))
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() in (".md", ".tsv", ".json"):
            continue
        code = _language_of_file(path.name.split(".")[0], path)
        if code is not None:
            _assign_unique(found, code, path)
    if not found:
        raise LayerscopeError("no language files found (expected names like eng_Latn.devtest or fr.txt)", source=directory)
    columns = {code: read_lines(path) for code, path in found.items()}
    return _multiway(columns, dict(found), pivot, name=directory.name, spec=f"flores:{location}")


_TATOEBA = re.compile(r"^tatoeba\.([a-z]{3})-([a-z]{3})\.([a-z]{3})$")
_TATOEBA_CHALLENGE = re.compile(r"^([a-z]{3})-([a-z]{3})\.([a-z]{3})$")


def _tatoeba_pairs(directory: Path, pivot3: str) -> list[tuple[str, Path, Path]]:
    """(target code as written, target file, its pivot file) of both layouts: LASER's
    ``tatoeba.xxx-eng.xxx`` / ``tatoeba.xxx-eng.eng`` and Tatoeba-Challenge's ``eng-xxx.xxx`` /
    ``eng-xxx.eng``."""
    found = []
    for path in sorted(directory.iterdir()):
        laser = _TATOEBA.match(path.name)
        if laser and laser.group(2) == pivot3 and laser.group(3) == laser.group(1) != pivot3:
            found.append((laser.group(1), path, path.with_name(f"tatoeba.{laser.group(1)}-{pivot3}.{pivot3}")))
            continue
        challenge = _TATOEBA_CHALLENGE.match(path.name)
        if challenge and challenge.group(1) == pivot3 and challenge.group(3) == challenge.group(2) != pivot3:
            code = challenge.group(2)
            found.append((code, path, path.with_name(f"{pivot3}-{code}.{pivot3}")))
    return found


def read_tatoeba(location: str, pivot: str) -> ParallelCorpus:
    """Tatoeba pairs, each language with its own English side: LASER's test set
    (``tatoeba.xxx-eng.xxx`` / ``tatoeba.xxx-eng.eng``) or Tatoeba-Challenge
    (``eng-xxx.xxx`` / ``eng-xxx.eng``)."""
    directory = _require_dir(Path(location))
    pivot3 = languages.get(pivot).iso3
    pivot_sides: dict[str, list[str]] = {}
    targets: dict[str, list[str]] = {}
    seen: dict[str, Path] = {}
    for written, path, pivot_path in _tatoeba_pairs(directory, pivot3):
        code = _language_of_file(written, path)
        if code is None:
            log.warning("%s: unknown language code %s skipped", path, written)
            continue
        _assign_unique(seen, code, path)
        if not pivot_path.exists():
            raise LayerscopeError(f"missing its {pivot} side {pivot_path.name}", source=path)
        target_lines, pivot_lines = read_lines(path), read_lines(pivot_path)
        if len(target_lines) != len(pivot_lines):
            raise LayerscopeError(
                f"has {len(target_lines)} sentences but {pivot_path.name} has {len(pivot_lines)}; "
                "parallel files must be line-aligned",
                source=path,
            )
        pivot_lines, target_lines, _ = _drop_empty(pivot_lines, target_lines, path, code)
        pivot_sides[code] = [s.strip() for s in pivot_lines]
        targets[code] = [s.strip() for s in target_lines]
    if not targets:
        raise LayerscopeError(f"no tatoeba.xxx-{pivot3}.xxx or {pivot3}-xxx.xxx files found", source=directory)
    return ParallelCorpus(pivot, pivot_sides, targets, name=directory.name, spec=f"tatoeba:{location}")


def read_pud(location: str, pivot: str) -> ParallelCorpus:
    """UD treebanks of the same sentences (PUD), aligned by ``# sent_id`` rather than position."""
    directory = _require_dir(Path(location))
    by_lang: dict[str, dict[str, str]] = {}
    files: dict[str, Path] = {}
    for path in sorted(directory.glob("*.conllu")):
        code = _language_of_file(path.name.split("_")[0], path)
        if code is None:
            continue
        _assign_unique(files, code, path)
        by_lang[code] = _conllu_texts(path)
    if not by_lang:
        raise LayerscopeError("no CoNLL-U files named like xx_pud-ud-test.conllu", source=directory)
    if pivot not in by_lang:
        raise LayerscopeError(f"pivot language {pivot} has no treebank here", source=directory)
    common = [sid for sid in by_lang[pivot] if all(sid in sents for sents in by_lang.values())]
    dropped = {code: len(sents) - len(common) for code, sents in by_lang.items() if len(sents) != len(common)}
    if dropped:
        log.warning("%s: sentences without a counterpart in every treebank skipped: %s", directory, dropped)
    columns = {code: [sents[sid] for sid in common] for code, sents in by_lang.items()}
    return _multiway(columns, dict(files), pivot, name=directory.name, spec=f"pud:{location}", ids=common)


def _conllu_texts(path: Path) -> dict[str, str]:
    """``sent_id`` -> sentence text of a CoNLL-U file, from its comments (or its word forms).

    Only the sentence-level metadata is needed here, so the comment lines are read directly;
    token-level parsing (for PoS tagging) lives in ``layerscope.tasks``.
    """
    sentences: dict[str, str] = {}
    sent_id: str | None = None
    text: str | None = None
    forms: list[str] = []

    def flush(line_number: int) -> None:
        nonlocal sent_id, text, forms
        if sent_id is None and (text is not None or forms):
            raise LayerscopeError(f"sentence ending at line {line_number} has no '# sent_id'; cannot align it", source=path)
        if sent_id is not None:
            if sent_id in sentences:
                raise LayerscopeError(f"sent_id {sent_id!r} appears twice", source=path)
            sentence = text if text is not None else " ".join(forms)
            sentences[sent_id] = cut_long(sentence, path, line_number - 1)
        sent_id, text, forms = None, None, []

    lines = read_lines(path, cut=False)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            flush(number)
        elif line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip() == "sent_id":
                sent_id = value.strip()
            elif key.strip() == "text":
                text = value.strip()
        else:
            fields = line.split("\t")
            if len(fields) != 10:
                raise LayerscopeError(f"line {number} has {len(fields)} fields, CoNLL-U needs 10", source=path)
            if fields[0].isdigit():
                forms.append(fields[1])
    flush(len(lines) + 1)
    return sentences


def read_tsv(location: str, pivot: str) -> ParallelCorpus:
    """A TSV with a header of language codes, one sentence per cell."""
    path = Path(location)
    if path.is_dir():
        raise LayerscopeError("is a directory; tsv: needs a file (flores:DIR reads one file per language)",
                              source=path)
    if not path.is_file():
        raise LayerscopeError("no such file", source=path)
    lines = read_lines(path, cut=False)
    if not lines:
        raise LayerscopeError("empty file", source=path)
    # Cells are split on tabs alone: no quoting, and a stray carriage return is part of a cell.
    header = [cell.strip() for cell in lines[0].split("\t")]
    codes = [languages.normalize(cell, source=f"{path} header") for cell in header]
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise LayerscopeError(f"language column listed twice: {', '.join(duplicates)}", source=path)
    columns: dict[str, list[str]] = {code: [] for code in codes}
    for number, line in enumerate(lines[1:], start=2):
        # A blank line is a row of empty sentences, dropped below with a warning like any other.
        row = line.split("\t") if line.strip() else [""] * len(codes)
        if len(row) != len(codes):
            raise LayerscopeError(f"line {number} has {len(row)} columns, the header has {len(codes)}", source=path)
        for code, cell in zip(codes, row):
            columns[code].append(cut_long(cell, path, number))
    return _multiway(columns, {code: path for code in codes}, pivot, name=path.stem, spec=f"tsv:{location}")


def sample_corpus_path() -> Path:
    return data_file("sample", "parallel.tsv")


def read_sample(_location: str, pivot: str) -> ParallelCorpus:
    corpus = read_tsv(str(sample_corpus_path()), pivot)
    corpus.name, corpus.spec = "sample", "sample"
    return corpus


READERS: dict[str, Callable[[str, str], ParallelCorpus]] = {
    "flores": read_flores,
    "tatoeba": read_tatoeba,
    "pud": read_pud,
    "tsv": read_tsv,
    "sample": read_sample,
}


def read_corpus(
    spec: str = "sample",
    *,
    pivot: str = "en",
    languages_: Sequence[str] | str | None = None,
    limit: int | None = None,
) -> ParallelCorpus:
    """Read a parallel corpus from a spec string (``flores:DIR``, ``tatoeba:DIR``, ``pud:DIR``,
    ``tsv:FILE``, ``sample``), keep ``languages_`` (default: all but the pivot) and at most
    ``limit`` pairs per language."""
    kind, _, location = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in READERS:
        path = Path(spec)
        if path.is_dir():
            kind, location = "flores", spec
        elif path.suffix.lower() == ".tsv" and path.is_file():
            kind, location = "tsv", spec
        else:
            import difflib

            near = difflib.get_close_matches(kind, list(READERS), n=1)
            hint = f"; did you mean {near[0]}:?" if near else ""
            raise LayerscopeError(
                f"unknown corpus kind {kind!r}: use one of {', '.join(k + ':' for k in READERS)}{hint}", source=spec
            )
    if kind != "sample" and not location:
        raise LayerscopeError(f"corpus spec needs a location, like {kind}:PATH", source=spec)
    pivot_code = languages.normalize(pivot, source="--pivot")
    corpus = READERS[kind](location, pivot_code)
    if isinstance(languages_, str):
        languages_ = languages.parse_language_list(languages_, source="--langs")
    if languages_ is not None:
        languages_ = [code for code in languages_ if languages.normalize(code) != pivot_code] or languages_
    corpus = corpus.select(languages_).head(limit)
    if not corpus.targets:
        raise LayerscopeError(f"no target language besides the pivot {pivot_code}", source=spec)
    return corpus
