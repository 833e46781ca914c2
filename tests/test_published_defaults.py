"""Fine-tuning and realignment defaults against the values of the official AlignFreeze scripts:
per-task and per-model settings, no gradient clipping, the `before` schedule's step count, the
realignment conventions through finetune and the sweep file, and the study configs."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import torch

from layerscope import cli
from layerscope.errors import LayerscopeError
from layerscope.tasks import FinetuneConfig, finetune, finetune_steps, get_task, is_xlmr

from conftest import TASK_FIXTURES

REPO = Path(__file__).resolve().parent.parent
POS_TRAIN = TASK_FIXTURES / "pos" / "en_handmade-train.conllu"
POS_EVAL = TASK_FIXTURES / "pos" / "fr_handmade-test.conllu"
PARALLEL = f"tsv:{TASK_FIXTURES / 'realign' / 'parallel.tsv'}"
PAIRS = f"dict:{TASK_FIXTURES / 'realign' / 'dict'}"

pytestmark = pytest.mark.usefixtures("one_thread")

# (epochs, learning rate, XLM-R learning rate, max length) of the official scripts
PUBLISHED = {"pos": (5, 2e-5, 7.5e-6, 96), "ner": (5, 2e-5, 7.5e-6, 96), "nli": (2, 2e-5, 7.5e-6, 96),
             "qa": (5, 2e-5, 7.5e-6, 96)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_task_defaults_are_the_published_ones(name):
    task = get_task(name)
    epochs, lr, lr_xlmr, max_length = PUBLISHED[name]
    assert (task.epochs, task.lr, task.max_length) == (epochs, lr, max_length)
    assert task.default_lr("xlm-roberta") == lr_xlmr
    assert task.default_lr("bert") == task.default_lr("distilbert") == task.default_lr(None) == lr


def test_model_family_from_model_type():
    assert is_xlmr("xlm-roberta") and is_xlmr("xlm-roberta-xl")
    assert not is_xlmr("roberta") and not is_xlmr("bert") and not is_xlmr(None)


def test_config_picks_the_model_rate_and_explicit_settings_win():
    assert FinetuneConfig(task="qa", model_type="xlm-roberta").train_settings(0).lr == 7.5e-6
    assert FinetuneConfig(task="qa", model_type="bert").train_settings(0).lr == 2e-5
    assert FinetuneConfig(task="qa", model_type="xlm-roberta", lr=3e-5).train_settings(0).lr == 3e-5
    settings = FinetuneConfig(task="pos").train_settings(0)
    assert settings.max_grad_norm == 0.0  # no clipping, as published
    assert FinetuneConfig(task="pos", max_grad_norm=1.0).train_settings(0).max_grad_norm == 1.0
    with pytest.raises(LayerscopeError, match="max_grad_norm"):
        FinetuneConfig(task="pos", max_grad_norm=-1.0)
    with pytest.raises(LayerscopeError, match="negatives"):
        FinetuneConfig(task="pos", realign_negatives="all")


def handmade_sentences(path: Path) -> int:
    """Sentences of a CoNLL-U file: blocks of token lines separated by blank lines."""
    blocks = path.read_text(encoding="utf-8").strip().split("\n\n")
    return sum(1 for block in blocks if any(line and not line.startswith("#") for line in block.splitlines()))


@pytest.fixture(scope="module")
def xlmr():
    from conftest import make_encoder

    texts = []
    for path in sorted(TASK_FIXTURES.rglob("*")):
        if path.suffix in (".conllu", ".tsv", ".txt"):
            texts += path.read_text(encoding="utf-8").split("\n")
    return make_encoder("xlm-roberta", layers=2, width=32, texts=texts)


@pytest.mark.parametrize("epochs,batch_size", [(5, 32), (2, 4), (1.5, 3)])
def test_finetune_steps_formula(xlmr, epochs, batch_size):
    n = handmade_sentences(POS_TRAIN)
    expected = math.ceil(epochs * math.ceil(n / batch_size))
    assert finetune_steps(xlmr.tokenizer, task="pos", train=str(POS_TRAIN), epochs=epochs,
                          batch_size=batch_size) == expected


def test_xlmr_finetunes_at_its_rate_without_clipping(xlmr, monkeypatch):
    calls = []
    from layerscope import optim

    monkeypatch.setattr(optim, "clip_grad_norm_", lambda *a, **k: calls.append(a))
    result = finetune(xlmr, task="pos", train=str(POS_TRAIN), eval=str(POS_EVAL), seeds=[1], steps=3,
                      device="cpu")
    assert result.run["finetuning"]["lr"] == 7.5e-6
    assert result.run["finetuning"]["max_length"] == 96
    assert max(result.histories[("baseline", 1)].lr) == pytest.approx(7.5e-6)
    assert calls == []  # no gradient clipping by default
    finetune(xlmr, task="pos", train=str(POS_TRAIN), eval=str(POS_EVAL), seeds=[1], steps=1, device="cpu",
             max_grad_norm=1.0)
    assert len(calls) == 1


def test_before_schedule_passes_the_conventions(xlmr, monkeypatch):
    from layerscope import realign as realign_package

    seen = {}
    original = realign_package.before_schedule

    def spy(source, **kwargs):
        seen.update(kwargs)
        return original(source, **kwargs)

    monkeypatch.setattr(realign_package, "before_schedule", spy)
    finetune(xlmr, task="pos", train=str(POS_TRAIN), eval=str(POS_EVAL), seeds=[1], steps=1, device="cpu",
             realign="before", parallel=PARALLEL, pairs=PAIRS, realign_negatives="aligned",
             realign_keep_space_tokens=True, realign_casefold=True, realign_layer=-2, freeze="none")
    assert (seen["negatives"], seen["keep_space_tokens"], seen["casefold"], seen["layer"]) == ("aligned", True, True, -2)


def test_realign_cli_steps_from_finetune(xlmr, tmp_path):
    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder

    base = tmp_path / "base.pt"
    save_checkpoint(base, checkpoint_from_encoder(xlmr, meta={"name": "tiny-xlmr"}))
    out = tmp_path / "r.pt"
    code = cli.main(["-q", "realign", str(base), "--parallel", PARALLEL, "--pairs", PAIRS, "--lr", "1e-3",
                     "--batch-size", "4", "--device", "cpu", "--steps-from-finetune", f"pos={POS_TRAIN}",
                     "--layer", "-2", "--freeze", "none", "--negatives", "aligned", "--keep-space-tokens", "--casefold", "-o", str(out)])
    assert code == 0
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["steps"] == math.ceil(5 * math.ceil(handmade_sentences(POS_TRAIN) / 32))
    assert meta["layer"] == xlmr.num_layers - 1
    assert (meta["negatives"], meta["space_tokens"], meta["pairs"]["case"]) == ("aligned", "kept", "folded")
    assert cli.main(["-q", "realign", str(base), "--parallel", PARALLEL, "--pairs", PAIRS, "--device", "cpu",
                     "--steps-from-finetune", "pos", "-o", str(tmp_path / "x.pt")]) == 2


SWEEP = """
[sweep]
output = "out"
seeds = [1]
parallel = "tatoeba:opus"
realign_negatives = "aligned"
realign_keep_space_tokens = true
realign_casefold = true

[models.x]
source = "xlm-roberta-base"
realign_layer = -2

[tasks.qa]
train = "hf:"
eval = "hf:de"
max_grad_norm = 1.0

[aligners.dico]
pairs = "dict:muse"
"""


def test_sweep_realignment_options(tmp_path):
    from layerscope.sweep import expand, load_config

    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(SWEEP), encoding="utf-8")
    runs = expand(load_config(path))
    realigned = [r for r in runs if r.aligner]
    assert realigned and all(r.finetune["realign_negatives"] == "aligned" and r.finetune["realign_casefold"]
                             and r.finetune["realign_keep_space_tokens"] and r.finetune["realign_layer"] == -2
                             for r in realigned)
    baseline = [r for r in runs if not r.aligner]
    assert baseline and all("realign_negatives" not in r.finetune for r in baseline)
    assert all(r.finetune["max_grad_norm"] == 1.0 for r in runs)
    path.write_text(textwrap.dedent(SWEEP).replace('"aligned"', '"all"'), encoding="utf-8")
    with pytest.raises(LayerscopeError, match="sweep.realign_negatives: must be one of batch-words, aligned"):
        load_config(path)


@pytest.mark.parametrize("name", ["distilmbert", "mbert", "xlmr"])
def test_study_configs_use_the_published_settings(name):
    """The published results were produced realigning hidden_states[L-1] (layer -2 here), with
    XLM-R fine-tuned at 7.5e-6 and the published task defaults (no step-count override)."""
    from layerscope.sweep import expand, load_config

    runs = expand(load_config(REPO / "analyses" / "alignfreeze_study" / f"{name}.toml"))
    realigned = [r for r in runs if r.aligner]
    assert all(r.finetune["realign_layer"] == -2 for r in realigned)
    assert all("steps" not in r.finetune and "max_length" not in r.finetune for r in runs)
    if name == "xlmr":
        assert all(r.finetune["lr"] == 7.5e-6 and r.finetune["realign_lr"] == 7.5e-6
                   for r in runs if "realign_lr" in r.finetune)
        assert all(r.finetune["lr"] == 7.5e-6 for r in runs)
