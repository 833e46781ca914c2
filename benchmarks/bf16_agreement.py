"""Does bf16 autocast agree with fp32 on multilingual-e5-small? The evidence behind ``--precision auto``.

Two measurements, fp32 against ``torch.autocast(<device>, dtype=torch.bfloat16)``:

1. Probes. Mean-pooled sentence vectors of FLORES-200 devtest (English and ``--langs`` other
   languages, the first ``--sentences`` sentences of each) extracted in both precisions; per
   layer (13: embeddings and 12 blocks) and language, the retrieval accuracy with English
   (mean of both directions) and debiased linear CKA with English. Reported: max |bf16 − fp32|
   over languages × layers, set against the metric's own noise at the same size — the 95%
   Wilson half-width of the retrieval accuracy (what ``compare`` writes as ci_low/ci_high) and
   the 95% bootstrap half-width of CKA over sentences (``--bootstrap`` resamples, fp32).
2. Fine-tuning. ``layerscope.finetune`` for UPOS on the first ``--pos-train`` sentences of UD
   English-EWT dev, evaluated zero-shot on ``--pos-langs`` PUD treebanks (first
   ``--pos-eval`` sentences each), for each seed in both precisions. Reported per language: the
   mean bf16 − fp32 difference of accuracy over seeds, against the spread of the fp32 seeds
   (max − min) and their standard deviation. Batches of 32 in one forward pass, as the
   product's default (``--micro-batch-size`` splits them).

    python benchmarks/bf16_agreement.py --json /tmp/bf16_agreement.json
    python benchmarks/bf16_agreement.py --quick     # a few minutes
    python benchmarks/bf16_agreement.py --merge probes.json seed31.json seed42.json   # parts run apart

Needs FLORES-200 and UD under ../shared/data (or $LAYERSCOPE_TEST_DATA) and the model (an HF
directory, hub id or layerscope checkpoint of multilingual-e5-small).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

from _data import add_e5_options, require_data_dir, set_threads

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRECISIONS = ("fp32", "bf16")


def probe_agreement(encoder, corpus, *, bootstrap: int, seed: int) -> dict:
    """Max |Δ| of retrieval and debiased CKA over languages × layers, and the metrics' noise."""
    import layerscope.probes as similarity
    from layerscope.probes import extract
    from layerscope.stats.intervals import wilson_interval

    pivot_side = next(iter(corpus.pivot_sentences.values()))
    stacks: dict[str, dict[str, torch.Tensor]] = {p: {} for p in PRECISIONS}
    seconds = {p: 0.0 for p in PRECISIONS}
    for lang in [corpus.pivot, *corpus.languages]:
        sentences = pivot_side if lang == corpus.pivot else corpus.targets[lang]
        for precision in PRECISIONS:  # interleaved, so that contention falls on both alike
            tick = time.perf_counter()
            stacks[precision][lang] = extract(encoder, sentences, lang=lang, precision=precision).values
            seconds[precision] += time.perf_counter() - tick
    pivot = {p: stacks[p][corpus.pivot] for p in PRECISIONS}
    activation_error = max(
        float(((stacks["bf16"][lang] - stacks["fp32"][lang]).norm(dim=-1)
               / stacks["fp32"][lang].norm(dim=-1).clamp(min=1e-12)).max())
        for lang in stacks["fp32"])
    generator = torch.Generator().manual_seed(seed)
    cells = []
    for lang in corpus.languages:
        n = stacks["fp32"][lang].shape[1]
        values = {}
        for precision in PRECISIONS:
            a, b = pivot[precision], stacks[precision][lang]
            values[precision] = (similarity.retrieval_per_layer(a, b).mean(dim=1),
                                 similarity.cka_per_layer(a, b, method="debiased"))
        replicates = []
        for _ in range(bootstrap):
            rows = torch.randint(0, n, (n,), generator=generator)
            replicates.append(similarity.cka_per_layer(pivot["fp32"][:, rows], stacks["fp32"][lang][:, rows],
                                                       method="debiased"))
        cka_sd = torch.stack(replicates).std(dim=0) if bootstrap > 1 else torch.full((values["fp32"][1].shape[0],),
                                                                                      float("nan"))
        for layer in range(values["fp32"][0].shape[0]):
            retrieval = float(values["fp32"][0][layer])
            low, high = wilson_interval(retrieval * 2 * n, 2 * n)
            cells.append({
                "lang": lang, "layer": layer,
                "retrieval_fp32": retrieval, "retrieval_bf16": float(values["bf16"][0][layer]),
                "retrieval_ci_half": (high - low) / 2,
                "cka_fp32": float(values["fp32"][1][layer]), "cka_bf16": float(values["bf16"][1][layer]),
                "cka_ci_half": 1.959963984540054 * float(cka_sd[layer]),
            })

    def summary(metric: str) -> dict:
        deltas = [abs(c[f"{metric}_bf16"] - c[f"{metric}_fp32"]) for c in cells]
        halves = [c[f"{metric}_ci_half"] for c in cells]
        worst = max(range(len(cells)), key=deltas.__getitem__)
        return {"max_abs_delta": max(deltas), "mean_abs_delta": sum(deltas) / len(deltas),
                "worst_cell": {"lang": cells[worst]["lang"], "layer": cells[worst]["layer"],
                               "ci_half": halves[worst]},
                "median_ci_half": statistics.median(halves), "min_ci_half": min(halves),
                "cells_outside_ci": sum(d > h for d, h in zip(deltas, halves)), "cells": len(cells)}

    return {"retrieval": summary("retrieval"), "cka": summary("cka"),
            "max_relative_activation_error": activation_error,
            "extraction_seconds": seconds, "cells": cells}


def pos_agreement(encoder, data: Path, *, seeds: list[int], train_sentences: int, eval_sentences: int,
                  langs: list[str], epochs: float, lr: float, micro_batch_size: int | None = None) -> dict:
    """Zero-shot UPOS accuracy per language and seed in both precisions."""
    from layerscope.tasks.job import finetune

    evals = {lang: str(data / "ud" / "pud" / f"{lang}_pud-ud-test.conllu") for lang in langs}
    accuracy: dict[str, dict[str, list[float]]] = {p: {lang: [] for lang in langs} for p in PRECISIONS}
    seconds = {p: 0.0 for p in PRECISIONS}
    for seed in seeds:
        for precision in PRECISIONS:
            tick = time.perf_counter()
            result = finetune(encoder, task="pos", train=str(data / "ud" / "en_ewt" / "en_ewt-ud-dev.conllu"),
                              eval=evals, seeds=[seed], limit=train_sentences, eval_limit=eval_sentences,
                              epochs=epochs, lr=lr, batch_size=32, micro_batch_size=micro_batch_size, device="cpu",
                              precision=precision, model_name=f"e5-small-{precision}")
            seconds[precision] += time.perf_counter() - tick
            row = result.wide.iloc[0]
            for lang in langs:
                accuracy[precision][lang].append(float(row[f"final_eval_{lang}_accuracy"]))
            print(f"  pos seed {seed} {precision}: "
                  + " ".join(f"{lang} {accuracy[precision][lang][-1]:.4f}" for lang in langs), flush=True)
    return summarise_pos(accuracy, langs, seconds)


def summarise_pos(accuracy: dict[str, dict[str, list[float]]], langs: list[str], seconds: dict[str, float]) -> dict:
    per_lang = {}
    for lang in langs:
        fp32, bf16 = accuracy["fp32"][lang], accuracy["bf16"][lang]
        diffs = [b - a for a, b in zip(fp32, bf16)]
        per_lang[lang] = {
            "fp32": fp32, "bf16": bf16, "mean_diff": sum(diffs) / len(diffs),
            "fp32_spread": max(fp32) - min(fp32), "bf16_spread": max(bf16) - min(bf16),
            "fp32_sd": statistics.stdev(fp32) if len(fp32) > 1 else float("nan"),
        }
    inside = sum(abs(v["mean_diff"]) <= v["fp32_spread"] for v in per_lang.values())
    return {"per_lang": per_lang, "langs_inside_seed_spread": inside, "langs": len(langs),
            "max_abs_mean_diff": max(abs(v["mean_diff"]) for v in per_lang.values()),
            "seconds": seconds, "accuracy": accuracy}


def merge(paths: list[str]) -> dict:
    """One figure set from runs split by seed (or probes and fine-tuning run apart), e.g. in parallel."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    merged = {k: v for part in parts for k, v in part.items() if k not in ("pos", "size")}
    # the probe sizes come from the part that ran the probes
    ordered = sorted(parts, key=lambda part: "probes" in part)
    merged["size"] = {k: v for part in ordered for k, v in part.get("size", {}).items()}
    pos_parts = [part["pos"] for part in parts if "pos" in part]
    if pos_parts:
        langs = list(pos_parts[0]["accuracy"]["fp32"])
        accuracy = {p: {lang: [x for part in pos_parts for x in part["accuracy"][p][lang]] for lang in langs}
                    for p in PRECISIONS}
        seconds = {p: sum(part["seconds"][p] for part in pos_parts) for p in PRECISIONS}
        merged["pos"] = summarise_pos(accuracy, langs, seconds)
        merged["size"]["seeds"] = [s for part in parts for s in part.get("size", {}).get("seeds", [])]
    return merged


def report(figures: dict) -> None:
    if "probes" in figures:
        for metric in ("retrieval", "cka"):
            s = figures["probes"][metric]
            print(f"{metric:9s} max |Δ| {s['max_abs_delta']:.4f} (mean {s['mean_abs_delta']:.5f}) over "
                  f"{s['cells']} language × layer cells; 95% CI half-width median {s['median_ci_half']:.4f}, "
                  f"min {s['min_ci_half']:.4f}; cells with |Δ| above their half-width: {s['cells_outside_ci']}")
        print(f"largest relative error of a pooled vector: {figures['probes']['max_relative_activation_error']:.4f}")
    if "pos" in figures:
        print("| lang | fp32 mean | bf16 mean | mean bf16 − fp32 | fp32 seed spread (max − min) | fp32 sd |")
        print("|---|---|---|---|---|---|")
        for lang, v in figures["pos"]["per_lang"].items():
            print(f"| {lang} | {sum(v['fp32']) / len(v['fp32']):.4f} | {sum(v['bf16']) / len(v['bf16']):.4f} | "
                  f"{v['mean_diff']:+.4f} | {v['fp32_spread']:.4f} | {v['fp32_sd']:.4f} |")
        print(f"languages whose mean difference lies inside the fp32 seed spread: "
              f"{figures['pos']['langs_inside_seed_spread']} of {figures['pos']['langs']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_e5_options(parser)
    parser.add_argument("--sentences", type=int, default=200, help="FLORES sentences per language (200)")
    parser.add_argument("--langs", type=int, default=35, help="FLORES languages besides English (35 = all)")
    parser.add_argument("--bootstrap", type=int, default=20, help="bootstrap resamples for the CKA interval (20)")
    parser.add_argument("--seeds", default="31,42,66", help="fine-tuning seeds (31,42,66)")
    parser.add_argument("--pos-train", type=int, default=512, help="EWT dev sentences to train on (512)")
    parser.add_argument("--pos-eval", type=int, default=200, help="PUD sentences per language (200)")
    parser.add_argument("--pos-langs", default="de,fr,ru,hi,zh", help="PUD languages (de,fr,ru,hi,zh)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--micro-batch-size", type=int, help="fine-tuning micro-batch (default: the product's, 32)")
    parser.add_argument("--skip-pos", action="store_true", help="only the probe agreement")
    parser.add_argument("--skip-probes", action="store_true", help="only the fine-tuning agreement")
    parser.add_argument("--quick", action="store_true", help="5 languages × 64 sentences, 2 seeds of 64 sentences")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="only merge and print the --json files of runs split by seed or by part")
    args = parser.parse_args()
    if args.merge:
        figures = merge(args.merge)
        report(figures)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
        return
    if args.quick:
        args.sentences, args.langs, args.bootstrap = 64, 5, 10
        args.seeds, args.pos_train, args.pos_eval, args.pos_langs = "31,42", 64, 50, "de,zh"
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    from layerscope.corpora import read_corpus
    from layerscope.models import load_encoder
    from layerscope.precision import cpu_has_native_bf16

    data = require_data_dir("flores200/devtest", "ud/pud", "ud/en_ewt")
    encoder = load_encoder(args.model, device="cpu")
    figures: dict = {"model": args.model, "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(),
                     "size": {}}
    if not args.skip_probes:
        figures["size"].update({"sentences": args.sentences, "langs": args.langs, "bootstrap": args.bootstrap})
        corpus = read_corpus(f"flores:{data / 'flores200' / 'devtest'}", limit=args.sentences)
        corpus = corpus.select(corpus.languages[:args.langs])
        figures["probes"] = probe_agreement(encoder, corpus, bootstrap=args.bootstrap, seed=0)
    if not args.skip_pos:
        seeds = [int(s) for s in args.seeds.split(",")]
        langs = args.pos_langs.split(",")
        figures["size"].update({"pos_train": args.pos_train, "pos_eval": args.pos_eval, "pos_langs": langs,
                                "seeds": seeds, "epochs": args.epochs, "lr": args.lr,
                                "micro_batch_size": args.micro_batch_size})
        figures["pos"] = pos_agreement(encoder, data, seeds=seeds, train_sentences=args.pos_train,
                                       eval_sentences=args.pos_eval, langs=langs, epochs=args.epochs, lr=args.lr,
                                       micro_batch_size=args.micro_batch_size)
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
