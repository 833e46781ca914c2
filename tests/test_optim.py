"""The touched-rows Adam is the dense torch Adam/AdamW bit for bit; the realignment forward pass
stops at the realignment layer with the full forward's loss and gradients."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from layerscope import optim
from layerscope.models.encoder import _finish
from layerscope.realign import realign
from layerscope.tasks import TaskModel, TrainSettings, train_task

from test_distributed import PAIRS, PARALLEL, _launch_two, base  # noqa: F401 (base: a fixture)
from test_realign import EN, FR, ZH, dictionary, make_corpus
from test_tasks_train import LABELS, _features, synthetic_tagging, tiny_encoder

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture
def dense(monkeypatch):
    """Within the test, ``dense()`` switches every optimiser built afterwards to the dense one."""
    return lambda: monkeypatch.setenv(optim.DENSE_ENV, "1")


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, differing[:5]


# --------------------------------------------------------------------------- the optimiser alone


class _Toy(nn.Module):
    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, width, padding_idx=1)
        self.out = nn.Linear(width, 3)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.table(ids))).pow(2).mean()


@pytest.mark.parametrize("width,decoupled,sparse,fused", [(384, False, True, False), (37, True, True, False),
                                                          (64, False, False, False), (384, False, True, True),
                                                          (37, True, True, True), (64, True, False, True)])
def test_equals_dense_adam_step_by_step(width, decoupled, sparse, fused):
    """20 steps with two backward passes each (rows repeated within and across them), clipping
    on odd steps, no zero_grad before step 7, row 999 touched at step 3 only and rows 30-49 only in the first 5 steps: every
    parameter is torch.equal to the dense optimiser's after every step; untouched rows never move
    and the once-touched rows keep moving afterwards. ``fused``: both take PyTorch's fused CPU
    kernel (the fast training kernels' optimiser)."""
    torch.manual_seed(0)
    reference = _Toy(1000, width)
    candidate = copy.deepcopy(reference)
    start = reference.table.weight.detach().clone()
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    options = {"fused": True} if fused else {}
    dense_opt = kind(reference.parameters(), lr=1e-2, weight_decay=0.0, **options)
    rows_opt = optim.adam(candidate.parameters(), lr=1e-2, weight_decay=0.0, decoupled=decoupled,
                          embeddings=optim.word_embeddings(candidate), hook=sparse, **options)
    assert isinstance(rows_opt, optim.TouchedRowsAdam)
    assert bool(rows_opt.param_groups[0]["fused"]) == fused
    generator = torch.Generator().manual_seed(1)
    late = {}
    for step in range(20):
        high = 50 if step < 5 else 30
        inputs = [torch.randint(0, high, (4, 7), generator=generator) for _ in range(2)]
        if step == 0:
            inputs.insert(0, torch.arange(50).view(5, 10))
        if step == 3:
            inputs.insert(0, torch.tensor([[999, 999, 5]]))
        for model, opt in ((reference, dense_opt), (candidate, rows_opt)):
            if step != 7:  # at step 7 the new gradients add to step 6's (clipped) ones
                opt.zero_grad(set_to_none=True)
            with optim.sparse_gradients(opt):
                for ids in inputs:
                    model(ids).backward()
            if step % 2:
                norm = optim.clip_grad_norm_(opt, list(model.parameters()), 0.05)
                late.setdefault(step, []).append(norm)
            opt.step()
        if step % 2:
            assert torch.equal(*late[step]), step
        _assert_equal(_params(reference), _params(candidate))
        if step in (4, 19):
            late[f"row999-{step}"] = candidate.table.weight[999].detach().clone()
            late[f"row40-{step}"] = candidate.table.weight[40].detach().clone()
    assert not torch.equal(late["row999-4"], late["row999-19"])  # touched once, keeps moving
    assert not torch.equal(late["row40-4"], late["row40-19"])
    untouched = list(range(50, 999))
    assert torch.equal(candidate.table.weight[untouched], start[untouched])
    assert rows_opt.touched_rows[0].tolist() == [r for r in range(50) if r != 1] + [999]
    assert rows_opt._rows[0].exp_avg.shape == (50, width) and rows_opt._rows[0].exp_avg.is_contiguous()


def test_state_round_trip_and_dense_state_conversion():
    """Saving after 3 steps and loading into fresh optimisers (from this one's state, and from
    the dense Adam's state) continues exactly as the uninterrupted dense optimiser."""
    torch.manual_seed(0)
    reference = _Toy(300, 16)
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, 40, (3, 5), generator=generator) for _ in range(6)]

    def run(model, opt, part):
        for ids in part:
            opt.zero_grad()
            with optim.sparse_gradients(opt):
                model(ids).backward()
            opt.step()

    dense_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    run(reference, dense_opt, batches[:3])
    rows_model = copy.deepcopy(reference)
    saved_dense = copy.deepcopy(dense_opt.state_dict())
    run(reference, dense_opt, batches[3:])

    rows_opt = optim.adam(rows_model.parameters(), lr=1e-2, embeddings=optim.word_embeddings(rows_model))
    rows_opt.load_state_dict(saved_dense)
    second_model = copy.deepcopy(rows_model)
    second = optim.adam(second_model.parameters(), lr=1e-2, embeddings=optim.word_embeddings(second_model))
    second.load_state_dict(copy.deepcopy(rows_opt.state_dict()))
    run(rows_model, rows_opt, batches[3:])
    run(second_model, second, batches[3:])
    _assert_equal(_params(reference), _params(rows_model))
    _assert_equal(_params(reference), _params(second_model))


def test_falls_back_to_dense_where_not_exact(caplog):
    model = _Toy(50, 8)
    with caplog.at_level(logging.INFO, logger="layerscope.optim"):
        decayed = optim.adam(model.parameters(), lr=1e-3, weight_decay=0.01, decoupled=True,
                             embeddings=optim.word_embeddings(model))
        amsgrad = optim.adam(model.parameters(), lr=1e-3, amsgrad=True, embeddings=optim.word_embeddings(model))
    assert type(decayed) is torch.optim.AdamW and type(amsgrad) is torch.optim.Adam
    assert "weight decay 0.01" in caplog.text and "amsgrad" in caplog.text
    model.table.weight.requires_grad_(False)
    assert optim.word_embeddings(model) == []


# --------------------------------------------------------------------------- realignment and fine-tuning


@pytest.fixture(scope="module")
def tiny():
    from layerscope.models.toymodels import build_tiny

    out = {}
    for arch in ("bert", "xlm-roberta"):
        model, tok = build_tiny(arch, EN + FR + ZH, layers=4, width=32, heads=2, vocab_size=300, seed=0)
        out[arch] = _finish(model, tok, name=f"tiny-{arch}", source_hash=f"hash-{arch}", meta={},
                            tokenizer_name=None, device="cpu")
    return out


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta"])
def test_realignment_equals_dense_adam(tiny, dense, arch, caplog):
    common = dict(parallel=make_corpus(), pairs=dictionary(), freeze="none", steps=5, lr=1e-3, batch_size=4,
                  accumulation=2, seed=2)
    with caplog.at_level(logging.INFO, logger="layerscope.optim"):
        rows = realign(tiny[arch], **common)
    assert "touched rows" in caplog.text
    dense()
    full = realign(tiny[arch], **common)
    assert rows.history == full.history
    _assert_equal(_params(full.encoder.model), _params(rows.encoder.model))
    table = rows.encoder.model.get_input_embeddings()
    assert not table.sparse and not table.weight._backward_hooks  # nothing left on the model


def test_realignment_resume_is_bit_identical_with_trainable_embeddings(tiny, dense, tmp_path):
    class Stop(Exception):
        pass

    def stop_at_4(step, _loss):
        if step == 4:
            raise Stop

    common = dict(parallel=make_corpus(), pairs=dictionary(), freeze="none", steps=6, lr=1e-3, batch_size=4, seed=1)
    target = tmp_path / "r.pt"
    with pytest.raises(Stop):
        realign(tiny["xlm-roberta"], output=target, checkpoint_every=3, on_step=stop_at_4, **common)
    state = torch.load(tmp_path / "r.partial.pt", weights_only=True)["resume"]["trainer"]["optimizer"]
    assert "touched_rows" in state and 0 < len(state["touched_rows"][0]["index"]) < 300
    resumed = realign(tiny["xlm-roberta"], output=target, resume=True, **common)
    dense()
    full = realign(tiny["xlm-roberta"], **common)
    assert resumed.history == full.history
    _assert_equal(_params(full.encoder.model), _params(resumed.encoder.model))


def _finetune(encoder, *, objective=None, realign_params=None, steps=4):
    from layerscope.tasks.job import _fresh_copy

    encoder = _fresh_copy(encoder)
    torch.manual_seed(0)
    model = TaskModel(encoder, "tagging", len(LABELS))
    history = train_task(model, _features(encoder, synthetic_tagging(48, 0)),
                         TrainSettings(steps=steps, lr=5e-3, micro_batch_size=8, batch_size=16, warmup=0.25),
                         pad_id=encoder.tokenizer.pad_token_id, objective=objective, realign_params=realign_params)
    return history, _params(model)


def test_finetuning_equals_dense_adamw(dense):
    encoder = tiny_encoder(dropout=0.1, layers=2)
    h_rows, w_rows = _finetune(encoder)
    dense()
    h_dense, w_dense = _finetune(encoder)
    assert h_rows.task_loss == h_dense.task_loss
    _assert_equal(w_dense, w_rows)


def test_during_schedule_equals_dense_adamw(dense):
    from test_tasks_train import realign_inputs

    from layerscope.models import parse_freeze_policy
    from layerscope.realign import during_objective
    from layerscope.tasks.job import _realign_params

    encoder = tiny_encoder(layers=4, extra_texts=EN + FR)
    corpus, pairs = realign_inputs()
    outcomes = []
    for _ in range(2):
        objective = during_objective(encoder, corpus, pairs=pairs, batch_size=4, seed=0)
        params = _realign_params(encoder, parse_freeze_policy("none", encoder.num_layers))
        outcomes.append(_finetune(encoder, objective=objective, realign_params=params, steps=3))
        dense()
    (h_rows, w_rows), (h_dense, w_dense) = outcomes
    assert h_rows.realign_loss == h_dense.realign_loss and h_rows.task_loss == h_dense.task_loss
    _assert_equal(w_dense, w_rows)


# --------------------------------------------------------------------------- the forward pass stops early


def test_early_stop_keeps_the_loss_and_gradients(tiny):
    """The loss at layer 2 of 4 with the forward pass stopped there equals, with its gradients,
    the loss read from a full forward pass (same dropout draws: the upper blocks draw last)."""
    from layerscope.probes.activations import capture_output
    from layerscope.realign import train as train_module

    encoder = tiny["bert"]
    batch = encoder.tokenizer(["the cat sleeps on the mat", "le chat dort"], padding=True, return_tensors="pt")
    ran = []
    hooks = [block.register_forward_hook(lambda *_a, i=i: ran.append(i)) for i, block in enumerate(encoder.blocks)]
    encoder.model.train()

    def loss_and_grads(stop: bool):
        encoder.model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        if stop:
            hidden = train_module.hidden_at_layer(encoder, batch["input_ids"], batch["attention_mask"], 2)
        else:
            with capture_output(encoder.blocks[1]) as store:
                encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            hidden = store["output"]
        loss = hidden.pow(2).mean() + hidden[:, 1].sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in encoder.model.named_parameters() if p.grad is not None}

    try:
        full_loss, full_grads = loss_and_grads(stop=False)
        ran.clear()
        early_loss, early_grads = loss_and_grads(stop=True)
    finally:
        for hook in hooks:
            hook.remove()
        encoder.model.eval()
    assert ran == [0, 1]
    assert torch.equal(full_loss, early_loss)
    _assert_equal(full_grads, early_grads)


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def e5_dir(e5_small_base) -> Path:
    """multilingual-e5-small as ``layerscope snapshot e5-small`` writes it (skipped without it)."""
    return e5_small_base


def test_real_model_realignment_and_finetuning_equal_dense(e5_dir, dense):
    """multilingual-e5-small (250,037 × 384 embeddings): 2 realignment steps and 2 fine-tuning
    steps with the touched-rows optimiser are torch.equal to the dense Adam / AdamW."""
    from layerscope.models import load_encoder

    outcomes = []
    for _ in range(2):
        encoder = load_encoder(str(e5_dir))
        result = realign(encoder, parallel=make_corpus(), pairs=dictionary(), freeze="none", steps=2, lr=1e-4,
                         batch_size=4, seed=0)
        history, weights = _finetune(result.encoder, steps=2)
        outcomes.append((result.history, history.task_loss, weights))
        del encoder, result
        dense()
    (r_rows, t_rows, w_rows), (r_dense, t_dense, w_dense) = outcomes
    assert r_rows == r_dense and t_rows == t_dense
    _assert_equal(w_dense, w_rows)


# --------------------------------------------------------------------------- data parallelism


@pytest.mark.slow
def test_two_processes_touched_rows_equal_dense(base, tmp_path, monkeypatch):
    """Under ``accelerate launch`` with two processes, each seeing its own sentences, the rows
    read from the all-reduced gradient make the same weights as the dense Adam, bit for bit."""
    outputs = {}
    for name in ("rows", "dense"):
        if name == "dense":
            monkeypatch.setenv(optim.DENSE_ENV, "1")
        out = tmp_path / f"{name}.pt"
        done = _launch_two(["-q", "realign", str(base), "--parallel", PARALLEL, "--pairs", PAIRS, "--langs", "fr,de",
                            "--freeze", "none", "--steps", "3", "--batch-size", "2", "--lr", "1e-3", "--seed", "4",
                            "--device", "cpu", "-o", str(out)], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[name] = torch.load(out, weights_only=True)["state_dict"]
    _assert_equal(outputs["dense"], outputs["rows"])
