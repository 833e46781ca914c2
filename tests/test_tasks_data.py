"""Task readers, data specs, the task registry and feature building (labels on first sub-tokens)."""

from __future__ import annotations

import sys
import types

import pytest

from layerscope.errors import LayerscopeError
from layerscope.tasks import data, get_task, load_task_data
from layerscope.tasks.features import IGNORE, encode_pairs, encode_spans, encode_tagging
from layerscope.tasks.hub import parse_hf_spec

from conftest import TASK_FIXTURES

FIXTURES = TASK_FIXTURES  # the committed fixtures and the PoS files built at test time

# A hand-made WordPiece vocabulary, so that every sub-token split below is known exactly.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sleep", "##s", "run", "##ning", ".", "a",
         "dog", "is", "paris", "capital", "of", "france", "what", "?", "big", "##ger", "house"]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


# --------------------------------------------------------------------------- readers


def test_conllu_reader_skips_multiword_ranges_and_empty_nodes():
    fr = data.read_conllu_upos(FIXTURES / "pos" / "fr_handmade-test.conllu")
    assert [s.id for s in fr] == ["fr-1", "fr-2", "fr-3"]
    # "au" (lines 3-4) is a range: the syntactic words à + le carry the tags
    assert fr[1].words == ["Il", "va", "à", "le", "parc", "."]
    assert fr[1].labels == ["PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT"]
    de = data.read_conllu_upos(FIXTURES / "pos" / "de_handmade-test.conllu")
    assert de[0].words == ["Der", "Hund", "läuft", "schnell", "."]  # empty node 2.1 "dann" skipped
    assert len(data.read_conllu_upos(FIXTURES / "pos" / "en_handmade-train.conllu", limit=2)) == 2


def test_conllu_reader_errors_name_the_line():
    with pytest.raises(LayerscopeError, match=r"malformed\.conllu: line 4: 8 tab-separated fields"):
        data.read_conllu_upos(FIXTURES / "pos" / "handmade_malformed.conllu")
    with pytest.raises(LayerscopeError, match=r"line 3: unknown UPOS tag 'NOUNN'"):
        data.read_conllu_upos(FIXTURES / "pos" / "handmade_unknown_upos.conllu")
    with pytest.raises(LayerscopeError, match="no such file"):
        data.read_conllu_upos(FIXTURES / "pos" / "missing.conllu")


def test_iob2_reader_both_layouts():
    en = data.read_iob2(FIXTURES / "ner" / "en-train.txt")
    assert len(en) == 4
    assert en[0].words == ["Anna", "Schmidt", "lives", "in", "Paris", "."]  # 'en:' prefixes removed
    assert en[0].labels == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    de = data.read_iob2(FIXTURES / "ner" / "de-test.txt")
    assert [s.words[0] for s in de] == ["Anna", "Die"]  # -DOCSTART- skipped, space separated
    assert data.iob2_label_list(en) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    with pytest.raises(LayerscopeError, match=r"line 2: 'PER' is not an IOB2 tag"):
        data.read_iob2(FIXTURES / "ner" / "bad_tag.txt")


def test_iob2_reader_keeps_a_colon_that_is_not_a_shared_prefix(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("en:Paris\tB-LOC\nde:Film\tO\n", encoding="utf-8")
    assert data.read_iob2(path)[0].words == ["en:Paris", "de:Film"]


def test_nli_reader_header_language_column_and_aliases():
    train = data.read_nli_tsv(FIXTURES / "nli" / "train-en.tsv")
    assert len(train) == 6 and train[1].label == "contradiction" and train[4].hypothesis == "The book is long."
    by_lang = data.read_nli_tsv(FIXTURES / "nli" / "xnli.test.tsv")
    assert sorted(by_lang) == ["de", "fr"]
    assert [e.label for e in by_lang["de"]] == ["entailment", "contradiction"]  # 'contradictory' normalised
    assert by_lang["fr"][0].premise == "Un homme joue de la guitare."
    only_fr = data.read_nli_tsv(FIXTURES / "nli" / "xnli.test.tsv", language="fra")
    assert len(only_fr) == 3
    with pytest.raises(LayerscopeError, match=r"line 2: unknown label 'maybe'"):
        data.read_nli_tsv(FIXTURES / "nli" / "bad_label.tsv")


def test_squad_reader(tmp_path):
    qa = data.read_squad(FIXTURES / "qa" / "train-v1.1.en.json")
    assert [q.id for q in qa] == ["en-1", "en-2", "en-3"]
    assert qa[1].answers == ["about two million", "two million"]
    assert qa[1].context[qa[1].answer_starts[1]:].startswith("two million")
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')
    with pytest.raises(LayerscopeError, match="missing or malformed field 'context'"):
        data.read_squad(bad)
    bad.write_text("{not json")
    with pytest.raises(LayerscopeError, match="invalid JSON at line 1"):
        data.read_squad(bad)


@pytest.mark.parametrize("name, code", [("fr_pud-ud-test.conllu", "fr"), ("xquad.de.json", "de"),
                                        ("test-ja.tsv", "ja"), ("en_ewt-ud-dev.conllu", "en"),
                                        ("malformed.conllu", None), ("train.tsv", None)])
def test_language_from_filename(name, code):
    assert data.language_from_filename(name) == code


# --------------------------------------------------------------------------- specs and registry


def test_registry_aliases_and_unknown_task():
    assert get_task("udpos").name == "pos" and get_task("XQuAD").name == "qa"
    with pytest.raises(LayerscopeError,
                       match=r"unknown task 'nerr': known tasks are pos, ner, nli, qa; did you mean 'ner'"):
        get_task("nerr")


def test_eval_spec_forms():
    pos = get_task("pos")
    directory = load_task_data(pos, FIXTURES / "pos")
    assert sorted(directory.languages) == ["de", "en", "fr"]  # files without a language code are ignored
    listed = load_task_data(pos, f"deu={FIXTURES / 'pos' / 'de_handmade-test.conllu'},"
                                 f"{FIXTURES / 'pos' / 'fr_handmade-test.conllu'}")
    assert listed.languages == ["de", "fr"]
    nli = load_task_data(get_task("nli"), str(FIXTURES / "nli" / "xnli.test.tsv"))
    assert sorted(nli.languages) == ["de", "fr"]
    limited = load_task_data(pos, {"fr": FIXTURES / "pos" / "fr_handmade-test.conllu"}, limit=1)
    assert len(limited.examples["fr"]) == 1
    with pytest.raises(LayerscopeError, match="language fr is given twice"):
        load_task_data(pos, f"{FIXTURES / 'pos' / 'fr_handmade-test.conllu'},"
                            f"fr={FIXTURES / 'pos' / 'de_handmade-test.conllu'}")
    with pytest.raises(LayerscopeError, match="cannot tell the language"):
        load_task_data(pos, FIXTURES / "pos" / "handmade_malformed.conllu")
    with pytest.raises(LayerscopeError, match="no such eval file"):
        load_task_data(pos, "nowhere/fr.conllu")


def test_training_file_without_language_is_the_source_language(tmp_path):
    path = tmp_path / "train.conllu"
    path.write_text((FIXTURES / "pos" / "en_handmade-train.conllu").read_text())
    assert load_task_data(get_task("pos"), path, role="train", default_lang="en").languages == ["en"]


def test_hf_spec_parsing():
    assert parse_hf_spec("hf:en_ewt", get_task("pos"), role="train") == ("universal_dependencies", ["en_ewt"], "train")
    assert parse_hf_spec("hf:fr,de", get_task("nli"), role="eval") == ("facebook/xnli", ["fr", "de"], "test")
    assert parse_hf_spec("hf:de", get_task("qa"), role="eval") == ("google/xquad", ["de"], "validation")
    assert parse_hf_spec("hf:", get_task("qa"), role="train") == ("rajpurkar/squad", ["plain_text"], "train")
    assert parse_hf_spec("hf:org/wikiann:fr@validation", get_task("ner"), role="eval") == \
        ("org/wikiann", ["fr"], "validation")


class _FakeDataset(list):
    def __init__(self, rows, features):
        super().__init__(rows)
        self.features = features


def test_hf_loaders_convert_rows(monkeypatch):
    """The hub loaders with a stand-in ``datasets`` module (no internet in tests)."""
    calls = []
    names = types.SimpleNamespace(feature=types.SimpleNamespace(names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if name == "unimelb-nlp/wikiann":
            return _FakeDataset([{"tokens": ["Anna", "in", "Paris"], "ner_tags": [1, 0, 3]}], {"ner_tags": names})
        if name == "google/xquad":
            return _FakeDataset([{"id": "q", "question": "Wo?", "context": "In Berlin.",
                                  "answers": {"text": ["Berlin"], "answer_start": [3]}}], {})
        if name == "facebook/xnli":
            return _FakeDataset([{"premise": "a", "hypothesis": "b", "label": 2},
                                 {"premise": "c", "hypothesis": "d", "label": -1}], {})
        raise ConnectionError("Couldn't reach the Hugging Face Hub\nmore detail")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    ner = load_task_data(get_task("ner"), "hf:fr,de", role="eval")
    assert ner.languages == ["fr", "de"] and ner.examples["fr"][0].labels == ["B-PER", "O", "B-LOC"]
    qa = load_task_data(get_task("qa"), "hf:de", role="eval")
    assert calls[-1] == ("google/xquad", "xquad.de", "validation") and qa.examples["de"][0].answers == ["Berlin"]
    nli = load_task_data(get_task("nli"), "hf:en", role="train")
    assert [e.label for e in nli.examples["en"]] == ["contradiction"]  # label -1 (no gold) dropped
    with pytest.raises(LayerscopeError, match=r"cannot load universal_dependencies \(en_ewt, split train\) .*"
                                              r"Couldn't reach the Hugging Face Hub; without internet"):
        load_task_data(get_task("pos"), "hf:en_ewt", role="train")


def test_hf_loader_without_datasets_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(LayerscopeError, match="need the datasets package: pip install datasets"):
        load_task_data(get_task("nli"), "hf:en", role="train")


# --------------------------------------------------------------------------- features


def test_tagging_labels_on_first_subtokens(tokenizer):
    sentence = data.TaggedSentence(["The", "cat", "sleeps", "running", "."], ["DET", "NOUN", "VERB", "VERB", "PUNCT"])
    label_to_id = {tag: i for i, tag in enumerate(data.UPOS_TAGS)}
    [feature] = encode_tagging(tokenizer, [sentence], label_to_id, max_length=32)
    tokens = tokenizer.convert_ids_to_tokens(feature.input_ids)
    assert tokens == ["[CLS]", "the", "cat", "sleep", "##s", "run", "##ning", ".", "[SEP]"]
    det, noun, verb, punct = (label_to_id[t] for t in ("DET", "NOUN", "VERB", "PUNCT"))
    assert feature.labels == [IGNORE, det, noun, verb, IGNORE, verb, IGNORE, punct, IGNORE]
    assert feature.words == {1: 0, 2: 1, 3: 2, 5: 3, 7: 4}


def test_long_sentences_are_chunked_on_word_boundaries(tokenizer):
    words = ["The", "cat", "sleeps", "running", ".", "a", "bigger", "house"]
    sentence = data.TaggedSentence(words, ["DET", "NOUN", "VERB", "VERB", "PUNCT", "DET", "ADJ", "NOUN"])
    label_to_id = {tag: i for i, tag in enumerate(data.UPOS_TAGS)}
    features = encode_tagging(tokenizer, [sentence], label_to_id, max_length=7)  # 5 sub-tokens per chunk
    assert all(len(f.input_ids) <= 7 for f in features)
    assert [tokenizer.convert_ids_to_tokens(f.input_ids) for f in features] == [
        ["[CLS]", "the", "cat", "sleep", "##s", "[SEP]"],
        ["[CLS]", "run", "##ning", ".", "a", "[SEP]"],
        ["[CLS]", "big", "##ger", "house", "[SEP]"],
    ]
    covered = sorted(w for f in features for w in f.words.values())
    assert covered == list(range(len(words)))  # every word tagged exactly once


def test_unknown_eval_label_is_an_error(tokenizer):
    sentence = data.TaggedSentence(["Paris"], ["B-MISC"])
    with pytest.raises(LayerscopeError, match=r"fr data, sentence 0: label 'B-MISC' is not among the training labels"):
        encode_tagging(tokenizer, [sentence], {"O": 0, "B-LOC": 1, "I-LOC": 2}, max_length=16, where="fr data")


def test_pair_features(tokenizer):
    [feature] = encode_pairs(tokenizer, [data.PairExample("the cat sleeps", "a dog is running", "neutral")],
                             {"entailment": 0, "neutral": 1, "contradiction": 2}, max_length=32)
    assert tokenizer.convert_ids_to_tokens(feature.input_ids)[:6] == ["[CLS]", "the", "cat", "sleep", "##s", "[SEP]"]
    assert feature.labels == [1]
    assert feature.token_type_ids[:6] == [0] * 6 and feature.token_type_ids[-1] == 1


def test_span_features_answer_positions_and_windows(tokenizer):
    context = "the dog is running. paris is the capital of france."
    example = data.QAExample("q1", "what is the capital of france?", context, ["paris"], [context.index("paris")])
    [feature] = encode_spans(tokenizer, [example], max_length=32, training=True)
    tokens = tokenizer.convert_ids_to_tokens(feature.input_ids)
    start, end = feature.labels
    assert tokens[start] == tokens[end] == "paris" and start == 15
    assert feature.offsets[start] == (20, 25) and feature.offsets[0] is None  # question tokens have no offset
    windows = encode_spans(tokenizer, [example], max_length=20, training=True)
    assert len(windows) >= 2 and all(len(w.input_ids) <= 20 for w in windows)
    hits = [w for w in windows if w.labels != [0, 0]]
    assert hits and all(tokenizer.convert_ids_to_tokens(w.input_ids)[w.labels[0]] == "paris" for w in hits)
    misplaced = data.QAExample("q2", "what?", context, ["france"], [0])  # wrong offset: found by search
    [f2] = encode_spans(tokenizer, [misplaced], max_length=32, training=True)
    assert f2.offsets[f2.labels[0]] == (context.index("france"), context.index("france") + 6)
