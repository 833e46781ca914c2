"""The fast CPU training kernels (layerscope.kernels): dropout's law, attention against an
independent float64 computation with the same mask, the casts autocast would make, and that
realignment and fine-tuning take them, record them, and stay deterministic."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_encoder, synthetic_parallel
from layerscope import kernels
from layerscope.errors import LayerscopeError
from layerscope.kernels import (FastKernelsMode, attention_with_dropout, fast_dropout, keep_mask, keep_threshold,
                                resolve_kernels, training_kernels)

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- dropout's law


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_expectation_are_those_of_inverted_dropout(p):
    torch.manual_seed(0)
    n = 1 << 22
    keep, scale = keep_mask((n,), p)
    rate = keep_threshold(p) / 65536
    assert abs(rate - (1 - p)) <= 2 ** -17  # 16-bit resolution of the keep probability
    observed = keep.double().mean().item()
    assert abs(observed - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    assert rate * scale == pytest.approx(1.0, abs=1e-15)  # E[mask * scale] = 1 exactly
    out = fast_dropout(torch.ones(n), p)
    assert torch.equal(out.unique(), torch.tensor([0.0, scale], dtype=torch.float32))
    assert out.double().mean().item() == pytest.approx(1.0, abs=6 * math.sqrt((1 - rate) / rate / n))


def test_mask_lanes_are_independent():
    """Four elements share one 64-bit draw: neighbours must not be correlated."""
    torch.manual_seed(1)
    keep, _ = keep_mask((1 << 22,), 0.5)
    lanes = keep.view(-1, 4).double()
    corr = torch.corrcoef(lanes.T)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(lanes.shape[0])


def test_no_dropout_keeps_everything():
    assert keep_mask((10,), 0.0)[0].all() and keep_mask((10,), 1.0)[0].logical_not().all()
    x = torch.randn(10)
    assert torch.equal(fast_dropout(x, 1e-9), x)


def test_masks_follow_the_seed_and_the_saved_generator_state():
    torch.manual_seed(7)
    first, _ = keep_mask((1000,), 0.1)
    state = torch.get_rng_state()
    second, _ = keep_mask((1000,), 0.1)
    torch.manual_seed(7)
    assert torch.equal(keep_mask((1000,), 0.1)[0], first)
    torch.set_rng_state(state)
    assert torch.equal(keep_mask((1000,), 0.1)[0], second)
    assert not torch.equal(first, second)


def test_dropout_gradient_is_the_scaled_mask():
    x = torch.randn(3, 50, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(2)
    fast_dropout(x, 0.3).sum().backward()
    torch.manual_seed(2)
    keep, scale = keep_mask(x.shape, 0.3)
    assert torch.equal(x.grad, keep.double() * scale)


def test_the_mode_replaces_dropout_only_while_training():
    x = torch.randn(64, 64)
    with FastKernelsMode():
        assert torch.equal(F.dropout(x, 0.5, training=False), x)
        assert torch.equal(torch.nn.Dropout(0.2).eval()(x), x)
        torch.manual_seed(3)
        y = torch.nn.Dropout(0.2).train()(x)
        torch.manual_seed(3)
        z = torch.dropout(x, 0.2, True)
    torch.manual_seed(3)
    keep, scale = keep_mask(x.shape, 0.2)
    assert torch.equal(y, x * (keep.float() * scale)) and torch.equal(z, y)


# --------------------------------------------------------------------------- attention


def reference_attention(q, k, v, allowed, keep, scale):
    """float64, written from the definition: softmax(q k^T / sqrt(E) masked) ⊙ keep × scale, then × v."""
    scores = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, -math.inf)
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (weights * keep.double() * scale) @ v.double()


def qkv(dtype=torch.float32, length=6, source=7):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, length, 8, generator=g, dtype=dtype), torch.randn(2, 3, source, 8, generator=g, dtype=dtype),
            torch.randn(2, 3, source, 5, generator=g, dtype=dtype))


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive", "causal", "empty-row"])
def test_attention_with_dropout_matches_the_definition(mask_kind):
    q, k, v = qkv(length=7)
    allowed = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    kwargs = {}
    if mask_kind in ("bool", "additive", "empty-row"):
        allowed[1, ..., 5:] = False  # padding of the second sequence's keys
        if mask_kind == "empty-row":
            allowed[0, 0, 2, :] = False  # a query that may attend to nothing
        kwargs["attn_mask"] = allowed if mask_kind != "additive" else \
            torch.zeros(allowed.shape).masked_fill(~allowed, -math.inf)
    if mask_kind == "causal":
        allowed = allowed & torch.ones(7, 7, dtype=torch.bool).tril()
        kwargs["is_causal"] = True
    torch.manual_seed(4)
    out = attention_with_dropout(q, k, v, dropout_p=0.25, **kwargs)
    torch.manual_seed(4)
    keep, scale = keep_mask((2, 3, 7, 7), 0.25)
    expected = reference_attention(q, k, v, allowed, keep, scale)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), expected, atol=1e-5, rtol=1e-5)
    if mask_kind == "empty-row":
        assert torch.equal(out[0, :, 2], torch.zeros_like(out[0, :, 2]))


def test_attention_without_dropout_is_pytorchs_and_has_its_gradient():
    q, k, v = (t.double().requires_grad_() for t in qkv())
    mask = torch.ones(2, 1, 6, 7, dtype=torch.bool)
    mask[0, ..., 4:] = False
    ours = attention_with_dropout(q, k, v, attn_mask=mask)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b, c: attention_with_dropout(a, b, c, attn_mask=mask), (q, k, v))
    with FastKernelsMode():  # no dropout: PyTorch's own kernel, untouched
        assert torch.equal(F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                           F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0))


def test_attention_under_bf16_autocast_runs_in_bf16_and_stays_close():
    q, k, v = qkv(torch.bfloat16)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16), FastKernelsMode():
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
    torch.manual_seed(5)
    keep, scale = keep_mask((2, 3, 6, 7), 0.1)
    expected = reference_attention(q, k, v, torch.ones(6, 7, dtype=torch.bool), keep, scale)
    assert out.dtype == torch.bfloat16
    assert (out.double() - expected).abs().max().item() < 0.05 * expected.abs().max().item()


# --------------------------------------------------------------------------- casts


def tiny_encoder():
    return make_encoder("bert", layers=2, width=32)


def test_shared_and_frozen_casts_are_the_roundings_autocast_makes():
    encoder = tiny_encoder()
    model = copy.deepcopy(encoder.model).eval()  # no dropout: only the casts differ
    for param in model.encoder.layer[0].parameters():
        param.requires_grad_(False)
    ids = torch.randint(5, 100, (3, 9))

    def forward(mode):
        with torch.autocast("cpu", dtype=torch.bfloat16), mode:
            return model(input_ids=ids).last_hidden_state

    plain = forward(contextlib.nullcontext())
    fast = forward(FastKernelsMode())
    assert torch.equal(plain, fast)
    frozen = model.encoder.layer[0].attention.self.query.weight
    with torch.no_grad():
        frozen.mul_(2.0)  # an in-place change: the cached cast must not be reused
    assert torch.equal(forward(contextlib.nullcontext()), forward(FastKernelsMode()))
    assert not torch.equal(forward(FastKernelsMode()), fast)


def test_resolve_and_check():
    assert resolve_kernels("cpu", "auto") == "fast" and resolve_kernels("cuda", "auto") == "torch"
    assert resolve_kernels("cpu", "torch") == "torch"
    assert isinstance(training_kernels("cpu", "auto"), FastKernelsMode)
    with pytest.raises(LayerscopeError, match="unknown training kernels"):
        kernels.check_kernels("triton")
    from layerscope.sweep import config as sweep_config  # its own copy: reading a sweep file needs no torch

    assert set(sweep_config.KERNELS) == set(kernels.KERNELS)


# --------------------------------------------------------------------------- the optimiser


def test_fast_kernels_ask_for_the_fused_optimiser_on_a_cpu_only():
    assert kernels.optimizer_options("cpu", "fast") == kernels.optimizer_options("cpu", "auto") == {"fused": True}
    assert kernels.optimizer_options("cpu", "torch") == {}
    assert kernels.optimizer_options("cuda", "auto") == {}  # auto is torch on a GPU


def test_fused_adamw_is_adamw_against_a_float64_reference():
    """The fused AdamW the fast kernels build (through layerscope.optim, touched embedding rows
    included) follows AdamW's definition computed in float64 to float32 rounding."""
    from layerscope import optim

    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 6)
    out = torch.nn.Linear(6, 3)
    model = torch.nn.ModuleDict({"table": table, "out": out})
    model.get_input_embeddings = lambda: table
    start = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    lr, beta1, beta2, eps, decay = 1e-2, 0.9, 0.999, 1e-8, 0.0
    optimizer = optim.adam(model.parameters(), decoupled=True, lr=lr, eps=eps, weight_decay=decay,
                           embeddings=[table], **kernels.optimizer_options("cpu", "fast"))
    assert optimizer.param_groups[0]["fused"]
    generator = torch.Generator().manual_seed(1)
    reference = {k: v.clone() for k, v in start.items()}
    m = {k: torch.zeros_like(v) for k, v in start.items()}
    v2 = {k: torch.zeros_like(v) for k, v in start.items()}
    for step in range(1, 7):
        ids = torch.randint(0, 20 if step < 4 else 50, (4, 5), generator=generator)  # rows 20-49 join late
        optimizer.zero_grad(set_to_none=True)
        with optim.sparse_gradients(optimizer):
            out(torch.tanh(table(ids))).pow(2).mean().backward()
        optimizer.step()
        # AdamW by its definition, in float64, with gradients from the float64 weights (an
        # untouched row has zero gradient and moments: it does not move)
        w = {k: reference[k].clone().requires_grad_() for k in reference}
        (torch.tanh(w["table.weight"][ids]) @ w["out.weight"].T + w["out.bias"]).pow(2).mean().backward()
        for key in reference:
            grad = w[key].grad
            m[key] = beta1 * m[key] + (1 - beta1) * grad
            v2[key] = beta2 * v2[key] + (1 - beta2) * grad ** 2
            m_hat, v_hat = m[key] / (1 - beta1 ** step), v2[key] / (1 - beta2 ** step)
            reference[key] = reference[key] * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + eps)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value.double(), reference[key], rtol=0, atol=2e-6)
    moved = (model.state_dict()["table.weight"].double() != start["table.weight"]).any(dim=1)
    assert moved[:20].all() and moved[20:].any() and not moved[20:].all()


# --------------------------------------------------------------------------- the jobs


def test_realignment_takes_the_kernels_records_them_and_is_deterministic():
    from test_realign import FAST, dictionary, make_corpus, weights

    from layerscope.realign import realign

    encoder = tiny_encoder()
    common = dict(parallel=make_corpus(), pairs=dictionary(), freeze="none", seed=3, **FAST)
    a = realign(encoder, kernels="fast", **common)
    b = realign(encoder, kernels="fast", **common)
    c = realign(encoder, kernels="torch", **common)
    wa, wb, wc = weights(a.encoder), weights(b.encoder), weights(c.encoder)
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a.history == b.history
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)  # other masks, other weights
    assert a.checkpoint.meta["kernels"] == "fast" and c.checkpoint.meta["kernels"] == "torch"
    assert realign(encoder, **common).checkpoint.meta["kernels"] == "fast"  # auto on a CPU
    with pytest.raises(LayerscopeError, match="unknown training kernels"):
        realign(encoder, kernels="cuda-graphs", **common)


def test_the_jobs_step_with_the_fused_optimiser_under_the_fast_kernels(monkeypatch):
    from test_realign import FAST, dictionary, make_corpus

    from layerscope import optim
    from layerscope.realign import realign
    from layerscope.tasks import TaggedSentence, TaskModel, TrainSettings, train_task
    from layerscope.tasks.features import encode_tagging

    built = []
    real_adam = optim.adam
    monkeypatch.setattr(optim, "adam", lambda *a, **kw: built.append(real_adam(*a, **kw)) or built[-1])
    encoder = tiny_encoder()
    fused = []
    for choice in ("fast", "torch", "auto"):
        realign(encoder, parallel=make_corpus(), pairs=dictionary(), freeze="none", seed=3, kernels=choice, **FAST)
        fused.append(bool(built[-1].param_groups[0]["fused"]))
    sentences = [TaggedSentence(s.split(), ["AB"[i % 2] for i in range(len(s.split()))], str(n))
                 for n, s in enumerate(synthetic_parallel(8)["en"])]
    features = encode_tagging(encoder.tokenizer, sentences, {"A": 0, "B": 1}, max_length=32)
    for choice in ("fast", "torch"):
        train_task(TaskModel(copy.deepcopy(encoder), "tagging", 2), features, TrainSettings(steps=1, batch_size=8),
                   pad_id=encoder.tokenizer.pad_token_id, kernels=choice)
        fused.append(bool(built[-1].param_groups[0]["fused"]))
    assert fused == [True, False, True, True, False]


def test_fine_tuning_casts_each_weight_once_per_step_with_the_same_result():
    """train_task opens one autocast region per step (weights cast once for all micro-batches):
    the gradients must be those of one region per micro-batch, bit for bit."""
    from layerscope.tasks import TaggedSentence, TaskModel, TrainSettings, train_task
    from layerscope.tasks.heads import batch_loss
    from layerscope.tasks.train import collate

    encoder = tiny_encoder()
    words = synthetic_parallel(8)["en"]
    sentences = [TaggedSentence(s.split(), ["A" if i % 2 else "B" for i in range(len(s.split()))], str(n))
                 for n, s in enumerate(words)]
    from layerscope.tasks.features import encode_tagging

    features = encode_tagging(encoder.tokenizer, sentences, {"A": 0, "B": 1}, max_length=32)
    pad = encoder.tokenizer.pad_token_id

    def fresh():
        torch.manual_seed(0)
        base = copy.deepcopy(encoder.model)
        base.config.hidden_dropout_prob = base.config.attention_probs_dropout_prob = 0.0
        for module in base.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return TaskModel(dataclasses.replace(encoder, model=base), "tagging", 2)

    from layerscope.tasks.train import _batches, _units

    settings = TrainSettings(steps=1, batch_size=8, micro_batch_size=2, lr=1e-3, seed=5)
    model = fresh()
    train_task(model, features, settings, pad_id=pad, precision="bf16", kernels="torch")
    # p.grad keeps the last step's gradients (they are cleared when a step starts)

    reference = fresh()
    reference.train()
    indices = sorted(_batches(len(features), settings, 1)[0], key=lambda i: len(features[i].input_ids))
    units = _units(features, indices, "tagging")
    for start in range(0, len(indices), 2):
        batch = collate([features[i] for i in indices[start:start + 2]], pad, "tagging", "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = reference(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss, _ = batch_loss("tagging", logits, batch["labels"])
        (loss / units).backward()
    compared = 0
    trained = dict(model.named_parameters())
    for name, param in reference.named_parameters():
        if param.grad is not None and trained[name].grad is not None and "word_embeddings" not in name:
            assert torch.equal(trained[name].grad, param.grad), name
            compared += 1
    assert compared > 10
