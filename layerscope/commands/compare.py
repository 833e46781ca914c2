"""layerscope compare: per-layer, per-language comparison of two checkpoints."""

from __future__ import annotations

import argparse

from ._common import add_model_loading, add_output, command_line

HELP = "compare two checkpoints of one model layer by layer and language by language"
DESCRIPTION = """\
Encode a parallel corpus with both models (one forward pass per batch, every layer), measure
cross-lingual similarity to the pivot language per layer and language (debiased CKA, linear CKA,
translation retrieval, with shuffled-pair baselines), the change realigned − base, and the drift
between the models; write metrics.csv, run.json, figures/, regression/ and report.html."""
EPILOG = """\
corpus specs:
  sample               the small corpus embedded in layerscope (12 languages)
  flores:DIR           one line-aligned file per language (eng_Latn.devtest, fra_Latn.devtest ...)
  tatoeba:DIR          LASER Tatoeba pairs tatoeba.xxx-eng.xxx / tatoeba.xxx-eng.eng
  pud:DIR              UD PUD treebanks aligned by sent_id
  tsv:FILE             a TSV with one column per language (header = language codes)

examples:
  layerscope compare base.pt realigned.pt -o runs/demo
  layerscope compare base.pt realigned.pt --corpus flores:flores200/devtest --langs fr,de,ja,ar -o runs/x
  layerscope compare bert-base-multilingual-cased realigned.safetensors --model bert-base-multilingual-cased \\
      --corpus tatoeba:tatoeba_laser --device cuda -o runs/mbert
  layerscope compare base.pt realigned.pt --metrics cka,cka_rbf,retrieval,retrieval_margin --limit 500 -o runs/y
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", help="base checkpoint (.pt), HF directory, hub id, or .safetensors with --model")
    parser.add_argument("realigned", help="realigned checkpoint, in any of the same forms")
    parser.add_argument("--corpus", default="sample", metavar="SPEC", help="parallel corpus (default: sample)")
    parser.add_argument("--langs", metavar="CODES", help="target languages, e.g. fr,de,ja (default: all in the corpus)")
    parser.add_argument("--pivot", default="en", help="pivot language (default: en)")
    parser.add_argument("--limit", type=int, metavar="N", help="use at most N sentence pairs per language")
    parser.add_argument("--metrics", default="cka,cka_linear,retrieval,retrieval_centered",
                        help="comma-separated metrics (cka, cka_linear, cka_rbf, retrieval, retrieval_p2t, "
                             "retrieval_t2p, retrieval_centered, retrieval_margin, svcca, pwcca, "
                             "procrustes, procrustes_distance, procrustes_angular; the last five also "
                             "give drift_<name>, base vs realigned)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the shuffled-pair baselines")
    parser.add_argument("--shuffles", type=int, default=5, metavar="K",
                        help="derangements behind each shuffled-pair baseline: mean and spread over them (default: 5)")
    parser.add_argument("--pool", default="mean", choices=["mean", "mean-with-special", "first"],
                        help="sentence vector: mean over real tokens without special tokens (default), mean with "
                             "special tokens, or the first token ([CLS] / <s>)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for shuffled baselines, bootstrap intervals and the regression (default: 0)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="forward-pass precision (auto: bf16 autocast on a GPU or a CPU with native bf16, "
                             "else fp32; activations are stored float32)")
    parser.add_argument("--max-length", type=int, default=256, help="cut sentences at this many sub-tokens (default: 256)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="tokens per batch, padding included (default: 8192)")
    parser.add_argument("--cache-dir", metavar="DIR", help="cache activations here, keyed by model and corpus hash")
    parser.add_argument("--order", default="family", choices=["family", "delta"],
                        help="language order in heatmaps (default: family)")
    parser.add_argument("--regression-target", default="retrieval@last", metavar="METRIC@LAYER",
                        help="gain regressed on typology when there are enough languages (default: retrieval@last)")
    parser.add_argument("--no-regression", action="store_true", help="skip the default gain regression")
    parser.add_argument("--no-figures", action="store_true", help="skip figures")
    add_model_loading(parser)
    add_output(parser, default="layerscope-run")


def run(args: argparse.Namespace) -> int:
    from ..compare import compare

    result = compare(
        args.base,
        args.realigned,
        corpus=args.corpus,
        langs=args.langs,
        pivot=args.pivot,
        output_dir=args.output,
        force=args.force,
        model=args.model,
        device=args.device,
        limit=args.limit,
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
        baselines=not args.no_baselines,
        seed=args.seed,
        shuffles=args.shuffles,
        pool=args.pool,
        cache_dir=args.cache_dir,
        precision=args.precision,
        max_length=args.max_length,
        max_tokens=args.max_tokens,
        regression=not args.no_regression and "auto",
        regression_target=args.regression_target,
        figures=not args.no_figures,
        order=args.order,
        command=command_line(),
        trust_remote_code=args.trust_remote_code,
    )
    print(result.summary)
    print(f"\nwrote {result.output_dir}/: metrics.csv, run.json, figures/, summary.txt"
          + (", regression/" if result.regression is not None else "")
          + (", report.html" if (result.output_dir / "report.html").exists() else ""))
    print(f"open {result.output_dir}/" + ("report.html" if (result.output_dir / "report.html").exists()
                                          else "figures/heatmap_retrieval.png"))
    return 0
