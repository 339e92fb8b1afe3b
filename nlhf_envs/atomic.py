"""Atomic file writes: nothing a user saved is ever left half-written.

:func:`atomic_open` writes to a temporary file in the target's folder, flushes and fsyncs it, gives it
the usual ``0o644`` permissions and renames it over the target with :func:`os.replace` (atomic on
POSIX and Windows). If the block raises, the temporary file is removed and the target is untouched.
Every checkpoint, run file and report of nlhf-zoo is written through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_text"]


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open ``path`` for writing through a temporary file that replaces it on success.

    Args:
        path: the target file; its folder is created when missing.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        **kwargs: passed to :func:`open` (``newline=""`` for CSV, ``encoding``, ...).

    Yields:
        The open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only; mode must be 'w' or 'wb', got {mode!r}")
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(target))
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
