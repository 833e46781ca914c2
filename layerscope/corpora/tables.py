"""Reading the CSV tables users hand in (results, feature tables), with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LayerscopeError


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


def numeric_column(frame: pd.DataFrame, column: str, source: object) -> pd.Series:
    """``frame[column]`` as floats; a non-numeric or infinite cell is a LayerscopeError naming
    ``source``, the column and the data row (empty cells stay NaN)."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna() & (frame[column].astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LayerscopeError(
            f"column {column!r} is not numeric: {frame[column].iloc[row]!r} in data row {row + 1}", source=source
        )
    values = values.astype(float)
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise LayerscopeError(f"column {column!r} has an infinite value ({str(frame[column].iloc[row])!r}) in data row "
                              f"{row + 1}; values must be finite", source=source)
    return values


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object (run.json and the like); a one-line error otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayerscopeError(f"unreadable {path.name} ({exc})", source=path) from None
    if not isinstance(value, dict):
        raise LayerscopeError(f"{path.name} holds a {type(value).__name__}, not an object", source=path)
    return value
