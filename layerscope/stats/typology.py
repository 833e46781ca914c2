"""URIEL distances between languages, computed from the features that PyPI ``lang2vec`` ships.

lang2vec 1.1.2 ships URIEL *features* but no distances, so they are computed here the way
URIEL defines them (Littell et al. 2017), at full precision:

- **syntactic, phonological, inventory, featural**: angular distance ``2·arccos(cos)/π``
  between binary feature vectors (``S_``, ``P_``, ``INV_`` features; featural = all three),
  each feature the maximum over URIEL's sources, a value missing in every source counted as 0.
  Not the kNN-imputed vectors and not ``1 − cos``. A language whose vector is all zeros has no
  angle to anything: its distance is NaN (missing), never a guess.
- **genetic**: ``1 − |A⁺ ∩ B⁺| / |B⁺|`` where ``X⁺`` is the set of Glottolog ancestors of X
  plus X itself. For two different languages this is URIEL's
  ``1 − shared / (|ancestors of B| + 1)``: it uses the depth of the **second** language
  (``genetic(task, transfer)`` normalises by the transfer language, as in the LangRank table),
  so it is asymmetric. ``genetic_sym`` uses the deeper of the two lineages
  (= the larger of the two directions) and is symmetric. ``d(a, a) = 0``.
- **geographic**: great-circle distance between the languages' coordinates over half the
  Earth's circumference (π·6371 km). lang2vec has no coordinates, only ``GC_<lat>_<lon>``
  features holding such normalised distances to 299 anchor points; the coordinates are recovered
  from them by least squares on the sphere (:func:`coordinates`).

Language codes: ISO 639-1, ISO 639-3 or FLORES codes. A canonical code (``zh``, ``ar``) maps to
the ISO 639-3 code with the most URIEL features among the language's codes; in lang2vec 1.1.2
that is always the macrolanguage (``zho`` not ``cmn``, ``ara`` not ``arb``, ``fas``/``pes`` are
equal, ``est`` not ``ekk``, ``msa`` not ``zsm``, ``nor`` not ``nob``, ``lav`` not ``lvs``,
``aze`` not ``azj``). An ISO 639-3 code that URIEL knows is used exactly as given (``cmn``).
``codes="published"`` uses instead the codes of the published AlignFreeze regression for its
macrolanguages (:data:`~layerscope.stats.uriel.CODE_TABLES`: ``arb``, ``cmn``, ``nob``, ``fas``, ``lav``), the rest as
``most-features``.

Languages without features of a kind: NaN by default (``missing_as="nan"``);
``missing_as="uriel"`` does what URIEL's published distances do, a constant distance to an
unknown language: an all-zero (unobserved) feature vector is replaced by all ones, an unknown
location or a language URIEL lacks is at geographic and genetic distance 1.

Sources: ``lang2vec`` (default), ``urielplus`` (optional, URIEL+'s own distance, which uses only
the features both languages have), and user feature tables (CSV, :func:`read_feature_table`).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..corpora.tables import read_user_csv
from ..errors import LayerscopeError
from .uriel import (
    ALL_KINDS,
    DISTANCE_KINDS,
    LANG2VEC_VERSION,
    _PREFIXES,
    _columns,
    _safe_label,
    ancestors,
    angular_distance,
    check_codes,
    check_missing_as,
    coordinates,
    feature_vector,
    geographic_distance,
    label,
    lineage_distance,
    observed_features,
    uriel_code,
)

class Lang2vecSource:
    """URIEL distances computed from lang2vec's feature files (the default source).

    ``codes``: the code table (:data:`~layerscope.stats.uriel.CODE_TABLES`); ``missing_as``: ``nan`` (no data, no
    distance) or ``uriel`` (URIEL's constant distance to an unknown language, see the module
    docstring)."""

    name = "lang2vec"
    kinds = ALL_KINDS

    def __init__(self, codes: str = "most-features", missing_as: str = "nan") -> None:
        self.codes = check_codes(codes)
        self.missing_as = check_missing_as(missing_as)

    def _vector(self, code3: str | None, kind: str) -> np.ndarray:
        if code3 is not None:
            vector = feature_vector(code3, kind)
            if self.missing_as == "nan" or np.any(vector):
                return vector
        return np.ones(len(_columns(kind)))  # URIEL's stand-in for a language it knows nothing of

    def distance(self, a: str, b: str, kind: str) -> float:
        """Distance of ``kind`` from ``a`` to ``b``; NaN when URIEL lacks the data (with
        ``missing_as="nan"``)."""
        code_a, code_b = uriel_code(a, self.codes), uriel_code(b, self.codes)
        if kind not in self.kinds:
            raise _unknown_kind(kind, self.kinds)
        if code_a is None or code_b is None:
            if self.missing_as == "nan":
                return math.nan
            if kind in _PREFIXES:
                return angular_distance(self._vector(code_a, kind), self._vector(code_b, kind))
            return 0.0 if _safe_label(a) == _safe_label(b) else 1.0
        if kind in _PREFIXES:
            if code_a == code_b:
                return 0.0 if np.any(self._vector(code_a, kind)) else math.nan
            return angular_distance(self._vector(code_a, kind), self._vector(code_b, kind))
        if kind in ("genetic", "genetic_sym"):
            return lineage_distance(ancestors(code_a), ancestors(code_b), same=code_a == code_b,
                                    symmetric=kind == "genetic_sym")
        try:
            return 0.0 if code_a == code_b else geographic_distance(coordinates(code_a), coordinates(code_b))
        except LayerscopeError:
            return 1.0 if self.missing_as == "uriel" else math.nan

    def why_missing(self, code: str, kinds: Sequence[str]) -> str:
        code3 = uriel_code(code, self.codes)
        if code3 is None:
            return f"{label(code)}: not in URIEL ({LANG2VEC_VERSION})"
        parts = []
        for kind in kinds:
            n = observed_features(code3, kind) if kind in _PREFIXES else 0
            parts.append(kind if n == 0 else f"{kind} (only {n} features, all 0)")
        return f"{label(code)} ({code3}): no {', '.join(parts)} data in URIEL ({LANG2VEC_VERSION})"


@contextlib.contextmanager
def _quiet_logging():
    """URIEL+ logs every distance at INFO on the root logger; silence INFO while it runs."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


class UrielPlusSource:
    """URIEL+ (PyPI ``urielplus``) distances: angular distance over the features both have."""

    name = "urielplus"
    kinds = DISTANCE_KINDS

    def __init__(self, codes: str = "most-features", missing_as: str = "nan") -> None:
        self.codes = check_codes(codes)
        if check_missing_as(missing_as) != "nan":
            raise LayerscopeError("--missing-as uriel is for the lang2vec source; URIEL+ handles missing data itself")
        try:
            from urielplus.urielplus import URIELPlus
        except ImportError:
            raise LayerscopeError("the urielplus source needs the urielplus package: pip install urielplus") from None
        with _quiet_logging():
            self._uriel = URIELPlus()

    def distance(self, a: str, b: str, kind: str) -> float:
        if kind not in self.kinds:
            raise _unknown_kind(kind, self.kinds)
        code_a, code_b = uriel_code(a, self.codes), uriel_code(b, self.codes)
        if code_a is None or code_b is None:
            return math.nan
        if code_a == code_b:
            return 0.0
        try:
            with _quiet_logging():
                value = self._uriel.new_distance(kind, code_a, code_b)
        except (ValueError, IndexError, KeyError):  # unknown language or no shared features
            return math.nan
        value = float(np.asarray(value, dtype=float).ravel()[0])
        return value if value >= 0 else math.nan

    def why_missing(self, code: str, kinds: Sequence[str]) -> str:
        return f"{label(code)}: no {', '.join(kinds)} data in URIEL+ (or none shared with the pivot)"


class FeatureTableSource:
    """Distances between the rows of a user table of per-language features.

    ``custom`` = URIEL's angular distance ``2·arccos(cos)/π`` over all columns (missing as 0)
    when every value is non-negative (binary or count features), else ``arccos(cos)/π``; both lie
    in [0, 1].
    """

    name = "table"
    kinds = ("custom",)

    def __init__(self, table: pd.DataFrame | str | Path) -> None:
        self.table = read_feature_table(table)
        self._nonnegative = bool((self.table.fillna(0).to_numpy() >= 0).all())

    def _row(self, code: str) -> np.ndarray | None:
        key = _safe_label(code)
        if key not in self.table.index:
            return None
        return self.table.loc[key].fillna(0).to_numpy(dtype=np.float64)

    def distance(self, a: str, b: str, kind: str = "custom") -> float:
        x, y = self._row(a), self._row(b)
        if x is None or y is None:
            return math.nan
        d = angular_distance(x, y)
        return d if self._nonnegative or math.isnan(d) else d / 2.0

    def why_missing(self, code: str, kinds: Sequence[str]) -> str:
        return f"{_safe_label(code)}: not in the feature table (or all its features are 0)"


SOURCES = {"lang2vec": Lang2vecSource, "urielplus": UrielPlusSource}


def get_source(name: str = "lang2vec", *, codes: str = "most-features", missing_as: str = "nan"):
    """A distance source by name (``lang2vec`` or ``urielplus``), with its code table and its
    handling of missing features."""
    if name not in SOURCES:
        near = difflib.get_close_matches(name, SOURCES, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise LayerscopeError(f"unknown typology source {name!r}: known are {', '.join(SOURCES)}{hint}")
    return _cached_source(name, check_codes(codes), check_missing_as(missing_as))


@lru_cache(maxsize=None)
def _cached_source(name: str, codes: str = "most-features", missing_as: str = "nan"):
    return SOURCES[name](codes, missing_as)


def _unknown_kind(kind: str, known: Sequence[str]) -> LayerscopeError:
    near = difflib.get_close_matches(kind, known, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    return LayerscopeError(f"unknown distance type {kind!r}: known are {', '.join(known)}{hint}")


def check_kinds(kinds: Iterable[str] | str, *, allowed: Sequence[str] = ALL_KINDS + ("custom",)) -> tuple[str, ...]:
    """``"syntactic,genetic"`` or a sequence -> validated tuple of distance types."""
    items = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if str(k).strip()]
    if not items:
        raise LayerscopeError("no distance types given")
    for kind in items:
        if kind not in allowed:
            raise _unknown_kind(kind, allowed)
    return tuple(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------
# public API


def distance(a: str, b: str, kind: str = "syntactic", *, source: str = "lang2vec",
             codes: str = "most-features", missing_as: str = "nan") -> float:
    """Distance of type ``kind`` from language ``a`` to language ``b`` (NaN if undefined).

    Codes are ISO 639-1, ISO 639-3 or FLORES, read with the code table ``codes``. Genetic
    distance is asymmetric (normalised by ``b``'s lineage depth, as URIEL does); every other
    type is symmetric. ``missing_as``: ``nan`` or ``uriel`` (see the module docstring).
    """
    check_kinds([kind])
    return float(get_source(source, codes=codes, missing_as=missing_as).distance(a, b, kind))


def distances(
    pivot: str,
    targets: Iterable[str],
    kinds: Iterable[str] | str = DISTANCE_KINDS,
    *,
    source: str = "lang2vec",
    feature_table: pd.DataFrame | str | Path | None = None,
    codes: str = "most-features",
    missing_as: str = "nan",
) -> pd.DataFrame:
    """Distances from ``pivot`` to each target: one row per target, one column per type.

    Returns a DataFrame indexed by language label (``lang``) with a column ``uriel_code``
    (the ISO 639-3 code used under the code table ``codes``, empty if URIEL lacks the
    language) and one float column per distance type; NaN where the data is missing (see
    :func:`missing`; ``missing_as="uriel"`` fills as URIEL does). With ``feature_table`` (a CSV
    path or a DataFrame from :func:`read_feature_table`) a ``custom`` column is added.
    """
    kinds = check_kinds(kinds)
    backend = get_source(source, codes=codes, missing_as=missing_as) if any(k != "custom" for k in kinds) else None
    table_source = FeatureTableSource(feature_table) if feature_table is not None else None
    if "custom" in kinds and table_source is None:
        raise LayerscopeError("the custom distance needs a feature table (--feature-table CSV)")
    pivot_label = label(pivot)
    rows = {}
    for target in targets:
        key = label(target)
        row = {"uriel_code": uriel_code(target, codes) or ""}
        for kind in kinds:
            src = table_source if kind == "custom" else backend
            row[kind] = src.distance(pivot, target, kind)
        rows[key] = row
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["uriel_code", *kinds])
    frame.index.name = "lang"
    frame.attrs["pivot"] = pivot_label
    frame.attrs["pivot_code"] = uriel_code(pivot, codes) or ""
    frame.attrs["source"] = source
    frame.attrs["codes"] = codes
    frame.attrs["missing_as"] = missing_as
    return frame


def missing(pivot: str, frame: pd.DataFrame, *, source: str = "lang2vec",
            feature_table: pd.DataFrame | str | Path | None = None, codes: str = "most-features",
            missing_as: str = "nan") -> list[str]:
    """One line per language lacking data behind the NaN cells of a :func:`distances` table."""
    backend = (get_source(source, codes=codes, missing_as=missing_as)
               if any(c not in ("uriel_code", "custom") for c in frame.columns) else None)
    table_source = FeatureTableSource(feature_table) if feature_table is not None else None
    lines = []
    for lang, row in frame.iterrows():
        lacking: dict[tuple, list[str]] = {}
        undefined: list[str] = []
        for kind in frame.columns:
            if kind == "uriel_code" or not pd.isna(row[kind]):
                continue
            src = table_source if kind == "custom" else backend
            if src is None:
                continue
            culprits = [c for c in dict.fromkeys([pivot, str(lang)]) if math.isnan(src.distance(c, c, kind))]
            if not culprits:
                undefined.append(kind)
            for code in culprits:
                lacking.setdefault((id(src), code), [src, code]).append(kind)
        for src, code, *kinds in lacking.values():
            lines.append(src.why_missing(code, kinds))
        if undefined:
            lines.append(f"{lang}: {', '.join(undefined)} undefined (no features shared with {label(pivot)})")
    return list(dict.fromkeys(lines))


def distance_matrix(langs: Sequence[str], kind: str = "syntactic", *, source: str = "lang2vec",
                    codes: str = "most-features", missing_as: str = "nan") -> pd.DataFrame:
    """Pairwise distances of one type: entry (i, j) = distance(langs[i], langs[j])."""
    check_kinds([kind])
    backend = get_source(source, codes=codes, missing_as=missing_as)
    labels = [label(code) for code in langs]
    values = np.array([[backend.distance(a, b, kind) for b in langs] for a in langs], dtype=np.float64)
    return pd.DataFrame(values, index=pd.Index(labels, name="lang"), columns=labels)


def read_feature_table(path: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A user CSV of per-language features: a language column, then numeric columns.

    The language column is ``lang`` (or ``language``, ``code``, ``iso``, or the first column);
    codes are normalised like everywhere else. Returns a float DataFrame indexed by label
    (``lang``); such a DataFrame may be passed back in.
    """
    if isinstance(path, pd.DataFrame):
        frame, source = path.copy(), "feature table"
        if frame.index.name == "lang":  # already read: indexed by language
            frame = frame.reset_index()
    else:
        source = Path(path)
        frame = read_user_csv(source, what="feature table")
    columns = {c.lower(): c for c in frame.columns}
    lang_col = next((columns[c] for c in ("lang", "language", "code", "iso") if c in columns), frame.columns[0])
    if len(frame.columns) < 2:
        raise LayerscopeError("a feature table needs a language column and at least one feature column",
                              source=source)
    codes = [_safe_label(str(code)) for code in frame[lang_col]]
    frame = frame.drop(columns=[lang_col])
    for column in frame.columns:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() & frame[column].notna()
        if bad.any():
            value = frame[column][bad].iloc[0]
            raise LayerscopeError(f"column {column!r} is not numeric (value {value!r})", source=source)
        frame[column] = numeric.astype(float)
    frame.index = pd.Index(codes, name="lang")
    if frame.index.duplicated().any():
        dup = sorted(set(frame.index[frame.index.duplicated()]))
        raise LayerscopeError(f"language listed twice: {', '.join(dup)}", source=source)
    return frame
