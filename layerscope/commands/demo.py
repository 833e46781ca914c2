"""layerscope demo: the whole workflow on a tiny model and the embedded corpus."""

from __future__ import annotations

import argparse

from ._common import command_line

HELP = "run the AlignFreeze workflow on a tiny model and the embedded corpus (no internet, ~2 min on CPU)"
DESCRIPTION = """\
Trains a tokenizer and a 4-layer BERT (brief masked-language-model pretraining) on the embedded
12-language corpus, writes base.pt, realigns it on dictionary word pairs with nothing frozen
(realigned-full.pt) and with the lower half frozen (AlignFreeze, realigned-lower.pt), and compares
each against the base on held-out sentences (compare-full/, compare-lower/)."""
EPILOG = """\
examples:
  layerscope demo                      # writes ./layerscope-demo
  layerscope demo -o runs/demo --force
  layerscope demo --quick              # fewer steps, for a smoke test
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="layerscope-demo", metavar="DIR",
                        help="directory to write (default: layerscope-demo)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--quick", action="store_true", help="fewer training steps (a smoke test, weaker effects)")


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, run_demo

    settings = DemoSettings(seed=args.seed)
    if args.quick:
        settings = DemoSettings(seed=args.seed, pretrain_steps=60, realign_steps=30, width=32, vocab_size=6000)
    result = run_demo(args.output, force=args.force, settings=settings, command=command_line())
    for name, comparison in result.comparisons.items():
        print(f"\n== {name} realignment vs base ({'AlignFreeze: lower half frozen' if name == 'lower' else 'nothing frozen'})")
        print(comparison.summary)
    out = result.output_dir
    print(f"\nwrote {out}/: base.pt, realigned-full.pt, realigned-lower.pt, compare-full/, compare-lower/")
    for name in result.comparisons:
        report = out / f"compare-{name}" / "report.html"
        target = report if report.exists() else out / f"compare-{name}" / "figures" / "heatmap_retrieval.png"
        print(f"open {target}")
    return 0
