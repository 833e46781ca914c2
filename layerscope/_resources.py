"""Where the files the project ships (``data/`` in the source tree) live at run time.

A wheel carries them as ``layerscope/_data``; a source checkout has them in ``<repo>/data``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The directory holding ``languages.tsv`` and the embedded sample corpus."""
    for candidate in (_PACKAGE_DIR / "_data", _PACKAGE_DIR.parent / "data"):
        if (candidate / "languages.tsv").is_file():
            return candidate
    raise FileNotFoundError(
        "layerscope's data files are missing: reinstall the package (pip install .)"
    )


def data_file(*parts: str) -> Path:
    return data_dir().joinpath(*parts)
