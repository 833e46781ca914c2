"""Provenance for run.json: versions, git revision, host facts."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "pandas", "statsmodels", "matplotlib")


def versions() -> dict[str, str]:
    from . import __version__

    out = {"layerscope": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str | None:
    """The commit of a layerscope source checkout, if it is one (None for a wheel install)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def host() -> dict[str, str]:
    return {"platform": platform.platform(), "machine": platform.machine()}


def grouped_hash(groups: Mapping[str, Iterable[Any]], render: Callable[[Any], str] = repr) -> str:
    """A short SHA-256 of items grouped by language: each group's code, then ``render(item)``
    of each of its items, in order. Used to key and record the data a run saw."""
    digest = hashlib.sha256()
    for lang, items in groups.items():
        digest.update(f"\x00{lang}\x00".encode())
        for item in items:
            digest.update(render(item).encode())
    return digest.hexdigest()[:16]
