"""`layerscope probe`: the per-layer linear probe finds what is linearly there, reads the right
tokens, scores with sound intervals, and writes a compare-like run directory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from layerscope import cli
from layerscope.errors import LayerscopeError
from layerscope.probes.linear_probe import LinearProbe, bootstrap_interval, encode
from layerscope.probing import probe

from conftest import TASK_FIXTURES

POS = TASK_FIXTURES / "pos"
TRAIN = POS / "en_handmade-train.conllu"
EVAL = f"{POS / 'fr_handmade-test.conllu'},{POS / 'de_handmade-test.conllu'}"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny BERT knowing the fixture words, and a copy whose last block (only) is perturbed."""
    from conftest import make_encoder

    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder

    texts = []
    for path in sorted(TASK_FIXTURES.rglob("*")):
        if path.suffix in (".conllu", ".txt", ".tsv"):
            texts += path.read_text(encoding="utf-8").split("\n")
    encoder = make_encoder("bert", layers=2, width=32, texts=texts)
    directory = tmp_path_factory.mktemp("probe-ckpt")
    save_checkpoint(directory / "base.pt", checkpoint_from_encoder(encoder, meta={"name": "base"}))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in encoder.model.named_parameters():
            if name.startswith("encoder.layer.1."):
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    save_checkpoint(directory / "other.pt", checkpoint_from_encoder(encoder, meta={"name": "other"}))
    return encoder, directory / "base.pt", directory / "other.pt"


def test_probe_finds_the_layer_where_labels_are_linearly_separable():
    """Layer 0: labels independent of the features; layer 1: a linear function of them;
    layer 2: XOR of two signs (not linearly separable). Only layer 1 may score well."""
    rng = np.random.default_rng(0)
    n, d = 600, 6
    z = rng.standard_normal((3, n, d))
    y = (z[1] @ np.array([1.0, -2.0, 0.5, 0, 0, 0]) > 0).astype(int)
    z[2][:, 0] = rng.standard_normal(n)
    z[2][:, 1] = np.where(y == 1, 1, -1) * np.sign(z[2][:, 0]) * rng.uniform(0.5, 2, n)  # XOR-coded
    train, test = slice(0, 400), slice(400, None)
    scores = []
    for layer in range(3):
        fitted = LinearProbe(cs=(0.1, 1.0, 10.0)).fit(z[layer][train][:300], y[train][:300],
                                                      z[layer][train][300:], y[train][300:])
        scores.append(float((fitted.predict(z[layer][test]) == y[test]).mean()))
        assert fitted.C_ in (0.1, 1.0, 10.0) and set(fitted.dev_accuracy_) == {0.1, 1.0, 10.0}
    assert scores[1] > 0.95
    assert abs(scores[0] - 0.5) < 0.12 and abs(scores[2] - 0.5) < 0.12
    assert int(np.argmax(scores)) == 1


def test_bootstrap_interval_brackets_and_degenerates():
    rng = np.random.default_rng(1)
    totals = rng.integers(3, 20, size=200).astype(float)
    hits = np.stack([rng.binomial(totals.astype(int), 0.7), rng.binomial(totals.astype(int), 0.2)]).astype(float)
    low, high = bootstrap_interval(hits, totals, resamples=500, seed=0)
    point = hits.sum(axis=1) / totals.sum()
    assert (low < point).all() and (point < high).all()
    # the interval shrinks like 1/sqrt(S): 4x the sentences, about half the width
    big_low, big_high = bootstrap_interval(np.tile(hits, 4), np.tile(totals, 4), resamples=500, seed=0)
    ratio = (big_high - big_low) / (high - low)
    assert ((ratio > 0.35) & (ratio < 0.65)).all()
    # every sentence alike: no spread; a zero paired difference stays exactly 0
    same_low, same_high = bootstrap_interval(np.full((1, 50), 3.0), np.full(50, 4.0), resamples=100)
    assert same_low[0] == pytest.approx(0.75) and same_high[0] == pytest.approx(0.75)
    zero_low, zero_high = bootstrap_interval(np.zeros((1, 50)), np.full(50, 4.0), resamples=100)
    assert zero_low[0] == 0 and zero_high[0] == 0


def test_words_are_read_at_their_first_sub_token(models):
    """The probe's vector for a word is the hidden state at that word's first sub-token,
    computed here directly with the model."""
    from layerscope.tasks import get_task
    from layerscope.tasks.data import UPOS_TAGS, read_conllu_upos

    encoder = models[0]
    sentences = read_conllu_upos(POS / "fr_handmade-test.conllu")
    encoded = encode(encoder, get_task("pos"), sentences, {t: i for i, t in enumerate(UPOS_TAGS)})
    assert encoded.values.shape == (3, sum(len(s.words) for s in sentences), 32)
    assert encoded.sentences == 3 and list(np.bincount(encoded.sentence)) == [len(s.words) for s in sentences]
    row = 0
    for sentence in sentences:
        batch = encoder.tokenizer(sentence.words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder.model(**batch, output_hidden_states=True).hidden_states
        word_ids = batch.word_ids()
        firsts = [word_ids.index(w) for w in range(len(sentence.words))]
        for w, position in enumerate(firsts):
            for layer in range(3):
                torch.testing.assert_close(encoded.values[layer, row + w], hidden[layer][0, position],
                                           atol=1e-5, rtol=1e-5)
            assert encoded.labels[row + w] == UPOS_TAGS.index(sentence.labels[w])
        row += len(sentence.words)


def test_job_base_and_realigned_side_by_side(models, tmp_path):
    _, base, other = models
    out = tmp_path / "run"
    result = probe(base, other, train=TRAIN, eval=EVAL, held_out=0.34, cs=(0.1, 1.0), bootstrap=200,
                   output_dir=out, device="cpu")
    table = result.metrics
    assert list(table.columns) == ["model", "metric", "layer", "lang", "value", "ci_low", "ci_high"]
    assert set(table["model"]) == {"base", "realigned", "delta"} and set(table["metric"]) == {"probe_accuracy"}
    assert set(table["lang"]) == {"en", "fr", "de"} and sorted(table["layer"].unique()) == [0, 1, 2]
    measured = table[table["model"] != "delta"]
    assert measured["value"].between(0, 1).all()
    assert ((measured["ci_low"] <= measured["value"] + 1e-12) & (measured["value"] <= measured["ci_high"] + 1e-12)).all()
    wide = table.set_index(["model", "lang", "layer"])["value"]
    delta = (wide["realigned"] - wide["base"]).sort_index()
    pd.testing.assert_series_equal(delta, wide["delta"].sort_index(), check_names=False, atol=1e-12)
    # the embeddings and block 0 are shared: identical features, identical probes, Δ exactly 0
    assert (wide["delta"].xs(0, level="layer") == 0).all() and (wide["delta"].xs(1, level="layer") == 0).all()
    # accuracy is counted over words: fr has 4 + 6 + 5 words (the contraction "au" gives two)
    assert result.run["words_or_examples"]["fr"] == 15 and result.run["sentences"]["de"] == 2
    for name in ("metrics.csv", "run.json", "summary.txt", "report.html", "figures/heatmap_probe_accuracy.png",
                 "figures/probe_curves.png"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["job"] == "probe" and run["source"]["fit_sentences"] + run["source"]["held_out_sentences"] == 6
    assert len(run["classifier"]["chosen_c"]["base"]) == 3
    assert "probe accuracy" in (out / "report.html").read_text().replace("_", " ")
    assert "best layer" in result.summary and "Δ beyond noise" in result.summary


def test_one_model_and_determinism(models):
    _, base, _ = models
    first = probe(base, train=TRAIN, eval=EVAL, held_out=0.34, cs=(1.0,), bootstrap=50, device="cpu")
    second = probe(base, train=TRAIN, eval=EVAL, held_out=0.34, cs=(1.0,), bootstrap=50, device="cpu")
    assert set(first.metrics["model"]) == {"base"}
    pd.testing.assert_frame_equal(first.metrics, second.metrics)


def test_cli_end_to_end_and_errors(models, tmp_path, capsys):
    _, base, _ = models
    out = tmp_path / "cli"
    code = cli.main(["probe", str(base), "--train", str(TRAIN), "--eval", EVAL, "--held-out", "0.34",
                     "--cs", "1", "--bootstrap", "20", "--device", "cpu", "-q", "-o", str(out)])
    assert code == 0 and (out / "report.html").is_file()
    assert "best layer" in capsys.readouterr().out
    code = cli.main(["probe", str(base), "--task", "qa", "--train", str(TRAIN), "--eval", EVAL, "-q",
                     "-o", str(tmp_path / "qa")])
    err = capsys.readouterr().err
    assert code == 2 and "qa" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "qa").exists()
    code = cli.main(["probe", str(base), "--train", str(POS / "handmade_malformed.conllu"), "--eval", EVAL, "-q",
                     "-o", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "handmade_malformed.conllu" in err and "line 4" in err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(LayerscopeError, match="C grid"):
        probe(base, train=TRAIN, eval=EVAL, cs=(0.0,))


def test_cache_gives_the_same_table_without_encoding_again(models, tmp_path, monkeypatch):
    from layerscope.probes import linear_probe

    _, base, _ = models
    kwargs = dict(train=TRAIN, eval=EVAL, held_out=0.34, cs=(1.0,), bootstrap=20, device="cpu",
                  cache_dir=tmp_path / "cache")
    first = probe(base, **kwargs)
    assert len(list((tmp_path / "cache").glob("probe-*.safetensors"))) == 4  # fit, held-out, fr, de

    def no_encoding(*args, **kw):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(linear_probe, "_encode", no_encoding)
    pd.testing.assert_frame_equal(first.metrics, probe(base, **kwargs).metrics)
