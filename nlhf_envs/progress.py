"""Progress of long work (training, evaluation, tournaments): callbacks, or a bar on request.

Library code never prints. A long call takes ``progress``:

* ``None`` or ``False`` (the default): nothing is reported;
* ``True``: a ``tqdm`` bar on stderr (the only output the library makes, and only when asked);
* a callable ``progress(event)`` receiving a :class:`ProgressEvent` after every unit of work (a
  batch of queries, a chunk of an estimate, a match); it may raise (e.g. ``KeyboardInterrupt``) to
  stop the work there.

The command line passes its own bars (``--no-progress`` turns them off); tests pass nothing.
:func:`reporter` turns any of these into a :class:`Reporter`, which the long calls use.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = ["Progress", "ProgressEvent", "Reporter", "reporter"]


@dataclass(frozen=True)
class ProgressEvent:
    """Where a long call stands.

    Attributes:
        task: what runs (``"train"``, ``"nash estimate"``, ``"evaluate"``, ``"tournament"``, ...).
        done: units done so far in this call.
        total: units of the whole call (``None`` when unknown).
        unit: what a unit is (``"queries"``, ``"prompts"``, ``"matches"``, ...).
        info: figures of the moment (e.g. ``{"queries_per_s": 412.0}``).
    """

    task: str
    done: int
    total: int | None
    unit: str
    info: Mapping[str, float] = field(default_factory=dict)


#: what a long call's ``progress`` argument accepts (see the module docstring).
Progress = Union[bool, None, Callable[[ProgressEvent], Any]]  # noqa: UP007 (documented alias)


class Reporter:
    """Reports one call's progress to a callback or a bar (see :func:`reporter`)."""

    def __init__(
        self,
        task: str,
        total: int | None,
        unit: str,
        callback: Callable[[ProgressEvent], Any] | None = None,
        bar: Any = None,
    ) -> None:
        self.task, self.total, self.unit = task, total, unit
        self.done = 0
        self.callback = callback
        self.bar = bar
        self.start = time.perf_counter()

    @property
    def active(self) -> bool:
        """Whether anyone listens (a callback or a bar)."""
        return self.callback is not None or self.bar is not None

    def advance(self, units: int = 1, **info: float) -> None:
        """``units`` more done; ``info`` figures go to the event (and the bar's postfix)."""
        self.update(self.done + int(units), **info)

    def update(self, done: int, **info: float) -> None:
        """``done`` units done in all (a bar moves by the difference)."""
        step, self.done = int(done) - self.done, int(done)
        if self.bar is not None:
            if info:
                self.bar.set_postfix({k: _short(v) for k, v in info.items()}, refresh=False)
            self.bar.update(step)
        if self.callback is not None:
            self.callback(ProgressEvent(self.task, self.done, self.total, self.unit, dict(info)))

    def close(self) -> None:
        """Close the bar (callbacks need nothing)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _short(value: float) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def reporter(progress: Progress, task: str, total: int | None, unit: str) -> Reporter:
    """The :class:`Reporter` of a call's ``progress`` argument.

    Args:
        progress: ``None``/``False`` (silent), ``True`` (a ``tqdm`` bar on stderr) or a callable
            receiving :class:`ProgressEvent` objects.
        task: the event's and bar's name.
        total: units of the whole call (``None``: unknown).
        unit: what a unit is.

    Raises:
        TypeError: for anything else.
    """
    if progress is None or progress is False:
        return Reporter(task, total, unit)
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=task, unit=f" {unit}", leave=False, file=sys.stderr)
        return Reporter(task, total, unit, bar=bar)
    if callable(progress):
        return Reporter(task, total, unit, callback=progress)
    raise TypeError(
        f"progress must be None, a bool or a callable(ProgressEvent); got {type(progress).__name__}"
    )
