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

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from agents.api import DeferredInterrupt
from nlhf_envs.atomic import atomic_open

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
