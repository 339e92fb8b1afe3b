"""Run folders: exclusive creation, metrics appended as they are logged, interrupts at iteration
boundaries and the latest resumable state of a run.

These are the pieces of ``nlhf-zoo train`` that make an interrupted or killed run safe:

* :func:`make_run_dir` reserves ``root/prefix_<n>`` with an exclusive ``mkdir``, so two runs started
  together never share a folder (the loser takes the next number);
* :class:`MetricsCSV` appends every new history row to ``metrics.csv`` (flushed and fsync'ed), so a
  killed run keeps the metrics it logged; a new column rewrites the file atomically;
* :class:`DeferredInterrupt` turns the first Ctrl-C (SIGINT) into a request that the training loop
  honours at the next iteration boundary, so the state saved then is one an uninterrupted run
  passes through (a second Ctrl-C interrupts at once);
* :func:`latest_state` finds the most advanced of ``final.npz`` and ``checkpoints/*.npz`` in a run
  (:func:`saved_states` lists them all, most advanced first, for the fallback past a damaged one);
* :class:`RunLock` holds a run folder for one ``train`` at a time (``fcntl.flock`` on its
  ``.lock``), so two processes never write into one run;
* :class:`TerminateAsInterrupt` makes SIGTERM (schedulers, containers, ``timeout``) take the path of
  Ctrl-C, so a terminated run also stops at an iteration boundary and saves a resumable state;
* :func:`check_no_outside_links` refuses a run folder holding a symbolic link that points out of it
  (a resumed run would write wherever the link points);
* :class:`HistoryDigest` fingerprints the metric rows a periodic checkpoint relies on, so rows of
  ``metrics.csv`` edited or duplicated after the checkpoint are detected on resume;
* :func:`remove_stale_folders` clears the temporary folders a killed write of a Hugging Face
  folder (``final_hf/``, an ``export``) left behind.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from agents.api import DeferredInterrupt
from nlhf_envs.atomic import atomic_open
from nlhf_envs.errors import NlhfError

__all__ = [
    "make_run_dir",
    "next_run_number",
    "MetricsCSV",
    "DeferredInterrupt",
    "latest_state",
    "saved_states",
    "history_from_csv",
    "RunFolderError",
    "RunLock",
    "TerminateAsInterrupt",
    "check_no_outside_links",
    "HistoryDigest",
    "LOCK_NAME",
    "remove_stale_folders",
]

#: the lock file of a run folder (held with ``fcntl.flock`` while a ``train`` writes the run).
LOCK_NAME = ".lock"


class RunFolderError(NlhfError, ValueError):
    """A run folder cannot be used as asked: busy, damaged or unsafe (the message names the file)."""


def next_run_number(root: Path, prefix: str) -> int:
    """One more than the largest ``n`` of the ``root/prefix_<n>`` entries (1 when none)."""
    largest = 0
    if root.is_dir():
        for entry in root.iterdir():
            head, sep, tail = entry.name.rpartition("_")
            if sep and head == prefix and tail.isdigit() and tail == str(int(tail)):
                largest = max(largest, int(tail))
    return largest + 1


def make_run_dir(root: str | os.PathLike[str], prefix: str, attempts: int = 1000) -> Path:
    """Create and return a new, empty ``root/prefix_<n>`` (``n`` the next free number).

    The folder is reserved with an exclusive :func:`os.mkdir`: when another process takes the same
    number first, the next one is tried, so concurrent runs never share a folder.

    Raises:
        FileExistsError: if no number could be reserved in ``attempts`` tries.
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        path = base / f"{prefix}_{next_run_number(base, prefix)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue  # another run took this number between the scan and the mkdir
        return path
    raise FileExistsError(f"could not reserve a new {prefix}_<n> folder under {base}")


class MetricsCSV:
    """``metrics.csv`` of a run, appended row by row as the agent logs them.

    Args:
        path: the CSV file.
        history: rows already in the run (written first, atomically, replacing any older file).
    """

    def __init__(self, path: str | os.PathLike[str], history: Sequence[dict[str, float]] = ()):
        self.path = Path(path)
        self.rows = 0
        self.keys: list[str] = []
        self._rewrite(list(history))

    def _rewrite(self, history: list[dict[str, float]]) -> None:
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        with atomic_open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            if keys:
                writer.writeheader()
            writer.writerows(history)
        self.keys, self.rows = keys, len(history)

    def update(self, history: Sequence[dict[str, float]]) -> None:
        """Append the rows of ``history`` not written yet (rewrites when a new column appears)."""
        new = list(history[self.rows :])
        if not new:
            return
        if not self.keys or any(k not in self.keys for row in new for k in row):
            self._rewrite(list(history))
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.keys).writerows(new)
            f.flush()
            os.fsync(f.fileno())
        self.rows = len(history)


def metric_rows(path: str | os.PathLike[str], limit: int | None = None) -> list[dict[str, float]]:
    """The complete rows of a ``metrics.csv`` (at most ``limit``) as dicts, empty cells omitted.

    Reading stops at a row cut short by a kill. CSV cells hold ``repr(float)``, which reads back to
    the same float, so the rows are exact.

    Raises:
        RunFolderError: naming the file (and the line and column) if it is unreadable or holds a
            cell that is not a number.
    """
    out: list[dict[str, float]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                if len(out) == limit:
                    break
                if None in row or any(v is None for v in row.values()):
                    break  # a row cut short by a kill
                parsed: dict[str, float] = {}
                for k, v in row.items():
                    if v == "":
                        continue
                    try:
                        parsed[k] = float(v)
                    except ValueError:
                        raise RunFolderError(
                            f"{path}: line {line}, column {k!r}: {v!r} is not a number"
                        ) from None
                out.append(parsed)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunFolderError(f"{path}: unreadable metrics file: {exc}") from None
    return out


def history_from_csv(path: str | os.PathLike[str], rows: int) -> list[dict[str, float]]:
    """The first ``rows`` rows of a ``metrics.csv`` as history dicts (:func:`metric_rows`).

    Raises:
        RunFolderError: naming the file (and the row and column) if it is unreadable, holds fewer
            than ``rows`` complete rows or a cell that is not a number.
    """
    out = metric_rows(path, rows) if rows else []
    if len(out) != rows:
        raise RunFolderError(
            f"{path} holds {len(out)} complete metric rows; the checkpoint needs {rows}"
        )
    return out


class HistoryDigest:
    """SHA-256 of the first rows of a metric history, advanced incrementally as rows are added.

    A row is digested as the JSON list of its ``[name, repr(value)]`` pairs sorted by name: the
    exact text ``metrics.csv`` stores (``repr`` of a float reads back to the same float), so the
    rows read back from the file give the digest of the rows the agent logged. It is a checksum of
    recorded data, never of a recomputed result. The rows already digested must not change.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._rows = 0

    @staticmethod
    def _row_bytes(row: dict[str, float]) -> bytes:
        pairs = sorted((str(k), repr(float(v))) for k, v in row.items())
        return (json.dumps(pairs) + "\n").encode("utf-8")

    def of(self, history: Sequence[dict[str, float]]) -> str:
        """The hex digest of ``history`` (whose first rows are those digested before)."""
        if len(history) < self._rows:
            raise ValueError("HistoryDigest: the history became shorter")
        for row in history[self._rows :]:
            self._hash.update(self._row_bytes(row))
        self._rows = len(history)
        return self._hash.copy().hexdigest()


def saved_states(run_dir: str | os.PathLike[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(states, unreadable)``: the saved states of a run, most advanced first, and the others.

    ``states`` are ``final.npz`` and ``checkpoints/*.npz`` whose header reads, ordered by
    iterations (``final.npz`` first in a tie, then the newer checkpoint); ``unreadable`` pairs each
    file whose header does not read with the reason (its :class:`CheckpointError`).
    """
    from agents.checkpoint import CheckpointError, read_meta

    run = Path(run_dir)
    candidates = [run / "final.npz", *sorted((run / "checkpoints").glob("*.npz"))]
    ranked: list[tuple[int, int, int, Path]] = []
    unreadable: list[tuple[Path, str]] = []
    for order, path in enumerate(candidates):  # final.npz first: it wins a tie
        if not path.is_file():
            continue
        try:
            meta = read_meta(path)
        except CheckpointError as exc:
            unreadable.append((path, str(exc)))
            continue
        ranked.append((-int(meta["num_iterations"]), min(order, 1), -order, path))
    ranked.sort(key=lambda t: t[:3])
    return [t[3] for t in ranked], unreadable


def latest_state(run_dir: str | os.PathLike[str]) -> Path | None:
    """The most advanced saved state of a run: ``final.npz`` or a checkpoint, by iterations.

    Files that are not readable checkpoints are skipped; ``final.npz`` wins a tie.
    """
    states, _ = saved_states(run_dir)
    return states[0] if states else None


def check_no_outside_links(run_dir: str | os.PathLike[str]) -> None:
    """Refuse a run folder holding a symbolic link that points outside it.

    A resumed run writes into ``checkpoints/``, ``metrics.csv``, ``tb/``, ...; through a link it
    would write wherever the link points. Links inside the folder that stay inside it are allowed.

    Raises:
        RunFolderError: naming the link and its target.
    """
    root = os.path.realpath(run_dir)
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            entry = os.path.join(folder, name)
            if not os.path.islink(entry):
                continue
            target = os.path.realpath(entry)
            if os.path.commonpath([root, target]) != root:
                shown = os.path.join(os.fspath(run_dir), os.path.relpath(entry, root))
                raise RunFolderError(
                    f"{shown} is a symbolic link to {target}, outside the run folder; "
                    "refusing to write through it (replace it with a real file or folder)"
                )


class RunLock:
    """Exclusive hold of a run folder while a ``train`` writes it (``with RunLock(run_dir):``).

    An ``fcntl.flock`` on ``<run_dir>/.lock``, taken without waiting: a second process is refused
    at once. The lock goes with the process (a killed run leaves no stale lock); the empty lock
    file stays. The lock file is never opened through a symbolic link.

    Raises:
        RunFolderError: when another process holds the folder.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._fh: IO[bytes] | None = None

    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring)."""
        import fcntl

        path = self.run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise RunFolderError(f"cannot lock the run folder {self.run_dir}: {exc}") from None
        fh = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise RunFolderError(
                f"the run folder {self.run_dir} is in use by another nlhf-zoo train "
                f"(it holds {path}); wait until it finishes"
            ) from None
        self._fh = fh
        return self

    def release(self) -> None:
        """Give the lock back (closing the lock file)."""
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class TerminateAsInterrupt:
    """Context manager: SIGTERM takes the path of Ctrl-C (SIGINT) while it is active.

    The handler calls the SIGINT handler installed at that moment, so inside a training loop's
    :class:`DeferredInterrupt` a SIGTERM stops at the next iteration boundary as Ctrl-C does, and
    elsewhere it raises :class:`KeyboardInterrupt`. The previous SIGTERM handler is restored on
    exit. Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self._old: Any = None
        self._installed = False

    @staticmethod
    def _handler(signum: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIG_IGN (a background job) or SIG_DFL: still stop, as Ctrl-C would
            raise KeyboardInterrupt

    def __enter__(self) -> TerminateAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._old)
            self._installed = False


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this process included); unknown counts as running."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but is someone else's, or this cannot tell: keep its folder
    return True


def remove_stale_folders(parent: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Clear what killed writes of Hugging Face folders left in ``parent``; returns what it
    removed.

    A folder ``X`` is written as ``X.tmp<pid>`` and then put in place by two renames (``X`` to
    ``X.old<pid>``, ``X.tmp<pid>`` to ``X``). For every ``X.tmp<pid>`` or ``X.old<pid>`` folder
    (only those of ``X == name`` when given) whose process no longer runs: when ``X`` itself is
    missing, the kill came between the two renames and ``X.tmp<pid>`` is complete, so it is put
    in place (or ``X.old<pid>`` is, without it); the remaining temporary folders are removed.
    Folders of running processes are never touched.
    """
    import re
    import shutil

    root = Path(parent)
    pattern = re.compile(r"^(?P<name>.+)\.(?P<kind>tmp|old)(?P<pid>[0-9]+)$")
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    found: dict[tuple[str, int], dict[str, Path]] = {}
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        if entry.is_symlink() or not entry.is_dir() or _process_alive(int(m["pid"])):
            continue
        found.setdefault((m["name"], int(m["pid"])), {})[m["kind"]] = entry
    removed = []
    for (target, _), kinds in found.items():
        final = root / target
        if not final.exists():
            # .old and .tmp: the .tmp is complete (X was moved aside only then); .old alone: the
            # previous folder; .tmp alone: perhaps half-written, so it is not put in place
            keep = kinds.pop("tmp" if "old" in kinds and "tmp" in kinds else "old", None)
            if keep is not None:
                keep.rename(final)
        for leftover in kinds.values():
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed
