"""The published realignment input: every word of the batch as a candidate, standalone "▁"
tokens deleted before encoding, checked against definitions written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.models.encoder import _finish
from layerscope.models.toymodels import build_tiny, train_tokenizer
from layerscope.realign import RealignmentHead, build_examples, collate, encode_words, realign, split_words
from layerscope.realign.train import realignment_loss
from test_realign import EN, FR, ZH, dictionary, make_corpus

SPACE = "\u2581"
# sentences with spaces inside CJK text make a SentencePiece tokenizer emit standalone "▁"
SPACED = ["我的 朋友 吃面包", "一只 狗 在 公园 里 跑", "今天 太阳 很热", "猫 喝 牛奶", "le chat dort"]


@pytest.fixture(scope="module")
def xlmr_tokenizer():
    return train_tokenizer(EN + FR + ZH + SPACED, arch="xlm-roberta", vocab_size=300)


def filtered(tokenizer, text: str) -> list[int]:
    """The published input: the full tokenisation minus every token that is exactly "▁"."""
    ids = tokenizer(text)["input_ids"]
    return [i for i, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids)) if piece != SPACE]


def test_tiny_xlmr_emits_standalone_space_tokens(xlmr_tokenizer):
    """The premise of the tests below: kept, the input holds standalone "▁" tokens."""
    (kept,) = encode_words(xlmr_tokenizer, [split_words(SPACED[0], "zh")], max_length=96)
    assert SPACE in xlmr_tokenizer.convert_ids_to_tokens(kept.input_ids)


@pytest.mark.parametrize("text", SPACED + ZH[:4] + EN[:2])
def test_space_tokens_deleted_before_encoding(xlmr_tokenizer, text):
    words = split_words(text, "zh")
    (enc,) = encode_words(xlmr_tokenizer, [words], max_length=96, drop_space_tokens=True)
    assert enc.input_ids == filtered(xlmr_tokenizer, text)
    pieces = xlmr_tokenizer.convert_ids_to_tokens(enc.input_ids)
    for token, position in zip(words.tokens, enc.first):
        assert position is not None
        # the word's first sub-token holds the word's first character (a piece may span
        # two single-character words)
        assert token[:1] in pieces[position].lstrip(SPACE)


def test_cut_after_deletion_keeps_special_tokens(xlmr_tokenizer):
    text = SPACED[1]
    full = filtered(xlmr_tokenizer, text)
    for max_length in (4, 6, len(full), len(full) + 3):
        (enc,) = encode_words(xlmr_tokenizer, [split_words(text, "zh")], max_length=max_length,
                              drop_space_tokens=True)
        body = full[1:-1][:max_length - 2]
        assert enc.input_ids == [full[0], *body, full[-1]]


def test_wordpiece_tokenizers_are_unaffected():
    tokenizer = train_tokenizer(EN + FR + ZH, arch="bert", vocab_size=300)
    sentences = [split_words(s, "zh") for s in SPACED + FR[:3]]
    kept = encode_words(tokenizer, sentences, max_length=12)
    dropped = encode_words(tokenizer, sentences, max_length=12, drop_space_tokens=True)
    assert [e.input_ids for e in kept] == [e.input_ids for e in dropped]
    assert [e.first for e in kept] == [e.first for e in dropped]


@pytest.fixture(scope="module")
def e5_tokenizer(e5_small_base):
    """multilingual-e5-small's tokenizer, from ``layerscope snapshot e5-small`` (skipped without it)."""
    from layerscope.models import load_encoder

    return load_encoder(e5_small_base).tokenizer


@pytest.mark.parametrize("text,lang", [("今日は 東京 に 行きます。", "ja"), ("私 は 猫 が 好き です", "ja"),
                                       ("我 喜欢 你的 猫。", "zh"), ("他们 在 北京 工作", "zh")])
def test_real_xlmr_tokenizer_japanese_chinese(e5_tokenizer, text, lang):
    """multilingual-e5-small's XLM-R SentencePiece tokenizer (skipped without the real model)."""
    tokenizer = e5_tokenizer
    words = split_words(text, lang)
    (kept,) = encode_words(tokenizer, [words], max_length=96)
    (dropped,) = encode_words(tokenizer, [words], max_length=96, drop_space_tokens=True)
    assert SPACE in tokenizer.convert_ids_to_tokens(kept.input_ids)
    assert dropped.input_ids == filtered(tokenizer, text)
    assert SPACE not in tokenizer.convert_ids_to_tokens(dropped.input_ids)
    pieces = tokenizer.convert_ids_to_tokens(dropped.input_ids)
    assert all(w[:1] in pieces[p].lstrip(SPACE) for w, p in zip(words.tokens, dropped.first))


# --------------------------------------------------------------------------- every word a candidate


@pytest.fixture(scope="module")
def bert():
    model, tok = build_tiny("bert", EN + FR + ZH, layers=2, width=32, heads=2, vocab_size=300, seed=0)
    return _finish(model, tok, name="tiny-bert", source_hash="h", meta={}, tokenizer_name=None, device="cpu")


def examples_for(tokenizer, negatives: str):
    src = [split_words(s, "en") for s in EN[:3]]
    tgt = [split_words(s, "fr") for s in FR[:3]]
    links = dictionary().align(src, tgt, lang="fr")
    return build_examples(tokenizer, "fr", src, tgt, links, 96, negatives=negatives), src, tgt, links


def test_collate_lists_every_word_and_the_pairs_among_them(bert):
    examples, src, tgt, links = examples_for(bert.tokenizer, "batch-words")
    batch = collate(examples, bert.tokenizer.pad_token_id)
    words = list(zip(batch.word_index[0].tolist(), batch.word_index[1].tolist()))
    assert len(set(words)) == len(words) == batch.num_words
    b = len(examples)
    expected = set()
    for row, (s, t) in enumerate(zip(src, tgt)):
        for side, sentence in ((row, s), (b + row, t)):
            (enc,) = encode_words(bert.tokenizer, [sentence], 96)
            expected |= {(side, p) for p in enc.first if p is not None}
    assert set(words) == expected  # both languages, every word
    assert batch.num_words > 2 * batch.num_pairs
    pairs = [(words[i], words[j]) for i, j in zip(batch.src_word.tolist(), batch.tgt_word.tolist())]
    linked = list(zip(zip(*batch.src_index), zip(*batch.tgt_index)))
    assert [((int(a), int(b_)), (int(c), int(d))) for (a, b_), (c, d) in linked] == pairs


def test_aligned_option_keeps_only_linked_words(bert):
    examples, *_ = examples_for(bert.tokenizer, "aligned")
    batch = collate(examples, bert.tokenizer.pad_token_id)
    assert batch.num_words == 2 * batch.num_pairs
    with pytest.raises(LayerscopeError, match="negatives"):
        examples_for(bert.tokenizer, "everything")


def reference_batch_loss(hidden: torch.Tensor, head, sentences, links_per_pair, temperature=0.1,
                         aligned_only=False) -> float:
    """The published loss from scratch in float64: every word's first sub-token of every
    sentence (source rows, then target rows) is a candidate; the aligned words are queries."""
    b = len(links_per_pair)
    candidates, queries = [], []
    for row, positions in enumerate(sentences):
        for p in positions:
            candidates.append((row, p))
    for row, links in enumerate(links_per_pair):
        for a, c in links:
            queries.append(((row, a), (b + row, c)))
            queries.append(((b + row, c), (row, a)))
    if aligned_only:
        candidates = [q for q, _ in queries]
    with torch.no_grad():
        vec = {key: head(hidden[key[0], key[1]][None].float())[0].double().numpy() for key in set(candidates)}
    total = 0.0
    for query, partner in queries:
        q = vec[query]
        scores = {c: float(q @ vec[c] / (np.linalg.norm(q) * np.linalg.norm(vec[c]))) / temperature
                  for c in candidates if c != query}
        log_norm = math.log(sum(math.exp(s) for s in scores.values()))
        total += log_norm - scores[partner]
    return total / len(queries)


@pytest.mark.parametrize("negatives", ["batch-words", "aligned"])
def test_realignment_loss_matches_reference(bert, negatives):
    examples, src, tgt, _ = examples_for(bert.tokenizer, negatives)
    batch = collate(examples, bert.tokenizer.pad_token_id)
    torch.manual_seed(0)
    head = RealignmentHead(bert.hidden_size)
    bert.model.eval()
    with torch.no_grad():
        got = float(realignment_loss(bert, head, batch, bert.num_layers))
        out = bert.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    hidden = out.hidden_states[bert.num_layers]  # (2B, T, d): BERT's last block output
    sentences = []
    for sentence in src + tgt:
        (enc,) = encode_words(bert.tokenizer, [sentence], 96)
        sentences.append(sorted({p for p in enc.first if p is not None}))
    expected = reference_batch_loss(hidden, head, sentences, [ex.links for ex in examples],
                                    aligned_only=negatives == "aligned")
    assert got == pytest.approx(expected, rel=1e-5)


def test_realign_records_the_conventions():
    model, tok = build_tiny("xlm-roberta", EN + FR + ZH + SPACED, layers=2, width=32, heads=2, vocab_size=300,
                            seed=0)
    encoder = _finish(model, tok, name="tiny-xlmr", source_hash="h", meta={}, tokenizer_name=None, device="cpu")
    corpus = make_corpus()
    default = realign(encoder, parallel=corpus, pairs=dictionary(), steps=1, batch_size=4, lr=1e-3)
    meta = default.checkpoint.meta
    assert (meta["negatives"], meta["space_tokens"], meta["pairs"]["case"]) == ("batch-words", "deleted", "sensitive")
    other = realign(encoder, parallel=corpus, pairs=dictionary(), steps=1, batch_size=4, lr=1e-3,
                    negatives="aligned", keep_space_tokens=True)
    meta = other.checkpoint.meta
    assert (meta["negatives"], meta["space_tokens"]) == ("aligned", "kept")
    assert meta["pairs"]["hash"] != default.checkpoint.meta["pairs"]["hash"]
    with pytest.raises(LayerscopeError, match="unknown negatives"):
        realign(encoder, parallel=corpus, pairs=dictionary(), steps=1, negatives="all")
