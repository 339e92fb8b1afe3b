"""``nlhf-zoo plot``: a metric against preference queries for the runs of a log folder."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.zoo.common import (
    UserError,
    _check_new_file,
    _text_ids,
    env_folder_name,
    read_metrics_csv,
)
from nlhf_envs.atomic import atomic_open


def plot_runs(
    runs: Sequence[tuple[str, str | os.PathLike[str]]],
    out: str | os.PathLike[str],
    metric: str = "game/exploitability",
    title: str | None = None,
    bound: Callable[[Any], Any] | None = None,
) -> str:
    """Plot ``metric`` against ``game/queries`` (log y) for ``[(label, metrics.csv path), ...]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, path in runs:
        cols = read_metrics_csv(path)
        if metric not in cols:
            raise UserError(f"{path} has no column {metric!r}; columns: {', '.join(cols)}")
        y = np.maximum(np.asarray(cols[metric]), 1e-16)
        ax.plot(cols["game/queries"], y, label=label)
    if bound is not None:
        xs = np.linspace(0, ax.get_xlim()[1], 200)
        ax.plot(xs, bound(xs), "k--", label="theory bound")
    ax.set_yscale("log")
    ax.set_xlabel("preference queries")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return os.fspath(out)


def cmd_plot(args: argparse.Namespace) -> int:
    """``nlhf-zoo plot``: plot ``args.metric`` for the runs of ``args.env`` under
    ``args.log_folder``; ``0``."""
    root = Path(args.log_folder)
    prefix = env_folder_name(args.env)
    if args.out is not None:  # the default path (in the log folder) is this command's own output
        _check_new_file("--out", args.out)
    runs = []
    agent_dirs = [root / a for a in args.agents] if args.agents else sorted(root.glob("*"))
    for adir in agent_dirs:
        for run in sorted(adir.glob(f"{prefix}_*")):
            if (run / "metrics.csv").exists():
                runs.append((f"{adir.name}/{run.name}", run / "metrics.csv"))
    if not runs:
        raise UserError(f"no runs with metrics.csv for {args.env} under {root}")
    metric = args.metric
    if metric is None:  # per env kind: exact game metric on matrix games, Nash metric on text
        metric = "eval/exploitability" if args.env in _text_ids() else "game/exploitability"
    having = []
    for label, path in runs:
        with open(path) as f:
            header = f.readline().strip().split(",")
        if metric in header:
            having.append((label, path))
        else:
            print(f"skipping {label}: no {metric} in its metrics.csv", file=sys.stderr)
    if not having:
        raise UserError(f"no run under {root} logged {metric} for {args.env}")
    out = args.out or root / f"{prefix}_{metric.replace('/', '_')}.png"
    if Path(out).is_dir():
        raise UserError(f"{out}: is a folder; pass --out with the path of a new file")
    print(plot_runs(having, out, metric, title=f"{metric} on {args.env}"))
    return 0
