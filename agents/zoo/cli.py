"""The ``nlhf-zoo`` command-line tool (rl-baselines3-zoo style).

Subcommands:

* ``list``: registered environment ids, game families, agents and zoo configs;
* ``train --agent A --env ID [--params k:v ...] [--seed] [--device] [--log-folder] [--tensorboard-log]``:
  trains from ``zoo_configs/<agent>.yml`` into ``<log-folder>/<agent>/<EnvName>_<n>/`` (resolved
  ``config.yml``, ``args.yml``, ``checkpoints/``, ``final.npz``, ``metrics.csv``, TensorBoard events);
  ``train --resume RUN_DIR`` continues a run to its budget, bit for bit;
* ``eval``: a saved agent against ``pi_ref`` (or another saved agent): win rate with a 95% interval,
  exact exploitability on matrix games;
* ``tournament``: round robin among participants (saved agents, train runs, ``pi_ref``, ``uniform``,
  ``zoo:AGENT`` trained on the spot), optionally on Ray (``--ray [--address]``);
* ``plot``: a metric against preference queries for the runs of a log folder;
* ``convergence``: the convergence study of the tabular agents (``benchmarks/convergence.py`` of
  the source tree; this command is a thin wrapper that runs it);
* ``demo``: the README's main job: solve the built-in games, train the main agents on a default
  game, run a tournament, print the tables and write the plots.

A user's mistake (unknown agent or id, a config typo, a missing file: any
:class:`nlhf_envs.errors.NlhfError`) prints one line ``nlhf-zoo: error: ...`` on stderr and exits
with status 2 (``--debug`` shows the traceback); nothing is written before the arguments are
validated. Any other exception is a bug and keeps its traceback. Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from agents.arena.match import MAX_DUELS
from nlhf_envs.atomic import atomic_open, atomic_write_text
from nlhf_envs.errors import ConfigError, EnvironmentSetupError, NlhfError

__all__ = [
    "main",
    "build_parser",
    "UserError",
    "TrainingInterrupted",
    "train_run",
    "check_device",
    "check_query_budget",
]

DEMO_ENV = "nlhf/UniformGame-v0"
DEMO_AGENTS = ("nash_mp", "online_ipo", "nash_md", "mmd", "sppo")
#: the largest seed: seeds are recorded as 64-bit integers and torch's generators take at most 2**63 - 1
MAX_SEED = 2**63 - 1


class UserError(NlhfError, ValueError):
    """A mistake in the command line: reported as one line, without a traceback."""


# ---------------------------------------------------------------------------------- helpers
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


#: torch CPU threads of ``train``, ``eval`` and ``tournament`` unless ``--threads`` (or
#: ``OMP_NUM_THREADS``) says otherwise: the zoo's networks are tiny, and extra threads only add
#: synchronisation (a 5-agent token tournament on 2 cores: see ``--threads``).
DEFAULT_TORCH_THREADS = 1

THREADS_HELP = (
    "torch CPU threads (default: 1, or $OMP_NUM_THREADS when set); the zoo's networks are tiny, "
    "so more threads rarely help and oversubscribe shared machines"
)


def _add_trust_pickle_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load SB3 .zip models with SB3's own loader, which unpickles them and so runs any "
        "code they hold (only for files you trust; default: rebuilt from plain data, no code runs)",
    )


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def torch_threads(threads: int | None) -> int:
    """The torch CPU thread count a command runs with: ``threads`` (``>= 1``) when given, else
    ``$OMP_NUM_THREADS`` when it is set to a positive integer, else :data:`DEFAULT_TORCH_THREADS`.

    Raises:
        UserError: for ``threads < 1``.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserError(f"--threads must be an integer >= 1; got {threads!r}")
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) >= 1 else DEFAULT_TORCH_THREADS


def _threads_note() -> str:
    """`` on N torch thread(s)`` when the command used torch, else ``""``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return ""
    k = torch.get_num_threads()
    return f" on {k} torch thread{'s' if k != 1 else ''}"


def _set_torch_threads(n: int) -> None:
    """Run torch on ``n`` CPU threads: now if torch is imported, else when it is (torch reads
    ``OMP_NUM_THREADS`` at import; numpy-only commands never pay for importing torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


def _progress(total: int | None, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


# ---------------------------------------------------------------------------------- train
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run at an iteration boundary; its ``final.npz`` is resumable."""

    def __init__(self, run_dir: Path, agent: Any) -> None:
        super().__init__(
            f"interrupted after iteration {agent.num_iterations} ({agent.queries_used} queries); "
            f"{run_dir / 'final.npz'} resumes exactly: nlhf-zoo train --resume {run_dir}"
        )
        self.run_dir = run_dir
        self.agent = agent


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


def _build_agent(agent_name: str, env_id: str, entry: Any, seed: int) -> Any:
    """The agent of a zoo entry, without TensorBoard (attached once the run folder exists).

    The game or environment is built first, so that a bad ``env_kwargs`` value is reported as the
    user's mistake (one line) rather than as a failure inside the agent.
    """
    import agents
    from agents.registry import resolve_target, user_env_kwargs

    kwargs = entry.env_kwargs or None
    with user_env_kwargs(env_id, kwargs):
        _, target = resolve_target(env_id, kwargs)
    return agents.make(agent_name, target, seed=seed, **_config_kwargs(entry.config))


def _attach_logger(agent: Any, tb: str | os.PathLike[str]) -> None:
    from agents.logger import make_logger

    agent.logger = make_logger(tb, agent.name or type(agent).__name__)


def _read_run_yaml(path: Path) -> dict[str, Any]:
    """A run folder's ``config.yml``/``args.yml`` as a mapping (one-line error naming the file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise UserError(f"{path}: unreadable: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise UserError(f"{path}: not valid YAML: {detail}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping; got {type(data).__name__}")
    return data


def _check_run_field(path: Path, data: dict[str, Any], key: str, ok: bool, expected: str) -> None:
    if not ok:
        raise UserError(f"{path}: field {key!r} must be {expected}; got {data.get(key)!r}")


def _resume_state(run_dir: Path, agent_name: str | None, env_id: str | None) -> dict[str, Any]:
    """The recorded ``args.yml``/``config.yml`` of a run folder, validated and checked against
    the command (one-line error naming the file and the field for a damaged or edited one)."""
    import agents

    run_dir = Path(run_dir)
    cfg_path, args_path = run_dir / "config.yml", run_dir / "args.yml"
    if not cfg_path.is_file() or not args_path.is_file():
        raise UserError(f"--resume {run_dir}: not a train run folder (no config.yml / args.yml)")
    config, recorded = _read_run_yaml(cfg_path), _read_run_yaml(args_path)

    def count(value: Any, minimum: int) -> bool:
        return value is None or (
            isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        )

    known = agents.available()
    checks = [
        (cfg_path, config, "agent", config.get("agent") in known, f"one of {', '.join(known)}"),
        (cfg_path, config, "env_id", isinstance(config.get("env_id"), str), "an environment id"),
        (cfg_path, config, "num_queries", count(config.get("num_queries"), 0), "an integer >= 0"),
        (
            cfg_path,
            config,
            "num_iterations",
            count(config.get("num_iterations"), 0),
            "an integer >= 0",
        ),
        (
            cfg_path,
            config,
            "env_kwargs",
            isinstance(config.get("env_kwargs") or {}, dict),
            "a mapping",
        ),
        (cfg_path, config, "config", isinstance(config.get("config") or {}, dict), "a mapping"),
        (args_path, recorded, "seed", count(recorded.get("seed"), 0), "an integer >= 0"),
        (args_path, recorded, "save_freq", count(recorded.get("save_freq"), 1), "an integer >= 1"),
        (args_path, recorded, "eval_freq", count(recorded.get("eval_freq"), 1), "an integer >= 1"),
    ]
    for path, data, key, ok, expected in checks:
        _check_run_field(path, data, key, ok, expected)
    if config.get("num_queries") is None and config.get("num_iterations") is None:
        raise UserError(f"{cfg_path}: no training budget (num_queries and num_iterations)")
    for key, given in (("agent", agent_name), ("env", env_id)):
        have = config["agent"] if key == "agent" else config["env_id"]
        if given is not None and given != have:
            raise UserError(f"--resume {run_dir}: the run trained --{key} {have}, not {given}")
    return {"config": config, "args": recorded}


def _same_value(a: Any, b: Any) -> bool:
    """Equality of recorded values: numbers within a relative 1e-9, containers item by item."""
    import math

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if number(a) and number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or (a != a and b != b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


class Evaluations:
    """The evaluations of a train run (rl-baselines3-zoo's ``evaluations.npz`` and best model).

    ``evaluations.npz`` holds ``queries``, ``iterations``, ``exploitability`` and ``kl_to_nash``
    (one entry per evaluated iteration, rewritten atomically each time; a resumed run appends).
    Recording is idempotent: an iteration already in the file is not appended again, so a run
    resumed from a checkpoint older than its last evaluation (after a kill) records each
    evaluation once. ``best_model.npz`` is the least exploitable state evaluated (written before
    its row, so a row on file always has its best model saved); ``evaluation.yml`` the final
    evaluation's metrics.

    Raises:
        UserError: naming ``evaluations.npz`` when the file on disk is damaged or not this format.
    """

    FIELDS = ("queries", "iterations", "exploitability", "kl_to_nash")

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.rows: dict[str, list[float]] = {k: [] for k in self.FIELDS}
        path = run_dir / "evaluations.npz"
        if path.is_file():
            self.rows = self._read(path)
        done = self.rows["exploitability"]
        self.best = min(done) if done else float("inf")

    @classmethod
    def _read(cls, path: Path) -> dict[str, list[float]]:
        import numpy as np

        from nlhf_envs.archives import READ_ERRORS, open_zip

        hint = "move it away to restart the evaluation record"
        try:
            open_zip(path, what="evaluations file").close()  # bounded before numpy reads it
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in cls.FIELDS if k in data.files}
        except READ_ERRORS as exc:  # a CheckpointError from open_zip is a ValueError
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(f"{path}: damaged evaluations file ({detail}); {hint}") from None
        lengths = set()
        for key in cls.FIELDS:
            arr = arrays.get(key)
            if arr is None or arr.ndim != 1 or arr.dtype.kind not in "fiu":
                raise UserError(f"{path}: field {key!r} must be a 1-D numeric array; {hint}")
            lengths.add(arr.shape[0])
        if len(lengths) != 1:
            raise UserError(f"{path}: its fields have different lengths {sorted(lengths)}; {hint}")
        return {k: [float(v) for v in arrays[k]] for k in cls.FIELDS}

    @staticmethod
    def metrics(agent: Any) -> dict[str, float]:
        """The agent's evaluation: exploitability and ``KL(pi* || pi)`` (exact on matrix and tiny
        token games, estimated on the full-size token duel), plus what ``evaluate()`` reports."""
        m = dict(agent.evaluate())
        if agent.kind == "text" and "eval/exploitability" not in m:
            m.update(agent.nash_metrics())
        return m

    def recorded(self, agent: Any) -> bool:
        """Whether the agent's current iteration already has a row."""
        return float(agent.num_iterations) in self.rows["iterations"]

    def record(self, agent: Any, m: dict[str, float] | None = None) -> dict[str, float]:
        """Evaluate ``agent`` now; append a row (unless this iteration has one) and keep the best
        model. Returns the metrics (empty when the iteration was recorded before)."""
        import numpy as np

        if self.recorded(agent):
            return {} if m is None else m  # evaluated before an interrupt: same state, same row
        m = self.metrics(agent) if m is None else m
        expl = m.get("game/exploitability", m.get("eval/exploitability", float("nan")))
        kl = m.get("game/kl_to_nash", m.get("eval/kl_to_nash", float("nan")))
        if expl < self.best:
            self.best = float(expl)
            agent.save(self.run_dir / "best_model.npz")
        for key, value in zip(
            self.FIELDS, (agent.queries_used, agent.num_iterations, expl, kl), strict=True
        ):
            self.rows[key].append(float(value))
        with atomic_open(self.run_dir / "evaluations.npz", "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in self.rows.items()})
        return m

    def final(self, agent: Any, record: bool) -> dict[str, float]:
        """The final evaluation of a run (``evaluation.yml``; a row of ``evaluations.npz`` when the
        run evaluates periodically and this state has no row yet)."""
        m = self.metrics(agent)
        if record:
            self.record(agent, m)
        out = {"queries": int(agent.queries_used), "iterations": int(agent.num_iterations)}
        out.update({k: float(v) for k, v in m.items()})
        atomic_write_text(self.run_dir / "evaluation.yml", yaml.safe_dump(out, sort_keys=False))
        return m


def _notify(message: str) -> None:
    """What ``train`` says on stderr about a choice it made (a fallback, a new budget)."""
    print(f"nlhf-zoo: {message}", file=sys.stderr)


def check_query_budget(agent: Any, budget: int | None, notify: Callable[[str], None]) -> None:
    """Say what a query budget buys before a run starts (``learn`` never exceeds it).

    A budget that is not a whole number of iterations is announced through ``notify`` (the
    iterations and queries it buys); ``0`` trains nothing (an untrained run, on purpose).

    Raises:
        UserError: for a positive budget below one iteration (it would train nothing).
    """
    from agents.api import plan_budget

    if not budget:
        return
    plan = plan_budget(agent, budget)
    if plan.iterations == 0:
        raise UserError(
            f"a budget of {budget:,} queries is below one iteration of {agent.name} "
            f"({plan.per_iteration:,} queries); give --num-queries {plan.per_iteration} or more"
        )
    if plan.unused:
        notify(
            f"{agent.name} uses {plan.per_iteration:,} queries per iteration: a budget of "
            f"{budget:,} buys {plan.iterations:,} iteration{'s' if plan.iterations > 1 else ''} "
            f"({plan.queries:,} queries; "
            f"{plan.unused:,} left unused)"
        )


def _note_resumed_budget(agent: Any, budget: int | None, notify: Callable[[str], None]) -> None:
    """On resume: say when the run's remaining queries are below one iteration (nothing trains)."""
    from agents.api import plan_budget

    left = 0 if budget is None else budget - agent.queries_used
    if left > 0 and plan_budget(agent, left).iterations == 0:
        notify(
            f"the run's remaining {left:,} queries are below one iteration of {agent.name} "
            f"({plan_budget(agent, left).per_iteration:,} queries): nothing more is trained"
        )


def train_run(
    agent_name: str | None,
    env_id: str | None,
    *,
    params: dict[str, Any] | None = None,
    seed: int | None = None,
    device: str | None = None,
    log_folder: str | os.PathLike[str] | None = None,
    tensorboard_log: str | os.PathLike[str] | None = None,
    num_queries: int | None = None,
    save_freq: int | None = None,
    config_dir: str | None = None,
    progress: bool = True,
    args_record: dict[str, Any] | None = None,
    resume: str | os.PathLike[str] | None = None,
    eval_freq: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    notify: Callable[[str], None] = _notify,
) -> tuple[Any, Path]:
    """Train ``agent_name`` on ``env_id`` from the zoo config; returns ``(agent, run_dir)``.

    Everything is validated and the agent is built before anything is written; only then is the
    run folder ``<log_folder>/<agent>/<EnvName>_<n>/`` reserved (an exclusive ``mkdir``: concurrent
    runs never share one). It receives ``config.yml`` (the resolved entry), ``args.yml`` (the
    arguments, ``seed``, ``save_freq`` and ``eval_freq`` included),
    ``checkpoints/<agent>_<queries>_queries.npz`` every ``save_freq`` iterations, ``metrics.csv``
    (appended as rows are logged), ``final.npz`` at the end and TensorBoard events (``tb/``, unless
    ``tensorboard_log`` points elsewhere). With ``eval_freq`` the agent is evaluated every
    ``eval_freq`` iterations (exploitability: exact on matrix and tiny token games, estimated on the
    full-size token duel) into ``evaluations.npz`` and the least exploitable state is kept as
    ``best_model.npz``, as rl-baselines3-zoo does; every run ends with a final evaluation
    (``evaluation.yml``, and a last row of ``evaluations.npz`` when ``eval_freq`` is set).

    While it writes, the run holds its folder (:class:`agents.zoo.runs.RunLock`): a second
    ``train`` of the same folder is refused. Ctrl-C, and SIGTERM alike, stops at the next iteration
    boundary (a second one stops at once, without ``final.npz``): ``final.npz`` then holds a state
    the uninterrupted run passes through, and ``resume=run_dir`` continues it to the configured
    budget bit for bit (:class:`TrainingInterrupted` is raised after saving). An interrupt while
    the folder is being set up also leaves ``final.npz`` (the untrained agent); a folder killed
    before any state was saved resumes from scratch with its recorded config.

    Resuming never changes the run silently: ``num_queries`` becomes the run's new total budget
    (recorded in ``config.yml`` and announced through ``notify``); ``save_freq``/``eval_freq``
    default to the recorded ones (a given value is recorded and announced); ``seed``, ``params``,
    ``env_kwargs``, ``device`` and ``tensorboard_log`` must match the recorded run, and
    ``log_folder``/``config_dir`` do not apply: otherwise :class:`UserError`. The saved state must
    be this run's (agent, game, config and seed of ``config.yml``/``args.yml``); a damaged newest
    state falls back to the newest older valid one (announced); a periodic checkpoint takes its
    history from ``metrics.csv`` only if those rows are the ones it was saved with.

    Args:
        agent_name: a registered agent.
        env_id: an environment id (or game family).
        params: ``--params`` overrides of the zoo entry.
        seed: the agent's seed (``>= 0``; default 0).
        device: torch device of neural agents (checked to be available here).
        log_folder: root of the run folders (default ``logs``).
        tensorboard_log: TensorBoard folder (default ``<run>/tb``).
        num_queries: override of the entry's query budget (``>= 0``); with ``resume``, the run's
            new total budget.
        save_freq: checkpoint every ``save_freq >= 1`` iterations (``None``: no checkpoints, or
            the recorded value on resume).
        eval_freq: evaluate every ``eval_freq >= 1`` iterations (``None``: only at the end, or the
            recorded value on resume).
        env_kwargs: keyword arguments of the environment (merged over the zoo entry's).
        config_dir: folder of the zoo YAML files (must exist).
        progress: show a progress bar on stderr.
        args_record: what ``args.yml`` records (default: the arguments above).
        resume: a run folder to continue from its most advanced valid state (``final.npz`` or a
            checkpoint) to the budget in its ``config.yml``; ``agent_name``/``env_id`` may be
            ``None`` then (taken from the run).
        notify: receives the one-line notices of a resume (default: printed on stderr).

    Raises:
        ConfigError, EnvironmentSetupError, GameValidationError, UserError: before anything is
            written, for a bad argument, config, environment or device.
        agents.zoo.runs.RunFolderError: when another process holds the run folder, or (resume) it
            holds a symbolic link out of it or a damaged file.
    """
    from agents.zoo.runs import TerminateAsInterrupt

    with TerminateAsInterrupt():  # SIGTERM takes the path of Ctrl-C
        return _train_run(
            agent_name, env_id, params=params, seed=seed, device=device, log_folder=log_folder,
            tensorboard_log=tensorboard_log, num_queries=num_queries, save_freq=save_freq,
            config_dir=config_dir, progress=progress, args_record=args_record, resume=resume,
            eval_freq=eval_freq, env_kwargs=env_kwargs, notify=notify,
        )  # fmt: skip


def _train_run(
    agent_name: str | None,
    env_id: str | None,
    *,
    params: dict[str, Any] | None,
    seed: int | None,
    device: str | None,
    log_folder: str | os.PathLike[str] | None,
    tensorboard_log: str | os.PathLike[str] | None,
    num_queries: int | None,
    save_freq: int | None,
    config_dir: str | None,
    progress: bool,
    args_record: dict[str, Any] | None,
    resume: str | os.PathLike[str] | None,
    eval_freq: int | None,
    env_kwargs: dict[str, Any] | None,
    notify: Callable[[str], None],
) -> tuple[Any, Path]:
    from agents.api import DeferredInterrupt
    from agents.base import LearningInterrupted
    from agents.zoo import configs as zoo
    from agents.zoo.runs import MetricsCSV, RunLock, make_run_dir

    _check_count("--save-freq", save_freq, 1)
    _check_count("--eval-freq", eval_freq, 1)
    _check_count("--seed", seed, 0)
    _check_count("--num-queries", num_queries, 0)
    if resume is not None:
        run_dir = Path(resume)
        lock, agent, budget_q, budget_i, save_freq, eval_freq, tb = _resume(
            run_dir, agent_name, env_id,
            given={"seed": seed, "params": params, "env_kwargs": env_kwargs, "device": device,
                   "tensorboard_log": tensorboard_log, "log_folder": log_folder,
                   "conf_dir": config_dir, "num_queries": num_queries, "save_freq": save_freq,
                   "eval_freq": eval_freq},
            notify=notify,
        )  # fmt: skip
        with DeferredInterrupt() as setup:  # as for a new run: an interrupt saves final.npz
            try:
                metrics = MetricsCSV(run_dir / "metrics.csv", agent.history)
                _attach_logger(agent, tb)
            except BaseException:
                lock.release()
                raise
        setup_interrupted = setup.requested
        _note_resumed_budget(agent, budget_q, notify)
    else:
        if agent_name is None or env_id is None:
            raise UserError("train needs --agent and --env (or --resume RUN_DIR)")
        seed = 0 if seed is None else seed
        _check_count("--seed", seed, 0, MAX_SEED)
        _check_folder("--log-folder", log_folder)
        _check_folder("--tensorboard-log", tensorboard_log)
        if config_dir is not None and not Path(config_dir).is_dir():
            raise ConfigError(f"--conf-dir {config_dir}: no such folder")
        params = dict(params or {})
        if env_kwargs:
            params["env_kwargs"] = {**dict(params.get("env_kwargs") or {}), **env_kwargs}
        if device is not None:
            import agents

            kind = "text" if env_id in _text_ids() else "matrix"
            fields = {f.name for f in dataclasses.fields(agents.config_class(agent_name, kind))}
            if "device" in fields:
                check_device(device)
                params.setdefault("device", device)
            elif device != "cpu":
                raise UserError(
                    f"{agent_name} on {env_id} is a numpy agent: it runs on the CPU only"
                )
        entry = zoo.resolve(agent_name, env_id, config_dir=config_dir, params=params)
        budget_q = num_queries if num_queries is not None else entry.num_queries
        budget_i = entry.num_iterations
        if budget_q is None and budget_i is None:
            raise UserError(
                f"no training budget for {agent_name} on {env_id}: set num_queries in "
                f"zoo_configs/{agent_name}.yml or pass --num-queries"
            )
        agent = _build_agent(agent_name, env_id, entry, seed)
        check_query_budget(agent, budget_q, notify)
        record = dict(
            args_record or {"agent": agent_name, "env": env_id, "params": params, "device": device}
        )
        record.update(
            seed=seed,
            save_freq=save_freq,
            eval_freq=eval_freq,
            tensorboard_log=None if tensorboard_log is None else os.fspath(tensorboard_log),
        )
        root = Path("logs" if log_folder is None else log_folder)
        # everything is valid: now (and only now) the run folder is created. An interrupt is
        # deferred until the folder holds its config and an untrained final.npz can be saved.
        with DeferredInterrupt() as setup:
            run_dir = make_run_dir(root / agent_name, env_folder_name(env_id))
            lock = RunLock(run_dir).acquire()
            try:
                recorded = {**entry.to_dict(), "num_queries": budget_q}
                atomic_write_text(run_dir / "config.yml", yaml.safe_dump(recorded, sort_keys=False))
                atomic_write_text(run_dir / "args.yml", yaml.safe_dump(record, sort_keys=False))
                metrics = MetricsCSV(run_dir / "metrics.csv")
                tb = tensorboard_log if tensorboard_log is not None else run_dir / "tb"
                _attach_logger(agent, tb)
            except BaseException:
                lock.release()
                raise
        setup_interrupted = setup.requested
    try:
        return _train_loop(
            agent, run_dir, metrics, budget_q, budget_i, save_freq, eval_freq, progress,
            setup_interrupted, DeferredInterrupt, LearningInterrupted,
        )  # fmt: skip
    finally:
        lock.release()


def _train_loop(
    agent: Any,
    run_dir: Path,
    metrics: Any,
    budget_q: int | None,
    budget_i: int | None,
    save_freq: int | None,
    eval_freq: int | None,
    progress: bool,
    setup_interrupted: bool,
    deferred: Any,
    interrupted_error: type[BaseException],
) -> tuple[Any, Path]:
    """Learn to the budget with periodic checkpoints and evaluations; save ``final.npz``."""
    from agents.checkpoint import write_npz_atomic
    from agents.zoo.runs import HistoryDigest

    ckpt_dir = run_dir / "checkpoints"
    left_q = None if budget_q is None else max(0, budget_q - agent.queries_used)
    left_i = None if budget_i is None else max(0, budget_i - agent.num_iterations)
    last = [agent.queries_used if budget_q is not None else agent.num_iterations]
    evaluator = Evaluations(run_dir)
    digest = HistoryDigest()

    def callback(a: Any) -> bool:
        done = a.queries_used if budget_q is not None else a.num_iterations
        bar.update(done - last[0])
        last[0] = done
        metrics.update(a.history)
        if save_freq and a.num_iterations % save_freq == 0:
            import numpy as np

            ckpt_dir.mkdir(exist_ok=True)
            arrays = a.checkpoint_arrays(include_history=False)
            code = digest.of(a.history).encode("ascii")
            arrays[HISTORY_DIGEST_KEY] = np.frombuffer(code, dtype=np.uint8)
            write_npz_atomic(str(ckpt_dir / f"{a.name}_{a.queries_used}_queries.npz"), arrays)
        if eval_freq and a.num_iterations % eval_freq == 0:
            evaluator.record(a)
        return True

    interrupted = setup_interrupted
    if not interrupted:
        bar = _progress(left_q if left_q is not None else left_i, f"train {agent.name}", progress)
        try:
            agent.learn(num_queries=left_q, num_iterations=left_i, callback=callback)
        except interrupted_error:
            interrupted = True  # Ctrl-C, honoured at an iteration boundary: a consistent state
        finally:
            bar.close()
    with deferred() as late:  # the final files are written whole even if Ctrl-C comes now
        agent.save(run_dir / "final.npz")
        metrics.update(agent.history)
        if not interrupted:
            evaluator.final(agent, record=bool(eval_freq))
    if interrupted or late.requested:
        raise TrainingInterrupted(run_dir, agent)
    return agent, run_dir


#: the member of a run's periodic checkpoint holding :class:`agents.zoo.runs.HistoryDigest` of
#: the ``metrics.csv`` rows it relies on (checked on resume).
HISTORY_DIGEST_KEY = "run/history_sha256"


def _resume(
    run_dir: Path,
    agent_name: str | None,
    env_id: str | None,
    *,
    given: dict[str, Any],
    notify: Callable[[str], None],
) -> tuple[Any, Any, int | None, int | None, int | None, int | None, Any]:
    """Lock ``run_dir``, check the command against it and load its state.

    Returns ``(lock, agent, budget_q, budget_i, save_freq, eval_freq, tensorboard_log)``; the lock
    is held (released here if anything fails).
    """
    from agents.zoo.runs import RunLock, check_no_outside_links

    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such folder")
    _resume_state(run_dir, agent_name, env_id)  # a train run folder, before anything is written
    check_no_outside_links(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        rec = _resume_state(run_dir, agent_name, env_id)  # read again under the lock
        config, recorded = rec["config"], rec["args"]
        save_freq, eval_freq, tb, changes = _resume_arguments(run_dir, config, recorded, given)
        agent = _resumed_agent(run_dir, config, recorded, notify)
        for name, data, message in changes:  # recorded only once the resume is sure to start
            atomic_write_text(run_dir / name, yaml.safe_dump(data, sort_keys=False))
            notify(message)
    except BaseException:
        lock.release()
        raise
    return (lock, agent, config.get("num_queries"), config.get("num_iterations"), save_freq,
            eval_freq, tb)  # fmt: skip


def _resume_arguments(
    run_dir: Path,
    config: dict[str, Any],
    recorded: dict[str, Any],
    given: dict[str, Any],
) -> tuple[int | None, int | None, Any, list[tuple[str, dict[str, Any], str]]]:
    """Apply or refuse the options given with ``--resume`` (see :func:`train_run`).

    Returns ``(save_freq, eval_freq, tensorboard_log, changes)`` of the resumed run: a new budget
    is applied to ``config``, new frequencies to ``recorded``; ``changes`` lists the files to
    rewrite (``config.yml``, ``args.yml``) with their new content and the notice to give.
    """
    where = f"--resume {run_dir}"
    for option, key in (("--log-folder", "log_folder"), ("--conf-dir", "conf_dir")):
        if given[key] is not None:
            raise UserError(
                f"{where}: {option} does not apply to a resumed run (it stays in its folder with "
                "its resolved config.yml); leave it out"
            )
    seed = given["seed"]
    have_seed = recorded.get("seed", 0)
    if seed is not None and seed != have_seed:
        raise UserError(
            f"{where}: the run was trained with --seed {have_seed}; --seed {seed} cannot change "
            "it (start a new run instead)"
        )
    overrides = dict(given["params"] or {})
    if given["env_kwargs"]:
        overrides["env_kwargs"] = {
            **dict(overrides.get("env_kwargs") or {}),
            **given["env_kwargs"],
        }
    agent_config = config.get("config") or {}
    if given["device"] is not None:
        if "device" in agent_config:
            overrides.setdefault("device", given["device"])
        elif given["device"] != "cpu":
            raise UserError(f"{where}: {config['agent']} is a numpy agent: it runs on the CPU only")
    for key, value in overrides.items():
        if key == "env_kwargs" and isinstance(value, dict):
            have_kwargs = config.get("env_kwargs") or {}
            pairs = [
                (f"env_kwargs.{k}", v, have_kwargs.get(k, "<unset>")) for k, v in value.items()
            ]
        elif key in ("num_queries", "num_iterations", "env_kwargs"):
            pairs = [(key, value, config.get(key))]
        else:
            pairs = [(key, value, agent_config.get(key, "<unset>"))]
        for name, want, have in pairs:
            if not _same_value(want, have):
                raise UserError(
                    f"{where}: --params {name}:{want} differs from the run's {name}: {have} (in "
                    f"config.yml); a resumed run keeps its config: start a new run to change it"
                )
    have_tb = recorded.get("tensorboard_log")
    tb_given = given["tensorboard_log"]
    same_tb = (
        tb_given is None or Path(tb_given).resolve() == Path(have_tb or run_dir / "tb").resolve()
    )
    if not same_tb:
        raise UserError(
            f"{where}: the run logs TensorBoard events to {have_tb or run_dir / 'tb'}; "
            f"--tensorboard-log {tb_given} cannot change it"
        )
    tb = have_tb if have_tb is not None else run_dir / "tb"
    changes: list[tuple[str, dict[str, Any], str]] = []
    new_budget = given["num_queries"]
    if new_budget is not None and new_budget != config.get("num_queries"):
        message = (
            f"{where}: -n/--num-queries {new_budget} is the run's new total budget (was "
            f"{config.get('num_queries')}); recorded in {run_dir / 'config.yml'}"
        )
        config["num_queries"] = new_budget
        changes.append(("config.yml", config, message))
    freqs = {}
    for key, option in (("save_freq", "--save-freq"), ("eval_freq", "--eval-freq")):
        have, want = recorded.get(key), given[key]
        freqs[key] = have if want is None else want
        if want is not None and want != have:
            recorded[key] = want
            message = f"{where}: {option} is now {want} (was {have}); recorded in args.yml"
            changes.append(("args.yml", recorded, message))
    return freqs["save_freq"], freqs["eval_freq"], tb, changes


def _entry_of_run(run_dir: Path, config: dict[str, Any]) -> Any:
    """The :class:`ZooEntry` a run's ``config.yml`` records (validated like a zoo file)."""
    from agents.config import build_config
    from agents.registry import config_class, resolve_target
    from agents.zoo.configs import ZooEntry

    env_id = config["env_id"]
    kind = resolve_target(env_id, None, build_text=False)[0] if "/" in env_id else "matrix"
    source = str(run_dir / "config.yml")
    cls = config_class(config["agent"], kind)
    return ZooEntry(
        agent=config["agent"],
        env_id=env_id,
        kind=kind,
        config=build_config(cls, dict(config.get("config") or {}), source=source),
        num_queries=config.get("num_queries"),
        num_iterations=config.get("num_iterations"),
        env_kwargs=dict(config.get("env_kwargs") or {}),
        sources=[source],
    )


def _check_identity(
    path: Path, meta: dict[str, Any], agent: Any, run_dir: Path, config: dict[str, Any], seed: int
) -> None:
    """Refuse a saved state that is not this run's (agent, config, seed, game or env)."""
    import numpy as np

    cfg = run_dir / "config.yml"
    if meta["name"] != config["agent"]:
        raise UserError(f"{path} holds a {meta['name']} agent, but {cfg} trains {config['agent']}")
    env_id, kwargs = config["env_id"], dict(config.get("env_kwargs") or {})
    if agent.kind == "text":
        from nlhf_envs.registration import TEXT_ENV_IDS

        env = meta.get("env") or {}
        world = kwargs.get("world", dict(TEXT_ENV_IDS.get(env_id) or {}).get("world", "default"))
        expected = {"id": env_id, "world": getattr(world, "name", world)}
        for key in ("max_new_tokens", "beta", "judge_version", "prompt_split"):
            if key in kwargs:
                expected[key] = kwargs[key]
        for key, want in expected.items():
            if not _same_value(env.get(key), want):
                raise UserError(
                    f"{path} was trained on {env.get('id')} with {key}={env.get(key)!r}, but {cfg} "
                    f"configures {env_id} with {key}={want!r}; refusing to resume another "
                    "environment's state"
                )
        _check_seed_and_config(path, meta, cfg, config, seed)
        return
    from agents.registry import resolve_target, user_env_kwargs

    with user_env_kwargs(env_id, kwargs):
        game = resolve_target(env_id, kwargs or None)[1]
    mine = agent.game
    same = (
        mine.shape == game.shape
        and np.isclose(mine.beta, game.beta, rtol=1e-9, atol=0.0)
        and all(
            np.allclose(a, b, rtol=1e-9, atol=1e-12)
            for a, b in ((mine.P, game.P), (mine.pi_ref, game.pi_ref), (mine.rho, game.rho))
        )
    )
    if not same:
        raise UserError(
            f"{path} was trained on {mine.describe()}, but {cfg} configures {env_id}: "
            f"{game.describe()}; refusing to resume another game's state"
        )
    _check_seed_and_config(path, meta, cfg, config, seed)


def _check_seed_and_config(
    path: Path, meta: dict[str, Any], cfg: Path, config: dict[str, Any], seed: int
) -> None:
    if meta["seed"] != seed:
        raise UserError(f"{path} was trained with seed {meta['seed']}, but the run's is {seed}")
    stored = dict(meta.get("config") or {})
    for key, have in (config.get("config") or {}).items():
        if key in stored and not _same_value(stored[key], have):
            raise UserError(
                f"{path} was trained with {key}={stored[key]!r}, but {cfg} has {key}={have!r}"
            )


def _resumed_agent(
    run_dir: Path, config: dict[str, Any], recorded: dict[str, Any], notify: Callable[[str], None]
) -> Any:
    """The most advanced valid state of ``run_dir`` (see :func:`train_run`).

    A state whose file is damaged (:class:`CheckpointError`) is skipped with a notice, down to the
    newest older valid one; none saved yet: a fresh agent from the recorded config.
    """
    import agents
    from agents.checkpoint import CheckpointError, read_meta
    from agents.zoo.runs import HistoryDigest, history_from_csv, saved_states

    seed = int(recorded.get("seed", 0) or 0)
    states, unreadable = saved_states(run_dir)
    for _, why in unreadable:
        notify(f"skipping a damaged saved state: {why}")
    env = _hf_env_of(config) if states else None  # a Hugging Face game is rebuilt, not stored
    for number, path in enumerate(states):
        try:
            agent = agents.load(path, game=env)
            meta = read_meta(path)
            stored = _stored_digest(path) if meta.get("history_keys", []) is None else None
        except CheckpointError as exc:
            notify(f"skipping a damaged saved state: {exc}")
            continue
        _check_identity(path, meta, agent, run_dir, config, seed)
        if meta.get("history_keys", []) is None:  # a periodic checkpoint: rows are in metrics.csv
            rows = meta.get("history_len", 0)
            csv_path = run_dir / "metrics.csv"
            agent.history = history_from_csv(csv_path, rows)
            if stored is not None and HistoryDigest().of(agent.history) != stored:
                raise UserError(
                    f"{csv_path}: its first {rows} rows are not those {path.name} was saved with "
                    "(edited or duplicated rows); restore the file or resume from final.npz"
                )
        if number or unreadable:
            notify(f"resuming from {path} (iteration {agent.num_iterations})")
        return agent
    if states or unreadable:
        raise UserError(f"--resume {run_dir}: every saved state is damaged; nothing to resume")
    notify(
        f"--resume {run_dir}: no saved state yet (stopped during start-up); training from scratch "
        "with its config.yml"
    )
    entry = _entry_of_run(run_dir, config)
    return _build_agent(entry.agent, entry.env_id, entry, seed)


def _hf_env_of(config: dict[str, Any]) -> Any:
    """The ``nlhf/HFTokenDuel-v0`` env of a run's ``config.yml`` (``None`` for other envs)."""
    from nlhf_envs.registration import HF_ENV_IDS

    env_id, kwargs = config["env_id"], dict(config.get("env_kwargs") or {})
    if env_id not in HF_ENV_IDS:
        return None
    from agents.registry import resolve_target, user_env_kwargs

    with user_env_kwargs(env_id, kwargs):
        return resolve_target(env_id, kwargs)[1]


def _cmd_export(args: argparse.Namespace) -> int:
    """``nlhf-zoo export RUN OUT``: a Hugging Face run's policy as a plain model folder (a LoRA
    adapter merged into its base; full fine-tuning: the model) with its tokenizer."""
    import agents
    from agents.text.backend import export_merged

    run_dir = Path(args.run)
    final = run_dir / "final.npz"
    state = _resume_state(run_dir, None, None)
    env = _hf_env_of(state["config"])
    if env is None:
        raise UserError(
            f"export {run_dir}: only runs on nlhf/HFTokenDuel-v0 hold a Hugging Face model "
            f"(this run trained on {state['config']['env_id']})"
        )
    if not final.is_file():
        raise UserError(f"export {run_dir}: no final.npz yet (finish the run with train --resume)")
    out = Path(args.out)
    if out.exists():
        raise UserError(
            f"export: {out} already exists; choose a new folder (nothing is overwritten)"
        )
    _check_folder("export: the parent of OUT", out.parent)
    folder = export_merged(agents.load(final, game=env), out)
    print(f"wrote {folder}/ (AutoModelForCausalLM.from_pretrained loads it)")
    return 0


def _stored_digest(path: Path) -> str | None:
    """The history digest a periodic checkpoint records (``None`` for files from before it)."""
    import numpy as np

    from agents.checkpoint import CheckpointError

    try:
        with np.load(path, allow_pickle=False) as data:
            if HISTORY_DIGEST_KEY not in data.files:
                return None
            arr = data[HISTORY_DIGEST_KEY]
    except (OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a readable agent checkpoint: {exc}") from None
    if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size != 64:
        raise CheckpointError(f"{str(path)!r}: field {HISTORY_DIGEST_KEY!r}: not a SHA-256 digest")
    try:
        return arr.tobytes().decode("ascii")
    except UnicodeDecodeError:
        raise CheckpointError(
            f"{str(path)!r}: field {HISTORY_DIGEST_KEY!r}: not a SHA-256 digest"
        ) from None


def _text_ids() -> list[str]:
    from nlhf_envs.registration import HF_ENV_IDS, TEXT_ENV_IDS

    return [*TEXT_ENV_IDS, *HF_ENV_IDS]


def _config_kwargs(config: Any) -> dict[str, Any]:
    from agents.config import config_to_dict

    return config_to_dict(config)


def _cmd_tune(args: argparse.Namespace) -> int:
    from agents.zoo.tune import cmd_tune

    return cmd_tune(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from agents.zoo import configs as zoo

    params = zoo.parse_params(args.params)
    record = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "debug")}
    if record.get("log_folder") is None:
        record["log_folder"] = "logs"
    agent, run_dir = train_run(
        args.agent,
        args.env,
        params=params,
        seed=args.seed,
        device=args.device,
        log_folder=args.log_folder,
        tensorboard_log=args.tensorboard_log,
        num_queries=args.num_queries,
        save_freq=args.save_freq,
        config_dir=args.conf_dir,
        progress=not args.no_progress,
        args_record=record,
        resume=args.resume,
        eval_freq=args.eval_freq,
        env_kwargs=zoo.parse_params(args.env_kwargs),
    )
    last = agent.history[-1] if agent.history else {}
    verb = "resumed" if args.resume else "trained"
    print(f"{verb} {agent.name} ({agent.queries_used} queries) -> {run_dir}")
    final = yaml.safe_load((run_dir / "evaluation.yml").read_text()) or {}
    for key in ("game/exploitability", "eval/exploitability", "game/kl_to_nash", "eval/kl_to_nash"):
        if key in final:
            print(f"  final evaluation: {key} = {final[key]:.6g}")
    entropy = final.get("policy/entropy", last.get("policy/entropy"))
    if entropy is not None:
        print(f"  policy/entropy = {entropy:.6g}")
    return 0


# ---------------------------------------------------------------------------------- eval / tournament
def _recorded_env(path: Path) -> tuple[str, dict[str, Any]] | None:
    """``(env_id, env_kwargs)`` from the ``config.yml`` of the train run holding ``path``."""
    for folder in (path.parent, path.parent.parent):  # run/final.npz, run/checkpoints/x.npz
        cfg = folder / "config.yml"
        if cfg.is_file():
            try:
                data = yaml.safe_load(cfg.read_text())
            except yaml.YAMLError:
                return None
            if isinstance(data, dict) and isinstance(data.get("env_id"), str):
                return data["env_id"], dict(data.get("env_kwargs") or {})
    return None


def _resolve_participant(
    spec: str, env_id: str | None, args: argparse.Namespace
) -> tuple[str, Any, tuple[str, dict[str, Any]] | None]:
    """``name=spec`` or ``spec`` -> ``(name, object, recorded env)`` for the tournament runner."""
    name, sep, value = spec.partition("=")
    if not sep:
        name, value = "", spec
    if value in ("pi_ref", "uniform"):
        return name or value, value, None
    if value.startswith("zoo:"):
        agent_name = value[4:]
        train_env = env_id or "nlhf/RPS-v0"
        agent, run_dir = train_run(
            agent_name,
            train_env,
            seed=args.seed,
            log_folder=args.log_folder,
            num_queries=getattr(args, "train_queries", None),
            progress=not args.no_progress,
        )
        return name or agent_name, agent, _recorded_env(run_dir / "final.npz")
    vector = _probability_vector(value)
    if vector is not None:
        return name or "policy", vector, None
    path = Path(value)
    from agents.zoo.hf_participants import load_hf_participant

    hf_model = load_hf_participant(path, spec)  # a Hugging Face model or PEFT adapter folder
    if hf_model is not None:
        return name or path.name, hf_model, None
    if path.is_dir() and (path / "final.npz").exists():
        path = path / "final.npz"
    if not path.exists():
        raise UserError(
            f"participant {spec!r}: expected pi_ref, uniform, zoo:AGENT, a probability vector "
            "(0.2,0.3,0.5), a checkpoint file, an SB3 model (.zip) or a train run folder"
        )
    if path.suffix == ".zip":
        trust = bool(getattr(args, "trust_pickle", False))
        return name or path.stem, _load_sb3_model(path, spec, trust), None
    import agents

    loaded = agents.load(path)
    return name or getattr(loaded, "name", "") or path.stem, loaded, _recorded_env(path)


def _probability_vector(value: str) -> Any:
    """``"0.2,0.3,0.5"`` (or with brackets) -> a float array; ``None`` when ``value`` is not one.

    Raises:
        UserError: for numbers that are not a probability vector (not finite, negative, or not
            summing to 1 within ``1e-6``).
    """
    import numpy as np

    text = value.strip().strip("[]()")
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 2:
        return None
    try:
        vector = np.array([float(p) for p in parts])
    except ValueError:
        return None
    bad = np.flatnonzero(~np.isfinite(vector) | (vector < 0))
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"probability vector {value!r}: entry {i} is {parts[i]}; probabilities must be finite "
            "and >= 0"
        )
    total = float(vector.sum())
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"probability vector {value!r}: sums to {total:.6g}, not 1")
    return vector


def _load_sb3_model(path: Path, spec: str, trust_pickle: bool = False) -> Any:
    """A Stable-Baselines3 PPO, A2C or DQN model saved with ``model.save(path)``, rebuilt without
    unpickling unless ``--trust-pickle`` (:func:`agents.sb3.files.load_sb3_model`)."""
    try:
        from agents.sb3.files import load_sb3_model
    except ImportError:
        raise UserError(
            f"participant {spec!r}: loading an SB3 model needs stable-baselines3"
        ) from None
    return load_sb3_model(path, trust_pickle=trust_pickle)


def _match_env(
    parts: list[tuple[str, Any]],
    recorded: list[tuple[str, dict[str, Any]] | None],
    env_arg: str | None,
    env_kwargs: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The environment a set of participants plays (see ``tournament --help``).

    Participants trained on different games are refused. Without ``--env`` the game they were
    trained on is played: the env id and arguments their run recorded, or ``nlhf/MatrixGame-v0``
    with their game. With ``--env`` that env is played (with the recorded arguments when the id is
    the recorded one and no ``--env-kwargs`` are given); :func:`agents.arena.run` then refuses
    it unless it is the participants' game.
    """
    from nlhf_envs.game import PreferenceGame

    games = [(n, o.game) for n, o in parts if isinstance(getattr(o, "game", None), PreferenceGame)]
    for name, game in games[1:]:
        if game.fingerprint() != games[0][1].fingerprint():
            raise EnvironmentSetupError(
                f"participants were trained on different games: {games[0][0]!r} on "
                f"{games[0][1].describe()}, {name!r} on {game.describe()}"
            )
    envs = {(r[0], yaml.safe_dump(r[1], sort_keys=True)): r for r in recorded if r is not None}
    only = next(iter(envs.values())) if len(envs) == 1 else None
    if env_arg is not None:
        if not env_kwargs and only is not None and only[0] == env_arg:
            return env_arg, dict(only[1])
        return env_arg, env_kwargs
    if only is not None and not env_kwargs:
        return only[0], dict(only[1])
    if games:
        if env_kwargs:
            raise UserError("--env-kwargs needs --env")
        return "nlhf/MatrixGame-v0", {"game": games[0][1]}
    if any(getattr(o, "kind", None) == "text" for _, o in parts):
        return "nlhf/TokenDuel-v0", env_kwargs
    return "nlhf/RPS-v0", env_kwargs


def _cmd_tournament(args: argparse.Namespace) -> int:
    from agents import arena
    from agents.zoo import configs as zoo
    from agents.zoo.runs import make_run_dir

    env_kwargs = zoo.parse_params(args.env_kwargs)
    _check_count("--n-duels", args.n_duels, 1, MAX_DUELS)
    _check_count("--seed", args.seed, 0, MAX_SEED)
    _check_folder("--output-dir", args.output_dir)
    _check_folder("--log-folder", args.log_folder)
    resolved = [_resolve_participant(s, args.env, args) for s in args.participants]
    parts = arena.unique_names([(n, o) for n, o, _ in resolved])
    env_id, env_kwargs = _match_env(parts, [r for _, _, r in resolved], args.env, env_kwargs)
    arena.validate(parts, env_id, env_kwargs=env_kwargs, num_duels=args.n_duels)
    # everything is valid: now (and only now) the output folder is created
    out = (
        Path(args.output_dir)
        if args.output_dir
        else make_run_dir(Path(args.log_folder) / "tournaments", env_folder_name(env_id))
    )
    n = len(parts)
    bar = _progress(n * (n - 1) // 2, "tournament", not args.no_progress)
    played = []
    start = time.perf_counter()

    def on_match(r: Any) -> None:
        played.append(r)
        bar.update(1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", arena.IntransitivityWarning)
        warnings.simplefilter("always", arena.MatchLogWarning)
        result = arena.run(
            parts,
            env_id,
            env_kwargs=env_kwargs,
            num_duels=args.n_duels,
            seed=args.seed,
            out_dir=out,
            resume=not args.no_resume,
            use_ray=args.ray,
            ray_address=args.address,
            on_match=on_match,
        )
    bar.close()
    print(f"tournament on {env_id}:\n")
    print(result.to_markdown())
    for w in caught:
        if issubclass(w.category, (arena.IntransitivityWarning, arena.MatchLogWarning)):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"\nwritten to {out}/ (tournament.md, win_rates.csv, tournament.json, heatmap.png)")
    total = n * (n - 1) // 2
    print(
        f"{len(played)} of {total} matches played, {total - len(played)} reused from "
        f"{out / 'matches.jsonl'}; {time.perf_counter() - start:.1f} s{_threads_note()}"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from agents import arena

    _check_count("--n-duels", args.n_duels, 1, MAX_DUELS)
    _check_count("--seed", args.seed, 0, MAX_SEED)
    start = time.perf_counter()
    me = _resolve_participant(f"agent={args.agent_path}", args.env, args)
    if getattr(me[1], "kind", "") == "text":
        _print_text_eval(me[1], args)
        if args.opponent == "pi_ref":
            print(f"evaluated in {time.perf_counter() - start:.1f} s{_threads_note()}")
            return 0
    opp = _resolve_participant(f"opponent={args.opponent}", args.env, args)
    parts = [(me[0], me[1]), (opp[0], opp[1])]
    from agents.zoo.configs import parse_params

    env_kwargs = parse_params(getattr(args, "env_kwargs", None))
    env_id, env_kwargs = _match_env(parts, [me[2], opp[2]], args.env, env_kwargs)
    result = arena.run(parts, env_id, env_kwargs=env_kwargs, num_duels=args.n_duels, seed=args.seed)
    lo, hi = result.ci_low[0, 1], result.ci_high[0, 1]
    print(
        f"win rate of {args.agent_path} vs {args.opponent} on {env_id}: "
        f"{result.win_rate[0, 1]:.4f} (95% CI [{lo:.4f}, {hi:.4f}], {args.n_duels} duels)"
    )
    match = result.matches[0] if result.matches else None
    if match is not None and match.mean_true_prob == match.mean_true_prob:  # the token duel
        # a match reports from its first seat's view (the participant whose name sorts first)
        judge, truth = match.mean_prob, match.mean_true_prob
        if match.i != 0:
            judge, truth = 1.0 - judge, 1.0 - truth
        print(
            f"mean P(agent's answer preferred): {judge:.4f} under the judge, "
            f"{truth:.4f} under the ground truth"
        )
    if result.exploitability[0] is not None:
        print(f"exact exploitability Expl_beta = {result.exploitability[0]:.6g}")
    print(f"evaluated in {time.perf_counter() - start:.1f} s{_threads_note()}")
    return 0


def _print_text_eval(agent: Any, args: argparse.Namespace) -> None:
    """Win rates against pi_ref (judge and ground truth) and the Nash metrics of a token agent.

    ``--n-duels`` answer pairs are evaluated on prompts drawn with replacement from the world's
    held-out split (:meth:`agents.text.common.TextAgent.evaluate`); the line names that split and
    how many distinct prompts it holds. Each win rate is the mean of the pairs' preference
    probabilities ``P(y > y_ref | x)``, values in ``[0, 1]`` whose variance is at most
    ``p (1 - p)``, so the 95% Wilson interval of a binomial proportion
    (:func:`agents.arena.stats.wilson_interval`) covers it (conservatively).
    """
    from agents.arena.stats import wilson_interval

    split = "heldout"
    n = int(args.n_duels)
    m = agent.evaluate(num_prompts=n, split=split)
    env_id = getattr(agent.env, "env_id", None) or "nlhf/TokenDuel-v0"
    exact = agent.enumerable() and agent.config.nash_eval in ("auto", "exact")
    world = getattr(agent, "world", None)
    prompts = len(world.prompts.indices(split)) if world is not None else None
    where = f"the {prompts} prompts of the {split} split" if prompts else f"the {split} split"

    def rate(key: str) -> str:
        p = float(m[key])
        lo, hi = wilson_interval(p * n, n)
        return f"{p:.4f} (95% CI [{lo:.4f}, {hi:.4f}])"

    print(
        f"{args.agent_path} vs pi_ref on {env_id}: {n} answer pairs on prompts drawn from "
        f"{where}: win rate {rate('eval/win_rate_ref_judge')} under the judge, "
        f"{rate('eval/win_rate_ref_true')} under the ground truth; "
        f"KL(pi || pi_ref) = {m['eval/kl_ref']:.4f}"
    )
    if "eval/exploitability" in m:
        how = "exact" if exact else "estimated"
        ci = (
            f" (95% CI [{m['eval/exploitability_low']:.4f}, {m['eval/exploitability_high']:.4f}])"
            if "eval/exploitability_low" in m
            else ""
        )
        print(
            f"{how} Nash metrics (beta = {agent.beta:g}): exploitability "
            f"{m['eval/exploitability']:.6g}{ci}, KL(pi* || pi) = {m['eval/kl_to_nash']:.6g}"
        )


# ---------------------------------------------------------------------------------- plot
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


def _cmd_plot(args: argparse.Namespace) -> int:
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


# ---------------------------------------------------------------------------------- list / demo
def _cmd_list(args: argparse.Namespace) -> int:
    import nlhf_envs
    from agents.zoo import configs as zoo

    print("Environment ids (pettingzoo.make('parallel' | 'aec', ID)):")
    for env_id in nlhf_envs.registered_ids():
        print(f"  {env_id}")
    print("Game families (nlhf_envs.make_game):")
    print("  " + ", ".join(nlhf_envs.FAMILIES))
    import agents

    print("Agents (agents.make):")
    for kind in ("matrix", "text"):
        names = agents.available(kind)
        if names:
            print(f"  {kind}: " + ", ".join(names))
    folder = Path(args.conf_dir) if args.conf_dir else zoo.default_config_dir()
    print(f"Zoo configs ({folder}):")
    for path in sorted(folder.glob("*.yml")):
        entries = [k for k in zoo.load_yaml(path) if k != "default"]
        print(f"  {path.stem}: default, " + ", ".join(entries))
    return 0


def _train_table(
    names: Sequence[str], mode: str, budget: int, out: Path, seed: int, progress: bool
) -> tuple[list[tuple[str, Any]], list[tuple[str, Path]], str]:
    """Train each agent on the demo game in ``mode`` with the same query budget."""
    rows = [
        "| agent | queries | exploitability | KL(pi* \\|\\| pi) | entropy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    trained, runs = [], []
    for name in names:
        agent, run_dir = train_run(
            name,
            DEMO_ENV,
            params={"mode": mode},
            seed=seed,
            log_folder=out / "logs" / mode,
            num_queries=budget,
            progress=progress,
        )
        trained.append((name, agent))
        runs.append((name, run_dir / "metrics.csv"))
        m = agent.evaluate()  # the final state (the history is logged on a log-spaced cadence)
        rows.append(
            f"| {name} | {agent.queries_used:,} | {m['game/exploitability']:.2e} | "
            f"{m['game/kl_to_nash']:.2e} | {m['policy/entropy']:.3f} |"
        )
    return trained, runs, "\n".join(rows)


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from agents import arena
    from nlhf_envs.catalog import format_table, solve_table

    t0 = time.perf_counter()
    out = Path(args.output_dir)
    progress = not args.no_progress
    # every argument is checked before the first minute of training
    _check_count("--exact-queries", args.exact_queries, 1)
    _check_count("--num-queries", args.num_queries, 1)
    _check_count("--n-duels", args.n_duels, 1, MAX_DUELS)
    _check_count("--seed", args.seed, 0, MAX_SEED)
    _check_folder("--output-dir", out)
    print("1. Built-in preference games, solved exactly (beta = 0.1, pi_ref uniform):\n")
    print(format_table(solve_table()))

    print(
        f"\n2. Exact win-rate oracle: {', '.join(DEMO_AGENTS)} on {DEMO_ENV} (K = 10, beta = 0.1), "
        f"{args.exact_queries} preference queries each, theory step sizes. Nash-MP's last iterate "
        "converges linearly, KL <= (1 + 2 beta)^(-N/2) KL_0:\n"
    )
    _, exact_runs, table = _train_table(
        DEMO_AGENTS, "exact", args.exact_queries, out, args.seed, progress
    )
    print(table)
    beta = 0.1
    kl0 = read_metrics_csv(exact_runs[0][1])["game/kl_to_nash"][0]
    plot_exact = plot_runs(
        exact_runs,
        out / "kl_exact.png",
        "game/kl_to_nash",
        title=f"KL(pi* || pi) vs queries on {DEMO_ENV} (exact oracle)",
        bound=lambda q: kl0 * (1 + 2 * beta) ** (-(q - 2) / 2),
    )

    print(
        f"\n3. Sampled preferences only (Bernoulli outcomes, batches of 256): "
        f"{args.num_queries:,} queries each. Constant-step methods stop at a noise floor; "
        "Nash-MD's decreasing step keeps averaging the noise:\n"
    )
    trained, runs, table = _train_table(
        DEMO_AGENTS, "sampled", args.num_queries, out, args.seed, progress
    )
    print(table)
    plot_sampled = plot_runs(
        runs,
        out / "exploitability_sampled.png",
        "game/exploitability",
        title=f"exploitability vs queries on {DEMO_ENV} (sampled)",
    )
    game = trained[0][1].game
    print(
        f"\n4. Round-robin tournament of the sampled-mode agents, pi_ref, uniform and the best "
        f"response to pi_ref ({args.n_duels} duels per pair):\n"
    )
    parts = [*trained, ("pi_ref", "pi_ref"), ("uniform", "uniform"), ("br_to_ref", _br(game))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", arena.IntransitivityWarning)
        result = arena.run(
            parts,
            DEMO_ENV,
            env_kwargs={"game": game},
            num_duels=args.n_duels,
            seed=args.seed,
            out_dir=out / "tournament",
            resume=False,
        )
    print(result.to_markdown())
    best = result.names[int(np.argmax(result.nash_score))]
    print(
        f"\nTop Nash-averaged participant: {best}. Plots: {plot_exact}, {plot_sampled}, "
        f"{out / 'tournament' / 'heatmap.png'}. Runs (metrics.csv, checkpoints, TensorBoard): "
        f"{out / 'logs'}. Total time {time.perf_counter() - t0:.0f} s."
    )
    return 0


def _br(game: Any) -> Any:
    """The (regularised) best response to pi_ref: strong against pi_ref, exploitable itself."""
    from nlhf_envs.solvers import best_response

    return best_response(game, game.pi_ref)


def _cmd_convergence(args: argparse.Namespace) -> int:
    import runpy

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "convergence.py"
    if not script.is_file():
        raise EnvironmentSetupError(
            "the convergence study is a benchmark of the source tree (benchmarks/convergence.py); "
            "run it from a checkout of nlhf-zoo"
        )
    study = runpy.run_path(str(script), run_name="nlhf_zoo_convergence")
    return int(study["main"](args.study_args))


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nlhf-zoo`` (one subparser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog="nlhf-zoo",
        description="Nash learning from human feedback: games, agents, tournaments.",
    )
    from nlhf_envs import __version__

    parser.add_argument("--version", action="version", version=f"nlhf-zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, fn: Callable[[argparse.Namespace], int]):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        p.add_argument(
            "--debug", action="store_true", help="show the traceback of nlhf-zoo's own errors too"
        )
        return p

    p = add("list", "list environment ids, game families, agents and zoo configs", _cmd_list)
    p.add_argument("--conf-dir", default=None, help="folder of the zoo YAML files")

    p = add("train", "train an agent from its zoo config", _cmd_train)
    p.epilog = (
        "With --resume RUN_DIR the run continues from its most advanced valid state (a damaged "
        "newest checkpoint falls back to an older one, said on stderr) and nothing changes it "
        "silently: -n is applied as the run's new total query budget (recorded in config.yml and "
        "said on stderr); --save-freq and --eval-freq default to the recorded values (a new value "
        "is recorded and said); --seed, --params, --env-kwargs, --device and --tensorboard-log "
        "must equal the recorded run's or are refused; --log-folder and --conf-dir are refused. "
        "One train at a time holds a run folder (a second is refused). Ctrl-C or SIGTERM stops at "
        "the next iteration boundary with a resumable final.npz."
    )
    p.add_argument("--agent", default=None, help="agent name (see `nlhf-zoo list`); required")
    p.add_argument("--env", default=None, help="environment id, e.g. nlhf/RPS-v0; required")
    p.add_argument(
        "--resume",
        "--trained-agent",
        dest="resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a train run folder from its latest valid checkpoint or final.npz to its "
        "budget (see below for the options it accepts)",
    )
    p.add_argument(
        "--params",
        nargs="*",
        default=[],
        metavar="KEY:VALUE",
        help="config overrides (with --resume: refused unless equal to the run's)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed (default 0; with --resume: must be the run's)"
    )
    p.add_argument("--device", default=None, help="torch device for neural agents (cpu, cuda)")
    p.add_argument("--log-folder", default=None, help="root of the run folders (default: logs)")
    p.add_argument("--tensorboard-log", default=None, help="TensorBoard folder (default: <run>/tb)")
    p.add_argument(
        "-n",
        "--num-queries",
        type=int,
        default=None,
        help="override the query budget (with --resume: the run's new total budget)",
    )
    p.add_argument(
        "--save-freq",
        type=int,
        default=None,
        help="checkpoint every N >= 1 iterations (default: off; with --resume: the recorded one)",
    )
    p.add_argument(
        "--eval-freq",
        type=int,
        default=None,
        help="evaluate every N >= 1 iterations into evaluations.npz and keep best_model.npz "
        "(with --resume: default the recorded one)",
    )
    p.add_argument(
        "--env-kwargs",
        nargs="*",
        default=[],
        metavar="KEY:VALUE",
        help="environment keyword arguments (merged over the zoo entry's env_kwargs)",
    )
    p.add_argument(
        "--conf-dir",
        default=None,
        help="folder of the zoo YAML files (must exist; not with --resume)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads_option(p)

    p = add("tune", "tune an agent's settings with Optuna (TPE sampler, median pruner)", _cmd_tune)
    from agents.zoo.tune import add_arguments as _tune_arguments

    _tune_arguments(p)

    p = add("eval", "evaluate a saved agent against pi_ref or another agent", _cmd_eval)
    p.add_argument("agent_path", help="checkpoint file or train run folder")
    p.add_argument(
        "--opponent", default="pi_ref", help="pi_ref, uniform or a checkpoint/run folder"
    )
    p.add_argument("--env", default=None, help="environment id (default: the agent's own game)")
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    p.add_argument("--n-duels", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--no-progress", action="store_true")
    _add_threads_option(p)
    _add_trust_pickle_option(p)

    p = add("tournament", "round-robin tournament among participants", _cmd_tournament)
    p.add_argument(
        "participants",
        nargs="+",
        metavar="[NAME=]SPEC",
        help="pi_ref, uniform, zoo:AGENT (trained now), a probability vector (0.2,0.3,0.5), a "
        "checkpoint file, a train run folder or an SB3 model (.zip; PPO, A2C or DQN)",
    )
    p.add_argument(
        "--env",
        default=None,
        help="environment id (default: the game the participants were trained on, else nlhf/RPS-v0)",
    )
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    p.add_argument("--n-duels", type=int, default=500, help="duels per pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-queries", type=int, default=None, help="budget of zoo:AGENT entries")
    p.add_argument("--output-dir", default=None, help="default: <log-folder>/tournaments/<Env>_<n>")
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--no-resume", action="store_true", help="replay matches already in output-dir")
    p.add_argument("--ray", action="store_true", help="distribute matches over a Ray cluster")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local cluster)")
    p.add_argument("--no-progress", action="store_true")
    _add_threads_option(p)
    _add_trust_pickle_option(p)

    p = add(
        "export",
        "write a Hugging Face run's policy as a plain model folder (LoRA merged into its base)",
        _cmd_export,
    )
    p.add_argument("run", help="a train run folder on nlhf/HFTokenDuel-v0")
    p.add_argument("out", help="a new folder for the model and its tokenizer")

    p = add(
        "plot", "plot a metric against preference queries for the runs of a log folder", _cmd_plot
    )
    p.add_argument("--env", required=True)
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--agents", nargs="*", default=None)
    p.add_argument(
        "--metric",
        default=None,
        help="default: game/exploitability (matrix games), eval/exploitability (token duel)",
    )
    p.add_argument(
        "--out", default=None, help="PNG path (default: <log-folder>/<Env>_<metric>.png)"
    )

    p = add(
        "convergence",
        "the convergence study: queries to reach pi*_beta per agent (`convergence --help`)",
        _cmd_convergence,
    )
    p.add_argument("study_args", nargs=argparse.REMAINDER, help="options of the study")

    p = add("demo", "the main job: solve games, train the main agents, run a tournament", _cmd_demo)
    p.add_argument("--exact-queries", type=int, default=300, help="budget per agent, exact oracle")
    p.add_argument("--num-queries", type=int, default=1_000_000, help="budget per agent, sampled")
    p.add_argument("--n-duels", type=int, default=2000, help="duels per pair in the tournament")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="demo_output")
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nlhf-zoo`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convergence"]:  # the study parses its own options (and --help)
        args = argparse.Namespace(func=_cmd_convergence, study_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    saved = _ThreadState() if hasattr(args, "threads") else None
    try:
        if saved is not None:
            _set_torch_threads(torch_threads(args.threads))
        return int(args.func(args) or 0)
    except NlhfError as exc:  # a user's mistake, named by the library: one line
        if getattr(args, "debug", False):
            raise
        print(f"nlhf-zoo: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(f"nlhf-zoo: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("nlhf-zoo: interrupted", file=sys.stderr)
        return 130
    finally:
        if saved is not None:
            saved.restore()


class _ThreadState:
    """The caller's ``OMP_NUM_THREADS`` and torch thread count, restored after an in-process
    command (tests and notebooks call :func:`main`)."""

    def __init__(self) -> None:
        self.env = os.environ.get("OMP_NUM_THREADS")
        torch = sys.modules.get("torch")
        self.torch = torch.get_num_threads() if torch is not None else None

    def restore(self) -> None:
        if self.env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = self.env
        torch = sys.modules.get("torch")
        if torch is not None and self.torch is not None:
            torch.set_num_threads(self.torch)


if __name__ == "__main__":
    sys.exit(main())
