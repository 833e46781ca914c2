"""Language metadata and code normalisation.

One table (``data/languages.tsv``) describes every language layerscope knows: its canonical
code (ISO 639-1 where one exists), ISO 639-3 code, FLORES-200 code, name, family, genus, script
and whether it is written without spaces between words. ``fr``, ``fra``, ``fre``, ``fra_Latn``
and ``French`` all normalise to ``fr``.
"""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from .._resources import data_file
from ..errors import LayerscopeError


@dataclass(frozen=True)
class Language:
    code: str
    iso3: str
    flores: str
    name: str
    family: str
    genus: str
    script: str
    spaceless: bool
    aliases: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def language_table() -> dict[str, Language]:
    """All known languages keyed by canonical code, in the table's order (family-grouped)."""
    table: dict[str, Language] = {}
    with open(data_file("languages.tsv"), encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            aliases = tuple(a.strip() for a in (row.get("aliases") or "").split(",") if a.strip())
            table[row["code"]] = Language(
                code=row["code"],
                iso3=row["iso3"],
                flores=row["flores"],
                name=row["name"],
                family=row["family"],
                genus=row["genus"],
                script=row["script"],
                spaceless=row["spaceless"] == "1",
                aliases=aliases,
            )
    return table


@lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    index: dict[str, str] = {}
    for lang in language_table().values():
        keys = [lang.code, lang.iso3, lang.flores, lang.flores.split("_")[0], lang.name, *lang.aliases]
        for key in keys:
            index.setdefault(key.lower(), lang.code)
    return index


_FLORES_LIKE = re.compile(r"^([a-z]{2,3})[_-]([A-Za-z]{4})$")


def normalize(code: str, *, source: object | None = None) -> str:
    """Canonical code of a language given as ISO 639-1/639-3, FLORES code or English name.

    Raises LayerscopeError for an unknown code, suggesting the nearest known ones.
    """
    if not isinstance(code, str) or not code.strip():
        raise LayerscopeError(f"empty language code {code!r}", source=source)
    key = code.strip().lower()
    index = _lookup()
    if key in index:
        return index[key]
    match = _FLORES_LIKE.match(code.strip())
    if match and match.group(1).lower() in index:
        return index[match.group(1).lower()]
    near = difflib.get_close_matches(key, list(index), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(sorted({index[n] for n in near}))}?" if near else ""
    raise LayerscopeError(
        f"unknown language code {code!r} (ISO 639-1, ISO 639-3 or FLORES codes are accepted){hint}",
        source=source,
    )


def is_known(code: str) -> bool:
    try:
        normalize(code)
    except LayerscopeError:
        return False
    return True


def get(code: str) -> Language:
    return language_table()[normalize(code)]


def parse_language_list(spec: str | Iterable[str] | None, *, source: object | None = None) -> list[str] | None:
    """``"fr,de,ja"`` or an iterable of codes -> canonical codes; duplicates are an error."""
    if spec is None:
        return None
    items = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    codes = [normalize(str(item), source=source) for item in items]
    seen: set[str] = set()
    duplicates = sorted({c for c in codes if c in seen or seen.add(c)})
    if duplicates:
        raise LayerscopeError(f"language listed twice: {', '.join(duplicates)}", source=source)
    return codes


def family_order(codes: Iterable[str]) -> list[str]:
    """Codes sorted by family, then genus, then the table's order (unknown codes last)."""
    table = language_table()
    position = {code: i for i, code in enumerate(table)}

    def key(code: str) -> tuple:
        lang = table.get(code)
        if lang is None:
            return ("~", "~", len(position), code)
        return (lang.family, lang.genus, position[code], code)

    return sorted(codes, key=key)
