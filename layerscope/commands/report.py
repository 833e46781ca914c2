"""layerscope report: (re)build report.html of a run directory."""

from __future__ import annotations

import argparse

HELP = "regenerate report.html, the self-contained page of a run directory"
DESCRIPTION = HELP
EPILOG = """\
examples:
  layerscope report runs/xlmr-front
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a directory written by compare, gains or regress")


def run(args: argparse.Namespace) -> int:
    from ..show.report import write_report

    path = write_report(args.run_dir)
    print(f"wrote {path}")
    return 0
