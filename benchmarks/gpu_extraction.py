"""Extraction throughput on a GPU: sentences/s in fp32 and bf16, and the share of matmul peak.

For a BERT-base-shaped model (12 × 768, random weights) over FLORES sentences, times
``layerscope.probes.extract`` (length-sorted batches, all hidden states, mean pooling) in
each precision, and compares the model's matmul FLOP/s with what a large square matmul reaches
on the same device in the same precision (the practical peak).

Model FLOPs per sentence of T tokens: 2 · P · T for the weight matmuls (P = parameters of the
blocks) plus 4 · L · T² · d for attention scores and their weighted sums.

    python benchmarks/gpu_extraction.py --device cuda              # 1000 sentences × 4 languages
    python benchmarks/gpu_extraction.py --device cpu --sentences 50 --langs 1   # a dry run on a CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from _data import add_size_options, read_flores  # noqa: E402
from compare_speed import build_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str, size: int, repeats: int = 10) -> float:
    """FLOP/s of a (size × size) @ (size × size) matmul in ``precision`` (TF32 off for fp32)."""
    a = torch.randn(size, size, device=device, dtype=DTYPES[precision])
    b = torch.randn(size, size, device=device, dtype=DTYPES[precision])
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def model_flops(encoder, token_counts: list[int]) -> float:
    blocks = sum(p.numel() for block in encoder.blocks for p in block.parameters())
    layers, width = encoder.num_layers, encoder.hidden_size
    return sum(2 * blocks * t + 4 * layers * t * t * width for t in token_counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_options(parser, sentences=1000, langs=4, model=False)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--matmul-size", type=int, default=8192)
    args = parser.parse_args()
    from layerscope import progress
    from layerscope.probes.activations import extract, tokenize
    from layerscope.models import load_encoder

    torch.backends.cuda.matmul.allow_tf32 = False
    progress.set_enabled(False)
    device = torch.device(args.device)
    corpus = read_flores(args.sentences, args.langs)
    sentences = list(next(iter(corpus.pivot_sentences.values())))
    for side in corpus.targets.values():
        sentences += side
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = build_checkpoints(corpus, Path(tmp), layers=12, width=768, heads=12)
        encoder = load_encoder(base, device=device)
    tokens = [len(ids) for ids in tokenize(encoder, sentences, 256)["input_ids"]]
    flops = model_flops(encoder, tokens)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{name}, torch {torch.__version__}; {len(sentences)} sentences, {sum(tokens)} tokens; "
          f"BERT-base shape (12 × 768), random weights\n")
    print("| precision | sentences/s | model TFLOP/s | matmul peak TFLOP/s | share of peak |")
    print("|---|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        extract(encoder, sentences[: min(64, len(sentences))], precision=precision, max_tokens=args.max_tokens)
        synchronize(device)
        start = time.perf_counter()
        extract(encoder, sentences, precision=precision, max_tokens=args.max_tokens)
        synchronize(device)
        seconds = time.perf_counter() - start
        peak = matmul_peak(device, precision, args.matmul_size if device.type == "cuda" else 1024, repeats=3)
        achieved = flops / seconds
        print(f"| {precision} | {len(sentences) / seconds:.0f} | {achieved / 1e12:.2f} | {peak / 1e12:.2f} | "
              f"{100 * achieved / peak:.0f} % |")


if __name__ == "__main__":
    main()
