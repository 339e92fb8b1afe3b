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
* :func:`latest_state` finds the most advanced of ``final.npz`` and ``checkpoints/*.npz`` in a run.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from nlhf_envs.atomic import atomic_open
from nlhf_envs.errors import ConfigError, NlhfError

__all__ = [
    "make_run_dir",
    "next_run_number",
    "MetricsCSV",
    "DeferredInterrupt",
    "latest_state",
    "history_from_csv",
]


def next_run_number(root: Path, prefix: str) -> int:
    """One more than the largest ``n`` of the ``root/prefix_<n>`` entries (1 when none)."""
    largest = 0
    if root.is_dir():
        for entry in root.iterdir():
            head, sep, tail = entry.name.rpartition("_")
            if sep and head == prefix and tail.isdigit() and tail == str(int(tail)):
                largest = max(largest, int(tail))
    return largest + 1


@contextlib.contextmanager
def user_env_kwargs(env_id: str, kwargs: Any) -> Iterator[None]:
    """Report a bad ``env_kwargs`` value met while building ``env_id`` as the user's mistake: a
    ``TypeError`` about an argument or the environment's own ``ValueError`` becomes one
    :class:`~nlhf_envs.errors.ConfigError`; library errors and other exceptions pass unchanged."""
    try:
        yield
    except NlhfError:
        raise
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise ConfigError(f"env_kwargs of {env_id}: {exc}") from None
    except ValueError as exc:  # the environment's own check of a user-given argument
        raise ConfigError(f"env_kwargs {kwargs} of {env_id}: {exc}") from None


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


def history_from_csv(path: str | os.PathLike[str], rows: int) -> list[dict[str, float]]:
    """The first ``rows`` rows of a ``metrics.csv`` as history dicts (empty cells omitted).

    CSV cells hold ``repr(float)``, which reads back to the same float, so the history is exact.

    Raises:
        ValueError: if the file has fewer than ``rows`` complete rows.
    """
    out: list[dict[str, float]] = []
    if rows:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if len(out) == rows:
                    break
                if None in row or any(v is None for v in row.values()):
                    break  # a row cut short by a kill
                out.append({k: float(v) for k, v in row.items() if v != ""})
    if len(out) != rows:
        raise ValueError(
            f"{path} holds {len(out)} complete metric rows; the checkpoint needs {rows}"
        )
    return out


class DeferredInterrupt:
    """Context manager: the first SIGINT sets :attr:`requested` instead of raising.

    The training loop checks :attr:`requested` at every iteration boundary and stops there; a
    second SIGINT raises :class:`KeyboardInterrupt` at once. Outside the main thread (where signal
    handlers cannot be installed) it does nothing and SIGINT behaves as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False


def latest_state(run_dir: str | os.PathLike[str]) -> Path | None:
    """The most advanced saved state of a run: ``final.npz`` or a checkpoint, by iterations.

    Files that are not readable checkpoints are skipped; ``final.npz`` wins a tie.
    """
    from agents.checkpoint import CheckpointError, read_meta

    run = Path(run_dir)
    candidates = [run / "final.npz", *sorted((run / "checkpoints").glob("*.npz"))]
    best: tuple[int, Path] | None = None
    for path in candidates:  # final.npz first: it wins a tie
        if not path.is_file():
            continue
        try:
            meta = read_meta(path)
        except CheckpointError:
            continue
        if best is None or meta["num_iterations"] > best[0]:
            best = (meta["num_iterations"], path)
    return None if best is None else best[1]
