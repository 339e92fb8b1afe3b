"""Distribute independent pure tasks over a Ray cluster (the ``ray`` extra).

:func:`ray_map` is what ``agents.arena.run(..., use_ray=True)`` and ``nlhf-zoo tournament --ray``
use: every match of a tournament is a pure function of a picklable spec, so mapping it over a Ray
cluster gives exactly the results of the local loop, in the same order.

Clusters:

* ``address=None``: the Ray instance this process already joined, else a new local one
  (``ray.init(num_cpus=num_cpus)``) on this machine;
* ``address="auto"``: the cluster started on this machine with ``ray start --head``;
* ``address="ray://<head>:10001"`` (Ray Client) or ``"<head>:6379"``: a multi-machine cluster. Every
  node must have ``nlhf-zoo`` installed (same version), since the workers import the task function
  (``agents.arena.play_match``) and unpickle the specs.

Ray is imported only when :func:`ray_map` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["ray_map", "require_ray", "RAY_MISSING"]

T = TypeVar("T")
R = TypeVar("R")

#: the message of the ``ImportError`` raised when Ray is not installed.
RAY_MISSING = "install the ray extra: pip install 'nlhf-zoo[ray]'"


def require_ray() -> Any:
    """Import and return the ``ray`` module.

    Raises:
        ImportError: ``"install the ray extra: pip install 'nlhf-zoo[ray]'"`` when Ray is missing.
    """
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"{RAY_MISSING} (import failed: {err})") from err
    return ray


def _run_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(item) for item in chunk]


def ray_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    chunk_size: int | None = None,
    on_result: Callable[[R], None] | None = None,
) -> list[R]:
    """``[fn(item) for item in items]`` computed by Ray tasks, in the order of ``items``.

    Args:
        fn: a pure, picklable function (module-level, importable on every node).
        items: picklable arguments.
        address: the cluster to join when Ray is not initialised yet (see the module docstring);
            ``None`` starts a local cluster. Ignored when this process already joined a cluster.
        num_cpus: CPUs of a new local cluster (``None``: all of this machine's); not allowed with
            ``address``.
        chunk_size: items per Ray task. ``None`` picks ``ceil(n / (4 * cluster CPUs))`` so that
            tiny tasks (a tournament match takes milliseconds) do not drown in per-task overhead
            while every CPU still gets about four tasks. Results do not depend on it.
        on_result: called in this process with each result as soon as its task finishes (in
            completion order), e.g. to log finished tournament matches for resuming.

    Returns:
        The results, ``results[i] = fn(items[i])``.

    Raises:
        ImportError: naming the ``ray`` extra when Ray is missing.
        ValueError: for ``num_cpus`` together with ``address``, ``num_cpus < 1`` or ``chunk_size < 1``.
        Exception: the first exception raised by ``fn`` (Ray re-raises it with the remote trace).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {type(fn).__name__}")
    if address is not None and num_cpus is not None:
        raise ValueError(
            "num_cpus applies to a new local cluster only; it cannot be given with address"
        )
    if num_cpus is not None and (isinstance(num_cpus, bool) or int(num_cpus) < 1):
        raise ValueError(f"num_cpus must be an int >= 1 or None; got {num_cpus!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
        raise ValueError(f"chunk_size must be an int >= 1 or None; got {chunk_size!r}")
    items = list(items)
    ray = require_ray()
    if not items:
        return []
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    if chunk_size is None:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        chunk_size = max(1, math.ceil(len(items) / (4 * cpus)))
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    task = ray.remote(_run_chunk)
    fn_ref = ray.put(fn)
    refs = [task.remote(fn_ref, chunk) for chunk in chunks]
    if on_result is not None:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for result in ray.get(ready[0]):
                on_result(result)
    return [result for chunk_result in ray.get(refs) for result in chunk_result]
