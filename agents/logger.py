"""TensorBoard logging for agents, through Stable-Baselines3's logger.

Stable-Baselines3 (and with it torch) is imported only when a TensorBoard folder is requested, so
the tabular agents stay torch-free otherwise. Runs go to ``<tensorboard_log>/<agent>_<n>`` with
the next free ``n`` (the layout SB3 users know); each record's step is the ``queries_used``.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["make_logger", "next_run_dir"]


def next_run_dir(tensorboard_log: str | os.PathLike[str], prefix: str) -> str:
    """``<tensorboard_log>/<prefix>_<n>`` with ``n`` one more than the largest existing run."""
    root = os.fspath(tensorboard_log)
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)$")
    largest = 0
    if os.path.isdir(root):
        for entry in os.listdir(root):
            m = pattern.match(entry)
            if m:
                largest = max(largest, int(m.group(1)))
    return os.path.join(root, f"{prefix}_{largest + 1}")


def make_logger(tensorboard_log: str | os.PathLike[str], prefix: str) -> Any:
    """An SB3 ``Logger`` writing TensorBoard events to a new run folder."""
    from stable_baselines3.common.logger import configure

    return configure(next_run_dir(tensorboard_log, prefix), ["tensorboard"])
