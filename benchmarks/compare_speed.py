"""compare against its floor: the bare forward passes it cannot avoid, and the activation cache.

Measures in one run and prints one table of ratios:

1. floor — wall time of ``compare`` (extraction, every default metric, figures) divided by the
   wall time of the bare forward passes of both models over the same sentences, in the same
   batches, with all hidden states (no pooling, no metrics). Target ≤ 1.15× on CPU.
2. cache — a second ``compare`` of the same checkpoints and corpus with ``--cache-dir`` against
   the first (which wrote the cache). Target ≥ 5× faster.

Model: BERT-base-shaped (12 blocks, width 768, 12 heads; random weights, a tokenizer trained on
the corpus), two copies (the second with perturbed upper blocks). Corpus: FLORES devtest from
../shared/data (or $LAYERSCOPE_TEST_DATA).

    python benchmarks/compare_speed.py                      # 1000 sentences × 10 languages
    python benchmarks/compare_speed.py --sentences 200 --langs 5   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _data import add_size_options, read_flores  # noqa: E402
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))



def build_checkpoints(corpus, directory: Path, *, layers: int, width: int, heads: int) -> tuple[Path, Path]:
    from transformers import AutoModel

    from layerscope.models import save_checkpoint, state_dict_hash
    from layerscope.models.encoder import _finish, checkpoint_from_encoder
    from layerscope.models.toymodels import tiny_config, train_tokenizer

    texts = list(next(iter(corpus.pivot_sentences.values())))
    for sentences in corpus.targets.values():
        texts += sentences
    tokenizer = train_tokenizer(texts, arch="bert", vocab_size=30000)
    config = tiny_config("bert", len(tokenizer), layers=layers, width=width, heads=heads, max_positions=512,
                         tokenizer=tokenizer)
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    encoder = _finish(model, tokenizer, name="bench", source_hash=state_dict_hash(model.state_dict()), meta={},
                      tokenizer_name=None, device="cpu")
    base = save_checkpoint(directory / "base.pt", checkpoint_from_encoder(encoder))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(f"encoder.layer.{layers - 1}."):
                param.add_(0.02 * torch.randn_like(param))
    other = save_checkpoint(directory / "other.pt", checkpoint_from_encoder(encoder))
    return base, other


def bare_forward_seconds(checkpoints, corpus, *, max_tokens: int, max_length: int) -> float:
    """Both models' forward passes with all hidden states, same batches as extraction, nothing else."""
    from layerscope.probes.activations import forward_layers, length_sorted_batches, tokenize
    from layerscope.models import load_encoder

    sides = [next(iter(corpus.pivot_sentences.values()))] + list(corpus.targets.values())
    total = 0.0
    for path in checkpoints:
        encoder = load_encoder(path)
        length = min(max_length, encoder.max_positions)
        prepared = []
        for sentences in sides:
            encoded = tokenize(encoder, sentences, length)
            lengths = [len(ids) for ids in encoded["input_ids"]]
            for batch in length_sorted_batches(lengths, max_tokens):
                width = max(lengths[i] for i in batch)
                ids = torch.full((len(batch), width), encoder.tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    ids[row, : lengths[index]] = torch.tensor(encoded["input_ids"][index])
                    mask[row, : lengths[index]] = 1
                prepared.append({"input_ids": ids, "attention_mask": mask})
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in prepared:
                forward_layers(encoder, batch)
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_options(parser, sentences=1000, langs=10)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the key figures here (for run_all.py)")
    args = parser.parse_args()

    from layerscope import progress
    from layerscope.compare import compare

    progress.set_enabled(False)
    corpus = read_flores(args.sentences, args.langs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoints = build_checkpoints(corpus, tmp, layers=args.layers, width=args.width, heads=args.heads)
        floor = bare_forward_seconds(checkpoints, corpus, max_tokens=args.max_tokens, max_length=args.max_length)

        timings = {}
        # The first compare also writes the activation cache, so its ratio to the floor is conservative.
        stages = {}
        for label, cache in (("compare", tmp / "cache"), ("compare, warm cache", tmp / "cache")):
            start = time.perf_counter()
            result = compare(*checkpoints, corpus=corpus, output_dir=tmp / label.replace(" ", "_").replace(",", ""),
                             device="cpu", cache_dir=cache, max_tokens=args.max_tokens, max_length=args.max_length,
                             regression=False)
            timings[label] = time.perf_counter() - start
            stages[label] = result.run["timings_s"]

    n_sent = (args.langs + 1) * args.sentences
    print(f"\nBERT-base-shaped model ({args.layers} blocks × {args.width}), {args.langs} languages × "
          f"{args.sentences} FLORES sentences (+ English once), 2 models, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| measurement | seconds | ratio | target |")
    print("|---|---|---|---|")
    print(f"| bare forward passes, all hidden states (floor) | {floor:.1f} | 1.00 | |")
    print(f"| compare: extraction + metrics + figures | {timings['compare']:.1f} | "
          f"{timings['compare'] / floor:.2f}× floor | ≤ 1.15× |")
    print(f"| compare again, activations from the cache | {timings['compare, warm cache']:.1f} | "
          f"{timings['compare'] / timings['compare, warm cache']:.1f}× faster | ≥ 5× |")
    print(f"\nsentences encoded per model: {n_sent}")
    if args.json:
        args.json.write_text(json.dumps({
            "floor_ratio": timings["compare"] / floor, "cache_speedup": timings["compare"] / timings["compare, warm cache"],
            "size": f"{args.sentences} sentences × {args.langs} languages, {args.layers}×{args.width}"}))
    for label, stage in stages.items():
        print(f"stages of '{label}' (s): {stage}")


if __name__ == "__main__":
    main()
