"""`layerscope realign` end to end on a tiny model saved as a checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

EN = ["the cat sleeps on the mat", "a dog runs in the park", "my house is big", "the water is cold",
      "the cat drinks milk", "a bird sings in the tree"]
FR = ["le chat dort sur le tapis", "un chien court dans le parc", "ma maison est grande", "l'eau est froide",
      "le chat boit du lait", "un oiseau chante dans l'arbre"]
ZH = ["猫睡在垫子上", "一只狗在公园里跑", "我的房子很大", "水很冷", "猫喝牛奶", "一只鸟在树上唱歌"]
DICTS = {
    "fr": "cat chat\nsleeps dort\nmat tapis\ndog chien\npark parc\nhouse maison\nbig grande\nwater eau\n"
          "cold froide\nmilk lait\nbird oiseau\ntree arbre\ndrinks boit\n",
    "zh": "cat 猫\nmat 垫子\ndog 狗\npark 公园\nhouse 房子\nbig 大\nwater 水\ncold 冷\nmilk 牛奶\nbird 鸟\ntree 树\n",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from layerscope.models import save_checkpoint
    from layerscope.models.encoder import _finish, checkpoint_from_encoder
    from layerscope.models.toymodels import build_tiny

    root = tmp_path_factory.mktemp("cli")
    model, tok = build_tiny("bert", EN + FR + ZH, layers=4, width=32, heads=2, vocab_size=300)
    encoder = _finish(model, tok, name="tiny", source_hash="h", meta={}, tokenizer_name=None, device="cpu")
    base = root / "base.pt"
    save_checkpoint(base, checkpoint_from_encoder(encoder, meta={"name": "tiny"}))
    corpus = root / "parallel.tsv"
    corpus.write_text("en\tfr\tzh\n" + "".join(f"{e}\t{f}\t{z}\n" for e, f, z in zip(EN, FR, ZH)), encoding="utf-8")
    muse = root / "muse"
    muse.mkdir()
    for lang, text in DICTS.items():
        (muse / f"en-{lang}.txt").write_text(text, encoding="utf-8")
    return root, base, corpus, muse


def test_realign_command_end_to_end(setup):
    root, base, corpus, muse = setup
    out = root / "realigned.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "LAYERSCOPE_QUIET": "1"}
    command = [sys.executable, "-m", "layerscope", "realign", str(base), "--parallel", f"tsv:{corpus}",
               "--pairs", f"dict:{muse}", "--langs", "fr,zh", "--freeze", "lower", "--steps", "3",
               "--batch-size", "4", "--lr", "1e-3", "--device", "cpu", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    assert "word pairs (dict): fr" in done.stdout
    payload = torch.load(out, weights_only=True)
    meta = payload["meta"]
    assert meta["freeze"]["frozen_blocks"] == [0, 1] and meta["steps"] == 3 and meta["languages"] == ["fr", "zh"]
    assert meta["kernels"] == "fast"  # auto on a CPU
    base_state = torch.load(base, weights_only=True)["state_dict"]
    for name, value in payload["state_dict"].items():
        frozen = name.startswith(("encoder.layer.0.", "encoder.layer.1.")) or name.startswith("pooler.")
        if frozen:
            assert torch.equal(value, base_state[name]), name
        elif name.startswith("encoder.layer."):
            assert not torch.equal(value, base_state[name]), name


def test_existing_output_needs_force(setup, capsys):
    from layerscope.cli import main

    root, base, corpus, muse = setup
    out = root / "taken.pt"
    out.write_bytes(b"something")
    args = ["-q", "realign", str(base), "--parallel", f"tsv:{corpus}", "--pairs", f"dict:{muse}", "-o", str(out)]
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"layerscope: error: {out}: exists; pass --force to replace it"
    assert out.read_bytes() == b"something"


@pytest.mark.parametrize("extra,message", [
    (["--freeze", "0-9"], "outside the model's blocks 0-3"),
    (["--freeze", "lower", "--layer", "2"], "inside the frozen blocks"),
    (["--pairs", "fastalign"], "unknown pair source"),
])
def test_realign_command_errors(setup, capsys, extra, message):
    from layerscope.cli import main

    root, base, corpus, muse = setup
    args = ["-q", "realign", str(base), "--parallel", f"tsv:{corpus}", "--pairs", f"dict:{muse}",
            "--steps", "2", "--device", "cpu", "-o", str(root / "never.pt"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("layerscope: error:") and message in err[-1]
    assert not (root / "never.pt").exists()


def test_kernels_option_is_recorded_and_checked(setup, capsys):
    from layerscope import cli

    root, base, corpus, muse = setup
    out = root / "torch-kernels.pt"
    common = [str(base), "--parallel", f"tsv:{corpus}", "--pairs", f"dict:{muse}", "--langs", "fr", "--steps", "2",
              "--batch-size", "4", "--device", "cpu", "-o", str(out)]
    assert cli.main(["realign", *common, "--kernels", "torch"]) == 0
    assert torch.load(out, weights_only=True)["meta"]["kernels"] == "torch"
    with pytest.raises(SystemExit) as exited:
        cli.main(["realign", *common, "--kernels", "cuda", "--force"])
    assert exited.value.code == 2 and "--kernels" in capsys.readouterr().err


def test_help_has_examples():
    from layerscope.commands import realign as command

    assert "examples:" in command.EPILOG and "--freeze lower" in command.EPILOG
