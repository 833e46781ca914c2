"""Tests for layerscope.stats.typology: URIEL distances from lang2vec's features.

Mathematics: d(a, a) = 0, values in [0, 1], symmetry for every type but URIEL's genetic
distance (whose asymmetry is checked against its formula), closed-form angular and
great-circle values. Data: language-code resolution (macrolanguages), missing features
reported as NaN, and agreement with the published full-precision LangRank distances
(tolerance 0.01: the reference has 4 decimals and an older URIEL release).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.cli import main
from layerscope.errors import LayerscopeError
from layerscope.stats import typology, uriel

LANGS = ["en", "fr", "de", "ja", "ar", "zh", "hi", "fi", "tr", "sw", "eu", "ko", "vi", "ru"]
SYMMETRIC = ("syntactic", "phonological", "inventory", "featural", "geographic", "genetic_sym")


# --- pure kernels ------------------------------------------------------------------------------


def test_angular_distance_closed_forms():
    assert typology.angular_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert typology.angular_distance(np.array([1.0, 1.0]), np.array([2.0, 2.0])) == pytest.approx(0.0, abs=1e-12)
    # cos = 1/sqrt(2): angle π/4, so 2·(π/4)/π = 0.5 — and not 1 − cos
    assert typology.angular_distance(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)
    assert math.isnan(typology.angular_distance(np.zeros(3), np.ones(3)))
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        typology.angular_distance(np.ones(2), np.ones(3))


@given(st.lists(st.integers(0, 1), min_size=6, max_size=6), st.lists(st.integers(0, 1), min_size=6, max_size=6))
@settings(max_examples=60, deadline=None)
def test_angular_distance_binary_vectors_in_unit_interval(x, y):
    d = typology.angular_distance(np.array(x, float), np.array(y, float))
    if not any(x) or not any(y):
        assert math.isnan(d)
    else:
        assert 0.0 <= d <= 1.0
        assert d == pytest.approx(typology.angular_distance(np.array(y, float), np.array(x, float)))


def test_geographic_distance_closed_forms():
    assert typology.geographic_distance((0, 0), (0, 180)) == pytest.approx(1.0)  # antipodes
    assert typology.geographic_distance((0, 0), (0, 90)) == pytest.approx(0.5)
    assert typology.geographic_distance((90, 0), (-90, 0)) == pytest.approx(1.0)
    assert typology.geographic_distance((48.0, 2.0), (48.0, 2.0)) == 0.0


def test_lineage_distance_formula():
    a, b = frozenset({"IE", "Indo-Iranian", "Indo-Aryan", "X"}), frozenset({"IE", "Indo-Iranian", "Indo-Aryan"})
    assert typology.lineage_distance(a, b, same=False) == pytest.approx(1 - 3 / 4)   # |B| + 1 = 4
    assert typology.lineage_distance(b, a, same=False) == pytest.approx(1 - 3 / 5)   # |A| + 1 = 5
    assert typology.lineage_distance(a, b, same=False, symmetric=True) == pytest.approx(1 - 3 / 5)
    assert typology.lineage_distance(a, a, same=True) == 0.0


# --- distances from lang2vec -------------------------------------------------------------------


@pytest.mark.parametrize("kind", typology.ALL_KINDS)
def test_self_distance_is_zero(kind):
    for code in ["en", "fr", "ja", "ar", "zh"]:
        assert typology.distance(code, code, kind) == pytest.approx(0.0, abs=1e-12)


def test_range_and_symmetry_over_many_pairs():
    for a, b in itertools.combinations(LANGS, 2):
        for kind in typology.ALL_KINDS:
            d = typology.distance(a, b, kind)
            if math.isnan(d):
                continue
            assert 0.0 <= d <= 1.0, (a, b, kind, d)
            if kind in SYMMETRIC:
                assert d == pytest.approx(typology.distance(b, a, kind), abs=1e-9), (a, b, kind)


def test_genetic_is_asymmetric_as_urie_defines_it():
    # Bengali and Marathi share 3 Glottolog ancestors; Bengali has 7, Marathi 6
    assert len(typology.ancestors("ben")) == 7 and len(typology.ancestors("mar")) == 6
    assert len(typology.ancestors("ben") & typology.ancestors("mar")) == 3
    assert typology.distance("ben", "mar", "genetic") == pytest.approx(1 - 3 / 7)  # depth of the 2nd
    assert typology.distance("mar", "ben", "genetic") == pytest.approx(1 - 3 / 8)
    assert typology.distance("mar", "ben", "genetic_sym") == pytest.approx(1 - 3 / 8)
    assert typology.distance("ben", "mar", "genetic_sym") == pytest.approx(1 - 3 / 8)


def test_featural_uses_max_over_sources_with_missing_as_zero():
    x = typology.feature_vector("en", "featural")
    assert x.shape == (289,) and set(np.unique(x)) <= {0.0, 1.0}
    syn = typology.feature_vector("en", "syntactic")
    expected = typology.angular_distance(syn, typology.feature_vector("fr", "syntactic"))
    assert typology.distance("en", "fr", "syntactic") == pytest.approx(expected)


def test_coordinates_recovered_from_geocoord_features():
    lat, lon = typology.coordinates("en")
    assert abs(lat - 53) < 1 and abs(lon - (-1)) < 1
    lat, lon = typology.coordinates("ja")
    assert abs(lat - 35) < 1 and abs(lon - 135) < 1
    # the recovered point reproduces the anchor distances it came from
    data = uriel._uriel()
    values = data.geo[data.geo_index["jpn"]]
    fitted = uriel.central_angle(*np.radians([lat, lon]), data.anchors[:, 0], data.anchors[:, 1]) / math.pi
    assert np.max(np.abs(fitted - values)) < 0.005


@pytest.mark.parametrize("code, expected", [
    ("zh", "zho"), ("zho", "zho"), ("cmn", "cmn"), ("ar", "ara"), ("fa", "fas"), ("et", "est"),
    ("ms", "msa"), ("no", "nor"), ("nb", "nor"), ("lv", "lav"), ("az", "aze"), ("fra_Latn", "fra"), ("ckb", "ckb"),
])
def test_language_codes(code, expected):
    assert typology.uriel_code(code) == expected


def test_labels_and_unknown_codes():
    assert typology.label("fra") == "fr" and typology.label("cmn") == "cmn" and typology.label("zho") == "zh"
    with pytest.raises(LayerscopeError, match="unknown language code 'xx'"):
        typology.distance("en", "xx")
    with pytest.raises(LayerscopeError, match="did you mean syntactic"):
        typology.distance("en", "fr", "syntax")


def test_missing_features_are_reported_not_guessed():
    table = typology.distances("en", ["fr", "sk", "it"])
    assert math.isnan(table.loc["sk", "syntactic"]) and math.isnan(table.loc["it", "phonological"])
    assert table.loc["sk", "genetic"] == pytest.approx(1 - 1 / 6)  # genetic and geographic still defined
    lines = typology.missing("en", table)
    assert any(line.startswith("sk (slk): no syntactic") for line in lines)
    assert any(line.startswith("it (ita): no phonological") for line in lines)
    assert not any(line.startswith("fr") for line in lines)


def test_distances_table_layout():
    table = typology.distances("en", ["fr", "ja"], "syntactic,genetic")
    assert list(table.columns) == ["uriel_code", "syntactic", "genetic"]
    assert list(table.index) == ["fr", "ja"] and table.index.name == "lang"
    matrix = typology.distance_matrix(["en", "fr", "ja"], "geographic")
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T) and np.allclose(np.diag(matrix), 0)


def test_feature_table_source(tmp_path):
    path = tmp_path / "features.csv"
    pd.DataFrame({"lang": ["en", "fra", "ja"], "f1": [1, 1, 0], "f2": [0, 1, 1]}).to_csv(path, index=False)
    table = typology.distances("en", ["fr", "ja"], ["custom"], feature_table=path)
    assert table.loc["fr", "custom"] == pytest.approx(0.5) and table.loc["ja", "custom"] == pytest.approx(1.0)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"lang": ["en"], "f1": ["high"]}).to_csv(bad, index=False)
    with pytest.raises(LayerscopeError, match=r"bad\.csv: column 'f1' is not numeric"):
        typology.read_feature_table(bad)


def test_unknown_source_suggests():
    with pytest.raises(LayerscopeError, match="did you mean urielplus"):
        typology.get_source("urielpls")


def test_urielplus_source_when_installed():
    pytest.importorskip("urielplus")
    value = typology.distance("en", "fr", "syntactic", source="urielplus")
    assert 0.0 <= value <= 1.0


# --- against the published full-precision distances ---------------------------------------------


@pytest.mark.shared_data
def test_agreement_with_langrank_reference(shared_data):
    reference = pd.read_csv(shared_data / "uriel_reference" / "langrank_el.csv")
    # transfer languages the reference's URIEL lacked: geographic 1.0 to everything, filled values
    absent = {lang for lang, g in reference.groupby("transfer_lang")["geographic"] if (g == 1.0).all()}
    assert absent == {"ara", "aze", "fas", "msa", "orm", "swa", "uzb"}
    usable = reference[~reference["transfer_lang"].isin(absent)]
    pairs = list(zip(usable["task_lang"], usable["transfer_lang"]))
    geo = np.array([typology.distance(a, b, "geographic") for a, b in pairs])
    assert np.max(np.abs(geo - usable["geographic"])) < 0.002
    for kind, share in (("syntactic", 0.97), ("featural", 0.98), ("genetic", 0.97), ("inventory", 0.97)):
        ours = np.array([typology.distance(a, b, kind) for a, b in pairs])
        ok = np.isfinite(ours)
        within = np.mean(np.abs(ours[ok] - usable[kind].to_numpy()[ok]) <= 0.01)
        assert within >= share, (kind, within)
    row = reference[(reference["task_lang"] == "ben") & (reference["transfer_lang"] == "hin")].iloc[0]
    assert typology.distance("ben", "hin", "genetic") == pytest.approx(row["genetic"], abs=1e-4)
    assert typology.distance("ben", "hin", "syntactic") == pytest.approx(row["syntactic"], abs=1e-3)


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_prints_table(capsys):
    assert main(["typology", "en", "fr", "ja", "ar", "sk"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("distances from en (eng)")
    assert any(line.startswith("fr ") and "fra" in line for line in lines)
    assert any(line.startswith("missing: sk (slk)") for line in lines)


def test_cli_matrix_and_csv(tmp_path, capsys):
    path = tmp_path / "d.csv"
    assert main(["typology", "en", "fr", "--matrix", "--kinds", "genetic", "--csv", str(path)]) == 0
    assert "genetic (row → column)" in capsys.readouterr().out
    assert pd.read_csv(path)["kind"].tolist() == ["genetic", "genetic"]


@pytest.mark.parametrize("argv, needle", [
    (["typology", "en", "xx"], "unknown language code 'xx'"),
    (["typology", "en"], "at least one target"),
    (["typology", "en", "fr", "--kinds", "syntax"], "did you mean syntactic"),
    (["typology", "en", "fr", "--kinds", "custom"], "feature table"),
])
def test_cli_errors_exit_2_in_one_line(argv, needle, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("layerscope: error:") and err.count("\n") == 1 and needle in err


# --- code tables and URIEL's handling of missing features ---------------------------------------


def _independent_vector(code3: str, prefixes: tuple[str, ...]) -> np.ndarray:
    """URIEL's feature vector read straight from lang2vec's features.npz: max over sources,
    unobserved (-1 in every source) as 0."""
    with np.load(uriel.lang2vec_data_dir() / "features.npz") as z:
        row = list(z["langs"]).index(code3)
        columns = [i for i, name in enumerate(z["feats"]) if str(name).startswith(prefixes)]
        best = z["data"][row][columns].max(axis=1).astype(np.float64)
    return np.where(best < 0, 0.0, best)


def _uriel_angle(x: np.ndarray, y: np.ndarray) -> float:
    return 2 * np.arccos(np.clip(x @ y / np.linalg.norm(x) / np.linalg.norm(y), -1, 1)) / np.pi


@pytest.mark.parametrize("code, published, most", [
    ("ar", "arb", "ara"), ("zh", "cmn", "zho"), ("no", "nob", "nor"), ("fa", "fas", "fas"), ("lv", "lav", "lav"),
    ("et", "est", "est"), ("fr", "fra", "fra"), ("ara", "ara", "ara"),  # an explicit ISO 639-3 code is kept
])
def test_published_code_table(code, published, most):
    assert typology.uriel_code(code, "published") == published
    assert typology.uriel_code(code) == most
    with pytest.raises(LayerscopeError, match="unknown code table"):
        typology.uriel_code(code, "newest")


def test_published_codes_change_the_distances_as_in_the_issue():
    featural = ("S_", "P_", "INV_")
    en = _independent_vector("eng", featural)
    published = typology.distance("en", "ar", "featural", codes="published")
    assert published == pytest.approx(_uriel_angle(en, _independent_vector("arb", featural)), abs=1e-9)
    assert published == pytest.approx(0.799, abs=5e-4)
    assert typology.distance("en", "ar", "featural") == pytest.approx(0.502, abs=1e-3)
    inventory = typology.distances("en", ["zh"], "inventory", codes="published")
    assert inventory.loc["zh", "uriel_code"] == "cmn" and inventory.loc["zh", "inventory"] == pytest.approx(0.593, abs=1e-3)


def test_missing_as_uriel_is_the_distance_to_an_all_ones_vector():
    assert math.isnan(typology.distance("en", "sk", "syntactic"))
    filled = typology.distance("en", "sk", "syntactic", missing_as="uriel")
    en = _independent_vector("eng", ("S_",))
    assert filled == pytest.approx(_uriel_angle(en, np.ones_like(en)), abs=1e-9)
    assert typology.distance("en", "fr", "syntactic", missing_as="uriel") == typology.distance("en", "fr", "syntactic")
    table = typology.distances("en", ["sk", "fr"], missing_as="uriel")
    assert not table.drop(columns="uriel_code").isna().any().any()
    with pytest.raises(LayerscopeError, match="unknown handling of missing features"):
        typology.distance("en", "sk", "syntactic", missing_as="zero")


@pytest.mark.shared_data
def test_missing_as_uriel_reproduces_the_reference_fill(shared_data):
    """lang2vec 1.1.2 has no Italian phonology; the LangRank reference's ben–ita is URIEL's fill."""
    reference = pd.read_csv(shared_data / "uriel_reference" / "langrank_el.csv")
    row = reference[(reference["task_lang"] == "ben") & (reference["transfer_lang"] == "ita")].iloc[0]
    assert math.isnan(typology.distance("ben", "ita", "phonological"))
    assert typology.distance("ben", "ita", "phonological", missing_as="uriel") == pytest.approx(
        row["phonological"], abs=1e-3)


def test_cli_codes_option(capsys):
    assert main(["typology", "en", "ar", "zh", "--codes", "published"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "codes published" in lines[0]
    assert any(line.startswith("ar ") and "arb" in line for line in lines)
    assert any(line.startswith("zh ") and "cmn" in line for line in lines)
    assert main(["typology", "en", "ar", "--matrix", "--kinds", "syntactic", "--codes", "published"]) == 0
    assert "ar=arb" in capsys.readouterr().out
