"""Data parallelism under Hugging Face Accelerate, on CPU with two processes (gloo).

Two processes with a per-process batch of B take the same optimiser steps as one process with
batch B and gradient accumulation 2 (same effective batch): the shards of a global batch are
the consecutive batches one process would draw, and the all-reduce averages the gradients the
way accumulation does. Without dropout the weights agree up to the order of float sums.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerscope.distributed import SINGLE, Workers
from layerscope.realign.data import RoundRobinSampler

from conftest import TASK_FIXTURES

REPO = Path(__file__).resolve().parent.parent
FIXTURES = TASK_FIXTURES  # the committed fixtures and the PoS files built at test time
PARALLEL = f"tsv:{FIXTURES / 'realign' / 'parallel.tsv'}"
PAIRS = f"dict:{FIXTURES / 'realign' / 'dict'}"
POS_TRAIN = FIXTURES / "pos" / "en_handmade-train.conllu"
POS_EVAL = f"{FIXTURES / 'pos' / 'fr_handmade-test.conllu'},{FIXTURES / 'pos' / 'de_handmade-test.conllu'}"

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- pure parts


def test_rank_shards_of_a_global_batch_are_consecutive_single_process_batches():
    sizes = {"fr": 5, "de": 7, "ja": 3}
    single = RoundRobinSampler(sizes, batch_size=4, seed=3)
    global_sampler = RoundRobinSampler(sizes, batch_size=8, seed=3)
    team = [Workers(None, rank, 2) for rank in range(2)]
    for _ in range(6):
        draws = global_sampler.next_batch()
        assert team[0].shard(draws) == single.next_batch()
        assert team[1].shard(draws) == single.next_batch()


def test_single_process_workers_change_nothing():
    assert not SINGLE.distributed and SINGLE.is_main and SINGLE.device is None
    assert SINGLE.shard([1, 2, 3]) == [1, 2, 3]
    assert SINGLE.mean(2.5) == 2.5 and SINGLE.sum(3.0) == 3.0 and SINGLE.gather_objects("x") == ["x"]


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="does not split evenly over 2 processes"):
        Workers(None, 0, 2).shard([1, 2, 3])


# --------------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny BERT without dropout (so that processes draw no different masks) and its checkpoint."""
    from transformers import AutoModel

    from layerscope.models import save_checkpoint
    from layerscope.models.encoder import _finish, checkpoint_from_encoder
    from layerscope.models.toymodels import tiny_config, train_tokenizer

    texts = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix in (".conllu", ".txt", ".tsv"):
            texts += path.read_text(encoding="utf-8").split("\n")
    tokenizer = train_tokenizer(texts, arch="bert", vocab_size=400)
    config = tiny_config("bert", len(tokenizer), layers=2, width=32, heads=2, tokenizer=tokenizer)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    encoder = _finish(model, tokenizer, name="tiny", source_hash="tiny", meta={}, tokenizer_name=None, device="cpu")
    path = tmp_path_factory.mktemp("dist") / "base.pt"
    save_checkpoint(path, checkpoint_from_encoder(encoder, meta={"name": "tiny"}))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_two(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``accelerate launch`` with two CPU processes: the launcher's multi-process path falls back
    to gloo when there is no GPU (and CUDA is hidden so that it never finds one)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               LAYERSCOPE_QUIET="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "layerscope", *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_two_processes_realign_like_one_with_accumulation(base, tmp_path):
    from layerscope.realign import realign

    common = dict(parallel=PARALLEL, pairs=PAIRS, langs="fr,de", freeze="lower", steps=3, lr=1e-3, seed=4,
                  device="cpu")
    out = tmp_path / "two.pt"
    done = _launch_two(["-q", "realign", str(base), "--parallel", PARALLEL, "--pairs", PAIRS, "--langs", "fr,de",
                        "--freeze", "lower", "--steps", "3", "--batch-size", "2", "--lr", "1e-3", "--seed", "4",
                        "--device", "cpu", "-o", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # one process reports and writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.pt"]  # no partial or temporary file left
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["processes"] == 2 and meta["effective_batch"] == 4

    one = realign(base, batch_size=2, accumulation=2, **common)
    small = realign(base, batch_size=2, accumulation=1, **common)
    assert one.checkpoint.meta["effective_batch"] == 4
    assert meta["first_loss"] == pytest.approx(one.history[0], rel=1e-5)
    assert meta["final_loss"] == pytest.approx(one.history[-1], rel=1e-5)
    two_weights, one_weights = _weights(out), one.checkpoint.state_dict
    moved = [k for k in one_weights if not torch.equal(one_weights[k], torch.load(base, weights_only=True)
                                                       ["state_dict"][k])]
    assert moved, "realignment changed nothing; the comparison below would be empty"
    for key in one_weights:
        assert torch.allclose(two_weights[key], one_weights[key], atol=1e-6, rtol=1e-5), key
    # A smaller effective batch takes other steps: the agreement above is not a matter of course.
    assert any(not torch.allclose(two_weights[k], small.checkpoint.state_dict[k], atol=1e-6) for k in moved)


@pytest.mark.slow
def test_two_processes_finetune_like_one(base, tmp_path):
    from layerscope.tasks import finetune

    out = tmp_path / "two.csv"
    done = _launch_two(["-q", "finetune", str(base), "--task", "pos", "--train", str(POS_TRAIN), "--eval", POS_EVAL,
                        "--seeds", "31", "--steps", "3", "--batch-size", "8", "--micro-batch-size", "2",
                        "--lr", "1e-3", "--device", "cpu", "-o", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1
    two = json.loads((tmp_path / "two.json").read_text())["runs"][0]

    one = finetune(base, task="pos", train=str(POS_TRAIN), eval=POS_EVAL, seeds="31", steps=3, batch_size=8,
                   micro_batch_size=2, lr=1e-3, device="cpu").run["runs"][0]
    assert two["task_loss"] == pytest.approx(one["task_loss"], rel=1e-5)
    assert len(set(one["task_loss"])) > 1  # the loss moved, so the steps were taken
    for lang, scores in one["scores"].items():
        assert two["scores"][lang] == pytest.approx(scores, abs=1e-9)


def test_during_schedule_and_uneven_micro_batches_are_refused_in_parallel():
    from layerscope.errors import LayerscopeError
    from layerscope.tasks.train import TrainSettings, train_task

    team = Workers(None, 0, 2)
    settings = TrainSettings(steps=1, batch_size=6, micro_batch_size=2)
    with pytest.raises(LayerscopeError, match="do not split over 2 processes"):
        train_task(torch.nn.Linear(1, 1), [object()], settings, pad_id=0, workers=team)
    with pytest.raises(LayerscopeError, match="'during' schedule runs in one process"):
        train_task(torch.nn.Linear(1, 1), [object()], TrainSettings(steps=1, batch_size=4, micro_batch_size=2),
                   pad_id=0, objective=object(), workers=team)
