"""Parallel corpora readers, language codes, and their error messages."""

from __future__ import annotations

import logging

import pytest

from layerscope.corpora import languages
from layerscope.corpora import read_corpus
from layerscope.errors import LayerscopeError

from conftest import synthetic_parallel, write_tsv


@pytest.mark.parametrize("code", ["fr", "fra", "fre", "fra_Latn", "French", "FR"])
def test_codes_normalise_to_one_language(code):
    assert languages.normalize(code) == "fr"


@pytest.mark.parametrize("code, expected", [("zho_Hans", "zh"), ("cmn", "zh"), ("arb_Arab", "ar"), ("pes", "fa"),
                                            ("nob_Latn", "no"), ("ekk", "et"), ("lvs_Latn", "lv")])
def test_macrolanguage_and_flores_codes(code, expected):
    assert languages.normalize(code) == expected


def test_unknown_code_suggests():
    with pytest.raises(LayerscopeError, match="unknown language code 'frx'.*did you mean"):
        languages.normalize("frx")


def test_duplicate_languages_refused():
    with pytest.raises(LayerscopeError, match="listed twice: fr"):
        languages.parse_language_list("fr,de,fra")


def test_every_table_row_is_consistent():
    table = languages.language_table()
    assert len(table) >= 60
    for code, lang in table.items():
        assert languages.normalize(lang.iso3) == code
        assert languages.normalize(lang.flores) == code


def _flores_dir(tmp_path, columns, ext="devtest"):
    names = {"en": "eng_Latn", "fr": "fra_Latn", "de": "deu_Latn", "ja": "jpn_Jpan"}
    for lang, sentences in columns.items():
        (tmp_path / f"{names[lang]}.{ext}").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return tmp_path


def test_flores_directory(tmp_path):
    columns = synthetic_parallel(12)
    corpus = read_corpus(f"flores:{_flores_dir(tmp_path, columns)}", languages_="fr,jpn_Jpan")
    assert corpus.languages == ["fr", "ja"] and corpus.pivot == "en" and corpus.multiway
    assert corpus.targets["ja"] == columns["ja"]
    assert corpus.pivot_sentences["fr"] is corpus.pivot_sentences["ja"]  # encoded once
    assert corpus.head(5).sizes() == {"fr": 5, "ja": 5}


def test_unequal_counts_name_the_file(tmp_path):
    columns = synthetic_parallel(12)
    columns["de"] = columns["de"][:-2]
    directory = _flores_dir(tmp_path, columns)
    with pytest.raises(LayerscopeError) as info:
        read_corpus(f"flores:{directory}")
    assert "deu_Latn.devtest" in str(info.value) and "10 sentences" in str(info.value)


def test_invalid_utf8_names_file_and_line(tmp_path):
    columns = synthetic_parallel(5)
    directory = _flores_dir(tmp_path, columns)
    path = directory / "fra_Latn.devtest"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\n\xff\xfe", 1).replace(b"\n\xff\xfe", b"\xff\xfe\n", 1))
    with pytest.raises(LayerscopeError, match=r"fra_Latn.devtest: invalid UTF-8 at line 1"):
        read_corpus(f"flores:{directory}")


def test_empty_lines_dropped_everywhere_and_long_lines_cut(tmp_path, caplog):
    columns = synthetic_parallel(10)
    columns["fr"][3] = ""
    columns["de"][5] = "x" * 12000
    directory = _flores_dir(tmp_path, columns)
    with caplog.at_level(logging.WARNING):
        corpus = read_corpus(f"flores:{directory}")
    assert corpus.sizes() == {"de": 9, "fr": 9, "ja": 9}
    assert columns["en"][3] not in corpus.pivot_sentences["fr"]
    assert max(len(s) for s in corpus.targets["de"]) == 2000
    assert "cut to 2000" in caplog.text and "empty" in caplog.text


def test_tatoeba_pairs(tmp_path):
    columns = synthetic_parallel(8)
    for lang, iso3 in (("fr", "fra"), ("de", "deu")):
        (tmp_path / f"tatoeba.{iso3}-eng.{iso3}").write_text("\n".join(columns[lang]) + "\n", encoding="utf-8")
        english = columns["en"][::-1] if lang == "de" else columns["en"]
        target = columns[lang][::-1] if lang == "de" else columns[lang]
        (tmp_path / f"tatoeba.{iso3}-eng.{iso3}").write_text("\n".join(target) + "\n", encoding="utf-8")
        (tmp_path / f"tatoeba.{iso3}-eng.eng").write_text("\n".join(english) + "\n", encoding="utf-8")
    corpus = read_corpus(f"tatoeba:{tmp_path}")
    assert set(corpus.languages) == {"fr", "de"} and not corpus.multiway
    assert corpus.pivot_sentences["de"][0] == columns["en"][-1]
    assert corpus.targets["de"][0] == columns["de"][-1]


def test_tatoeba_challenge_layout(tmp_path):
    """Tatoeba-Challenge names its files eng-xxx.eng / eng-xxx.xxx (pivot first)."""
    columns = synthetic_parallel(6)
    (tmp_path / "eng-fra.fra").write_text("\n".join(columns["fr"]) + "\n", encoding="utf-8")
    (tmp_path / "eng-fra.eng").write_text("\n".join(columns["en"]) + "\n", encoding="utf-8")
    (tmp_path / "eng-deu.deu").write_text("\n".join(columns["de"][:5]) + "\n", encoding="utf-8")
    with pytest.raises(LayerscopeError, match="missing its en side eng-deu.eng"):
        read_corpus(f"tatoeba:{tmp_path}")
    (tmp_path / "eng-deu.eng").write_text("\n".join(columns["en"][:5]) + "\n", encoding="utf-8")
    corpus = read_corpus(f"tatoeba:{tmp_path}")
    assert set(corpus.languages) == {"fr", "de"}
    assert corpus.targets["fr"] == columns["fr"] and corpus.pivot_sentences["de"] == columns["en"][:5]


def test_real_tatoeba_challenge_reads(shared_data):
    directory = shared_data / "tatoeba_challenge"
    if not directory.is_dir():
        pytest.skip("no tatoeba_challenge in the shared data")
    corpus = read_corpus(f"tatoeba:{directory}", languages_=["fr", "ja"], limit=50)
    assert set(corpus.languages) == {"fr", "ja"}
    for lang in corpus.languages:
        assert len(corpus.targets[lang]) == len(corpus.pivot_sentences[lang]) == 50


def test_pud_aligned_by_sent_id_not_position(tmp_path):
    def conllu(sentences, order):
        blocks = []
        for i in order:
            words = sentences[i].split() if " " in sentences[i] else [sentences[i]]
            lines = [f"# sent_id = s{i}", f"# text = {sentences[i]}"]
            lines += [f"{k + 1}\t{w}\t_\tX\t_\t_\t0\troot\t_\t_" for k, w in enumerate(words)]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n\n"

    columns = synthetic_parallel(6)
    (tmp_path / "en_pud-ud-test.conllu").write_text(conllu(columns["en"], range(6)), encoding="utf-8")
    (tmp_path / "fr_pud-ud-test.conllu").write_text(conllu(columns["fr"], [5, 4, 3, 2, 1, 0]), encoding="utf-8")
    corpus = read_corpus(f"pud:{tmp_path}")
    assert corpus.targets["fr"] == columns["fr"] and corpus.pivot_sentences["fr"] == columns["en"]
    assert corpus.ids["fr"][0] == "s0"


def test_tsv_and_errors(tmp_path):
    path = write_tsv(tmp_path / "c.tsv", synthetic_parallel(6))
    corpus = read_corpus(f"tsv:{path}", languages_=["de"])
    assert corpus.languages == ["de"]
    with pytest.raises(LayerscopeError, match="no sentences for language"):
        read_corpus(f"tsv:{path}", languages_="ko")
    bad = tmp_path / "bad.tsv"
    bad.write_text("en\tfr\nhello\tbonjour\nonly-one-column\n", encoding="utf-8")
    with pytest.raises(LayerscopeError, match="line 3 has 1 columns"):
        read_corpus(f"tsv:{bad}")
    dup = tmp_path / "dup.tsv"
    dup.write_text("en\tfr\tfra\na\tb\tc\n", encoding="utf-8")
    with pytest.raises(LayerscopeError, match="listed twice"):
        read_corpus(f"tsv:{dup}")


def test_unknown_spec_kind():
    with pytest.raises(LayerscopeError, match="did you mean flores"):
        read_corpus("flores2:/nowhere")


def test_embedded_sample_is_large_and_diverse():
    corpus = read_corpus("sample")
    assert len(corpus.languages) >= 11
    scripts = {languages.get(code).script for code in corpus.languages}
    families = {languages.get(code).family for code in corpus.languages}
    assert len(scripts) >= 6 and len(families) >= 6
    assert min(corpus.sizes().values()) >= 150


def test_real_flores_pud_tatoeba(shared_data):
    flores = read_corpus(f"flores:{shared_data / 'flores200' / 'devtest'}")
    assert len(flores.languages) >= 30 and set(flores.sizes().values()) == {1012}
    pud = read_corpus(f"pud:{shared_data / 'ud' / 'pud'}", languages_="is,fr")
    assert pud.sizes() == {"is": 1000, "fr": 1000}
    tatoeba = read_corpus(f"tatoeba:{shared_data / 'tatoeba_laser'}", languages_="zh,ar")
    assert not tatoeba.multiway and tatoeba.sizes()["zh"] == 1000
