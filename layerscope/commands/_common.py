"""Argument helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys


def add_model_loading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="HUB_ID_OR_DIR",
                        help="architecture and tokenizer for bare weights (.safetensors or a state_dict .pt)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where to run the model (default: auto = cuda if available)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow model code from the hub (off by default: it runs arbitrary code)")


def add_output(parser: argparse.ArgumentParser, *, default: str | None = None, what: str = "run directory") -> None:
    parser.add_argument("-o", "--output", default=default, metavar="DIR", help=f"{what} to write" +
                        (f" (default: {default})" if default else ""))
    parser.add_argument("--force", action="store_true", help=f"replace an existing {what}")


def add_realign_conventions(parser, *, prefix: str = "") -> None:
    """``--{prefix}negatives``, ``--{prefix}keep-space-tokens``, ``--{prefix}casefold``: the
    realignment conventions whose defaults are the published ones."""
    parser.add_argument(f"--{prefix}negatives", choices=["batch-words", "aligned"], default="batch-words",
                        help="the loss's candidates: every word of the batch's sentences (default, as "
                             "published) or the aligned words only")
    parser.add_argument(f"--{prefix}keep-space-tokens", action="store_true",
                        help="keep standalone '\u2581' tokens (SentencePiece, XLM-R) in the realignment input "
                             "(default: deleted before encoding, as published)")
    parser.add_argument(f"--{prefix}casefold", action="store_true",
                        help="match dictionary words case-insensitively (default: case-sensitive, as published)")


def command_line() -> list[str]:
    return ["layerscope", *sys.argv[1:]]


def add_typology_options(parser: argparse.ArgumentParser) -> None:
    """--codes and --missing-as: which URIEL language a code means, and what a language without
    features of a kind gets (shared by typology and regress)."""
    parser.add_argument("--codes", default="most-features", choices=["most-features", "published"],
                        help="URIEL code of a macrolanguage: the one with most features (ara, zho, nor ...) or the "
                             "published AlignFreeze regression's (arb, cmn, nob, fas, lav) (default: most-features)")
    parser.add_argument("--missing-as", default="nan", choices=["nan", "uriel"],
                        help="a language without features of a kind: no distance, so regress drops it (nan, "
                             "default), or URIEL's constant distance to an unknown language (uriel: all-ones "
                             "vector, geographic and genetic 1)")
