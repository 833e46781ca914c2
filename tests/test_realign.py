"""Realignment training: freeze policies, determinism, resume, metadata and early errors."""

from __future__ import annotations

import pytest
import torch

from layerscope.corpora import ParallelCorpus
from layerscope.errors import LayerscopeError
from layerscope.models import parse_freeze_policy
from layerscope.models.encoder import _finish, load_encoder
from layerscope.realign import (
    DictionarySource,
    RoundRobinSampler,
    before_schedule,
    default_lr,
    during_objective,
    hidden_at_layer,
    realign,
)
from layerscope.realign import train as train_module

EN = [
    "the cat sleeps on the mat", "a dog runs in the park", "my house is big", "my friend eats bread",
    "the water is cold", "a bird sings in the tree", "the child reads a book", "my mother drinks tea",
    "a man walks to the city", "the sun is hot today", "the cat drinks milk", "a dog sleeps in the house",
]
FR = [
    "le chat dort sur le tapis", "un chien court dans le parc", "ma maison est grande", "mon ami mange du pain",
    "l'eau est froide", "un oiseau chante dans l'arbre", "l'enfant lit un livre", "ma mère boit du thé",
    "un homme marche vers la ville", "le soleil est chaud aujourd'hui", "le chat boit du lait",
    "un chien dort dans la maison",
]
ZH = [
    "猫睡在垫子上", "一只狗在公园里跑", "我的房子很大", "我的朋友吃面包", "水很冷", "一只鸟在树上唱歌",
    "孩子读一本书", "我的母亲喝茶", "一个男人走向城市", "今天太阳很热", "猫喝牛奶", "一只狗睡在房子里",
]
DICT = {
    "fr": {"cat": {"chat"}, "sleeps": {"dort"}, "mat": {"tapis"}, "dog": {"chien"}, "runs": {"court"},
           "park": {"parc"}, "house": {"maison"}, "big": {"grande", "grand"}, "friend": {"ami"},
           "eats": {"mange"}, "bread": {"pain"}, "water": {"eau"}, "cold": {"froide"}, "bird": {"oiseau"},
           "sings": {"chante"}, "tree": {"arbre"}, "child": {"enfant"}, "reads": {"lit"}, "book": {"livre"},
           "mother": {"mère"}, "drinks": {"boit"}, "tea": {"thé"}, "man": {"homme"}, "walks": {"marche"},
           "city": {"ville"}, "sun": {"soleil"}, "hot": {"chaud"}, "today": {"aujourd'hui"}, "milk": {"lait"}},
    "zh": {"cat": {"猫"}, "mat": {"垫子"}, "dog": {"狗"}, "park": {"公园"}, "house": {"房子"}, "big": {"大"},
           "friend": {"朋友"}, "bread": {"面包"}, "water": {"水"}, "cold": {"冷"}, "bird": {"鸟"}, "tree": {"树"},
           "child": {"孩子"}, "book": {"书"}, "mother": {"母亲"}, "tea": {"茶"}, "man": {"男人"}, "city": {"城市"},
           "sun": {"太阳"}, "hot": {"热"}, "today": {"今天"}, "milk": {"牛奶"}},
}
FAST = dict(steps=3, lr=1e-3, batch_size=4)


def make_corpus(en=EN, fr=FR, zh=ZH) -> ParallelCorpus:
    return ParallelCorpus("en", {"fr": en, "zh": en}, {"fr": list(fr), "zh": list(zh)}, name="fixture")


def dictionary() -> DictionarySource:
    return DictionarySource(DICT)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine a second
    thread makes each step wait for the scheduler (seconds instead of milliseconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    from layerscope.models.toymodels import build_tiny

    texts = EN + FR + ZH
    out = {}
    for arch in ("bert", "gpt2", "xlm-roberta", "distilbert", "llama"):
        model, tok = build_tiny(arch, texts, layers=4, width=32, heads=2, vocab_size=300, seed=0)
        out[arch] = _finish(model, tok, name=f"tiny-{arch}", source_hash=f"hash-{arch}", meta={},
                            tokenizer_name=None, device="cpu")
    return out


@pytest.fixture(scope="module")
def dict_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("muse")
    for lang, table in DICT.items():
        lines = [f"{en} {xx}" for en, xs in table.items() for xx in sorted(xs)]
        (directory / f"en-{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def weights(encoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}


# --------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
@pytest.mark.parametrize("policy", ["lower", "upper", "1-2", "embeddings"])
def test_frozen_blocks_bit_identical_others_changed(models, arch, policy):
    encoder = models[arch]
    before = weights(encoder)
    result = realign(encoder, parallel=make_corpus(), pairs=dictionary(), freeze=policy, **FAST)
    after = weights(result.encoder)
    parsed = parse_freeze_policy(policy, encoder.num_layers)
    frozen = {f"block.{b}" for b in parsed.frozen_blocks} | ({"embeddings"} if parsed.freeze_embeddings else set())
    groups = encoder.parameter_groups()
    assert frozen  # every policy here freezes something
    for group, names in groups.items():
        if group == "after":  # pooler / final norm: not on the path to the realignment layer
            continue
        assert names
        for name in names:
            if group in frozen:
                assert torch.equal(before[name], after[name]), f"{policy}: frozen {name} changed"
            else:
                assert not torch.equal(before[name], after[name]), f"{policy}: trainable {name} did not change"
    # the caller's encoder is untouched, the result is fully trainable again
    assert all(torch.equal(before[k], v) for k, v in weights(encoder).items())
    assert all(p.requires_grad for p in result.encoder.model.parameters())
    assert result.checkpoint.meta["freeze"]["frozen_blocks"] == list(parsed.frozen_blocks)


@pytest.mark.parametrize("arch", ["xlm-roberta", "distilbert", "llama"])
def test_lower_freezes_first_half_on_every_architecture(models, arch):
    encoder = models[arch]
    before = weights(encoder)
    result = realign(encoder, parallel=make_corpus(), pairs=dictionary(), freeze="lower", steps=2, lr=1e-3,
                     batch_size=4)
    after = weights(result.encoder)
    groups = encoder.parameter_groups()
    assert encoder.num_layers == 4
    for block in range(4):
        changed = [not torch.equal(before[n], after[n]) for n in groups[f"block.{block}"]]
        assert (not any(changed)) if block < 2 else all(changed), (arch, block)


def test_layer_definition_matches_activations(models):
    from layerscope.probes.activations import forward_layers

    for arch in ("bert", "gpt2"):
        encoder = models[arch]
        batch = encoder.tokenizer(["the cat sleeps", "a dog runs in the park"], padding=True, return_tensors="pt")
        with torch.no_grad():
            every = forward_layers(encoder, batch, precision="fp32")
            for layer in (0, 2, encoder.num_layers):
                got = hidden_at_layer(encoder, batch["input_ids"], batch["attention_mask"], layer)
                torch.testing.assert_close(got, every[layer])


# --------------------------------------------------------------------------- determinism and resume


def test_same_seed_same_weights(models):
    a = realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), freeze="none", seed=3, **FAST)
    b = realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), freeze="none", seed=3, **FAST)
    c = realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), freeze="none", seed=4, **FAST)
    wa, wb, wc = weights(a.encoder), weights(b.encoder), weights(c.encoder)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history == b.history
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


class Interrupted(Exception):
    pass


def test_resume_reaches_the_uninterrupted_weights(models, dict_dir, tmp_path):
    common = dict(parallel=make_corpus(), pairs=f"dict:{dict_dir}", freeze="lower", steps=6, lr=1e-3,
                  batch_size=4, seed=1)
    full = realign(models["bert"], output=tmp_path / "full.pt", **common)

    def stop_at_5(step, loss):
        if step == 5:
            raise Interrupted

    target = tmp_path / "resumed.pt"
    with pytest.raises(Interrupted):
        realign(models["bert"], output=target, checkpoint_every=2, on_step=stop_at_5, **common)
    partial = tmp_path / "resumed.partial.pt"
    assert partial.exists() and not target.exists()
    saved = load_encoder(partial)  # the periodic state is itself a loadable checkpoint
    assert saved.checkpoint_meta["steps_done"] == 4 and saved.checkpoint_meta["complete"] is False

    with pytest.raises(LayerscopeError, match="cannot resume.*lr"):
        realign(models["bert"], output=target, resume=True, **{**common, "lr": 2e-3})

    resumed = realign(models["bert"], output=target, checkpoint_every=2, resume=True, **common)
    assert resumed.checkpoint.meta["resumed_from_step"] == 4
    assert not partial.exists()
    wf, wr = weights(full.encoder), weights(resumed.encoder)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed.history == full.history
    on_disk = torch.load(target, weights_only=True)["state_dict"]
    assert all(torch.equal(on_disk[k], wf[k]) for k in wf)


# --------------------------------------------------------------------------- outputs and metadata


def test_checkpoint_meta_and_reload(models, dict_dir, tmp_path):
    encoder = models["bert"]
    out = tmp_path / "realigned.pt"
    result = realign(encoder, parallel=make_corpus(), pairs=f"dict:{dict_dir}", freeze="lower", output=out,
                     held_out=2, **FAST)
    meta = result.checkpoint.meta
    assert meta["freeze"]["spec"] == "lower" and meta["freeze"]["frozen_blocks"] == [0, 1]
    assert meta["steps"] == 3 and meta["seed"] == 0 and meta["layer"] == encoder.num_layers
    assert meta["languages"] == ["fr", "zh"]
    assert meta["parent_hash"] == encoder.source_hash
    assert meta["pairs"]["source"] == "dict" and set(meta["pairs"]["files"]) == {"fr", "zh"}
    assert meta["pairs"]["counts"] == result.pair_counts and all(n > 0 for n in result.pair_counts.values())
    assert meta["pairs"]["sentences"] == {"fr": len(EN) - 2, "zh": len(EN) - 2}
    assert meta["corpus"]["held_out"] == 2
    assert {"layerscope", "torch", "transformers"} <= set(meta["versions"])
    assert len(result.history) == 3
    # held-out sentences are returned, not trained on
    assert result.held_out.targets["fr"] == FR[-2:] and result.held_out.pivot_sentences["zh"] == EN[-2:]
    # the file is a self-contained checkpoint that loads without unpickling code
    payload = torch.load(out, weights_only=True)
    assert payload["format"] == "layerscope-checkpoint" and payload["meta"]["seed"] == 0
    reloaded = load_encoder(out)
    assert reloaded.source_hash == result.encoder.source_hash != encoder.source_hash
    for key, value in weights(result.encoder).items():
        assert torch.equal(weights(reloaded)[key], value)


def test_default_learning_rates(models):
    assert default_lr(models["bert"]) == 2e-5
    assert default_lr(models["xlm-roberta"]) == 7.5e-6


def test_before_schedule_unfreezes(models):
    result = before_schedule(models["gpt2"], parallel=make_corpus(), pairs=dictionary(), freeze="lower", **FAST)
    assert all(p.requires_grad for p in result.encoder.model.parameters())


def test_during_objective(models):
    import copy

    encoder = models["bert"]
    encoder = type(encoder)(**{**encoder.__dict__, "model": copy.deepcopy(encoder.model)})
    objective = during_objective(encoder, make_corpus(), pairs=dictionary(), batch_size=4)
    twin = during_objective(encoder, make_corpus(), pairs=dictionary(), batch_size=4)
    loss = objective.loss()
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in objective.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.model.parameters())
    # joint = task loss + 0.1 × realignment loss of the same batch
    with torch.no_grad():
        expected = 2.0 + 0.1 * twin.loss()
        twin.batches.sampler.load_state_dict(objective.batches.sampler.state_dict())
        objective.batches.sampler.load_state_dict({**objective.batches.sampler.state_dict(), "slot": 0,
                                                  "position": {"fr": 0, "zh": 0}})
        got = objective.joint(torch.tensor(2.0))
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


def test_round_robin_sampler():
    sampler = RoundRobinSampler({"a": 3, "b": 2}, batch_size=4, seed=0)
    first = sampler.next_batch()
    assert [lang for lang, _ in first] == ["a", "b", "a", "b"]
    drawn = first + sampler.next_batch() + sampler.next_batch()  # 12 draws: 6 of a (2 passes), 6 of b (3 passes)
    a_items = [i for lang, i in drawn if lang == "a"]
    b_items = [i for lang, i in drawn if lang == "b"]
    assert sorted(a_items[:3]) == [0, 1, 2] and sorted(a_items[3:]) == [0, 1, 2]
    assert all(sorted(b_items[k:k + 2]) == [0, 1] for k in (0, 2, 4))
    state = sampler.state_dict()
    twin = RoundRobinSampler({"a": 3, "b": 2}, batch_size=4, seed=0)
    twin.load_state_dict(state)
    assert [twin.next_batch() for _ in range(3)] == [sampler.next_batch() for _ in range(3)]
    with pytest.raises(ValueError):
        RoundRobinSampler({"a": 0}, batch_size=4)


# --------------------------------------------------------------------------- errors before any step


@pytest.fixture
def no_training(monkeypatch):
    def boom(self):
        raise AssertionError("a training step ran before the input was checked")

    monkeypatch.setattr(train_module.Realigner, "train_step", boom)


def test_error_no_usable_pair_for_a_language(models, no_training):
    table = {"fr": DICT["fr"], "zh": {"elephant": {"大象"}}}
    with pytest.raises(LayerscopeError, match=r"no usable word pair for zh \(12 sentence pairs\)"):
        realign(models["bert"], parallel=make_corpus(), pairs=DictionarySource(table), **FAST)


def test_error_unequal_parallel_files(models, dict_dir, tmp_path, no_training):
    corpus_dir = tmp_path / "flores"
    corpus_dir.mkdir()
    (corpus_dir / "eng_Latn.dev").write_text("\n".join(EN) + "\n", encoding="utf-8")
    (corpus_dir / "fra_Latn.dev").write_text("\n".join(FR[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(LayerscopeError, match="has 11 sentences but .* has 12"):
        realign(models["bert"], parallel=f"flores:{corpus_dir}", pairs=f"dict:{dict_dir}", **FAST)
    uneven = ParallelCorpus("en", {"fr": EN}, {"fr": FR[:-2]}, name="uneven")
    with pytest.raises(LayerscopeError, match="fr has 10 sentences but its en side has 12"):
        realign(models["bert"], parallel=uneven, pairs=dictionary(), **FAST)


@pytest.mark.parametrize("freeze,match", [
    ("0-9", "outside the model's blocks 0-3"),
    ("lowr", "did you mean 'lower'"),
    ("3-1", "runs backwards"),
])
def test_error_unknown_freeze_range(models, freeze, match, no_training):
    with pytest.raises(LayerscopeError, match=match):
        realign(models["gpt2"], parallel=make_corpus(), pairs=dictionary(), freeze=freeze, **FAST)


@pytest.mark.parametrize("freeze,layer,match", [
    ("lower", 2, "layer 2 .* inside the frozen blocks"),
    ("lower", 1, "inside the frozen blocks"),
    ("0-3", None, "inside the frozen blocks"),
    ("embeddings", 0, "freezes the embeddings"),
    ("none", 7, "outside 0-4"),
])
def test_error_realignment_layer_inside_frozen_blocks(models, freeze, layer, match, no_training):
    with pytest.raises(LayerscopeError, match=match):
        realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), freeze=freeze, layer=layer, **FAST)


def test_upper_freeze_with_last_layer_is_allowed(models):
    """Back-freezing realigns the last layer through frozen upper blocks (as published)."""
    result = realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), freeze="upper", **FAST)
    assert result.layer == 4


def test_error_missing_dictionary_and_bad_options(models, dict_dir, tmp_path, no_training):
    (tmp_path / "en-fr.txt").write_text("cat chat\n", encoding="utf-8")
    with pytest.raises(LayerscopeError, match="no dictionary for en-zh"):
        realign(models["bert"], parallel=make_corpus(), pairs=f"dict:{tmp_path}", **FAST)
    with pytest.raises(LayerscopeError, match="output path"):
        realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), checkpoint_every=2, **FAST)
    with pytest.raises(LayerscopeError, match="steps must be"):
        realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), **{**FAST, "steps": 0})
    with pytest.raises(LayerscopeError, match="no sentences for language"):
        realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), langs="de", **FAST)
    with pytest.raises(LayerscopeError, match="unknown pair source"):
        realign(models["bert"], parallel=make_corpus(), pairs="fastalign", **FAST)


def test_embedding_pair_source(models):
    from layerscope.realign import EmbeddingSource, mutual_argmax, split_words

    encoder = models["bert"]
    source = EmbeddingSource(2, encoder=encoder)
    src = [split_words(s, "en") for s in EN[:4]]
    tgt = [split_words(s, "fr") for s in FR[:4]]
    raw = source.raw_links(src, tgt, lang="fr")
    vectors_src, vectors_tgt = source.word_vectors(src), source.word_vectors(tgt)
    assert [mutual_argmax(a, b) for a, b in zip(vectors_src, vectors_tgt)] == raw
    assert vectors_src[0].shape == (len(src[0]), encoder.hidden_size)
    result = realign(encoder, parallel=make_corpus(), pairs="embed:2", freeze="lower", **FAST)
    assert result.checkpoint.meta["pairs"]["layer"] == 2 and all(n > 0 for n in result.pair_counts.values())
    with pytest.raises(LayerscopeError, match="outside 0-4"):
        realign(encoder, parallel=make_corpus(), pairs="embed:9", **FAST)


def test_top_level_realign_is_the_job(models, no_training):
    import layerscope

    with pytest.raises(LayerscopeError, match="did you mean 'lower'"):
        layerscope.realign(models["bert"], parallel=make_corpus(), pairs=dictionary(), freeze="lowr")
