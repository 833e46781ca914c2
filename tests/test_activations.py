"""Extraction: batching and padding change nothing, pooling skips special tokens, one pivot pass."""

from __future__ import annotations

import pytest
import torch

from layerscope.corpora import read_corpus
from layerscope.probes import activations
from layerscope.probes.activations import extract, extract_corpus, length_sorted_batches, pool_mean

from conftest import make_encoder, synthetic_parallel


def _reference(encoder, sentence, pool="mean"):
    """Every layer of one unpadded sentence, pooled by hand: averaged over its non-special tokens
    (mean), over all its tokens (mean-with-special), or its first token (first)."""
    encoded = encoder.tokenizer(sentence, return_tensors="pt", return_special_tokens_mask=True)
    special = encoded.pop("special_tokens_mask")[0].bool()
    captured = {}
    last = encoder.blocks[-1]
    handle = last.register_forward_hook(lambda m, i, o: captured.__setitem__("x", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            out = encoder.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                output_hidden_states=True)
    finally:
        handle.remove()
    hidden = list(out.hidden_states)
    hidden[-1] = captured["x"]
    if pool == "first":
        return torch.stack([h[0][0] for h in hidden])
    keep = torch.ones_like(special) if pool == "mean-with-special" else ~special
    return torch.stack([h[0][keep].mean(0) for h in hidden])


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta", "gpt2", "llama"])
def test_batched_extraction_equals_one_sentence_at_a_time(arch):
    encoder = make_encoder(arch, layers=2)
    sentences = synthetic_parallel(9)["fr"] + synthetic_parallel(3)["ja"]
    stack = extract(encoder, sentences, max_tokens=40)  # several batches of unequal lengths
    assert stack.values.shape == (3, len(sentences), encoder.hidden_size)
    assert stack.values.dtype == torch.float32
    for i, sentence in enumerate(sentences):
        torch.testing.assert_close(stack.values[:, i], _reference(encoder, sentence), rtol=1e-5, atol=1e-5)


def test_batch_budget_does_not_change_results():
    encoder = make_encoder("bert", layers=2)
    sentences = synthetic_parallel(15)["de"]
    small = extract(encoder, sentences, max_tokens=16).values
    large = extract(encoder, sentences, max_tokens=100000).values
    torch.testing.assert_close(small, large, rtol=1e-5, atol=1e-6)


def test_length_sorted_batches_respect_budget():
    lengths = [5, 30, 7, 30, 2, 12, 12, 9]
    batches = length_sorted_batches(lengths, max_tokens=40)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 40 or len(batch) == 1


def test_pool_mean_excludes_masked_tokens():
    hidden = torch.arange(2 * 1 * 4 * 3, dtype=torch.float32).reshape(2, 1, 4, 3)
    mask = torch.tensor([[False, True, True, False]])
    pooled = pool_mean(hidden, mask)
    torch.testing.assert_close(pooled[:, 0], hidden[:, 0, 1:3].mean(dim=1))


def test_pivot_encoded_once_per_model(monkeypatch, synthetic_tsv):
    encoder = make_encoder("bert", layers=2)
    corpus = read_corpus(f"tsv:{synthetic_tsv}")
    calls = []
    original = activations.extract
    monkeypatch.setattr(activations, "extract", lambda enc, sents, **kw: calls.append(kw["lang"]) or original(enc, sents, **kw))
    pivots, targets = extract_corpus(encoder, corpus)
    assert calls.count("en") == 1 and sorted(calls) == sorted(["en", "fr", "de", "ja"])
    assert pivots["fr"] is pivots["ja"]


def test_cache_reuses_activations(tmp_path, monkeypatch):
    encoder = make_encoder("bert", layers=2)
    sentences = synthetic_parallel(10)["fr"]
    first = extract(encoder, sentences, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    monkeypatch.setattr(activations, "forward_layers", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    second = extract(encoder, sentences, cache_dir=tmp_path)
    assert torch.equal(first.values, second.values)
    # another model (different hash) does not hit the entry
    other = make_encoder("bert", layers=2, seed=1)
    other.source_hash = "different"
    with pytest.raises(AssertionError, match="ran"):
        extract(other, sentences, cache_dir=tmp_path)


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta"])
@pytest.mark.parametrize("pool", ["mean-with-special", "first"])
def test_other_poolings_equal_one_sentence_at_a_time(arch, pool, tmp_path):
    encoder = make_encoder(arch, layers=2)
    sentences = synthetic_parallel(5)["fr"] + synthetic_parallel(2)["ja"]
    stack = extract(encoder, sentences, max_tokens=40, pool=pool, cache_dir=tmp_path)
    for i, sentence in enumerate(sentences):
        torch.testing.assert_close(stack.values[:, i], _reference(encoder, sentence, pool), rtol=1e-5, atol=1e-5)
    # each pooling has its own cache entry: the default is not served from this one
    default = extract(encoder, sentences, max_tokens=40, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not torch.allclose(default.values, stack.values)
    with pytest.raises(activations.LayerscopeError, match="unknown pooling 'max'"):
        extract(encoder, sentences, pool="max")
