"""fp32 against bf16 autocast on this CPU (or GPU): extraction, a realignment step, a fine-tuning step.

Model: multilingual-e5-small (``--model``, default e5-small). Each job is timed in both
precisions in one run, interleaved (fp32, bf16, bf16, fp32, ...) over ``--repeats`` rounds, so
that a busy machine slows both alike; the table shows the median seconds and their ratio.

- extraction: :func:`layerscope.probes.extract` (every layer, mean-pooled, float32 out)
  of the first ``--sentences`` English FLORES-200 devtest sentences;
- realignment step: one :meth:`layerscope.realign.Realigner.train_step` inside the optimiser's
  sparse-gradient context, as :meth:`~layerscope.realign.Realigner.run` takes it (batch of 16 sentence
  pairs from FLORES en–fr/de/ru with MUSE dictionary pairs, forward, backward, Adam), freeze
  policy ``--freeze`` (``lower``, the AlignFreeze default: the embeddings train, and Adam moves
  the rows of the embedding matrix touched so far; ``lower+embeddings`` leaves it out); both
  precisions of a round take the same batch;
- fine-tuning step: :func:`layerscope.tasks.train_task` (UPOS head, batch 32 in one forward
  pass as the product's default, or in micro-batches of ``--micro-batch-size``, AdamW over every
  parameter) for ``--ft-steps`` steps on UD English-EWT dev sentences; the seconds of steps
  2 … N (the first allocates AdamW's states) per step.

``--kernels`` picks the training kernels of both steps as the product's option does (``auto``:
the fast CPU kernels of :mod:`layerscope.kernels`, their fused optimiser step included).

One copy of the weights is kept in memory (the realignment and fine-tuning steps train it in
turn; their cost does not depend on the values of the weights).

With ``--agreement FILE`` (the ``--json`` output of ``bf16_agreement.py``), the agreement
figures are printed beside the ratios.

    python benchmarks/bf16_speed.py --json /tmp/bf16_speed.json --agreement /tmp/bf16_agreement.json
    python benchmarks/bf16_speed.py --quick

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

from _data import add_e5_options, require_data_dir, set_threads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRECISIONS = ("fp32", "bf16")


def interleaved(job, repeats: int) -> dict[str, float]:
    """Median seconds of ``job(precision)`` per precision, alternating the order every round."""
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for round_ in range(repeats):
        for precision in PRECISIONS if round_ % 2 == 0 else PRECISIONS[::-1]:
            tick = time.perf_counter()
            job(precision)
            times[precision].append(time.perf_counter() - tick)
    return {p: statistics.median(v) for p, v in times.items()}


def time_extraction(encoder, sentences: list[str], repeats: int) -> dict[str, float]:
    from layerscope.probes import extract

    return interleaved(lambda p: extract(encoder, sentences, lang="en", precision=p), repeats)


def time_realign_step(encoder, data: Path, *, freeze: str, sentences: int, repeats: int,
                      kernels: str = "auto") -> dict[str, float]:
    """One Realigner (one copy of the weights in memory) whose forward precision is switched
    between steps; the steps keep training the same weights, which does not change their cost."""
    from layerscope import optim
    from layerscope.corpora import read_corpus
    from layerscope.models import apply_freeze, parse_freeze_policy, unfreeze_all
    from layerscope.realign import Realigner
    from layerscope.realign.data import extract_pairs
    from layerscope.realign.pairs import pair_source

    corpus = read_corpus(f"flores:{data / 'flores200' / 'devtest'}", languages_=["fr", "de", "ru"], limit=sentences)
    pairs = extract_pairs(encoder.tokenizer, corpus, pair_source(f"dict:{data / 'muse'}"), max_length=96)
    apply_freeze(encoder, parse_freeze_policy(freeze, encoder.num_layers))
    trainer = Realigner(encoder, pairs.examples, layer=encoder.num_layers, lr=2e-5, batch_size=16, seed=0,
                        kernels=kernels)

    sampler = trainer.batches.sampler
    round_start: list[dict] = []

    def step(precision: str) -> None:
        # Both precisions of a round take the same batch (lengths differ from batch to batch).
        if len(round_start) % 2 == 0:
            round_start.append(sampler.state_dict())
        else:
            sampler.load_state_dict(round_start[-1])
            round_start.append(round_start[-1])
        trainer.loss_module.precision = precision
        trainer.train_step()

    # Realigner.run steps inside the optimiser's sparse-gradient context (the embedding matrix
    # gets a compact gradient, not a dense (V, d) one); the benchmark times the same step.
    try:
        with optim.sparse_gradients(trainer.optimizer):
            trainer.train_step()  # the first step allocates Adam's states: not timed
            return interleaved(step, repeats)
    finally:
        unfreeze_all(encoder)


def time_finetune_step(encoder, data: Path, *, steps: int, repeats: int, kernels: str = "auto",
                       micro_batch_size: int | None = None) -> dict[str, float]:
    """Seconds per step of :func:`train_task`, from its step callbacks: steps 2 … ``steps`` of
    each call (the first allocates AdamW's states)."""
    from layerscope.tasks import TaskModel, TrainSettings, train_task
    from layerscope.tasks.data import read_conllu_upos
    from layerscope.tasks.features import encode_tagging

    sentences = read_conllu_upos(data / "ud" / "en_ewt" / "en_ewt-ud-dev.conllu", limit=32 * steps)
    labels = sorted({tag for s in sentences for tag in s.labels})
    features = encode_tagging(encoder.tokenizer, sentences, {t: i for i, t in enumerate(labels)}, max_length=128)
    settings = TrainSettings(steps=steps, batch_size=32, micro_batch_size=micro_batch_size, lr=5e-5)
    model = TaskModel(encoder, "tagging", len(labels))
    per_step: dict[str, list[float]] = {p: [] for p in PRECISIONS}

    def job(precision: str) -> None:
        marks: list[float] = []
        train_task(model, features, settings, pad_id=encoder.tokenizer.pad_token_id, precision=precision,
                   kernels=kernels, on_step=lambda _step, _loss: marks.append(time.perf_counter()))
        per_step[precision].append((marks[-1] - marks[0]) / (len(marks) - 1))

    interleaved(job, repeats)
    return {p: statistics.median(v) for p, v in per_step.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_e5_options(parser)
    parser.add_argument("--sentences", type=int, default=256, help="FLORES sentences to extract (256)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per job (3)")
    parser.add_argument("--freeze", default="lower", help="freeze policy of the realignment step (lower)")
    parser.add_argument("--ft-steps", type=int, default=3, help="fine-tuning steps per timed run (3; ≥ 2)")
    parser.add_argument("--jobs", default="extraction,realign,finetune",
                        help="which of extraction, realign, finetune to time (all three)")
    parser.add_argument("--kernels", default="auto", choices=["auto", "fast", "torch"],
                        help="training kernels of the steps, as the product's --kernels (auto: fast on a CPU)")
    parser.add_argument("--micro-batch-size", type=int,
                        help="fine-tuning micro-batch (default: the product's, the batch of 32 in one pass)")
    parser.add_argument("--quick", action="store_true", help="64 sentences, 2 rounds, 2 fine-tuning steps")
    parser.add_argument("--agreement", metavar="FILE", help="bf16_agreement.py --json output to print beside")
    args = parser.parse_args()
    if args.quick:
        args.sentences, args.repeats, args.ft_steps = 64, 2, 2
    set_threads(args.threads)

    from layerscope.models import load_encoder
    from layerscope.precision import cpu_has_native_bf16

    data = require_data_dir("flores200/devtest", "muse", "ud/en_ewt")
    flores = data / "flores200" / "devtest" / "eng_Latn.devtest"
    sentences = flores.read_text(encoding="utf-8").splitlines()[:args.sentences]
    encoder = load_encoder(args.model, device="cpu")
    jobs = set(args.jobs.split(","))
    rows = {}
    if "extraction" in jobs:
        rows[f"extraction, {args.sentences} sentences, all layers"] = time_extraction(encoder, sentences, args.repeats)
    if "realign" in jobs:
        rows[f"realignment step, batch 16, freeze {args.freeze}"] = time_realign_step(
            encoder, data, freeze=args.freeze, sentences=64, repeats=args.repeats, kernels=args.kernels)
    if "finetune" in jobs:
        micro = args.micro_batch_size or 32
        split = f" ({32 // micro} × {micro})" if micro < 32 else ""
        rows[f"fine-tuning step, batch 32{split}, UPOS, all parameters"] = time_finetune_step(
            encoder, data, steps=args.ft_steps, repeats=args.repeats, kernels=args.kernels,
            micro_batch_size=args.micro_batch_size)
    agreement = json.loads(Path(args.agreement).read_text()) if args.agreement else None
    print(f"\n{args.model}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}, "
          f"kernels {args.kernels}, median of {args.repeats} interleaved rounds")
    print("| work | fp32 s | bf16 s | fp32 / bf16 |")
    print("|---|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds['fp32']:.2f} | {seconds['bf16']:.2f} | {seconds['fp32'] / seconds['bf16']:.2f}× |")
    if agreement is not None:
        print("\n| agreement of bf16 with fp32 | max abs difference | noise of the metric |")
        print("|---|---|---|")
        for metric in ("retrieval", "cka"):
            if "probes" in agreement:
                s = agreement["probes"][metric]
                print(f"| {metric}, {s['cells']} language × layer cells | {s['max_abs_delta']:.4f} | "
                      f"95% CI half-width: median {s['median_ci_half']:.4f}, smallest {s['min_ci_half']:.4f} |")
        if "pos" in agreement:
            pos = agreement["pos"]
            spread = min(v["fp32_spread"] for v in pos["per_lang"].values())
            print(f"| PoS zero-shot accuracy, mean over seeds, {pos['langs']} languages | "
                  f"{pos['max_abs_mean_diff']:.4f} | fp32 seed spread: smallest {spread:.4f}; "
                  f"{pos['langs_inside_seed_spread']} of {pos['langs']} languages inside it |")
    figures = {"model": args.model, "threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
               "repeats": args.repeats, "kernels": args.kernels, "micro_batch_size": args.micro_batch_size,
               "seconds": rows,
               "ratios": {name: s["fp32"] / s["bf16"] for name, s in rows.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
