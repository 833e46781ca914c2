"""URIEL's data as lang2vec ships it: feature vectors, Glottolog ancestors, coordinates, language
codes, and the distance formulas (angular, lineage, great-circle).

The definitions and the choice of codes are described in :mod:`layerscope.stats.typology`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..corpora import languages
from ..errors import LayerscopeError

DISTANCE_KINDS = ("syntactic", "phonological", "inventory", "featural", "genetic", "geographic")
EXTRA_KINDS = ("genetic_sym",)
ALL_KINDS = DISTANCE_KINDS + EXTRA_KINDS
EARTH_RADIUS_KM = 6371.0
_PREFIXES = {
    "syntactic": ("S_",),
    "phonological": ("P_",),
    "inventory": ("INV_",),
    "featural": ("S_", "P_", "INV_"),
}
LANG2VEC_VERSION = "lang2vec 1.1.2"

# Which ISO 639-3 code a canonical code means in URIEL. "most-features": the candidate code with
# the most observed features (in lang2vec 1.1.2 always the macrolanguage); "published": the
# individual languages the published AlignFreeze regression used, the rest as most-features.
CODE_TABLES: dict[str, dict[str, str]] = {
    "most-features": {},
    "published": {"ar": "arb", "zh": "cmn", "no": "nob", "fa": "fas", "lv": "lav"},
}
MISSING_AS = ("nan", "uriel")


def check_codes(codes: str) -> str:
    if codes not in CODE_TABLES:
        raise LayerscopeError(f"unknown code table {codes!r}: use one of {', '.join(CODE_TABLES)}")
    return codes


def check_missing_as(missing_as: str) -> str:
    if missing_as not in MISSING_AS:
        raise LayerscopeError(f"unknown handling of missing features {missing_as!r}: use one of {', '.join(MISSING_AS)}")
    return missing_as


# ---------------------------------------------------------------------------------------------
# pure kernels


def angular_distance(x: np.ndarray, y: np.ndarray) -> float:
    """URIEL's angular distance ``2·arccos(cos(x, y))/π`` of two vectors of shape (k,).

    In [0, 1] for non-negative vectors (URIEL's binary features). NaN when either vector is all
    zeros (no angle). The angle is computed in float64 as ``2·atan2(‖x̂ − ŷ‖, ‖x̂ + ŷ‖)``, which
    equals ``arccos(cos)`` but stays exact for nearly parallel vectors, where arccos loses half
    its digits (identical vectors give 0, not 1e-8; float32 arccos gives the 0.0002 seen in
    published tables).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"angular_distance needs two vectors of equal shape (k,), got {x.shape} and {y.shape}")
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0.0 or ny == 0.0:
        return math.nan
    ux, uy = x / nx, y / ny
    angle = 2.0 * math.atan2(float(np.linalg.norm(ux - uy)), float(np.linalg.norm(ux + uy)))
    return 2.0 * angle / math.pi


def central_angle(lat1, lon1, lat2, lon2):
    """Great-circle central angle in radians between points given in radians (haversine)."""
    s = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2.0 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0)))


def geographic_distance(coord_a: tuple[float, float], coord_b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points in degrees over π·6371 km, in [0, 1]."""
    lat1, lon1, lat2, lon2 = np.radians([coord_a[0], coord_a[1], coord_b[0], coord_b[1]])
    km = EARTH_RADIUS_KM * float(central_angle(lat1, lon1, lat2, lon2))
    return km / (math.pi * EARTH_RADIUS_KM)


def lineage_distance(ancestors_a: frozenset, ancestors_b: frozenset, *, same: bool, symmetric: bool = False) -> float:
    """``1 − |A⁺ ∩ B⁺| / |B⁺|`` with ``X⁺`` = ancestors of X plus X itself (URIEL's genetic).

    ``symmetric`` divides by the larger of ``|A⁺|`` and ``|B⁺|`` instead of ``|B⁺|``.
    """
    shared = len(ancestors_a & ancestors_b) + (1 if same else 0)
    depth = max(len(ancestors_a), len(ancestors_b)) if symmetric else len(ancestors_b)
    return 1.0 - shared / (depth + 1)


# ---------------------------------------------------------------------------------------------
# lang2vec data


_LANG2VEC_FILES = ("features.npz", "family_features.npz", "geocoord_features.npz")


def lang2vec_data_dir() -> Path:
    """The ``data/`` folder of the installed lang2vec distribution (found without importing it).

    Looked up through the distribution's record of installed files rather than the import
    system: lang2vec also installs a script ``bin/lang2vec.py``, and a console script runs with
    its ``bin/`` first on ``sys.path``, so the name ``lang2vec`` resolves to that script there.
    """
    try:
        dist = importlib.metadata.distribution("lang2vec")
    except importlib.metadata.PackageNotFoundError:
        raise LayerscopeError("typology needs the lang2vec package: pip install 'lang2vec>=1.1.2' 'setuptools<81'") from None
    recorded = [f for f in dist.files or () if f.parts[-3:] == ("lang2vec", "data", _LANG2VEC_FILES[0])]
    if recorded:
        directory = Path(dist.locate_file(recorded[0])).resolve().parent
    else:  # no RECORD (some system installs): the package folder beside the metadata
        directory = Path(dist.locate_file("lang2vec/data"))
    for name in _LANG2VEC_FILES:
        if not (directory / name).is_file():
            raise LayerscopeError(f"lang2vec installation lacks {name}; reinstall lang2vec", source=directory)
    return directory


@dataclass(frozen=True)
class _Uriel:
    index: dict                 # ISO 639-3 code -> row
    feats: np.ndarray           # (289,) feature names of features.npz
    typo: np.ndarray            # (n_langs, 289) float64, max over sources, missing -> 0
    observed: np.ndarray        # (n_langs, 289) bool, observed in at least one source
    family_index: dict          # code -> row of family_features.npz
    family: np.ndarray          # (n_langs, n_families) bool
    family_names: np.ndarray
    geo_index: dict
    geo: np.ndarray             # (n_langs, 299) float64 normalised distances to anchors, -1 missing
    anchors: np.ndarray         # (299, 2) anchor (lat, lon) in radians


@lru_cache(maxsize=1)
def _uriel() -> _Uriel:
    directory = lang2vec_data_dir()
    with np.load(directory / "features.npz") as z:
        data = z["data"]  # (n_langs, n_feats, n_sources) float32 in {-1, 0, 1}
        best = data.max(axis=2)
        feats = np.asarray(z["feats"]).astype(str)
        index = {str(code): i for i, code in enumerate(z["langs"])}
    observed = best >= 0
    typo = np.where(observed, best, 0.0).astype(np.float64)
    with np.load(directory / "family_features.npz") as z:
        family = z["data"][:, :, 0] > 0
        family_names = np.asarray(z["feats"]).astype(str)
        family_index = {str(code): i for i, code in enumerate(z["langs"])}
    with np.load(directory / "geocoord_features.npz") as z:
        geo = z["data"][:, :, 0].astype(np.float64)
        geo_index = {str(code): i for i, code in enumerate(z["langs"])}
        anchor_deg = np.array([[float(v) for v in str(name)[3:].split("_")] for name in z["feats"]])
    return _Uriel(index, feats, typo, observed, family_index, family, family_names, geo_index, geo,
                  np.radians(anchor_deg))


@lru_cache(maxsize=8)
def _columns(kind: str) -> np.ndarray:
    feats = _uriel().feats
    return np.array([i for i, name in enumerate(feats) if name.startswith(_PREFIXES[kind])])


def uriel_languages() -> frozenset[str]:
    """ISO 639-3 codes that lang2vec's URIEL data has rows for."""
    return frozenset(_uriel().index)


def feature_vector(code: str, kind: str, *, codes: str = "most-features") -> np.ndarray:
    """URIEL feature vector of a language, shape (k,): max over sources, missing as 0.

    ``kind`` is syntactic, phonological, inventory or featural.
    """
    if kind not in _PREFIXES:
        raise LayerscopeError(f"no feature vector for {kind!r}: one of {', '.join(_PREFIXES)}")
    code3 = _require(code, codes)
    return _uriel().typo[_uriel().index[code3], _columns(kind)].copy()


def observed_features(code: str, kind: str) -> int:
    """How many features of ``kind`` URIEL has observed (0 or 1) for the language."""
    code3 = _require(code)
    return int(_uriel().observed[_uriel().index[code3], _columns(kind)].sum())


def ancestors(code: str) -> frozenset[str]:
    """Glottolog ancestors of a language (URIEL family features), without the language itself."""
    code3 = _require(code)
    data = _uriel()
    row = data.family_index.get(code3)
    if row is None:
        return frozenset()
    return frozenset(data.family_names[data.family[row]].tolist())


@lru_cache(maxsize=4096)
def coordinates(code: str) -> tuple[float, float]:
    """(latitude, longitude) in degrees recovered from URIEL's geocoord features.

    Each ``GC_<lat>_<lon>`` feature is the great-circle distance to that anchor over π·6371 km;
    the point whose distances fit them best (least squares, started at the nearest anchor) is
    returned. Anchor positions are whole degrees and values have 4 decimals, so the recovered
    point is good to about 0.5° (residuals ≤ 0.004, i.e. ≤ 80 km).
    """
    from scipy.optimize import least_squares

    code3 = _require(code)
    data = _uriel()
    row = data.geo_index.get(code3)
    values = data.geo[row] if row is not None else None
    if values is None or np.any(values < 0):
        raise LayerscopeError(f"URIEL has no geographic features for {code3}", source=code)
    lat_a, lon_a = data.anchors[:, 0], data.anchors[:, 1]
    start = data.anchors[int(np.argmin(values))]

    def residual(p):
        return central_angle(p[0], p[1], lat_a, lon_a) / math.pi - values

    fit = least_squares(residual, start, method="lm")
    lat, lon = float(fit.x[0]), float(fit.x[1])
    # bring the solution back to lat in [-90, 90], lon in [-180, 180)
    lat = (lat + math.pi) % (2 * math.pi) - math.pi
    if abs(lat) > math.pi / 2:
        lat = math.copysign(math.pi, lat) - lat
        lon += math.pi
    lon = (lon + math.pi) % (2 * math.pi) - math.pi
    return math.degrees(lat), math.degrees(lon)


# ---------------------------------------------------------------------------------------------
# language codes


def _candidates(canonical: str) -> list[str]:
    lang = languages.get(canonical)
    codes = [lang.iso3, lang.flores.split("_")[0], *lang.aliases]
    out: list[str] = []
    for code in codes:
        code = code.lower()
        if len(code) == 3 and code.isalpha() and code not in out:
            out.append(code)
    return out


def _richness(code3: str) -> int:
    data = _uriel()
    return int(data.observed[data.index[code3]].sum())


@lru_cache(maxsize=1024)
def _resolve(code: str, codes: str = "most-features") -> tuple[str, str | None]:
    """(label, ISO 639-3 code in URIEL or None) for a user-given code under a code table."""
    if not isinstance(code, str) or not code.strip():
        raise LayerscopeError(f"empty language code {code!r}")
    raw = code.strip().lower()
    known = uriel_languages()
    canonical = languages.normalize(raw) if languages.is_known(raw) else None
    if canonical is not None:
        present = [c for c in _candidates(canonical) if c in known]
        default = max(present, key=_richness) if present else None  # max keeps the first on ties
        chosen = CODE_TABLES[check_codes(codes)].get(canonical)
        if chosen is not None and chosen in known:
            default = chosen
        if raw in known and raw != default:
            return raw, raw  # an explicit ISO 639-3 code, e.g. cmn rather than zho
        return canonical, default
    if len(raw) == 3 and raw in known:
        return raw, raw
    near = difflib.get_close_matches(raw, sorted(set(languages.language_table())), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise LayerscopeError(
        f"unknown language code {code!r}: not a language layerscope knows and not an ISO 639-3 code in URIEL{hint}"
    )


def uriel_code(code: str, codes: str = "most-features") -> str | None:
    """The ISO 639-3 code used for ``code`` in URIEL under the code table ``codes`` (see
    :data:`CODE_TABLES`), or None if URIEL lacks the language."""
    return _resolve(code, codes)[1]


def label(code: str) -> str:
    """The code shown in tables: the canonical code, or the ISO 639-3 code given explicitly."""
    return _resolve(code)[0]


def _require(code: str, codes: str = "most-features") -> str:
    code3 = uriel_code(code, codes)
    if code3 is None:
        raise LayerscopeError(f"URIEL ({LANG2VEC_VERSION}) has no data for this language", source=code)
    return code3


# ---------------------------------------------------------------------------------------------
# sources


def _safe_label(code: str) -> str:
    try:
        return label(code)
    except LayerscopeError:
        return str(code).strip().lower()

