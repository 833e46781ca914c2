"""Atomic files and run directories.

Every file is written to a temporary name in its destination directory and renamed into
place, so a crash never leaves half a file. A run directory is assembled in a hidden staging
directory beside its destination and renamed into place only when the job succeeded, so a
failed run leaves nothing behind and an existing run is never half-overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import LayerscopeError


def _check_parent_writable(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LayerscopeError(f"cannot create directory: {exc.strerror}", source=parent) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LayerscopeError("directory is not writable", source=parent)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    _check_parent_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def check_output_dir(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse an existing, non-empty output directory unless ``force``; check writability."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LayerscopeError("exists and is not a directory", source=path)
    if path.is_dir() and any(path.iterdir()) and not force:
        raise LayerscopeError("output directory exists; pass --force to replace it", source=path)
    _check_parent_writable(path)
    return path


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a staging directory that becomes ``path`` only if the block succeeds.

    On any exception the staging directory is removed and ``path`` is left as it was.
    """
    final = check_output_dir(path, force=force)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / final.name)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
