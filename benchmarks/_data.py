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
