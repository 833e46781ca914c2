"""Progress bars (tqdm) that the CLI can silence with --quiet."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")

_enabled = os.environ.get("LAYERSCOPE_QUIET", "") not in ("1", "true", "yes")


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def bar(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
        main: bool = True, **kwargs):
    """A tqdm bar writing to stderr, disabled under --quiet and on all but the main process."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not (_enabled and main), leave=False,
                dynamic_ncols=True, **kwargs)
