"""``nlhf-zoo train``: a training run with its folder, its resume and its evaluation files.

:func:`train_run` trains an agent from its zoo config into ``<log-folder>/<agent>/<EnvName>_<n>/``
(resolved ``config.yml``, ``args.yml``, ``checkpoints/``, ``final.npz``, ``metrics.csv``,
TensorBoard events) or, with ``resume``, continues such a folder to its budget, bit for bit;
:class:`Evaluations` keeps ``evaluations.npz``, ``best_model.npz`` and ``evaluation.yml``.
:func:`cmd_train` is the command on parsed arguments (:mod:`agents.zoo.cli` parses them).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agents.zoo.common import (
    MAX_SEED,
    UserError,
    _check_count,
    _check_folder,
    _text_ids,
    check_device,
    env_folder_name,
)
from nlhf_envs.atomic import atomic_open, atomic_write_text
from nlhf_envs.errors import ConfigError
from nlhf_envs.progress import Progress


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run at an iteration boundary, or during its final evaluation
    (``evaluating``); its ``final.npz`` is resumable."""

    def __init__(self, run_dir: Path, agent: Any, evaluating: bool = False) -> None:
        if evaluating:
            message = (
                f"interrupted during the final evaluation, after training to iteration "
                f"{agent.num_iterations} ({agent.queries_used} queries); {run_dir / 'final.npz'} "
                f"holds the trained state: nlhf-zoo train --resume {run_dir} evaluates it"
            )
        else:
            message = (
                f"interrupted after iteration {agent.num_iterations} ({agent.queries_used} "
                f"queries); {run_dir / 'final.npz'} resumes exactly: nlhf-zoo train --resume "
                f"{run_dir}"
            )
        super().__init__(message)
        self.run_dir = run_dir
        self.agent = agent
        self.evaluating = evaluating


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


def recorded_env(path: Path) -> tuple[str, dict[str, Any]] | None:
    """``(env_id, env_kwargs)`` that a run's ``config.yml`` at ``path`` records (``None`` when it
    names no env), for the participants of ``eval`` and ``tournament``.

    Raises:
        UserError: naming the file (and the field): not UTF-8, not YAML, not a mapping, or an
            ``env_kwargs`` that is not a mapping.
    """
    data = _read_run_yaml(path)
    if not isinstance(data.get("env_id"), str):
        return None
    _check_run_field(
        path, data, "env_kwargs", isinstance(data.get("env_kwargs") or {}, dict), "a mapping"
    )
    return data["env_id"], dict(data.get("env_kwargs") or {})


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

    def __init__(self, run_dir: Path, write: bool = True) -> None:
        self.run_dir = run_dir
        #: whether this process writes the files (``False``: a process of a multi-process run
        #: other than the first, which only takes part in the evaluations' collectives)
        self.write = write
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
    def metrics(
        agent: Any, progress: Progress = None, notify: Callable[[str], None] | None = None
    ) -> dict[str, float]:
        """The agent's evaluation: exploitability and ``KL(pi* || pi)`` (exact on matrix and tiny
        token games, estimated on the full-size token duel), plus what ``evaluate()`` reports.
        A token agent with ``nash_eval: off`` gets no Nash metrics (``evaluate()`` only)."""
        if agent.kind != "text":
            return dict(agent.evaluate())
        prompts = getattr(agent.env, "prompts", None)
        if isinstance(prompts, dict) and not prompts.get("heldout"):
            # a Hugging Face game trained on every prompt (heldout_fraction: 0): nothing unseen
            (notify or _notify)(
                "the env has no held-out prompts (heldout_fraction: 0), so the final evaluation "
                "(on held-out prompts) is skipped"
            )
            return {}
        m = dict(agent.evaluate(progress=progress))
        if "eval/exploitability" not in m and agent.config.nash_eval != "off":
            m.update(agent.nash_metrics(progress=progress))
        return m

    def _metrics(self, agent: Any, progress: Progress = None) -> dict[str, float]:
        """:meth:`metrics`, silent on a process that does not write."""
        return self.metrics(agent, progress, None if self.write else _silent)

    def recorded(self, agent: Any) -> bool:
        """Whether the agent's current iteration already has a row."""
        return float(agent.num_iterations) in self.rows["iterations"]

    def record(self, agent: Any, m: dict[str, float] | None = None) -> dict[str, float]:
        """Evaluate ``agent`` now; append a row (unless this iteration has one) and keep the best
        model. Returns the metrics (empty when the iteration was recorded before)."""
        import numpy as np

        if self.recorded(agent):
            return {} if m is None else m  # evaluated before an interrupt: same state, same row
        m = self._metrics(agent) if m is None else m
        expl = m.get("game/exploitability", m.get("eval/exploitability", float("nan")))
        kl = m.get("game/kl_to_nash", m.get("eval/kl_to_nash", float("nan")))
        if expl < self.best:
            self.best = float(expl)
            # off the first process: a no-op (DDP) or its part of gathering the shards (FSDP)
            agent.save(self.run_dir / "best_model.npz")
        for key, value in zip(
            self.FIELDS, (agent.queries_used, agent.num_iterations, expl, kl), strict=True
        ):
            self.rows[key].append(float(value))
        if not self.write:
            return m
        with atomic_open(self.run_dir / "evaluations.npz", "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in self.rows.items()})
        return m

    def final(self, agent: Any, record: bool, progress: Progress = None) -> dict[str, float]:
        """The final evaluation of a run (``evaluation.yml``; a row of ``evaluations.npz`` when the
        run evaluates periodically and this state has no row yet)."""
        m = self._metrics(agent, progress)
        if record:
            self.record(agent, m)
        if not self.write:
            return m
        out = {"queries": int(agent.queries_used), "iterations": int(agent.num_iterations)}
        out.update({k: float(v) for k, v in m.items()})
        atomic_write_text(self.run_dir / "evaluation.yml", yaml.safe_dump(out, sort_keys=False))
        return m


def _notify(message: str) -> None:
    """What ``train`` says on stderr about a choice it made (a fallback, a new budget)."""
    print(f"nlhf-zoo: {message}", file=sys.stderr)


def _silent(message: str) -> None:
    """The notices of a process that does not write (they are the first process's to give)."""


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
    progress: Progress = True,
    args_record: dict[str, Any] | None = None,
    resume: str | os.PathLike[str] | None = None,
    eval_freq: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    notify: Callable[[str], None] = _notify,
    timings: dict[str, float] | None = None,
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
    budget bit for bit (:class:`TrainingInterrupted` is raised after saving). The final
    evaluation runs after ``final.npz`` is saved and stops at once on Ctrl-C or SIGTERM
    (:class:`TrainingInterrupted` with ``evaluating=True``); ``resume=run_dir`` then evaluates the
    trained state. An interrupt while
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
        progress: ``True``: progress bars on stderr (training per judged batch, with queries/s,
            and the final evaluation); ``False``: none; a callable receives the
            :class:`~nlhf_envs.progress.ProgressEvent` objects instead (tasks ``"train"``,
            ``"evaluate"``, ``"nash estimate (...)"``).
        args_record: what ``args.yml`` records (default: the arguments above).
        resume: a run folder to continue from its most advanced valid state (``final.npz`` or a
            checkpoint) to the budget in its ``config.yml``; ``agent_name``/``env_id`` may be
            ``None`` then (taken from the run).
        notify: receives the one-line notices of a resume (default: printed on stderr).
        timings: a dict that receives the seconds of the training (``train_s``, evaluations every
            ``eval_freq`` iterations included) and of the final evaluation
            (``final_evaluation_s``), wall clock, and the same as this process's CPU time
            (``train_cpu_s``, ``final_evaluation_cpu_s``).

    Several processes (a ``torch.distributed`` process group, e.g. ``torchrun --nproc_per_node N
    -m nlhf_zoo_cli train ...``; :func:`agents.text.distributed.init_process_group_from_env`)
    train ONE run, as one process with ``shards: N`` would: the first process validates, reserves
    the folder (or resumes it) and writes every file; it then sends the others the run's plan
    (the folder, its recorded config, the state it resumes from), they build the same agent and
    take part in training (and, under FSDP, in saving and evaluating); their ``notify``,
    ``progress`` and files are silenced. An error on the first process before training stops the
    others (:class:`PeerStopped`); a process that fails later ends the run (``torchrun`` stops
    the others; collectives time out after
    :data:`~agents.text.distributed.PROCESS_GROUP_TIMEOUT`). Only the token agents of
    :data:`~agents.text.distributed.DATA_PARALLEL_AGENTS` on token games train this way.

    Raises:
        ConfigError, EnvironmentSetupError, GameValidationError, UserError: before anything is
            written, for a bad argument, config, environment or device.
        agents.zoo.runs.RunFolderError: when another process holds the run folder, or (resume) it
            holds a symbolic link out of it or a damaged file.
        PeerStopped: on a process other than the first, when the first stopped before training.
    """
    from agents.zoo.runs import TerminateAsInterrupt

    rank, world = _processes()
    with TerminateAsInterrupt():  # SIGTERM takes the path of Ctrl-C
        if world > 1 and rank > 0:
            return _follow_run()
        kwargs = dict(
            params=params, seed=seed, device=device, log_folder=log_folder,
            tensorboard_log=tensorboard_log, num_queries=num_queries, save_freq=save_freq,
            config_dir=config_dir, progress=progress, args_record=args_record, resume=resume,
            eval_freq=eval_freq, env_kwargs=env_kwargs, notify=notify, timings=timings,
        )  # fmt: skip
        if world == 1:
            return _train_run(agent_name, env_id, **kwargs)
        return _lead_run(agent_name, env_id, world, kwargs)


class PeerStopped(UserError):
    """The first process of a multi-process ``train`` stopped before training (its error is on
    its own output); the others stop too, without a message of their own (the command line
    exits with status 0 there, so that ``torchrun`` waits for the first process to say why and
    set the status, instead of stopping it)."""


def _processes() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialised ``torch.distributed`` process group, else
    ``(0, 1)`` (torch is not imported for that)."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_processes(agent_name: str | None, env_id: str | None, resume: Any, world: int) -> None:
    """Refuse, in one line, a run that several processes cannot share: an agent outside
    :data:`~agents.text.distributed.DATA_PARALLEL_AGENTS` or a game that is not a token game."""
    from agents.text.distributed import DATA_PARALLEL_AGENTS

    if resume is not None:
        try:
            config = _resume_state(Path(resume), agent_name, env_id)["config"]
        except UserError:
            return  # not a run folder: train_run says so
        agent_name, env_id = config["agent"], config["env_id"]
    if agent_name is None or env_id is None:
        return
    if agent_name not in DATA_PARALLEL_AGENTS or env_id not in _text_ids():
        raise UserError(
            f"{agent_name} on {env_id} does not train on {world} processes; those that do are "
            f"the token agents {', '.join(DATA_PARALLEL_AGENTS)} on a token game (run this one "
            "in a single process)"
        )


def _lead_run(
    agent_name: str | None, env_id: str | None, world: int, kwargs: dict[str, Any]
) -> tuple[Any, Path]:
    """The first process of a multi-process run: :func:`_train_run`, announcing its plan to the
    others (or that it stopped before training)."""
    from agents.text.distributed import broadcast_object

    announced = False

    def announce(plan: dict[str, Any]) -> None:
        nonlocal announced
        announced = True
        broadcast_object({"plan": plan})

    try:
        _check_processes(agent_name, env_id, kwargs["resume"], world)
        return _train_run(agent_name, env_id, announce=announce, **kwargs)
    except BaseException as exc:
        if not announced:
            broadcast_object({"stopped": type(exc).__name__})
            torch_barrier()  # both past every message before either leaves the group
        raise


def torch_barrier() -> None:
    """``torch.distributed.barrier()`` of the initialised process group."""
    import torch.distributed as dist

    dist.barrier()


class _NoMetrics:
    """The ``metrics.csv`` of a process that does not write."""

    def update(self, history: Any) -> None:
        """Nothing."""


def _follow_run() -> tuple[Any, Path]:
    """A process of a multi-process run other than the first: receive the run's plan, build the
    same agent (fresh, or from the state the first process resumes) and train with it, writing
    nothing."""
    import agents
    from agents.api import DeferredInterrupt
    from agents.base import LearningInterrupted
    from agents.text.distributed import broadcast_object

    message = broadcast_object(None)
    if "plan" not in message:
        torch_barrier()
        raise PeerStopped(f"the first process stopped before training ({message['stopped']})")
    plan = message["plan"]
    run_dir, config = Path(plan["run_dir"]), plan["config"]
    if plan["state"] is not None:
        agent = agents.load(plan["state"], game=_hf_env_of(config))
    else:
        entry = _entry_of_run(run_dir, config)
        agent = _build_agent(entry.agent, entry.env_id, entry, plan["seed"])
    return _train_loop(
        agent, run_dir, _NoMetrics(), plan["budget_q"], plan["budget_i"], plan["save_freq"],
        plan["eval_freq"], False, False, DeferredInterrupt, LearningInterrupted, None, main=False,
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
    progress: Progress,
    args_record: dict[str, Any] | None,
    resume: str | os.PathLike[str] | None,
    eval_freq: int | None,
    env_kwargs: dict[str, Any] | None,
    notify: Callable[[str], None],
    timings: dict[str, float] | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None,
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
        lock, agent, budget_q, budget_i, save_freq, eval_freq, tb, recorded, state = _resume(
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
                state = None
                atomic_write_text(run_dir / "config.yml", yaml.safe_dump(recorded, sort_keys=False))
                atomic_write_text(run_dir / "args.yml", yaml.safe_dump(record, sort_keys=False))
                _record_game(run_dir, agent)
                metrics = MetricsCSV(run_dir / "metrics.csv")
                tb = tensorboard_log if tensorboard_log is not None else run_dir / "tb"
                _attach_logger(agent, tb)
            except BaseException:
                lock.release()
                raise
        setup_interrupted = setup.requested
    try:
        if announce is not None:  # the other processes of a multi-process run build the same agent
            announce(
                {"run_dir": os.fspath(run_dir), "config": recorded, "seed": int(agent.seed),
                 "state": None if state is None else os.fspath(state), "budget_q": budget_q,
                 "budget_i": budget_i, "save_freq": save_freq, "eval_freq": eval_freq}
            )  # fmt: skip
        return _train_loop(
            agent, run_dir, metrics, budget_q, budget_i, save_freq, eval_freq, progress,
            setup_interrupted, DeferredInterrupt, LearningInterrupted, timings,
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
    progress: Progress,
    setup_interrupted: bool,
    deferred: Any,
    interrupted_error: type[BaseException],
    timings: dict[str, float] | None = None,
    main: bool = True,
) -> tuple[Any, Path]:
    """Learn to the budget with periodic checkpoints and evaluations; save ``final.npz``; then the
    final evaluation (interruptible: ``final.npz`` is already saved).

    ``main=False``: a process of a multi-process run other than the first. It writes nothing; it
    takes part in what needs every process: training, and under FSDP (``agent.dp.sharded``)
    saving and evaluating (gathering the sharded weights); under DDP the first process alone
    evaluates and saves."""
    import time

    from agents.checkpoint import write_npz_atomic
    from agents.zoo.runs import HistoryDigest
    from nlhf_envs.errors import JudgeError

    ckpt_dir = run_dir / "checkpoints"
    left_q = None if budget_q is None else max(0, budget_q - agent.queries_used)
    left_i = None if budget_i is None else max(0, budget_i - agent.num_iterations)
    sharded = bool(getattr(getattr(agent, "dp", None), "sharded", False))
    evaluates = main or sharded  # whether this process evaluates (and saves, under FSDP)
    evaluator = Evaluations(run_dir, write=main)
    digest = HistoryDigest()
    # a judge failing mid-iteration under FSDP stops every process (no state kept in memory)
    boundary = _Boundary.of(agent) if main and not sharded else None
    if evaluates and eval_freq and agent.num_iterations and agent.num_iterations % eval_freq == 0:
        # a resumed state whose evaluation is missing: killed (or the disk full) between the
        # periodic checkpoint and its evaluation row; the same state gives the same row
        evaluator.record(agent)
    clock = {"wall": time.perf_counter(), "cpu": time.process_time()}

    def lap(name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        if timings is not None:
            timings[f"{name}_s"] = wall - clock["wall"]
            timings[f"{name}_cpu_s"] = cpu - clock["cpu"]
        clock.update(wall=wall, cpu=cpu)

    def callback(a: Any) -> bool:
        metrics.update(a.history)
        if save_freq and a.num_iterations % save_freq == 0 and not main:
            if sharded:  # gathers the shards for the first process
                a.checkpoint_arrays(include_history=False)
        elif save_freq and a.num_iterations % save_freq == 0:
            import numpy as np

            ckpt_dir.mkdir(exist_ok=True)
            arrays = a.checkpoint_arrays(include_history=False)
            code = digest.of(a.history).encode("ascii")
            arrays[HISTORY_DIGEST_KEY] = np.frombuffer(code, dtype=np.uint8)
            write_npz_atomic(str(ckpt_dir / f"{a.name}_{a.queries_used}_queries.npz"), arrays)
        if evaluates and eval_freq and a.num_iterations % eval_freq == 0:
            evaluator.record(a)
        if boundary is not None:
            boundary.take(a)
        return True

    interrupted = setup_interrupted
    judge_error: JudgeError | None = None
    if not interrupted:
        try:
            agent.learn(
                num_queries=left_q, num_iterations=left_i, callback=callback, progress=progress
            )
        except interrupted_error:
            interrupted = True  # Ctrl-C, honoured at an iteration boundary: a consistent state
        except JudgeError as exc:  # stop as Ctrl-C does: the state of the last boundary is saved
            if boundary is None:
                raise
            judge_error, interrupted = exc, True
            if not boundary.kept:  # too large to keep: resume from the newest saved state
                metrics.update(agent.history[: boundary.rows])
                raise JudgeStopped(run_dir, agent, exc, saved=False) from None
            agent = boundary.restore(agent)
    with deferred() as late:  # the final files are written whole even if Ctrl-C comes now
        agent.save(run_dir / "final.npz")
        metrics.update(agent.history)
    if judge_error is not None:
        raise JudgeStopped(run_dir, agent, judge_error)
    if interrupted or late.requested:
        raise TrainingInterrupted(run_dir, agent)
    lap("train")
    try:  # not deferred: the trained state is saved, so Ctrl-C or SIGTERM stops the evaluation
        if evaluates:
            evaluator.final(agent, record=bool(eval_freq), progress=progress)
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir, agent, evaluating=True) from None
    lap("final_evaluation")
    return agent, run_dir


class JudgeStopped(UserError):
    """The judge returned a value that is not a probability during ``train``: the run stopped as
    on Ctrl-C, with ``final.npz`` holding the state after the last whole iteration (or, for a
    trainable state too large to keep in memory, with the newest state saved before)."""

    def __init__(self, run_dir: Path, agent: Any, error: BaseException, saved: bool = True) -> None:
        given = getattr(agent.env, "judge", None)  # the env's judge argument: a folder, say
        where = f" (env_kwargs judge: {given})" if isinstance(given, (str, os.PathLike)) else ""
        if saved:
            state = (
                f"the run stopped after iteration {agent.num_iterations} ({agent.queries_used} "
                f"queries), saved in {run_dir / 'final.npz'}"
            )
        else:
            from agents.zoo.runs import latest_state

            newest = latest_state(run_dir)
            state = (
                "the run stopped; its trainable state is larger than "
                f"{BOUNDARY_MAX_BYTES // 2**20} MiB and was not kept at every iteration, so "
                + (
                    f"its newest saved state is {newest}"
                    if newest is not None
                    else "no state was saved (--save-freq saves some)"
                )
            )
        super().__init__(
            f"{error}{where}; {state} (nlhf-zoo train --resume {run_dir} continues it)"
        )
        self.run_dir = run_dir
        self.agent = agent


#: the largest trainable state (weights, optimiser moments) :class:`_Boundary` keeps in memory at
#: every iteration of a run on a user's judge (a LoRA adapter, a small model); a larger one (full
#: fine-tuning of a real model) is not copied at every step: a failing judge then leaves the
#: newest periodic checkpoint (or ``final.npz`` of an earlier segment) as the state to resume.
BOUNDARY_MAX_BYTES = 256 * 2**20


class _Boundary:
    """The state of a run's agent after its last whole iteration, kept in memory so that a judge
    failing in the middle of an iteration (a NaN, say) stops the run at that boundary, as Ctrl-C
    does. Kept for agents whose judge is the user's (``nlhf/HFTokenDuel-v0``) when their
    trainable state is at most :data:`BOUNDARY_MAX_BYTES` (``kept``); it costs one copy of that
    state (policy or adapter weights, optimiser moments, generators) per iteration."""

    def __init__(self, kept: bool) -> None:
        self.kept = kept
        self.arrays: dict[str, Any] = {}
        self.rows = 0

    @classmethod
    def of(cls, agent: Any) -> _Boundary | None:
        """A boundary holding ``agent``'s current state, or ``None`` for agents whose judge is
        not the user's (the matrix games' preferences and the shipped judges are checked when
        they are built)."""
        backend = getattr(agent, "backend", None)
        if agent.kind != "text" or getattr(backend, "kind", "native") == "native":
            return None
        out = cls(kept=_trainable_bytes(agent) <= BOUNDARY_MAX_BYTES)
        out.take(agent)
        return out

    def take(self, agent: Any) -> None:
        """Keep a copy of ``agent``'s state (at an iteration boundary; only its number of
        history rows when the state is too large to keep)."""
        import numpy as np

        self.rows = len(agent.history)
        if not self.kept:
            return
        arrays = agent.checkpoint_arrays(include_history=False)
        self.arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}

    def restore(self, agent: Any) -> Any:
        """A new agent in the kept state, with the history rows it had then."""
        import json

        meta = json.loads(self.arrays["meta"].tobytes().decode("utf-8"))
        twin = type(agent).from_checkpoint(
            "the state of the last whole iteration", meta, self.arrays, game=agent.env
        )
        twin.history = list(agent.history[: self.rows])
        twin.logger = agent.logger
        return twin


def _trainable_bytes(agent: Any) -> int:
    """The bytes of an agent's trainable weights and their optimiser moments (Adam keeps two per
    weight, SGD none), which a checkpoint of its state copies."""
    model = getattr(agent, "model", None)
    params = [p for p in model.parameters() if p.requires_grad] if model is not None else []
    weights = sum(p.numel() * p.element_size() for p in params)
    optimizer = getattr(agent, "optimizer", None)
    moments = 0 if optimizer is None or type(optimizer).__name__ == "SGD" else 2
    return weights * (1 + moments)


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
) -> tuple[Any, Any, int | None, int | None, int | None, int | None, Any, dict[str, Any], Any]:
    """Lock ``run_dir``, check the command against it and load its state.

    Returns ``(lock, agent, budget_q, budget_i, save_freq, eval_freq, tensorboard_log, config,
    state)`` (``config``: the run's ``config.yml``; ``state``: the file the agent was loaded from,
    ``None`` for a fresh one); the lock is held (released here if anything fails).
    """
    from agents.zoo.runs import RunLock, check_no_outside_links, remove_stale_folders

    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such folder")
    _resume_state(run_dir, agent_name, env_id)  # a train run folder, before anything is written
    check_no_outside_links(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        for gone in remove_stale_folders(run_dir):  # a kill while final_hf/ was being written
            notify(f"removed {gone}, left by a write that was killed")
        rec = _resume_state(run_dir, agent_name, env_id)  # read again under the lock
        config, recorded = rec["config"], rec["args"]
        save_freq, eval_freq, tb, changes = _resume_arguments(run_dir, config, recorded, given)
        agent, state = _resumed_agent(run_dir, config, recorded, notify)
        for name, data, message in changes:  # recorded only once the resume is sure to start
            atomic_write_text(run_dir / name, yaml.safe_dump(data, sort_keys=False))
            notify(message)
    except BaseException:
        lock.release()
        raise
    return (lock, agent, config.get("num_queries"), config.get("num_iterations"), save_freq,
            eval_freq, tb, config, state)  # fmt: skip


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
) -> tuple[Any, Path | None]:
    """The most advanced valid state of ``run_dir`` (see :func:`train_run`) and the file it was
    loaded from (``None``: a fresh agent).

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
    if env is not None:
        _check_game(run_dir, config, env, states[0])
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
        return agent, path
    if states or unreadable:
        raise UserError(f"--resume {run_dir}: every saved state is damaged; nothing to resume")
    notify(
        f"--resume {run_dir}: no saved state yet (stopped during start-up); training from scratch "
        "with its config.yml"
    )
    entry = _entry_of_run(run_dir, config)
    agent = _build_agent(entry.agent, entry.env_id, entry, seed)
    if hasattr(getattr(agent, "env", None), "part_fingerprints"):
        _check_game(run_dir, config, agent.env, None)
    return agent, None


#: the file of a run on ``nlhf/HFTokenDuel-v0`` that records the fingerprints of its game's parts
GAME_RECORD = "game.yml"

#: the ``env_kwargs`` that name each part of a Hugging Face game (for the messages)
_PART_SOURCES = {
    "reference": ("reference",),
    "tokenizer": ("tokenizer", "reference"),
    "judge": ("judge",),
    "prompts": ("prompts", "heldout_prompts", "validation_prompts"),
    "settings": (),
}


def _record_game(run_dir: Path, agent: Any) -> None:
    """Write ``game.yml`` for a run on ``nlhf/HFTokenDuel-v0``: the fingerprints of the parts of
    its game (reference, tokenizer, judge, prompts, settings), read on resume to name a part
    that changed since (its files are the user's and may be replaced)."""
    env = getattr(agent, "env", None)
    if not hasattr(env, "part_fingerprints"):
        return
    data = {"fingerprint": env.fingerprint(), "parts": env.part_fingerprints()}
    atomic_write_text(run_dir / GAME_RECORD, yaml.safe_dump(data, sort_keys=False))


def _check_game(run_dir: Path, config: dict[str, Any], env: Any, state: Path | None) -> None:
    """Refuse to resume a Hugging Face run whose game changed since it started, naming the part
    (from ``game.yml``) or, for a run without that record, the fingerprint its saved state holds.

    Raises:
        UserError: naming the part, where it comes from and both fingerprints.
    """
    from agents.checkpoint import CheckpointError, read_meta

    where = f"--resume {run_dir}"
    advice = "restore it, or start a new run to train on the new one"
    record = run_dir / GAME_RECORD
    if record.is_file():
        data = _read_run_yaml(record)
        parts = data.get("parts")
        if not isinstance(parts, dict):
            raise UserError(f"{record}: field 'parts' must be a mapping; got {parts!r}")
        now = env.part_fingerprints()
        kwargs = dict(config.get("env_kwargs") or {})
        for part, have in now.items():
            want = parts.get(part)
            if want == have:
                continue
            sources = [f"{k}: {kwargs[k]}" for k in _PART_SOURCES[part] if kwargs.get(k)][:1]
            named = f" ({sources[0]})" if sources else ""
            if part == "settings":
                named = " (system prompt, answer alphabet, beta, reward mode or lengths)"
            raise UserError(
                f"{where}: the {part}{named} changed since the run started (fingerprint {want}, "
                f"now {have}; recorded in {record}): the run trained on the old one; {advice}"
            )
        return
    if state is None:
        return
    try:
        want = (read_meta(state).get("env") or {}).get("fingerprint")
    except CheckpointError:
        return  # a damaged newest state: the loader skips it with its own notice
    have = env.fingerprint()
    if want is not None and want != have:
        raise UserError(
            f"{where}: the game changed since {state} was saved (the reference model, tokenizer, "
            f"judge, prompts or settings; fingerprint {want}, now {have}); {advice}"
        )


def _hf_env_of(config: dict[str, Any]) -> Any:
    """The ``nlhf/HFTokenDuel-v0`` env of a run's ``config.yml`` (``None`` for other envs): the
    one mechanism of :func:`agents.run_env.hf_env_of_run`, shared with :func:`agents.load` and
    ``nlhf-zoo eval``."""
    from agents.run_env import hf_env_of_run

    return hf_env_of_run(config)


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


def _config_kwargs(config: Any) -> dict[str, Any]:
    from agents.config import config_to_dict

    return config_to_dict(config)


#: how long the processes of a multi-process ``train`` wait at its end for the first one (its
#: final evaluation and files); a failing first process ends them sooner (``torchrun``)
FINAL_WAIT = datetime.timedelta(days=7)


def launch_processes(argv: list[str], nproc: int) -> int | None:
    """``nlhf-zoo train ... --nproc N``: the same command without ``--nproc``, launched on ``N``
    processes by ``torchrun --standalone --nproc_per_node N -m nlhf_zoo_cli``; returns its exit
    status (its processes print to this process's output), or ``None`` for ``N = 1`` (the
    caller trains in this process).

    Raises:
        UserError: for ``N < 1``, or under a launcher already (``WORLD_SIZE`` set above 1).
    """
    import subprocess

    from agents.text.distributed import launched_processes

    _check_count("--nproc", nproc, 1)
    if launched_processes() > 1:
        raise UserError("--nproc: this command already runs under a launcher (torchrun); drop it")
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    if nproc == 1:
        return None  # the caller runs the command in this process
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), "-m", "nlhf_zoo_cli", *rest]  # fmt: skip
    launcher = subprocess.Popen(cmd)
    while True:
        try:
            return launcher.wait()
        except KeyboardInterrupt:  # the launcher and its processes got the Ctrl-C too: they stop
            continue  # at an iteration boundary and save; wait for them


def cmd_train(args: argparse.Namespace) -> int:
    """``nlhf-zoo train``: :func:`train_run` on parsed arguments, then print the final evaluation;
    ``0``.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) it first joins the process
    group (:func:`agents.text.distributed.init_process_group_from_env`: ``gloo`` on CPUs,
    ``nccl`` on GPUs) and leaves it at the end; only the first process prints.
    """
    from agents.text.distributed import launched_processes

    if launched_processes() == 1:
        return _cmd_train(args)
    import torch
    import torch.distributed as dist

    from agents.text.distributed import init_process_group_from_env

    joined = not dist.is_initialized()
    _, _, device = init_process_group_from_env(args.device)
    from agents.text.fsdp import default_mesh

    default_mesh(torch.device(device).type)  # a collective: built now, before any agent
    # a gloo group for the last barrier (nccl has no monitored_barrier)
    side = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    try:
        status = _cmd_train(args)
    except BaseException:  # torchrun stops the others when this process exits
        if joined:
            dist.destroy_process_group()
        raise
    # leave together: the others wait here for the first process's final evaluation and files
    # (a process leaving the group while another still works in it was seen to abort in gloo)
    dist.monitored_barrier(group=side, timeout=FINAL_WAIT)
    if joined:
        dist.destroy_process_group()
    return status


def _cmd_train(args: argparse.Namespace) -> int:
    from agents.zoo import configs as zoo

    rank, _ = _processes()
    params = zoo.parse_params(args.params)
    record = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "debug", "nproc")}
    if record.get("log_folder") is None:
        record["log_folder"] = "logs"
    timings: dict[str, float] = {}
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
        progress=not args.no_progress and rank == 0,
        args_record=record,
        resume=args.resume,
        eval_freq=args.eval_freq,
        env_kwargs=zoo.parse_params(args.env_kwargs),
        timings=timings,
        notify=_notify if rank == 0 else _silent,
    )
    if rank > 0:
        return 0
    last = agent.history[-1] if agent.history else {}
    verb = "resumed" if args.resume else "trained"
    print(f"{verb} {agent.name} ({agent.queries_used} queries) -> {run_dir}")
    final = yaml.safe_load((run_dir / "evaluation.yml").read_text()) or {}
    for key in ("game/exploitability", "eval/exploitability", "game/kl_to_nash", "eval/kl_to_nash"):
        if key in final:
            print(f"  final evaluation: {key} = {final[key]:.6g}{_interval_text(final, key)}")
    if timings:
        print(
            f"  {verb} in {timings['train_s']:.1f} s; final evaluation in "
            f"{timings['final_evaluation_s']:.1f} s (CPU {timings['train_cpu_s']:.1f} s and "
            f"{timings['final_evaluation_cpu_s']:.1f} s)"
        )
    entropy = final.get("policy/entropy", last.get("policy/entropy"))
    if entropy is not None:
        print(f"  policy/entropy = {entropy:.6g}")
    return 0


def _interval_text(values: dict[str, Any], key: str) -> str:
    """`` (95% CI [low, high])`` of an estimated metric (its ``_low``/``_high`` keys), else ``""``:
    an estimate, negative ones included, is never printed without its interval."""
    low, high = values.get(f"{key}_low"), values.get(f"{key}_high")
    if low is None or high is None:
        return ""
    return f" (95% CI [{low:.6g}, {high:.6g}])"
