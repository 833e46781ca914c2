"""Links between the words of a sentence pair: one-to-one filters, grow-diag-final-and,
evaluation against gold alignments, and bilingual dictionaries (MUSE format).

A *link* ``(i, j)`` says that word ``i`` of the pivot-language sentence translates word ``j``
of the target sentence; the sources that produce links are in :mod:`layerscope.realign.pairs`.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import LayerscopeError
from .words import Words

log = logging.getLogger(__name__)

Link = tuple[int, int]



# --------------------------------------------------------------------------- link filters


def one_to_one(links: Iterable[Link]) -> list[Link]:
    """Keep the links whose source word and target word each take part in no other link."""
    unique = set(links)
    src_count = Counter(i for i, _ in unique)
    tgt_count = Counter(j for _, j in unique)
    return sorted((i, j) for i, j in unique if src_count[i] == 1 and tgt_count[j] == 1)


def drop_identical(links: Iterable[Link], src: Words, tgt: Words) -> list[Link]:
    """Drop links between identical strings (compared case-insensitively)."""
    return [(i, j) for i, j in links if src.tokens[i].casefold() != tgt.tokens[j].casefold()]


def finalize_links(links: Iterable[Link], src: Words, tgt: Words) -> list[Link]:
    """The realignment filters: one-to-one links, identical strings dropped, sorted."""
    return sorted(drop_identical(one_to_one(links), src, tgt))


def grow_diag_final_and(forward: Iterable[Link], reverse: Iterable[Link]) -> set[Link]:
    """Symmetrise two directional alignments (Koehn et al. 2003, as in Moses).

    Start from the intersection; grow it with union links that neighbour an alignment point
    (also diagonally) and touch a word not aligned yet; finally add union links of each
    direction whose source *and* target words are both still unaligned.
    """
    fwd, rev = set(forward), set(reverse)
    union = fwd | rev
    alignment = fwd & rev
    src_done = {i for i, _ in alignment}
    tgt_done = {j for _, j in alignment}
    neighbours = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
    grown = True
    while grown:
        grown = False
        for i, j in sorted(alignment):
            for di, dj in neighbours:
                point = (i + di, j + dj)
                if point in union and point not in alignment and (point[0] not in src_done or point[1] not in tgt_done):
                    alignment.add(point)
                    src_done.add(point[0])
                    tgt_done.add(point[1])
                    grown = True
    for direction in (fwd, rev):
        for i, j in sorted(direction):
            if (i, j) not in alignment and i not in src_done and j not in tgt_done:
                alignment.add((i, j))
                src_done.add(i)
                tgt_done.add(j)
    return alignment


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class AlignmentScores:
    """Precision ``|A∩P|/|A|``, recall ``|A∩S|/|S|`` and AER ``1 − (|A∩S|+|A∩P|)/(|A|+|S|)``,
    summed over sentences (Och & Ney 2003); P includes S."""

    precision: float
    recall: float
    aer: float
    predicted: int
    sure: int
    possible: int

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "aer": self.aer,
                "predicted": self.predicted, "sure": self.sure, "possible": self.possible}


def alignment_scores(predicted: Sequence[Iterable[Link]], sure: Sequence[Iterable[Link]],
                     possible: Sequence[Iterable[Link]] | None = None) -> AlignmentScores:
    """Score predicted links against gold *sure* (and *possible*) links, one list per sentence."""
    if len(predicted) != len(sure) or (possible is not None and len(possible) != len(sure)):
        raise ValueError(
            f"alignment lists differ in length: {len(predicted)} predicted, {len(sure)} sure"
            + (f", {len(possible)} possible" if possible is not None else "")
        )
    n_pred = n_sure = n_poss = hit_sure = hit_poss = 0
    for k, (pred, gold_sure) in enumerate(zip(predicted, sure)):
        a, s = set(pred), set(gold_sure)
        p = s | (set(possible[k]) if possible is not None else set())
        n_pred += len(a)
        n_sure += len(s)
        n_poss += len(p)
        hit_sure += len(a & s)
        hit_poss += len(a & p)
    precision = hit_poss / n_pred if n_pred else 0.0
    recall = hit_sure / n_sure if n_sure else 0.0
    denominator = n_pred + n_sure
    aer = 1.0 - (hit_sure + hit_poss) / denominator if denominator else 1.0
    return AlignmentScores(precision, recall, aer, n_pred, n_sure, n_poss)


# --------------------------------------------------------------------------- dictionary


def read_dictionary(path: str | Path, *, reverse: bool = False, casefold: bool = False) -> dict[str, frozenset[str]]:
    """A MUSE dictionary ``src_word tgt_word`` per line -> {src: {tgt, ...}}, the words as
    written (case-folded with ``casefold``).

    With ``reverse``, the file is ``tgt_word src_word`` and is read the other way round.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LayerscopeError(f"cannot read dictionary ({exc.strerror})", source=path) from None
    except UnicodeDecodeError:
        raise LayerscopeError("dictionary is not UTF-8 text", source=path) from None
    table: dict[str, set[str]] = defaultdict(set)
    skipped = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2:
            skipped += bool(line.strip())
            continue
        a, b = (fields[1], fields[0]) if reverse else (fields[0], fields[1])
        table[_fold(a, casefold)].add(_fold(b, casefold))
    if skipped:
        log.warning("%s: %d line(s) without exactly two words skipped", path, skipped)
    if not table:
        raise LayerscopeError("dictionary has no 'source_word target_word' lines", source=path)
    return {word: frozenset(translations) for word, translations in table.items()}


def _fold(word: str, casefold: bool) -> str:
    return word.casefold() if casefold else word


def _occurrences(translation: str, tgt_keys: Sequence[str], joined: str | None,
                 starts: Mapping[int, int], ends: Mapping[int, int]) -> list[tuple[int, int]]:
    """Token spans ``(first, last+1)`` of the target where ``translation`` occurs."""
    if joined is None:  # words separated by spaces: a translation is one word
        return [(j, j + 1) for j, key in enumerate(tgt_keys) if key == translation]
    found, position = [], joined.find(translation)
    while position >= 0:
        end = position + len(translation)
        if position in starts and end in ends:
            found.append((starts[position], ends[end] + 1))
        position = joined.find(translation, position + 1)
    return found


def dictionary_links(src: Words, tgt: Words, translations: Mapping[str, frozenset[str]], *,
                     casefold: bool = False) -> list[Link]:
    """Unambiguous one-to-one dictionary pairs of one sentence pair.

    Word ``i`` of ``src`` is linked to the target word where its translation occurs when
    (1) the source word occurs once in ``src``; (2) exactly one of its dictionary translations
    occurs in ``tgt``, exactly once; (3) that translation translates no other word of ``src``;
    (4) in a spaceless target (one word per character), where a translation is matched as a
    run of characters, its run overlaps no other kept pair's run. The link points at the first
    word of the run. Identical strings are dropped. Words are compared as written (as
    published); ``casefold=True`` folds the sentences' case (``translations`` must then hold
    case-folded words, as :func:`read_dictionary` gives with ``casefold=True``).
    """
    src_keys = [_fold(token, casefold) for token in src.tokens]
    tgt_keys = [_fold(token, casefold) for token in tgt.tokens]
    counts = Counter(src_keys)
    joined = None
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    if tgt.joiner == "":
        position = 0
        for j, key in enumerate(tgt_keys):
            starts[position] = j
            position += len(key)
            ends[position] = j
        joined = "".join(tgt_keys)
    owners: dict[str, set[str]] = defaultdict(set)
    for word in counts:
        for translation in translations.get(word, ()):
            owners[translation].add(word)
    candidates: dict[int, tuple[int, int]] = {}
    cache: dict[str, list[tuple[int, int]]] = {}
    for i, word in enumerate(src_keys):
        if counts[word] != 1 or word not in translations:
            continue
        present = []
        for translation in translations[word]:
            if translation not in cache:
                cache[translation] = _occurrences(translation, tgt_keys, joined, starts, ends)
            if cache[translation]:
                present.append(translation)
        if len(present) != 1:
            continue
        translation = present[0]
        spans = cache[translation]
        if len(spans) != 1 or owners[translation] != {word} or translation == word:
            continue
        candidates[i] = spans[0]
    links = []
    for i, (a, b) in candidates.items():
        if any(i2 != i and a2 < b and a < b2 for i2, (a2, b2) in candidates.items()):
            continue
        links.append((i, a))
    return finalize_links(links, src, tgt)
