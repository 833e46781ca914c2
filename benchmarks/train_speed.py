"""Training-step speed on a real vocabulary: the touched-rows Adam against the dense Adam and the floor.

Three figures, measured in one run:

- realignment step (forward + backward + optimiser; the default freeze policy ``lower``, which
  trains the word embeddings): touched-rows Adam, dense Adam, and the floor — the same step with
  the word-embedding matrix frozen (``lower+embeddings``), on the same batches (same seed);
- fine-tuning step (tagging, batch 32 in micro-batches of 8 by default, AdamW, clipping): the same three;
- end to end, ``layerscope realign MODEL --parallel sample --pairs dict:data/sample/dict --steps N``
  with the touched-rows Adam and with the dense Adam (``LAYERSCOPE_DENSE_OPTIMIZER=1``).

A step's time is the interval between two ``on_step`` callbacks (the first interval of each run
is dropped: warm-up). The variants run in turn, ``--rounds`` times, so a busy machine slows them
alike; the table reports medians and their ratios to the floor.

    python benchmarks/train_speed.py --model /path/to/multilingual-e5-small --threads 2
    python benchmarks/train_speed.py --model DIR --quick          # a few steps, to check it runs
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from layerscope import optim  # noqa: E402
from layerscope.corpora import ParallelCorpus  # noqa: E402
from layerscope.models import load_encoder  # noqa: E402
from layerscope.realign import realign  # noqa: E402
from layerscope.tasks import TaggedSentence, TaskModel, TrainSettings, train_task  # noqa: E402
from layerscope.tasks.features import encode_tagging  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
VARIANTS = ("touched rows", "dense Adam", "floor (embeddings frozen)")


@contextlib.contextmanager
def dense_optimizer(on: bool):
    saved = os.environ.get(optim.DENSE_ENV)
    if on:
        os.environ[optim.DENSE_ENV] = "1"
    else:
        os.environ.pop(optim.DENSE_ENV, None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(optim.DENSE_ENV, None)
        else:
            os.environ[optim.DENSE_ENV] = saved


def sample_corpus() -> ParallelCorpus:
    with open(SAMPLE / "parallel.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    langs = ["de", "fr", "es", "ru"]
    en = [row["en"] for row in rows]
    return ParallelCorpus("en", {lang: en for lang in langs}, {lang: [row[lang] for row in rows] for lang in langs},
                          name="sample")


class Clock:
    """Step intervals from ``on_step`` callbacks, dropping the first (warm-up)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, _step: int, _loss: float) -> None:
        self.stamps.append(time.perf_counter())

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps[1:], self.stamps[2:])]


def realign_steps(model: str, variant: str, steps: int) -> list[float]:
    clock = Clock()
    freeze = "lower+embeddings" if variant == VARIANTS[2] else "lower"
    with dense_optimizer(variant == VARIANTS[1]):
        realign(model, parallel=sample_corpus(), pairs=f"dict:{SAMPLE / 'dict'}", freeze=freeze, steps=steps,
                seed=0, on_step=clock)
    return clock.intervals()


def tagging_data(encoder) -> list:
    with open(SAMPLE / "parallel.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    sentences = []
    for i, row in enumerate(rows):
        for lang in ("en", "de", "fr", "es"):
            words = row[lang].split()
            sentences.append(TaggedSentence(words, [f"T{len(w) % 5}" for w in words], f"{lang}{i}"))
    return encode_tagging(encoder.tokenizer, sentences, {f"T{k}": k for k in range(5)}, max_length=128)


def finetune_steps(model: str, variant: str, steps: int, batch: int = 32) -> list[float]:
    encoder = load_encoder(model)
    if variant == VARIANTS[2]:
        encoder.model.get_input_embeddings().weight.requires_grad_(False)
    torch.manual_seed(0)
    task = TaskModel(encoder, "tagging", 5)
    clock = Clock()
    with dense_optimizer(variant == VARIANTS[1]):
        train_task(task, tagging_data(encoder), TrainSettings(steps=steps, lr=2e-5, batch_size=batch,
                                                              micro_batch_size=min(8, batch)),
                   pad_id=encoder.tokenizer.pad_token_id, device="cpu", on_step=clock)
    return clock.intervals()


def end_to_end(model: str, steps: int, dense: bool, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(optim.DENSE_ENV, None)
    if dense:
        env[optim.DENSE_ENV] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "layerscope", "realign", model, "--parallel", "sample",
                   "--pairs", f"dict:{SAMPLE / 'dict'}", "--steps", str(steps), "--seed", "0",
                   "-o", str(Path(tmp) / "realigned.pt")]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="multilingual-e5-small (checkpoint or Hugging Face directory)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed run (the first interval is dropped)")
    parser.add_argument("--rounds", type=int, default=2, help="times each variant runs, in turn")
    parser.add_argument("--e2e-steps", type=int, default=60)
    parser.add_argument("--finetune-batch", type=int, default=32, help="fine-tuning batch (micro-batches of 8)")
    parser.add_argument("--skip-dense-finetune", action="store_true",
                        help="time the dense Adam's fine-tuning step not at all (it is the slowest)")
    parser.add_argument("--end-to-end-only", action="store_true", help="skip the step timings")
    parser.add_argument("--quick", action="store_true", help="3 steps, 1 round, end to end 6 steps")
    parser.add_argument("--json", type=Path, help="also write the key figures here (for run_all.py)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.e2e_steps = 3, 1, 6
    torch.set_num_threads(args.threads)

    timings: dict[str, dict[str, list[float]]] = {"realignment": {}, "fine-tuning": {}}
    for round_ in range(0 if args.end_to_end_only else args.rounds):
        for variant in VARIANTS:
            for name in ("realignment", "fine-tuning"):
                if name == "fine-tuning" and variant == VARIANTS[1] and args.skip_dense_finetune:
                    continue
                if name == "realignment":
                    found = realign_steps(args.model, variant, args.steps)
                else:
                    found = finetune_steps(args.model, variant, args.steps, args.finetune_batch)
                timings[name].setdefault(variant, []).extend(found)
                print(f"round {round_ + 1}: {name:12s} {variant:26s} " + " ".join(f"{t:.2f}" for t in found),
                      flush=True)
    e2e = {"touched rows": [], "dense Adam": []}
    for dense in (True, False):
        seconds = end_to_end(args.model, args.e2e_steps, dense, args.threads)
        e2e["dense Adam" if dense else "touched rows"].append(seconds)
        print(f"end to end ({args.e2e_steps} steps), {'dense Adam' if dense else 'touched rows'}: {seconds:.1f} s",
              flush=True)

    figures: dict[str, float] = {}
    print(f"\nmodel {args.model}, {args.threads} threads, median step seconds over {args.rounds} interleaved rounds")
    print(f"{'step':14s} {'touched rows':>13s} {'dense Adam':>11s} {'floor':>8s} {'rows/floor':>11s} "
          f"{'dense/floor':>12s} {'target':>8s}")
    for name in () if args.end_to_end_only else ("realignment", "fine-tuning"):
        med = {v: statistics.median(timings[name][v]) if timings[name].get(v) else float("nan") for v in VARIANTS}
        rows, dense, floor = (med[v] for v in VARIANTS)
        figures[f"{name}_rows_over_floor"] = rows / floor
        figures[f"{name}_dense_over_floor"] = dense / floor
        print(f"{name:14s} {rows:13.2f} {dense:11.2f} {floor:8.2f} {rows / floor:11.2f} {dense / floor:12.2f} "
              f"{'<= 1.15':>8s}")
    e2e_rows, e2e_dense = statistics.median(e2e["touched rows"]), statistics.median(e2e["dense Adam"])
    figures["end_to_end_speedup"] = e2e_dense / e2e_rows
    print(f"end to end `layerscope realign` {args.e2e_steps} steps: touched rows {e2e_rows:.1f} s, dense Adam "
          f"{e2e_dense:.1f} s, speed-up {e2e_dense / e2e_rows:.2f}x (target >= 1.4)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "threads": args.threads, **figures}, indent=2))


if __name__ == "__main__":
    main()
