"""What the ``nlhf-zoo`` commands share: the user's-mistake error, the checks of counts, folders
and output files made before anything is written, run-folder names and ``metrics.csv`` files.

Nothing here parses a command line (that is :mod:`agents.zoo.cli`); each command's logic lives in
its own module (:mod:`agents.zoo.train`, :mod:`agents.zoo.tournament`, :mod:`agents.zoo.plotting`,
:mod:`agents.zoo.demo`, ...).
"""

from __future__ import annotations

import csv
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlhf_envs.atomic import atomic_open
from nlhf_envs.errors import ConfigError, EnvironmentSetupError, NlhfError

#: the largest seed: seeds are recorded as 64-bit integers and torch's generators take at most 2**63 - 1
MAX_SEED = 2**63 - 1


class UserError(NlhfError, ValueError):
    """A mistake in the command line: reported as one line, without a traceback."""


def env_folder_name(env_id: str) -> str:
    """``nlhf/RPS-v0`` -> ``RPS-v0`` (the run folder's prefix); other ``/`` become ``_``."""
    name = env_id[5:] if env_id.startswith("nlhf/") else env_id
    return name.replace("/", "_")


def next_run_dir(root: str | os.PathLike[str], prefix: str) -> Path:
    """``root/prefix_<n>`` with ``n`` one more than the largest existing (rl-zoo numbering)."""
    root = Path(root)
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)$")
    largest = 0
    if root.is_dir():
        for entry in root.iterdir():
            m = pattern.match(entry.name)
            if m:
                largest = max(largest, int(m.group(1)))
    return root / f"{prefix}_{largest + 1}"


def write_metrics_csv(path: Path, history: Sequence[dict[str, float]]) -> None:
    """Write an agent's ``history`` as CSV (one row per logged iteration), atomically."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def read_metrics_csv(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """Columns of a ``metrics.csv`` as float lists (NaN where a row has no value).

    Raises:
        agents.zoo.runs.RunFolderError: naming the file, line and column of a non-numeric cell.
    """
    from agents.zoo.runs import metric_rows

    rows = metric_rows(path)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: [row.get(k, float("nan")) for row in rows] for k in keys}


def _threads_note() -> str:
    """`` on N torch thread(s)`` when the command used torch, else ``""``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return ""
    k = torch.get_num_threads()
    return f" on {k} torch thread{'s' if k != 1 else ''}"


def _progress(total: int | None, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


def _check_count(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """Refuse a count (or seed) that is not an integer in ``[minimum, maximum]`` (``None`` passes)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be an integer <= {maximum:,}; got {value:,}")


def _check_folder(name: str, path: str | os.PathLike[str] | None) -> None:
    """Refuse a folder path that names a file or lies under one (checked before anything is made)."""
    if path is None:
        return
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_dir():
            return
        if p.exists() or p.is_symlink():
            what = "is" if p == path else f"lies under {p}, which is"
            kind = "a file, not a folder" if p.is_file() else "not a folder"
            raise UserError(f"{name} {path}: {what} {kind}")


def _check_new_file(name: str, path: str | os.PathLike[str]) -> None:
    """Refuse an output file path that exists (nothing a user saved is overwritten) or whose
    folder cannot be made."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{name} {path}: is a folder; give the path of a new file")
    if path.exists() or path.is_symlink():
        raise UserError(
            f"{name} {path}: already exists; remove it or choose another path (nothing is "
            "overwritten)"
        )
    _check_folder(name, path.parent)


def check_device(device: str) -> None:
    """Raise :class:`EnvironmentSetupError` unless ``device`` names a torch device usable here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise EnvironmentSetupError(f"--device {device!r} is not a torch device: {exc}") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise EnvironmentSetupError(
                f"--device {device!r} is not available on this machine ({count} CUDA device(s))"
            )
        return
    # torch accepts more device types (meta, xla, xpu, mps, ...); the agents' seeded generators
    # and tensors are supported and tested on the CPU and CUDA only ('meta' holds no data at all)
    raise EnvironmentSetupError(
        f"--device {device!r}: nlhf-zoo runs on 'cpu' or 'cuda[:N]', not on a {dev.type!r} device"
    )


def _text_ids() -> list[str]:
    from nlhf_envs.registration import HF_ENV_IDS, TEXT_ENV_IDS

    return [*TEXT_ENV_IDS, *HF_ENV_IDS]
