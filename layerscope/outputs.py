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


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def check_writable_location(path: str | os.PathLike) -> None:
    """Check, without creating anything, that a file or directory could be written at ``path``:
    its closest existing ancestor is a directory this process may write to.

    Nothing is created here, so a job that fails later leaves no empty directories behind.
    """
    _check_parent_writable(Path(path))


def _check_parent_writable(path: Path) -> None:
    """See :func:`check_writable_location`."""
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise LayerscopeError("is not a directory, so nothing can be written under it", source=existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LayerscopeError("directory is not writable", source=existing)


def _make_parent(path: Path) -> list[Path]:
    """Create ``path``'s directory (and its parents) once there is something to write;
    returns the directories created, deepest first, so a failed write can remove them."""
    _check_parent_writable(path)
    created = []
    missing = path.parent
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise LayerscopeError(f"cannot create directory: {exc.strerror or exc}", source=path.parent) from None
    return created


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    An operating-system failure (no permission, no space, a directory in the way) is a
    LayerscopeError naming ``path``, and the temporary file is removed.
    """
    path = Path(path)
    if path.is_dir():
        raise LayerscopeError("is a directory, not a file that can be written", source=path)
    created = _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _remove_empty(created)
        raise LayerscopeError(f"cannot write: {exc.strerror or exc}", source=path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        _remove_empty(created)
        if isinstance(exc, OSError):
            raise LayerscopeError(f"cannot write: {exc.strerror or exc}", source=path) from None
        raise
    return path


def atomic_write_all(writes: dict[Path, Callable[[Path], Any]]) -> list[Path]:
    """Write several files as one: each ``write(tmp_path)`` goes to a hidden file beside its
    destination, and only when all succeeded are they renamed into place. A failure leaves
    none of them behind (the renames cannot fail for a reason the writes did not already hit)."""
    for path in writes:
        if Path(path).is_dir():
            raise LayerscopeError("is a directory, not a file that can be written", source=path)
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writes.items():
            final = Path(path)
            staged.append((atomic_write(final.with_name(f".{final.name}.pending"), write), final))
        for pending, final in staged:
            os.replace(pending, final)
    except BaseException as exc:
        for pending, _ in staged:
            pending.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise LayerscopeError(f"cannot write: {exc.strerror or exc}", source=final) from None
        raise
    return [final for _, final in staged]


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
    created = _make_parent(final)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    except OSError as exc:
        _remove_empty(created)
        raise LayerscopeError(f"cannot write: {exc.strerror or exc}", source=final) from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / final.name)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
