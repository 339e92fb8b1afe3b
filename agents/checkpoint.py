"""Pickle-free, atomic agent checkpoints.

A checkpoint is one ``.npz`` archive (read with ``allow_pickle=False``) holding

* ``meta``: UTF-8 JSON with the format version, agent name and kind, resolved config, seed, counters
  (``queries_used``, ``num_iterations``, the game's query counter), both generator states, the
  number of history rows and their column names, and the game's ``beta`` and ``name``;
* ``game/P``, ``game/pi_ref``, ``game/rho``: the game's arrays;
* ``state/<attr>``: the agent's learning state (``log_pi`` and algorithm-specific arrays);
* ``history/values`` and ``history/present``: the metric history as a float64 table and a mask of
  the logged cells (omitted in a run's periodic checkpoints, whose rows are in ``metrics.csv``).

Version 2 stores the history as arrays; version 1 files (history as JSON in ``meta``) still load.
Loading validates every unpacked field (:func:`load_agent`) and raises one :class:`CheckpointError`
naming the file and the field.

The file is written to a temporary file in the destination folder, flushed, fsync'ed and moved into
place with :func:`os.replace`, so a crash never leaves a half-written checkpoint under the final
name. Loading restores everything bit for bit: ``policy()`` is identical, and ``learn`` continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from agents.config import config_to_dict
from agents.registry import get_agent_class
from nlhf_envs.archives import READ_ERRORS, open_zip
from nlhf_envs.atomic import atomic_open
from nlhf_envs.errors import CheckpointError
from nlhf_envs.game import PreferenceGame

__all__ = [
    "save_agent",
    "load_agent",
    "read_meta",
    "CheckpointError",
    "FORMAT_VERSION",
    "checkpoint_header",
    "write_npz_atomic",
    "history_arrays",
    "read_history",
    "check_array",
    "set_rng",
    "fail",
    "is_int",
]

FORMAT_VERSION = 2

#: versions this library reads.
READABLE_VERSIONS = (1, 2)


def _resolve_path(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not os.path.splitext(p)[1]:
        p += ".npz"
    return p


def checkpoint_header(agent: Any) -> dict[str, Any]:
    """The ``meta`` fields every agent checkpoint starts with (format, name, kind, config, counters)."""
    return {
        "format": "nlhf-zoo-agent",
        "version": FORMAT_VERSION,
        "name": agent.name,
        "kind": agent.kind,
        "config": config_to_dict(agent.config),
        "seed": agent.seed,
        "queries_used": agent.queries_used,
        "num_iterations": agent.num_iterations,
    }


def history_arrays(history: list[dict[str, float]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(keys, values, present)``: the history as a float64 table and a mask of logged cells."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    values = np.zeros((len(history), len(keys)))
    present = np.zeros((len(history), len(keys)), dtype=bool)
    col = {k: i for i, k in enumerate(keys)}
    for r, row in enumerate(history):
        for k, v in row.items():
            values[r, col[k]] = v
            present[r, col[k]] = True
    return keys, values, present


def save_agent(agent: Any, path: str | os.PathLike[str], *, include_history: bool = True) -> str:
    """Write ``agent`` to ``path`` atomically (see the module docstring); return the path.

    Args:
        agent: the agent.
        path: the target (``.npz`` appended when it has no suffix).
        include_history: store the metric history (as a float64 table). Periodic checkpoints of a
            run pass ``False``: they record only the number of history rows, which the run's
            ``metrics.csv`` holds, so a long run does not rewrite its whole history every time.
    """
    return write_npz_atomic(
        _resolve_path(path), agent.checkpoint_arrays(include_history=include_history)
    )


def write_npz_atomic(target: str, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` as an ``.npz`` archive at ``target`` atomically; returns ``target``."""
    with atomic_open(target, "wb") as fh:
        np.savez(fh, **arrays)
    return target


# ---------------------------------------------------------------------------------- reading
def fail(path: str, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path!r}: field {field!r}: {problem}")


def _headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the archive's arrays, read from their headers without allocating.

    The archive's directory is checked first (:func:`nlhf_envs.archives.open_zip`: no member
    declares more than it holds, and the whole declares at most a bounded multiple of the file's
    size); then every array's declared shape must fit its member, so a small file cannot make the
    loader allocate a huge array.
    """
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with open_zip(path, what="agent checkpoint") as zf:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with zf.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                except ValueError as err:
                    raise fail(path, name, f"not a numpy array: {err}") from None
            if dtype.hasobject:
                raise fail(path, name, "object arrays are refused (no pickle)")
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if nbytes > info.file_size:
                raise fail(
                    path,
                    name,
                    f"declares shape {shape} ({nbytes} bytes) but holds {info.file_size} bytes",
                )
            out[name] = (tuple(shape), dtype)
    return out


def _read_arrays(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a checkpoint after the size checks of :func:`_headers`."""
    if not os.path.exists(path):
        raise CheckpointError(f"no agent checkpoint at {path!r}")
    try:
        _headers(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta_arr = arrays["meta"]
        if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
            raise fail(path, "meta", f"must be uint8 bytes; got {meta_arr.dtype} {meta_arr.shape}")
        meta = json.loads(meta_arr.tobytes().decode("utf-8"))
    except CheckpointError:
        raise
    except READ_ERRORS as err:
        raise CheckpointError(f"{path!r} is not a readable agent checkpoint: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != "nlhf-zoo-agent":
        raise CheckpointError(f"{path!r} is not an nlhf-zoo agent checkpoint")
    if meta.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path!r} has checkpoint format version {meta.get('version')!r}; this library reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    _check_header_fields(path, meta)
    return meta, arrays


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_header_fields(path: str, meta: dict[str, Any]) -> None:
    """Types of the fields every checkpoint has (:func:`checkpoint_header`)."""
    for key in ("name", "kind"):
        if not isinstance(meta.get(key), str):
            raise fail(path, key, f"must be a string; got {meta.get(key)!r}")
    if not isinstance(meta.get("config"), dict):
        raise fail(path, "config", f"must be a mapping; got {type(meta.get('config')).__name__}")
    for key in ("seed", "queries_used", "num_iterations"):
        value = meta.get(key)
        if not is_int(value) or value < 0:
            raise fail(path, key, f"must be a non-negative integer; got {value!r}")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``meta`` header of a checkpoint, reading only that member.

    Raises:
        CheckpointError: naming the file (and field) when it is missing, corrupt or foreign.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise CheckpointError(f"no agent checkpoint at {p!r}")
    try:
        headers = _headers(p)
        if "meta" not in headers:
            raise fail(p, "meta", "missing")
        with np.load(p, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
    except CheckpointError:
        raise
    except READ_ERRORS as err:
        raise CheckpointError(f"{p!r} is not a readable agent checkpoint: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != "nlhf-zoo-agent":
        raise CheckpointError(f"{p!r} is not an nlhf-zoo agent checkpoint")
    _check_header_fields(p, meta)
    return meta


def check_array(
    path: str, field: str, arr: np.ndarray, shape: tuple[int, ...] | None, dtype: Any
) -> np.ndarray:
    if arr.dtype != np.dtype(dtype):
        raise fail(path, field, f"must have dtype {np.dtype(dtype)}; got {arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise fail(path, field, f"must have shape {shape} for this game; got {arr.shape}")
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise fail(path, field, "must be finite; found NaN or inf")
    return np.array(arr)


def read_history(path: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[dict]:
    if "history_len" not in meta:  # version 1: the rows as JSON
        rows = meta.get("history")
        if not isinstance(rows, list) or not all(
            isinstance(r, dict)
            and all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in r.items())
            for r in rows
        ):
            raise fail(path, "history", "must be a list of {metric: number} rows")
        return [{k: float(v) for k, v in r.items()} for r in rows]
    n = meta.get("history_len")
    if not is_int(n) or n < 0:
        raise fail(path, "history_len", f"must be a non-negative integer; got {n!r}")
    keys = meta.get("history_keys")
    if keys is None:
        return []  # a periodic checkpoint of a run: the rows are in the run's metrics.csv
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise fail(path, "history_keys", f"must be a list of strings; got {keys!r}")
    values = arrays.get("history/values")
    present = arrays.get("history/present")
    if values is None or present is None:
        raise fail(path, "history/values", "missing")
    check_array(path, "history/values", values, (n, len(keys)), np.float64)
    check_array(path, "history/present", present, (n, len(keys)), np.bool_)
    return [{k: float(values[r, c]) for c, k in enumerate(keys) if present[r, c]} for r in range(n)]


def set_rng(path: str, field: str, rng: np.random.Generator, state: Any) -> None:
    expected = rng.bit_generator.state
    if (
        not isinstance(state, dict)
        or state.get("bit_generator") != expected["bit_generator"]
        or not isinstance(state.get("state"), dict)
    ):
        raise fail(path, field, f"must be a {expected['bit_generator']} generator state")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise fail(path, field, f"not a valid generator state: {err}") from None


def check_text_fields(path: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Field checks of a token-level checkpoint before its state dicts are built."""
    env = meta.get("env")
    if not isinstance(env, dict) or not isinstance(env.get("id"), str):
        raise fail(path, "env", f"must be a mapping with an 'id'; got {env!r}")
    if not is_int(env.get("max_new_tokens")) or env["max_new_tokens"] < 1:
        raise fail(
            path,
            "env.max_new_tokens",
            f"must be an integer >= 1; got {env.get('max_new_tokens')!r}",
        )
    for key in ("lm_config", "optim_scalars"):
        if not isinstance(meta.get(key), dict):
            raise fail(path, key, f"must be a mapping; got {type(meta.get(key)).__name__}")
    if not isinstance(meta.get("optim_param_groups"), list):
        raise fail(path, "optim_param_groups", "must be a list")
    read_history(path, meta, arrays)  # version 2: a float64 table; version 1: JSON rows
    for key in ("rng", "act_rng"):
        arr = arrays.get(key)
        if arr is None or arr.dtype != np.uint8 or arr.ndim != 1:
            raise fail(path, key, "must be a torch generator state (1-D uint8)")
    for key, arr in arrays.items():
        prefix, _, name = key.partition("/")
        if prefix not in ("policy", "reference", "optim"):
            continue
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise fail(path, key, "must be finite; found NaN or inf")
        if prefix == "policy":
            ref = arrays.get(f"reference/{name}")
            if ref is not None and (ref.shape != arr.shape or ref.dtype != arr.dtype):
                raise fail(
                    path,
                    key,
                    f"must match reference/{name} ({ref.dtype} {ref.shape}); got "
                    f"{arr.dtype} {arr.shape}",
                )


def load_agent(
    path: str | os.PathLike[str],
    *,
    game: PreferenceGame | None = None,
    tensorboard_log: str | os.PathLike[str] | None = None,
) -> Any:
    """Load a checkpoint written by :meth:`Agent.save`, validating everything it unpacks.

    Checked before use: declared array sizes against the file (before allocating), the ``meta``
    fields' types (``seed``, counters, generator states, history), the game arrays (a valid
    :class:`PreferenceGame`), and every state array's dtype, shape (against the game and the
    agent's own freshly built state) and finiteness.

    Args:
        path: the file (``.npz`` is appended when the path has no suffix and does not exist).
        game: use this game object instead of rebuilding one from the stored arrays (its arrays
            must equal the stored ones).
        tensorboard_log: TensorBoard folder for the continued run.

    Raises:
        CheckpointError: one error naming the path (and the field), for a missing, corrupt,
            truncated, foreign or inconsistent file.
    """
    p = os.fspath(path)
    if not os.path.exists(p) and os.path.exists(_resolve_path(p)):
        p = _resolve_path(p)
    meta, arrays = _read_arrays(p)
    if meta.get("kind") == "text":
        check_text_fields(p, meta, arrays)
    try:
        cls = get_agent_class(meta["name"], meta["kind"])
    except (KeyError, ValueError) as err:
        raise fail(p, "name", str(err)) from None
    return cls.from_checkpoint(p, meta, arrays, game=game, tensorboard_log=tensorboard_log)
