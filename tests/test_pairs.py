"""Word pairs: tokenisation, the dictionary rule, symmetrisation, AER, the source registry."""

from __future__ import annotations

import sys

import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.realign import (
    DictionarySource,
    EflomalSource,
    alignment_scores,
    dictionary_links,
    drop_identical,
    encode_words,
    grow_diag_final_and,
    mutual_argmax,
    one_to_one,
    pair_source,
    read_dictionary,
    split_words,
    words_from_tokens,
)
from layerscope.realign.words import words_from_segments

# --------------------------------------------------------------------------- words


def test_split_words_spaced_language():
    words = split_words("L'eau, dit-il, est froide (très) !", "fr")
    assert words.tokens == ("L", "'", "eau", ",", "dit", "-", "il", ",", "est", "froide", "(", "très", ")", "!")
    assert words.joiner == " "
    assert all(words.text[a:b] == tok for tok, (a, b) in zip(words.tokens, words.spans))


def test_split_words_keeps_combining_marks_inside_words():
    words = split_words("हिन्दी भाषा", "hi")  # Devanagari vowel signs and virama are marks
    assert words.tokens == ("हिन्दी", "भाषा")


@pytest.mark.parametrize("text,lang,expected", [
    ("我爱北京。", "zh", ("我", "爱", "北", "京", "。")),
    ("東京へ行きます", "ja", ("東", "京", "へ", "行", "き", "ま", "す")),
    ("iPhone很贵", "zh", ("iPhone", "很", "贵")),
])
def test_character_fallback_for_spaceless_scripts(text, lang, expected):
    words = split_words(text, lang)
    assert words.tokens == expected
    assert words.joiner == ""
    assert all(words.text[a:b] == tok for tok, (a, b) in zip(words.tokens, words.spans))


def test_thai_characters_keep_their_marks():
    words = split_words("ที่นี่", "th")
    assert "".join(words.tokens) == "ที่นี่"
    assert len(words.tokens) == 2  # two base consonants, each with its combining marks


def test_segmenter_is_used_for_spaceless_languages_only():
    def fake(text):
        return ["北京", "很", "大"]

    assert split_words("北京很大", "zh", segmenter=fake).tokens == ("北京", "很", "大")
    assert split_words("big city", "en", segmenter=fake).tokens == ("big", "city")
    with pytest.raises(LayerscopeError, match="not in the sentence"):
        words_from_segments("北京很大", ["上海"])


def test_words_from_tokens():
    words = words_from_tokens(["le", "chat", "."])
    assert words.text == "le chat ."
    assert words.spans == ((0, 2), (3, 7), (8, 9))
    with pytest.raises(LayerscopeError):
        words_from_tokens(["a b"])


@pytest.fixture(scope="module")
def tokenizers():
    from layerscope.models.toymodels import train_tokenizer

    texts = ["the cat sleeps on the mat", "le chat dort sur le tapis", "猫睡在垫子上", "hello world"] * 10
    return {arch: train_tokenizer(texts, arch=arch, vocab_size=200) for arch in ("bert", "xlm-roberta", "gpt2")}


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta", "gpt2"])
def test_first_subtoken_positions(tokenizers, arch):
    tok = tokenizers[arch]
    words = split_words("the cat sleeps on the mat", "en")
    (enc,) = encode_words(tok, [words], max_length=96)
    pieces = tok.convert_ids_to_tokens(enc.input_ids)
    for k, position in enumerate(enc.first):
        assert position is not None
        piece = pieces[position].replace("\u2581", "").replace("\u0120", "").replace("##", "")
        assert piece and words.tokens[k].startswith(piece), (arch, words.tokens[k], pieces)
    assert enc.first == sorted(enc.first)


def test_truncated_words_have_no_position(tokenizers):
    tok = tokenizers["bert"]
    words = split_words(" ".join(["cat"] * 50), "en")
    (enc,) = encode_words(tok, [words], max_length=10)
    assert len(enc.input_ids) == 10
    assert enc.first[:8] == list(range(1, 9))
    assert all(p is None for p in enc.first[8:])


# --------------------------------------------------------------------------- dictionary rule

FR = {
    "the": {"le", "la", "les"},
    "cat": {"chat"},
    "kitten": {"chat", "chaton"},
    "dog": {"chien"},
    "sleeps": {"dort"},
    "big": {"grand", "gros"},
    "house": {"maison", "logis"},
    "home": {"maison"},
    "paris": {"paris"},
    "on": {"sur"},
}


def links(en: str, fr: str, table=FR, lang="fr", casefold=False):
    return dictionary_links(split_words(en, "en"), split_words(fr, lang), {k: frozenset(v) for k, v in table.items()},
                            casefold=casefold)


def test_dictionary_basic_sentence():
    assert links("the cat sleeps", "le chat dort") == [(0, 0), (1, 1), (2, 2)]


def test_dictionary_is_case_sensitive_by_default():
    """As published: "The" is not the dictionary's "the", "Chat" not its "chat"."""
    assert links("The Cat sleeps", "Le Chat dort") == [(2, 2)]
    assert links("the cat sleeps", "Le chat dort") == [(1, 1), (2, 2)]
    # a capitalised dictionary entry matches the capitalised word only
    assert links("The cat", "Le chat", table={"The": {"Le"}, "cat": {"chat"}}) == [(0, 0), (1, 1)]
    assert links("the cat", "le chat", table={"The": {"Le"}, "cat": {"chat"}}) == [(1, 1)]


def test_dictionary_case_folding_option():
    assert links("The Cat sleeps", "Le Chat dort", casefold=True) == [(0, 0), (1, 1), (2, 2)]


def test_english_word_occurring_twice_is_ambiguous():
    # "the" twice: excluded; cat and dog still linked
    assert links("the cat sees the dog", "le chat voit un chien") == [(1, 1), (4, 4)]


def test_translation_occurring_twice_is_ambiguous():
    assert links("the cat sleeps", "chat dort le chat") == [(0, 2), (2, 1)]


def test_two_translations_present_is_ambiguous():
    # big -> grand and gros both occur: excluded
    assert links("a big dog", "un grand gros chien") == [(2, 3)]


def test_translation_of_another_word_is_ambiguous():
    # "maison" translates both "home" and "house": neither is kept
    assert links("home sweet house", "maison douce") == []
    # "chat" translates cat and kitten: excluded although it occurs once; dog is unaffected
    assert links("cat and kitten and dog", "chat et petit et chien") == [(4, 4)]
    # kitten -> {chat, chaton}, both present: two translations occur, so kitten is excluded
    assert links("a kitten", "un chat chaton") == []


def test_identical_strings_are_dropped():
    assert links("paris sleeps", "paris dort", table={**FR, "sleeps": {"dort"}}) == [(1, 1)]


ZH = {"cat": {"猫"}, "fish": {"鱼"}, "china": {"中国"}, "people": {"人"}, "chinese": {"中国人"}}


def test_spaceless_target_matches_runs_of_characters():
    assert links("the cat eats fish", "猫吃鱼", ZH, "zh") == [(1, 0), (3, 2)]
    # multi-character entry: the link points at the first character of the run
    assert links("china people", "中国人", ZH, "zh") == [(0, 0), (1, 2)]


def test_overlapping_runs_are_ambiguous():
    # 中国人 (chinese) overlaps 中国 (china): both dropped, 人 is still a clean match... but it
    # lies inside the 中国人 run too, so only non-overlapping pairs survive
    assert links("chinese china", "中国人", ZH, "zh") == []
    assert links("chinese fish", "中国人和鱼", ZH, "zh") == [(0, 0), (1, 4)]


def test_segmented_words_match_whole_words_only():
    src = split_words("china is big", "en")
    tgt = words_from_segments("中国人很多", ["中国人", "很", "多"])
    assert dictionary_links(src, tgt, {"china": frozenset({"中国"})}) == []
    tgt_words = words_from_tokens(["中国", "很", "大"], joiner="")
    assert dictionary_links(src, tgt_words, {"china": frozenset({"中国"})}) == [(0, 0)]


def test_read_dictionary(tmp_path):
    path = tmp_path / "en-fr.txt"
    path.write_text("the le\nthe la\nCat chat\nbroken line here\n\ndog\tchien\n", encoding="utf-8")
    table = read_dictionary(path)
    assert table == {"the": frozenset({"le", "la"}), "Cat": frozenset({"chat"}), "dog": frozenset({"chien"})}
    assert read_dictionary(path, casefold=True)["cat"] == frozenset({"chat"})
    reverse = read_dictionary(path, reverse=True)
    assert reverse["chat"] == frozenset({"Cat"})
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(LayerscopeError, match="no 'source_word target_word'"):
        read_dictionary(tmp_path / "empty.txt")


def test_dictionary_source_files(tmp_path):
    (tmp_path / "en-fr.txt").write_text("cat chat\nsleeps dort\n", encoding="utf-8")
    (tmp_path / "de-en.txt").write_text("katze cat\n", encoding="utf-8")
    source = DictionarySource(tmp_path)
    source.check(["fr", "de"], "en")
    src, tgt = [split_words("the cat sleeps", "en")], [split_words("le chat dort", "fr")]
    assert source.align(src, tgt, lang="fr") == [[(1, 1), (2, 2)]]
    assert source.align([split_words("a cat", "en")], [split_words("eine Katze", "de")], lang="de") == [[]]
    folding = DictionarySource(tmp_path, casefold=True)
    assert folding.align([split_words("a cat", "en")], [split_words("eine Katze", "de")], lang="de") == [[(1, 1)]]
    assert folding.describe()["case"] == "folded"
    described = source.describe()
    assert described["case"] == "sensitive"
    assert set(described["files"]) == {"fr", "de"}
    with pytest.raises(LayerscopeError, match="no dictionary for en-zh.*en-zh.txt"):
        source.check(["zh"], "en")
    with pytest.raises(LayerscopeError, match="no such dictionary"):
        DictionarySource(tmp_path / "missing")


# --------------------------------------------------------------------------- filters, symmetrisation


def test_one_to_one_and_identical():
    assert one_to_one([(0, 0), (1, 1), (1, 2), (3, 2), (4, 4)]) == [(0, 0), (4, 4)]
    src, tgt = words_from_tokens(["Paris", "is", "nice"]), words_from_tokens(["paris", "est", "nice"])
    assert drop_identical([(0, 0), (1, 1), (2, 2)], src, tgt) == [(1, 1)]


def test_grow_diag_final_and():
    # grow: (1,2) and (2,2) neighbour the intersection and touch unaligned words
    assert grow_diag_final_and({(0, 0), (1, 1), (1, 2)}, {(0, 0), (1, 1), (2, 2)}) == {(0, 0), (1, 1), (1, 2), (2, 2)}
    # final-and: a lone union link is added only when both its words are unaligned
    assert grow_diag_final_and({(0, 0), (2, 3)}, {(0, 0)}) == {(0, 0), (2, 3)}
    assert grow_diag_final_and({(0, 0), (0, 3)}, {(0, 0)}) == {(0, 0)}
    assert grow_diag_final_and(set(), set()) == set()


def test_mutual_argmax():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    b = torch.tensor([[0.0, 2.0], [3.0, 0.1]])
    # 0 -> 1 and 1 -> 0 mutually; 2 prefers one of them but is not preferred back
    assert mutual_argmax(a, b) == [(0, 1), (1, 0)]
    a_nan = a.clone()
    a_nan[0] = float("nan")
    assert mutual_argmax(a_nan, b) == [(1, 0), (2, 1)]
    with pytest.raises(ValueError, match="shape|\\(n, d\\)"):
        mutual_argmax(torch.zeros(2, 3), torch.zeros(2, 4))


# --------------------------------------------------------------------------- AER


def test_alignment_scores_hand_example():
    predicted = [[(0, 0), (1, 1), (2, 3)]]
    sure = [[(0, 0), (1, 2)]]
    possible = [[(1, 1)]]
    scores = alignment_scores(predicted, sure, possible)
    # |A|=3, |S|=2, |A∩S|=1, |A∩P|=2 (P ⊇ S)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(1 / 2)
    assert scores.aer == pytest.approx(1 - (1 + 2) / (3 + 2))
    assert (scores.predicted, scores.sure, scores.possible) == (3, 2, 3)


def test_alignment_scores_sums_over_sentences():
    # micro-averaged: sentence 2 has twice the links of sentence 1
    predicted = [[(0, 0)], [(0, 0), (1, 1)]]
    sure = [[(0, 0)], [(0, 1), (1, 0)]]
    scores = alignment_scores(predicted, sure)
    assert scores.precision == pytest.approx(1 / 3)
    assert scores.recall == pytest.approx(1 / 3)
    assert scores.aer == pytest.approx(1 - 2 / 6)
    perfect = alignment_scores(sure, sure)
    assert (perfect.precision, perfect.recall, perfect.aer) == (1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="2 predicted, 1 sure"):
        alignment_scores(predicted, sure[:1])


# --------------------------------------------------------------------------- registry, eflomal


def test_registry_errors():
    with pytest.raises(LayerscopeError, match="did you mean 'dict'"):
        pair_source("dictt:x")
    with pytest.raises(LayerscopeError, match="needs a location"):
        pair_source("dict")
    with pytest.raises(LayerscopeError, match="integer"):
        pair_source("embed:last")
    with pytest.raises(LayerscopeError, match="unknown pair source"):
        pair_source("fastalign")
    assert pair_source("simalign:3").layer == 3
    assert isinstance(pair_source("eflomal"), EflomalSource)


def test_eflomal_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "eflomal", None)  # import eflomal now raises ImportError
    with pytest.raises(LayerscopeError, match="pip install eflomal"):
        pair_source("eflomal").check(["fr"], "en")


def test_eflomal_links_are_one_to_one_without_identical_strings():
    pytest.importorskip("eflomal")
    en = ["the cat sleeps", "the dog sleeps", "a cat eats", "a dog eats", "the cat eats fish", "Paris is big"] * 8
    fr = ["le chat dort", "le chien dort", "un chat mange", "un chien mange", "le chat mange du poisson",
          "Paris est grand"] * 8
    src = [split_words(s, "en") for s in en]
    tgt = [split_words(s, "fr") for s in fr]
    result = pair_source("eflomal").align(src, tgt, lang="fr")
    assert len(result) == len(en)
    for s, t, sentence_links in zip(src, tgt, result):
        assert one_to_one(sentence_links) == sorted(sentence_links)
        assert all(s.tokens[i].lower() != t.tokens[j].lower() for i, j in sentence_links)
    # the aligner finds the obvious pairs in most copies
    hits = sum((1, 1) in sentence_links for sentence_links in result[0::6])
    assert hits >= 6


@pytest.mark.shared_data
def test_dictionary_on_real_gold_alignments(shared_data):
    """On the en-fr gold set, dictionary pairs are precise (each one a sure or possible link)."""
    import re

    gold_dir = shared_data / "word_align" / "awesome_align"
    sentences = (gold_dir / "enfr.src-tgt").read_text(encoding="utf-8").splitlines()
    gold_lines = (gold_dir / "enfr.gold").read_text(encoding="utf-8").splitlines()
    table = read_dictionary(shared_data / "muse" / "en-fr.txt")
    predicted, sure, possible = [], [], []
    for line, gold in zip(sentences, gold_lines):
        en, fr = (part.split() for part in line.split(" ||| "))
        predicted.append(dictionary_links(words_from_tokens(en), words_from_tokens(fr), table))
        s, p = [], []
        for item in gold.split():
            i, sep, j = re.match(r"(\d+)([-p])(\d+)", item).groups()
            (s if sep == "-" else p).append((int(i) - 1, int(j) - 1))
        sure.append(s)
        possible.append(p)
    scores = alignment_scores(predicted, sure, possible)
    assert scores.predicted > 500
    assert scores.precision > 0.9


# --------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab é,.!'-猫吃鱼ที่\u0301 \t9")), max_size=30))
def test_split_words_spans_cover_the_text(text):
    words = split_words(text, "zh")
    assert all(words.text[a:b] == token for token, (a, b) in zip(words.tokens, words.spans))
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(words.spans, words.spans[1:]))
    assert "".join(words.tokens) == "".join(text.split())


EN_VOCAB = ["cat", "dog", "sees", "big", "the", "a", "paris", "Cat", "The"]
FR_VOCAB = ["chat", "chien", "voit", "grand", "le", "un", "paris", "gros", "Chat", "Le"]


def reference_dictionary_links(en, fr, table):
    """The rule of DESIGN.md written out directly, for words separated by spaces."""
    kept = []
    for i, word in enumerate(en):
        if en.count(word) != 1 or word not in table:
            continue
        present = [t for t in table[word] if t in fr]
        if len(present) != 1 or fr.count(present[0]) != 1:
            continue
        translation = present[0]
        if any(translation in table.get(other, ()) for other in set(en) - {word}):
            continue
        if translation != word:
            kept.append((i, fr.index(translation)))
    return sorted(kept)


@settings(max_examples=200, deadline=None)
@given(en=st.lists(st.sampled_from(EN_VOCAB), min_size=1, max_size=7),
       fr=st.lists(st.sampled_from(FR_VOCAB), min_size=1, max_size=7),
       table=st.dictionaries(st.sampled_from(EN_VOCAB), st.sets(st.sampled_from(FR_VOCAB), min_size=1, max_size=3)))
def test_dictionary_rule_matches_reference(en, fr, table):
    got = dictionary_links(words_from_tokens(en), words_from_tokens(fr), {k: frozenset(v) for k, v in table.items()})
    assert got == reference_dictionary_links(en, fr, table)  # exact (case-sensitive) string comparison
    assert one_to_one(got) == got
    # case folding = the same rule on case-folded sentences and dictionary
    folded_table: dict[str, set[str]] = {}
    for k, v in table.items():
        folded_table.setdefault(k.casefold(), set()).update(t.casefold() for t in v)
    folded = dictionary_links(words_from_tokens(en), words_from_tokens(fr),
                              {k: frozenset(v) for k, v in folded_table.items()}, casefold=True)
    assert folded == reference_dictionary_links([w.casefold() for w in en], [w.casefold() for w in fr], folded_table)
