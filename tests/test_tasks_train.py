"""The fine-tuning loop: it learns, it is deterministic per seed, accumulation is exact, the
warm-up schedule, and the realignment gradient of the ``during`` schedule respects the freeze."""

from __future__ import annotations

import random

import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.models.encoder import _finish
from layerscope.tasks import TaggedSentence, TaskModel, TrainSettings, evaluate_language, train_task
from layerscope.tasks.features import IGNORE, Feature, encode_tagging
from layerscope.tasks.train import linear_schedule

CLASSES = {"DET": ["da", "de", "di"], "NOUN": [f"no{c}" for c in "bcdfgk"], "VERB": [f"ve{c}" for c in "lmnprs"]}
PATTERN = ["DET", "NOUN", "VERB", "DET", "NOUN"]
LABELS = ["DET", "NOUN", "VERB"]


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_tagging(n: int, seed: int) -> list[TaggedSentence]:
    """A learnable task: every word's tag is its class; sentences follow DET NOUN VERB DET NOUN
    with a random word of each class (and random truncation, so positions do not give it away)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tags = PATTERN[: rng.randint(3, 5)]
        rng.shuffle(tags)
        out.append(TaggedSentence([rng.choice(CLASSES[t]) for t in tags], list(tags), str(i)))
    return out


def tiny_encoder(*, dropout: float = 0.1, layers: int = 2, width: int = 32, seed: int = 0, extra_texts=()):
    from transformers import AutoModel

    from layerscope.models.toymodels import tiny_config, train_tokenizer

    texts = [" ".join(words) for words in CLASSES.values()] * 3 + list(extra_texts)
    tokenizer = train_tokenizer(texts, arch="bert", vocab_size=120)
    config = tiny_config("bert", len(tokenizer), layers=layers, width=width, heads=2, tokenizer=tokenizer)
    config.hidden_dropout_prob = dropout
    config.attention_probs_dropout_prob = dropout
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    return _finish(model, tokenizer, name="tiny", source_hash="tiny", meta={}, tokenizer_name=None, device="cpu")



def _features(encoder, sentences):
    return encode_tagging(encoder.tokenizer, sentences, {t: i for i, t in enumerate(LABELS)}, max_length=32)


def test_training_lowers_the_loss_and_beats_chance():
    encoder = tiny_encoder()
    train, test = synthetic_tagging(256, seed=0), synthetic_tagging(64, seed=1)
    torch.manual_seed(0)
    model = TaskModel(encoder, "tagging", len(LABELS))
    pad = encoder.tokenizer.pad_token_id
    before = evaluate_language(model, "pos", test, _features(encoder, test), LABELS, pad_id=pad)["accuracy"]
    history = train_task(model, _features(encoder, train), TrainSettings(steps=40, lr=3e-3, micro_batch_size=16),
                         pad_id=pad)
    after = evaluate_language(model, "pos", test, _features(encoder, test), LABELS, pad_id=pad)["accuracy"]
    first, last = sum(history.task_loss[:5]) / 5, sum(history.task_loss[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    majority = max(sum(t == tag for s in test for t in s.labels) for tag in LABELS) / sum(len(s.labels) for s in test)
    assert after > 0.9 > majority + 0.4 and after > before, (before, after, majority)


def test_warmup_then_linear_decay(encoders):
    total, warmup = 20, 2
    factors = [linear_schedule(s, warmup_steps=warmup, total_steps=total) for s in range(total)]
    assert factors[:3] == [0.0, 0.5, 1.0]
    assert factors[11] == pytest.approx(0.5)  # (20 - 11) / 18
    assert factors[-1] == pytest.approx(1 / 18) and all(a >= b for a, b in zip(factors[2:], factors[3:]))
    settings = TrainSettings(epochs=2, batch_size=32, micro_batch_size=8)
    assert settings.accumulation() == 4 and settings.total_steps(65) == 6  # ⌈65/32⌉ = 3 per epoch
    from layerscope.tasks.job import _fresh_copy

    encoder = _fresh_copy(encoders[0.1])
    history = train_task(TaskModel(encoder, "tagging", 3), _features(encoder, synthetic_tagging(40, 0)),
                         TrainSettings(steps=10, lr=1e-3, warmup=0.1, micro_batch_size=8), pad_id=0)
    assert history.lr[0] == 0.0 and history.lr[1] == pytest.approx(1e-3)
    assert history.lr[-1] == pytest.approx(1e-3 / 9)  # (10 - 9) / (10 - 1)


@pytest.fixture(scope="module")
def encoders():
    """Built once: trained tokenizers are not reproducible from run to run (WordPiece ties)."""
    return {0.0: tiny_encoder(dropout=0.0), 0.1: tiny_encoder(dropout=0.1)}


def _train_once(encoders, seed: int, micro: int = 8, dropout: float = 0.1, steps: int = 3):
    from layerscope.tasks.job import _fresh_copy

    encoder = _fresh_copy(encoders[dropout])
    torch.manual_seed(seed)
    model = TaskModel(encoder, "tagging", len(LABELS), dropout=dropout)
    history = train_task(model, _features(encoder, synthetic_tagging(64, 0)),
                         TrainSettings(steps=steps, lr=1e-3, micro_batch_size=micro, seed=seed), pad_id=0)
    return history, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_deterministic_per_seed_and_seeds_differ(encoders):
    h1, w1 = _train_once(encoders, 31)
    h2, w2 = _train_once(encoders, 31)
    h3, w3 = _train_once(encoders, 42)
    assert h1.task_loss == h2.task_loss
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert h1.task_loss != h3.task_loss
    assert not torch.equal(w1["head.weight"], w3["head.weight"])


def test_gradient_accumulation_equals_one_big_batch(encoders):
    """Without dropout, 4 micro-batches of 8 make the same step as one batch of 32."""
    h_big, w_big = _train_once(encoders, 5, micro=32, dropout=0.0, steps=2)
    h_acc, w_acc = _train_once(encoders, 5, micro=8, dropout=0.0, steps=2)
    assert h_big.task_loss == pytest.approx(h_acc.task_loss, rel=1e-5)
    for key in w_big:
        assert torch.allclose(w_big[key], w_acc[key], atol=1e-6), key


def test_the_default_micro_batch_is_each_process_share_of_the_batch():
    settings = TrainSettings(batch_size=32)
    assert settings.micro_batch_size is None
    assert (settings.micro_batch(), settings.accumulation()) == (32, 1)
    assert (settings.micro_batch(2), settings.accumulation(2)) == (16, 2)  # one pass per process
    assert TrainSettings(batch_size=32, micro_batch_size=8).micro_batch(2) == 8
    with pytest.raises(LayerscopeError, match="batch size 32 does not split over 3 processes"):
        settings.micro_batch(3)


def test_bad_settings_are_refused():
    with pytest.raises(LayerscopeError, match="batch size 32 is not a multiple of the micro-batch size 6"):
        TrainSettings(micro_batch_size=6)
    with pytest.raises(LayerscopeError, match="warm-up fraction"):
        TrainSettings(warmup=1.5)


# --------------------------------------------------------------------------- during schedule


EN = ["the cat sleeps", "a dog runs", "the house is big", "my friend eats bread", "the water is cold",
      "a bird sings", "the child reads a book", "my mother drinks tea"]
FR = ["le chat dort", "un chien court", "la maison est grande", "mon ami mange du pain", "l'eau est froide",
      "un oiseau chante", "l'enfant lit un livre", "ma mère boit du thé"]
DICT = {"fr": {"cat": {"chat"}, "sleeps": {"dort"}, "dog": {"chien"}, "runs": {"court"}, "house": {"maison"},
               "big": {"grande"}, "friend": {"ami"}, "eats": {"mange"}, "bread": {"pain"}, "cold": {"froide"},
               "bird": {"oiseau"}, "sings": {"chante"}, "book": {"livre"}, "mother": {"mère"}, "tea": {"thé"}}}


def realign_inputs():
    from layerscope.corpora import ParallelCorpus
    from layerscope.realign import DictionarySource

    return ParallelCorpus("en", {"fr": EN}, {"fr": FR}, name="fixture"), DictionarySource(DICT)


@pytest.mark.parametrize("freeze", ["lower", "none"])
def test_during_realignment_gradient_respects_the_freeze(freeze):
    """With a task loss that is zero (no labelled token), only the realignment gradient moves
    weights: the frozen lower blocks must stay exactly as they were, the others must move."""
    from layerscope.models import parse_freeze_policy
    from layerscope.realign import during_objective
    from layerscope.tasks.job import _realign_params

    encoder = tiny_encoder(layers=4, extra_texts=EN + FR)
    corpus, pairs = realign_inputs()
    objective = during_objective(encoder, corpus, pairs=pairs, batch_size=4, seed=0)
    policy = parse_freeze_policy(freeze, encoder.num_layers)
    before = {k: v.detach().clone() for k, v in encoder.model.named_parameters()}
    torch.manual_seed(0)
    model = TaskModel(encoder, "tagging", 3)
    unlabelled = [Feature(encoder.tokenizer(e)["input_ids"], [IGNORE] * len(encoder.tokenizer(e)["input_ids"]), i,
                          words={}) for i, e in enumerate(EN)]
    history = train_task(model, unlabelled, TrainSettings(steps=3, lr=1e-2, warmup=0.0, micro_batch_size=8),
                         pad_id=encoder.tokenizer.pad_token_id, objective=objective,
                         realign_params=_realign_params(encoder, policy))
    assert history.task_loss == [0.0, 0.0, 0.0] and all(r > 0 for r in history.realign_loss)
    moved = {k for k, v in encoder.model.named_parameters() if not torch.equal(v, before[k])}
    lower = {k for k in before if k.startswith(("encoder.layer.0.", "encoder.layer.1."))}
    upper = {k for k in before if k.startswith(("encoder.layer.2.", "encoder.layer.3."))}
    assert upper <= moved
    if freeze == "lower":
        assert not (lower & moved)
    else:
        assert lower <= moved
