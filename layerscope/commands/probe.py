"""layerscope probe: a linear probe per layer, trained on the source language, tested per language."""

from __future__ import annotations

import argparse

from ._common import add_model_loading, add_output, command_line

HELP = "per-layer linear probes (PoS by default): where each language's task information lies"
DESCRIPTION = """\
Encode the source-language training data and every target language with one forward pass per
batch (every layer), take each word's first sub-token (tagging tasks: pos, ner) or the mean of
an example's tokens (nli), fit a logistic-regression probe per layer on the source language (C
chosen on held-out source sentences) and evaluate it zero-shot on each target language. With a
realigned checkpoint, both models side by side and Δ realigned − base with paired bootstrap
intervals. Writes metrics.csv, run.json, summary.txt, figures/ and report.html."""
EPILOG = """\
data specs (as in finetune): FILE, LANG=FILE, DIR (files named with a language code), hf:...

examples:
  layerscope probe base.pt --train en_ewt-ud-dev.conllu --eval ud/pud/ -o runs/pos-probe
  layerscope probe base.pt realigned.pt --train en_ewt-ud-dev.conllu --eval ud/pud/ --limit 300 -o runs/pos-delta
  layerscope probe base.pt --task nli --train en=xnli.en.tsv --eval fr=xnli.fr.tsv,de=xnli.de.tsv -o runs/nli
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", help="checkpoint (.pt), HF directory, hub id, or .safetensors with --model")
    parser.add_argument("realigned", nargs="?", help="optional second checkpoint: probed side by side, with Δ")
    parser.add_argument("--task", default="pos", help="pos (default) | ner | nli")
    parser.add_argument("--train", required=True, metavar="SPEC", help="source-language training data")
    parser.add_argument("--eval", required=True, metavar="SPEC", help="target-language evaluation data")
    parser.add_argument("--dev", metavar="SPEC", help="source-language data to choose C on "
                                                       "(default: --held-out of the training sentences)")
    parser.add_argument("--source-lang", default="en", help="language of a training file whose name names none")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N sentences per target language")
    parser.add_argument("--train-limit", type=int, metavar="N", help="at most N source sentences")
    parser.add_argument("--cs", default="0.01,0.1,1,10", help="grid of C, inverse regularisation (default: 0.01,0.1,1,10)")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of source sentences to choose C (default: 0.2)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, classifier and bootstrap (default: 0)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="forward-pass precision (auto: bf16 autocast on GPU, fp32 on CPU)")
    parser.add_argument("--max-length", type=int, default=128, help="sub-tokens per input (default: 128)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="tokens per batch, padding included (default: 8192)")
    parser.add_argument("--cache-dir", metavar="DIR", help="cache encoded data here, keyed by model hash and data "
                                                         "(a second run with the same base encodes it once)")
    parser.add_argument("--order", default="family", choices=["family", "delta"], help="language order in heatmaps")
    parser.add_argument("--no-figures", action="store_true", help="skip figures")
    add_model_loading(parser)
    add_output(parser, default="layerscope-probe")


def _floats(text: str) -> list[float]:
    from ..errors import LayerscopeError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LayerscopeError(f"--cs must be comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..probing import probe

    result = probe(
        args.base,
        args.realigned,
        task=args.task,
        train=args.train,
        eval=args.eval,
        dev=args.dev,
        source_lang=args.source_lang,
        limit=args.limit,
        train_limit=args.train_limit,
        cs=_floats(args.cs),
        held_out=args.held_out,
        bootstrap=args.bootstrap,
        output_dir=args.output,
        force=args.force,
        model=args.model,
        device=args.device,
        precision=args.precision,
        max_length=args.max_length,
        max_tokens=args.max_tokens,
        seed=args.seed,
        cache_dir=args.cache_dir,
        figures=not args.no_figures,
        order=args.order,
        command=command_line(),
        trust_remote_code=args.trust_remote_code,
    )
    print(result.summary)
    print(f"\nwrote {result.output_dir}/: metrics.csv, run.json, summary.txt, figures/, report.html")
    return 0
