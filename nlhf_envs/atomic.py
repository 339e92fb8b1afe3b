"""Atomic file writes: nothing a user saved is ever left half-written.

:func:`atomic_open` writes to a temporary file in the target's folder, flushes and fsyncs it, gives it
the usual ``0o644`` permissions and renames it over the target with :func:`os.replace` (atomic on
POSIX and Windows). If the block raises, the temporary file is removed and the target is untouched.
Every checkpoint, run file and report of nlhf-zoo is written through it.

A process killed during a write (SIGKILL, power loss) leaves its temporary file
``.tmp-<pid>-<random><name>`` behind; the next write of the same target removes those whose
process no longer runs (or is the writing process itself), so interrupted saves do not pile up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_text", "remove_stale_temporaries"]


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
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f".tmp-{os.getpid()}-", suffix=os.path.basename(target)
    )
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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier write of this target is over (writes do not nest)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or cannot tell: keep its file
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[str]:
    """Remove temporary files of interrupted writes of ``path``; returns the removed paths.

    Only files named like :func:`atomic_open`'s temporaries for this target whose writing process
    is gone are removed.
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    name = os.path.basename(target)
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        if not (entry.startswith(".tmp-") and entry.endswith(name)):
            continue
        pid_text = entry[5:].split("-", 1)[0]
        if not pid_text.isdigit() or len(entry) <= len(name) + 5 + len(pid_text) + 1:
            continue
        if _alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
            removed.append(os.path.join(folder, entry))
        except FileNotFoundError:
            pass
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
