"""Where the time of a realignment step and of a fine-tuning step goes (pyinstrument).

Profiles the real loops (``layerscope.realign.realign`` with the default freeze policy, and
``layerscope.tasks.train_task`` on a tagging head) from the end of their first step to their
last, and prints the call trees: forward pass, backward pass, optimiser step.

    python benchmarks/train_profile.py --model /path/to/multilingual-e5-small --threads 2 --steps 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from pyinstrument import Profiler  # noqa: E402
from train_speed import SAMPLE, sample_corpus, tagging_data  # noqa: E402

from layerscope.models import load_encoder  # noqa: E402
from layerscope.realign import realign  # noqa: E402
from layerscope.tasks import TaskModel, TrainSettings, train_task  # noqa: E402


def profiled(steps: int):
    """An ``on_step`` callback that starts the profiler after the first step, and the profiler."""
    profiler = Profiler(interval=0.005)

    def on_step(step: int, _loss: float) -> None:
        if step == 1:
            profiler.start()
        elif step == steps:
            profiler.stop()

    return on_step, profiler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--part", choices=("both", "realign", "finetune"), default="both")
    parser.add_argument("--finetune-batch", type=int, default=32, help="fine-tuning batch (micro-batches of 8)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("both", "realign"):
        profile_realign(args)
    if args.part in ("both", "finetune"):
        profile_finetune(args)


def profile_realign(args) -> None:
    on_step, profiler = profiled(args.steps)
    realign(args.model, parallel=sample_corpus(), pairs=f"dict:{SAMPLE / 'dict'}", freeze="lower", steps=args.steps,
            seed=0, on_step=on_step)
    print(f"=== realignment, steps 2-{args.steps}")
    print(profiler.output_text(unicode=False, color=False))


def profile_finetune(args) -> None:
    encoder = load_encoder(args.model)
    torch.manual_seed(0)
    on_step, profiler = profiled(args.steps)
    settings = TrainSettings(steps=args.steps, lr=2e-5, batch_size=args.finetune_batch,
                             micro_batch_size=min(8, args.finetune_batch))
    train_task(TaskModel(encoder, "tagging", 5), tagging_data(encoder), settings,
               pad_id=encoder.tokenizer.pad_token_id, on_step=on_step)
    print(f"=== fine-tuning, steps 2-{args.steps}")
    print(profiler.output_text(unicode=False, color=False))


if __name__ == "__main__":
    main()
