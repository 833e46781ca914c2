"""Provenance for run.json: versions, git revision, host facts."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

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
