"""Reading the CSV tables users hand in (results, feature tables), with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import LayerscopeError


def read_user_csv(path: str | Path, *, what: str) -> pd.DataFrame:
    """``pd.read_csv`` of a user's file; a missing or unparsable file is a LayerscopeError
    naming the file (``what`` says what was expected, e.g. "results file")."""
    source = Path(path)
    if not source.is_file():
        raise LayerscopeError(f"no such {what}", source=source)
    try:
        return pd.read_csv(source)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LayerscopeError(f"cannot read CSV: {exc}", source=source) from None
