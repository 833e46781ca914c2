"""Fine-tuning throughput and peak memory of a BERT-base-sized model on one GPU.

Builds a BERT-base configuration (12 blocks, width 768, 12 heads, the 119,547-token vocabulary
of mBERT) with random weights, a tagging head (17 UPOS labels), and synthetic sentences of
random sub-tokens with a label on the first sub-token of each "word"; then runs the real
fine-tuning loop (:func:`layerscope.tasks.train_task`: AdamW, linear warm-up/decay,
effective batch 32 by accumulation, gradient clipping) in bf16 autocast for a few hundred steps.

Reports optimiser steps per second (after ``--warmup-steps`` steps, excluded from timing),
examples and tokens per second, and the peak GPU memory (``torch.cuda.max_memory_allocated``),
printed and written as JSON. Random weights are fine: the cost of a step does not depend on them.

Run on a GPU machine::

    python benchmarks/finetune_gpu.py --steps 300 --out finetune_gpu.json
    python benchmarks/finetune_gpu.py --precision fp32 --micro-batch-size 16   # compare

Smoke test on a CPU (tiny shape): ``python benchmarks/finetune_gpu.py --device cpu --steps 3
--layers 2 --width 64 --vocab 1000 --seq-len 32``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_features(n: int, seq_len: int, vocab: int, num_labels: int, seed: int):
    """``n`` features of exactly ``seq_len`` sub-tokens: [CLS] ... [SEP], words of 1-3 sub-tokens,
    each word's label on its first sub-token (-100 elsewhere)."""
    import torch

    from layerscope.tasks.features import IGNORE, Feature

    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(5, vocab, (seq_len,), generator=generator).tolist()
        ids[0], ids[-1] = 2, 3  # [CLS], [SEP]
        labels = [IGNORE] * seq_len
        words = {}
        position, word = 1, 0
        while position < seq_len - 1:
            labels[position] = int(torch.randint(0, num_labels, (1,), generator=generator))
            words[position] = word
            position += int(torch.randint(1, 4, (1,), generator=generator))
            word += 1
        out.append(Feature(ids, labels, i, words=words))
    return out


def build_encoder(layers: int, width: int, heads: int, vocab: int, device: str):
    import torch
    from transformers import AutoModel, BertConfig

    from layerscope.models.encoder import _finish
    from layerscope.models.toymodels import train_tokenizer

    config = BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * width, max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    # The tokenizer is only consulted for its pad id (0); features are made of random ids.
    tokenizer = train_tokenizer(["a b c"], arch="bert", vocab_size=50)
    return _finish(model, tokenizer, name=f"bert-{layers}x{width}-random", source_hash="random", meta={},
                   tokenizer_name=None, device=device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (default: 300)")
    parser.add_argument("--warmup-steps", type=int, default=20, help="steps left out of the timing (default: 20)")
    parser.add_argument("--batch-size", type=int, default=32, help="effective batch (default: 32)")
    parser.add_argument("--micro-batch-size", type=int, default=32, help="per forward pass (default: 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="sub-tokens per example (default: 128)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=119547, help="vocabulary size (default: mBERT's 119547)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", help="write the measurements as JSON here")
    args = parser.parse_args(argv)

    import torch

    from layerscope.tasks import TaskModel, TrainSettings, train_task

    if args.device == "cuda" and not torch.cuda.is_available():
        print("finetune_gpu: no CUDA GPU here; run on a GPU machine (or --device cpu for a smoke test)")
        return 0
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    encoder = build_encoder(args.layers, args.width, args.heads, args.vocab, args.device)
    n = args.steps * args.batch_size  # one pass, no repeated example
    features = synthetic_features(min(n, 20000), args.seq_len, args.vocab, 17, seed=0)
    torch.manual_seed(0)
    model = TaskModel(encoder, "tagging", 17)
    stamps: list[float] = []

    def on_step(step: int, loss: float) -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                             lr=5e-5, seed=0)
    precision = "fp32" if args.precision == "fp32" else args.precision
    history = train_task(model, features, settings, pad_id=0, device=args.device, precision=precision,
                         on_step=on_step)
    skip = min(args.warmup_steps, max(0, len(stamps) - 2))
    timed = len(stamps) - 1 - skip
    seconds = stamps[-1] - stamps[skip] if timed > 0 else history.seconds
    steps_per_second = (timed if timed > 0 else len(stamps)) / seconds
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "model": encoder.name,
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "precision": args.precision if args.device == "cuda" else "fp32 (no autocast on a CPU)",
        "steps": args.steps,
        "timed_steps": timed,
        "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch_size,
        "seq_len": args.seq_len,
        "steps_per_second": round(steps_per_second, 3),
        "examples_per_second": round(steps_per_second * args.batch_size, 1),
        "tokens_per_second": round(steps_per_second * args.batch_size * args.seq_len),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None,
        "first_loss": round(history.task_loss[0], 4),
        "last_loss": round(history.task_loss[-1], 4),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
