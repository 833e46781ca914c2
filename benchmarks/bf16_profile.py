"""Where a training step's time goes in fp32 and in bf16 autocast (torch.profiler, by kind of work).

Model: multilingual-e5-small (``--model``). The two steps of ``bf16_speed.py``, run the way the
product runs them:

- realignment step: :meth:`layerscope.realign.Realigner.train_step` inside the optimiser's
  sparse-gradient context (as :meth:`~layerscope.realign.Realigner.run` does), freeze ``lower``,
  batch 16 FLORES en–fr/de/ru sentence pairs with MUSE word pairs;
- fine-tuning step: a UPOS tagging head on UD English-EWT dev, batch 32 in one forward pass
  (the product's default) or in micro-batches of ``--micro-batch-size``, AdamW over every
  parameter (touched rows for the embeddings; fused with the fast kernels), as in
  :func:`layerscope.tasks.train_task`.

The same batches are run in both precisions, interleaved, ``--repeats`` rounds: first timing
each step's phases without the profiler (forward, backward, optimiser step; wall seconds), then
as many rounds under ``torch.profiler``, which put every operator's own time in the forward and
backward passes in one kind:

- ``matmul``: ``mm``, ``addmm``, ``bmm`` (forward and backward) — what bf16 makes faster;
- ``dropout RNG``: ``bernoulli_`` (the dropout masks);
- ``casts``: copies under ``aten::_to_copy`` (autocast's casts to and from bf16, and those of
  the attention, which on the CPU runs in float32 when dropout is on);
- ``other``: the rest (layer norms, softmax, GELU, residual adds, dropout's multiply, ...).

The profiler adds a cost per operator, which inflates the many small ones, so the table shows
each kind as a share of the profiled forward + backward time, and the seconds come from the
unprofiled phases. The last columns are the best ratio bf16 could give if its matmuls cost
nothing (the optimiser step, the dropout masks, the casts and the rest as measured), and if, in
addition, its casts cost nothing.

    python benchmarks/bf16_profile.py --threads 2 --repeats 3 --json bf16_profile.json

Needs FLORES-200, MUSE and UD under ../shared/data (or $LAYERSCOPE_TEST_DATA).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from _data import add_e5_options, require_data_dir, set_threads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRECISIONS = ("fp32", "bf16")
KINDS = ("matmul", "dropout RNG", "casts", "other")
PHASES = ("forward", "backward", "optimiser")
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}


def kind_of(event) -> str:
    """The kind of work of one profiler event (see the module docstring)."""
    if event.name in MATMUL:
        return "matmul"
    if event.name in ("aten::bernoulli_", "aten::random_"):
        return "dropout RNG"
    if event.name == "aten::copy_" and event.cpu_parent is not None and event.cpu_parent.name == "aten::_to_copy":
        return "casts"
    return "other"


class Phases:
    """Wall seconds of a step's phases; under :meth:`profiled`, the kinds of its operators."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] += now - self._last
        self._last = now

    def restart(self) -> None:
        self._last = time.perf_counter()


def shares(step, precision: str) -> dict[str, float]:
    """Share of each kind in the profiled forward and backward passes of ``step(precision)``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(precision, Phases(), profiled=True)
    seconds = dict.fromkeys(KINDS, 0.0)
    for event in prof.events():
        seconds[kind_of(event)] += event.self_cpu_time_total
    total = sum(seconds.values())
    return {k: v / total for k, v in seconds.items()}


def realign_step(encoder, data: Path, kernels: str = "auto"):
    """A function that runs one realignment step in a given precision (same batch each time)."""
    from layerscope import optim
    from layerscope.corpora import read_corpus
    from layerscope.models import apply_freeze, parse_freeze_policy
    from layerscope.realign import Realigner
    from layerscope.realign.data import extract_pairs
    from layerscope.realign.pairs import pair_source

    corpus = read_corpus(f"flores:{data / 'flores200' / 'devtest'}", languages_=["fr", "de", "ru"], limit=64)
    pairs = extract_pairs(encoder.tokenizer, corpus, pair_source(f"dict:{data / 'muse'}"), max_length=96)
    apply_freeze(encoder, parse_freeze_policy("lower", encoder.num_layers))
    trainer = Realigner(encoder, pairs.examples, layer=encoder.num_layers, lr=2e-5, batch_size=16, seed=0,
                        kernels=kernels)
    batch = trainer.batches.next()
    context = optim.sparse_gradients(trainer.optimizer)
    context.__enter__()  # open for good, as Realigner.run keeps it open while it trains

    def step(precision: str, phases: Phases, profiled: bool = False) -> None:
        trainer.loss_module.precision = precision
        encoder.model.train()
        trainer.head.train()
        trainer.optimizer.zero_grad(set_to_none=True)
        phases.restart()
        loss = trainer.loss_module(batch)
        phases.mark("forward")
        loss.backward()
        phases.mark("backward")
        if not profiled:
            trainer.optimizer.step()
            phases.mark("optimiser")

    step.context = context  # a context no longer referenced would be closed by the garbage collector
    return step


def finetune_step(encoder, data: Path, kernels: str = "auto", micro_batch_size: int = 32):
    """A function that runs one fine-tuning step (batch 32 in micro-batches of ``micro_batch_size``)
    in a given precision."""
    from layerscope import optim
    from layerscope.models import unfreeze_all
    from layerscope.kernels import optimizer_options, training_kernels
    from layerscope.precision import autocast, full_precision
    from layerscope.tasks import TaskModel
    from layerscope.tasks.data import read_conllu_upos
    from layerscope.tasks.features import encode_tagging
    from layerscope.tasks.heads import batch_loss
    from layerscope.tasks.train import collate

    unfreeze_all(encoder)
    sentences = read_conllu_upos(data / "ud" / "en_ewt" / "en_ewt-ud-dev.conllu", limit=32)
    labels = sorted({tag for s in sentences for tag in s.labels})
    features = encode_tagging(encoder.tokenizer, sentences, {t: i for i, t in enumerate(labels)}, max_length=128)
    features = sorted(features, key=lambda f: len(f.input_ids))
    torch.manual_seed(0)
    model = TaskModel(encoder, "tagging", len(labels))
    optimizer = optim.adam(list(model.parameters()), decoupled=True, lr=5e-5, eps=1e-8, weight_decay=0.0,
                           embeddings=optim.word_embeddings(model.base),  # train_task's default: no decay
                           **optimizer_options("cpu", kernels))
    micro = [collate(features[k:k + micro_batch_size], encoder.tokenizer.pad_token_id, "tagging")
             for k in range(0, 32, micro_batch_size)]
    context = optim.sparse_gradients(optimizer)
    context.__enter__()  # as train_task keeps it open

    def step(precision: str, phases: Phases, profiled: bool = False) -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        phases.restart()
        with autocast("cpu", precision):  # one region per step, as train_task opens it
            for batch in micro:
                with training_kernels("cpu", kernels):
                    logits = model(batch["input_ids"], batch["attention_mask"])
                with full_precision("cpu"):
                    loss, units = batch_loss("tagging", logits, batch["labels"])
                    phases.mark("forward")
                    (loss / units).backward()
                phases.mark("backward")
        if not profiled:
            optimizer.step()
            phases.mark("optimiser")

    step.context = context  # a context no longer referenced would be closed by the garbage collector
    return step


def measure(step, repeats: int) -> dict[str, dict[str, float]]:
    """Per precision: median seconds of each phase and of the step over ``repeats`` interleaved
    rounds, then the median share of each kind over as many profiled rounds (after the timed
    ones: the profiler is not switched on before the clock has stopped)."""
    for precision in PRECISIONS:  # warm-up: allocations, Adam's states, the autocast paths
        step(precision, Phases())
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in PRECISIONS}
    orders = [PRECISIONS if round_ % 2 == 0 else PRECISIONS[::-1] for round_ in range(repeats)]
    for order in orders:
        for precision in order:
            phases = Phases()
            step(precision, phases)
            runs[precision].append({**phases.seconds, "step": sum(phases.seconds.values())})
    for round_, order in enumerate(orders):
        for precision in order:
            runs[precision][round_].update(shares(step, precision))
    keys = (*PHASES, "step", *KINDS)
    return {p: {k: statistics.median(r[k] for r in runs[p]) for k in keys} for p in PRECISIONS}


def bounds(figures: dict[str, dict[str, float]]) -> tuple[float, float]:
    """fp32 / bf16 step if bf16's matmuls were free, and if its casts were free as well."""
    bf16 = figures["bf16"]
    passes = bf16["forward"] + bf16["backward"]
    no_matmul = bf16["step"] - passes * bf16["matmul"]
    return figures["fp32"]["step"] / no_matmul, figures["fp32"]["step"] / (no_matmul - passes * bf16["casts"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_e5_options(parser)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--jobs", default="realign,finetune", help="which of realign, finetune (both)")
    parser.add_argument("--kernels", default="auto", choices=["auto", "fast", "torch"],
                        help="training kernels, as the product's --kernels (auto: fast on a CPU)")
    parser.add_argument("--micro-batch-size", type=int, default=32,
                        help="fine-tuning micro-batch (32: the product's default, the batch in one pass)")
    args = parser.parse_args()
    set_threads(args.threads)

    from layerscope.models import load_encoder

    data = require_data_dir("flores200/devtest", "muse", "ud/en_ewt")
    encoder = load_encoder(args.model, device="cpu")
    jobs = args.jobs.split(",")
    rows = {}
    if "realign" in jobs:
        rows["realignment step, batch 16, freeze lower"] = measure(realign_step(encoder, data, args.kernels), args.repeats)
    if "finetune" in jobs:
        split = f" ({32 // args.micro_batch_size} × {args.micro_batch_size})" if args.micro_batch_size < 32 else ""
        rows[f"fine-tuning step, batch 32{split}, UPOS, all parameters"] = measure(
            finetune_step(encoder, data, args.kernels, args.micro_batch_size), args.repeats)
    print(f"\n{args.model}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved rounds: "
          "seconds of each phase, and each kind's share of the forward and backward passes (profiled)")
    print("| step | precision | " + " | ".join(f"{p} s" for p in PHASES) + " | step s | "
          + " | ".join(KINDS) + " | fp32 / bf16 | bound: matmuls free | bound: matmuls and casts free |")
    print("|---|---|" + "---|" * (len(PHASES) + len(KINDS) + 4))
    for name, figures in rows.items():
        free_matmul, free_both = bounds(figures)
        for precision in PRECISIONS:
            f = figures[precision]
            cells = " | ".join(f"{f[p]:.3f}" for p in (*PHASES, "step")) + " | " + \
                " | ".join(f"{100 * f[k]:.0f}%" for k in KINDS)
            tail = (f"{figures['fp32']['step'] / f['step']:.2f}× | {free_matmul:.2f}× | {free_both:.2f}×"
                    if precision == "bf16" else " | | ")
            print(f"| {name} | {precision} | {cells} | {tail} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": torch.get_num_threads(),
                                               "repeats": args.repeats, "figures": rows}, indent=1))


if __name__ == "__main__":
    main()
