"""--precision on the CPU: what ``auto`` resolves to, that bf16 autocast really runs, that losses
and optimiser states stay float32, determinism and resume in bf16, and the precision recorded."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
import torch

from conftest import make_encoder, synthetic_parallel
from layerscope import precision
from layerscope.errors import LayerscopeError
from layerscope.models import load_encoder
from layerscope.precision import autocast, resolve_precision
from layerscope.probes import extract
from layerscope.realign import realign, realignment_loss
from layerscope.realign.loss import RealignmentHead
from test_realign import FAST, Interrupted, dictionary, make_corpus, weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def encoder():
    return make_encoder("bert", layers=2, width=32)


@pytest.fixture(scope="module")
def realign_encoder():
    from test_realign import EN, FR, ZH

    from layerscope.models.encoder import _finish
    from layerscope.models.toymodels import build_tiny

    model, tok = build_tiny("bert", EN + FR + ZH, layers=4, width=32, heads=2, vocab_size=300, seed=0)
    return _finish(model, tok, name="tiny-bert", source_hash="hash-bert", meta={}, tokenizer_name=None, device="cpu")


def native(monkeypatch, value: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: value)


# --------------------------------------------------------------------------- what auto means


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_on_the_cpu_follows_native_bf16(monkeypatch, has_bf16):
    native(monkeypatch, has_bf16)
    assert resolve_precision("cpu", "auto") == ("bf16" if has_bf16 else "fp32")
    assert resolve_precision("cpu", "bf16") == "bf16"  # asked for: honoured, native or not
    assert resolve_precision("cpu", "fp32") == "fp32"
    assert resolve_precision("cpu", "fp16") == "fp32"  # no float16 autocast on the CPU
    with pytest.raises(LayerscopeError, match="unknown precision 'int8'"):
        resolve_precision("cpu", "int8")


def test_native_bf16_is_detected_from_the_cpu_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert {"avx512_bf16", "avx512f"} <= precision._cpuinfo_flags(cpuinfo)
    assert precision._cpuinfo_flags(tmp_path / "missing") == set()
    # without torch's own query, the /proc/cpuinfo flags decide
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    for flags, expected in (({"avx512f", "avx512_bf16"}, True), ({"amx_bf16"}, True), ({"avx512f", "avx2"}, False)):
        monkeypatch.setattr(precision, "_cpuinfo_flags", lambda flags=flags: flags)
        assert precision._detect_native_bf16() is expected, flags


def test_the_environment_overrides_the_detection(monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_CPU_BF16", "1")
    assert precision.cpu_has_native_bf16() and resolve_precision("cpu", "auto") == "bf16"
    monkeypatch.setenv("LAYERSCOPE_CPU_BF16", "0")
    assert not precision.cpu_has_native_bf16() and resolve_precision("cpu", "auto") == "fp32"
    monkeypatch.delenv("LAYERSCOPE_CPU_BF16")
    assert precision.cpu_has_native_bf16() == precision._detect_native_bf16()


def test_torch_and_proc_cpuinfo_agree_on_this_cpu():
    """torch's cpuinfo query and the kernel's flags are two independent readings of one CPU."""
    flags = precision._cpuinfo_flags()
    query = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if not flags or query is None:
        pytest.skip("needs /proc/cpuinfo and torch's CPU feature query")
    assert bool(query()) == ("avx512_bf16" in flags)


def test_bf16_without_native_support_says_it_will_be_slow(monkeypatch, caplog):
    native(monkeypatch, False)
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="layerscope.precision"):
        with autocast("cpu", "bf16"):
            assert torch.is_autocast_enabled("cpu")
    assert "slower than fp32" in caplog.text
    caplog.clear()
    native(monkeypatch, True)
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="layerscope.precision"):
        with autocast("cpu", "auto"):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        with autocast("cpu", "fp32"):
            assert not torch.is_autocast_enabled("cpu")
    assert caplog.text == ""


# --------------------------------------------------------------------------- extraction


def _linear_output_dtypes(module: torch.nn.Module, run) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
               for m in module.modules() if isinstance(m, torch.nn.Linear)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_bf16_extraction_runs_in_bf16_and_stores_float32(encoder):
    sentences = synthetic_parallel(12)["en"]
    assert _linear_output_dtypes(encoder.model, lambda: extract(encoder, sentences, precision="bf16")) == {torch.bfloat16}
    assert _linear_output_dtypes(encoder.model, lambda: extract(encoder, sentences, precision="fp32")) == {torch.float32}
    fp32 = extract(encoder, sentences, precision="fp32").values
    bf16 = extract(encoder, sentences, precision="bf16").values
    again = extract(encoder, sentences, precision="bf16").values
    assert bf16.dtype == torch.float32
    assert torch.equal(bf16, again)  # same precision, same machine: bit-identical
    assert not torch.equal(bf16, fp32)
    # bf16 keeps 8 significant bits (relative rounding 2^-9); a few layers of it stay within a few percent
    relative = (bf16 - fp32).norm(dim=-1) / fp32.norm(dim=-1)
    assert relative.max() < 0.05, relative.max()


def test_the_activation_cache_keeps_precisions_apart(encoder, tmp_path):
    sentences = synthetic_parallel(12)["en"]
    fp32 = extract(encoder, sentences, precision="fp32", cache_dir=tmp_path).values
    bf16 = extract(encoder, sentences, precision="bf16", cache_dir=tmp_path).values
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not torch.equal(fp32, bf16)
    assert torch.equal(extract(encoder, sentences, precision="bf16", cache_dir=tmp_path).values, bf16)
    assert torch.equal(extract(encoder, sentences, precision="auto", cache_dir=tmp_path).values, fp32)  # conftest


# --------------------------------------------------------------------------- realignment


def test_realignment_loss_and_adam_states_stay_float32(realign_encoder):
    from layerscope.realign.data import extract_pairs
    from layerscope.realign.train import Realigner

    data = extract_pairs(realign_encoder.tokenizer, make_corpus(), dictionary())
    import copy
    import dataclasses

    enc = dataclasses.replace(realign_encoder, model=copy.deepcopy(realign_encoder.model))
    trainer = Realigner(enc, data.examples, layer=enc.num_layers, lr=1e-3, batch_size=4, precision="bf16")
    batch = trainer.batches.next()
    seen = _linear_output_dtypes(enc.model, lambda: realignment_loss(enc, trainer.head, batch, enc.num_layers,
                                                                     precision="bf16"))
    assert torch.bfloat16 in seen  # the encoder ran in bf16 ...
    head = RealignmentHead(enc.hidden_size)
    head_dtypes = _linear_output_dtypes(head, lambda: realignment_loss(enc, head, batch, enc.num_layers,
                                                                       precision="bf16"))
    assert head_dtypes == {torch.float32}  # ... the head did not
    loss = realignment_loss(enc, trainer.head, batch, enc.num_layers, precision="bf16")
    assert loss.dtype == torch.float32
    trainer.train_step()
    states = [t for state in trainer.optimizer.state.values() for t in state.values() if t.ndim > 0]
    assert states and all(t.dtype == torch.float32 for t in states)
    assert all(p.dtype == torch.float32 for p in enc.model.parameters())


def test_bf16_realignment_is_deterministic_differs_from_fp32_and_is_recorded(realign_encoder):
    common = dict(parallel=make_corpus(), pairs=dictionary(), freeze="none", seed=3, **FAST)
    a = realign(realign_encoder, precision="bf16", **common)
    b = realign(realign_encoder, precision="bf16", **common)
    c = realign(realign_encoder, precision="fp32", **common)
    wa, wb, wc = weights(a.encoder), weights(b.encoder), weights(c.encoder)
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a.history == b.history
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert a.checkpoint.meta["precision"] == "bf16" and c.checkpoint.meta["precision"] == "fp32"
    auto = realign(realign_encoder, precision="auto", **common)  # conftest: no native bf16 here
    assert auto.checkpoint.meta["precision"] == "fp32"
    with pytest.raises(LayerscopeError, match="unknown precision"):
        realign(realign_encoder, precision="half", **common)


def test_bf16_resume_reaches_the_uninterrupted_weights(realign_encoder, tmp_path):
    common = dict(parallel=make_corpus(), pairs=dictionary(), freeze="lower", steps=6, lr=1e-3, batch_size=4, seed=1,
                  precision="bf16")
    full = realign(realign_encoder, output=tmp_path / "full.pt", **common)

    def stop_at_5(step, loss):
        if step == 5:
            raise Interrupted

    target = tmp_path / "resumed.pt"
    with pytest.raises(Interrupted):
        realign(realign_encoder, output=target, checkpoint_every=2, on_step=stop_at_5, **common)
    with pytest.raises(LayerscopeError, match="cannot resume.*precision"):
        realign(realign_encoder, output=target, resume=True, **{**common, "precision": "fp32"})
    resumed = realign(realign_encoder, output=target, checkpoint_every=2, resume=True, **common)
    assert resumed.checkpoint.meta["resumed_from_step"] == 4 and resumed.checkpoint.meta["precision"] == "bf16"
    wf, wr = weights(full.encoder), weights(resumed.encoder)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed.history == full.history
    assert load_encoder(target).checkpoint_meta["precision"] == "bf16"


# --------------------------------------------------------------------------- fine-tuning


def test_bf16_fine_tuning_is_deterministic_and_keeps_float32_loss(encoder):
    import copy
    import dataclasses

    from layerscope.tasks import TaggedSentence, TaskModel, TrainSettings, train_task
    from layerscope.tasks.features import encode_tagging

    words = synthetic_parallel(24)["en"]
    sentences = [TaggedSentence(s.split(), ["A" if i % 2 else "B" for i in range(len(s.split()))], str(k))
                 for k, s in enumerate(words)]
    features = encode_tagging(encoder.tokenizer, sentences, {"A": 0, "B": 1}, max_length=32)
    settings = TrainSettings(steps=3, batch_size=8, micro_batch_size=4, lr=1e-3, seed=5)

    def run(precision_: str):
        torch.manual_seed(0)  # the head's initial weights
        model = TaskModel(dataclasses.replace(encoder, model=copy.deepcopy(encoder.model)), "tagging", 2)
        history = train_task(model, features, settings, pad_id=encoder.tokenizer.pad_token_id, precision=precision_)
        return history.task_loss, {k: v.clone() for k, v in model.state_dict().items()}

    loss_a, state_a = run("bf16")
    loss_b, state_b = run("bf16")
    loss_c, _ = run("fp32")
    assert loss_a == loss_b and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert loss_a != loss_c
    assert all(v.dtype == torch.float32 for v in state_a.values() if v.is_floating_point())


def test_finetune_run_records_the_precision_used(tmp_path):
    from test_finetune import FAST as FT_FAST, POS_EVAL, POS_TRAIN

    from layerscope.tasks.job import finetune

    texts = [line for path in (Path(POS_TRAIN),) for line in path.read_text(encoding="utf-8").split("\n")]
    tiny = make_encoder("bert", layers=1, width=16, texts=texts)
    result = finetune(tiny, task="pos", train=POS_TRAIN, eval=POS_EVAL, seeds=[1], precision="bf16",
                      **{**FT_FAST, "steps": 1})
    assert result.run["precision"] == "bf16"
    assert finetune(tiny, task="pos", train=POS_TRAIN, eval=POS_EVAL, seeds=[1],
                    **{**FT_FAST, "steps": 1}).run["precision"] == "fp32"  # auto, no native bf16 (conftest)


def test_bf16_step_is_the_same_with_compact_embedding_gradients_and_close_to_fp32(realign_encoder):
    """bf16_speed.py times the realignment step inside the optimiser's sparse-gradient context, as
    Realigner.run takes it: in bf16 that step is the one taken with the dense embedding gradient,
    bit for bit, and its loss differs from fp32's by about bf16's rounding, not more."""
    import copy
    import dataclasses

    from layerscope import optim
    from layerscope.realign.data import extract_pairs
    from layerscope.realign.train import Realigner

    data = extract_pairs(realign_encoder.tokenizer, make_corpus(), dictionary())

    def steps(precision_: str, compact: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
        enc = dataclasses.replace(realign_encoder, model=copy.deepcopy(realign_encoder.model))
        trainer = Realigner(enc, data.examples, layer=enc.num_layers, lr=1e-3, batch_size=4, seed=4,
                            precision=precision_)
        context = optim.sparse_gradients(trainer.optimizer) if compact else contextlib.nullcontext()
        with context:
            losses = [trainer.train_step()[0] for _ in range(3)]
        return losses, {k: v.detach().clone() for k, v in enc.model.state_dict().items()}

    compact_loss, compact_weights = steps("bf16", compact=True)
    dense_loss, dense_weights = steps("bf16", compact=False)
    fp32_loss, fp32_weights = steps("fp32", compact=True)
    assert compact_loss == dense_loss
    assert all(torch.equal(compact_weights[k], dense_weights[k]) for k in dense_weights)
    assert isinstance(realign_encoder.model.get_input_embeddings(), torch.nn.Embedding)
    # The first step starts from the same weights, batch and dropout draws in both precisions:
    # only rounding separates the losses (bf16 keeps 8 significant bits, relative 2^-9 per value).
    assert compact_loss[0] != fp32_loss[0]
    assert abs(compact_loss[0] - fp32_loss[0]) < 1e-3 * fp32_loss[0], (compact_loss[0], fp32_loss[0])
    assert any(not torch.equal(compact_weights[k], fp32_weights[k]) for k in fp32_weights)
