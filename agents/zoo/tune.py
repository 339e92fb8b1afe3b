"""``nlhf-zoo tune``: hyper-parameter search with Optuna, in the rl-baselines3-zoo convention.

One study tunes one agent on one environment:

* sampler: Optuna's TPE (``TPESampler``), so each trial's settings are drawn from what the
  earlier trials of the study taught; each trial's sampler is seeded by :func:`trial_seed` from the
  study's seed, its number of finished trials and the trials other processes are running, so a
  stopped and resumed study draws what the uninterrupted one draws, trial for trial, and
  processes sharing a study do not draw the same setting (see :func:`trial_seed`);
* every trial trains a fresh agent from the zoo entry (``zoo_configs/<agent>.yml``, with the
  fixed ``params`` over it and the trial's settings over those) for ``budget`` preference queries
  and evaluates it at ``n_evaluations`` evenly spaced points of that budget (the evaluation curve);
* pruner: Optuna's median pruner on that curve (step ``i`` is the ``i``-th evaluation point, the
  same for every trial): a trial whose objective is worse than the median of the earlier trials at
  the same step stops there;
* objective (minimised): the agent's exploitability at the final budget on the *validation*
  prompts, never on the held-out prompts the results are reported on (the one protocol of
  ``docs/nash-metrics.md``). ``validation_split="validation"`` (default) scores the world's
  validation prompts, disjoint from the prompts trained on and from the held-out ones
  (``nlhf/TinyTokenDuel-v1``: 32 of 256); a world without them (the 32-prompt
  ``nlhf/TinyTokenDuel-v0``, an ``nlhf/HFTokenDuel-v0`` env without ``validation_prompts`` or
  ``validation_fraction``) is refused unless ``"train"`` is asked for, which scores the prompts
  trained on (an optimisation objective, named so in the provenance).
  Exploitability is exact on matrix games and on enumerable token worlds
  (:func:`nlhf_envs.text.exact.exact_metrics`), estimated on the full-size ones
  (:func:`nlhf_envs.text.estimate.estimate_nash_metrics`; on ``nlhf/HFTokenDuel-v0``, your own
  model, the env's :func:`~nlhf_envs.text.hf_estimate.estimate_hf_nash_metrics` with its
  reference as ``pi_ref``);
* storage: a SQLite file (``sqlite:///path``, or a plain path) holds the study, so several
  processes (or machines sharing the file) work on one study, and a stopped study resumes where it
  was: ``n_trials`` is the study's total of finished (complete or pruned) trials, so every agent
  tuned with the same ``n_trials`` gets the same trial budget however the work was split. A trial
  starts (under a lock next to the file) only while finished plus running trials are below
  ``n_trials``, so processes sharing a study finish exactly ``n_trials``; a process whose share is
  done waits for the others' running trials. Each process holds a lock file under
  ``<study file>.tune/`` (:class:`_Owner`): a ``RUNNING`` trial whose process no longer holds its
  lock (killed) is marked ``FAIL`` by the next process, and Ctrl-C or SIGTERM mark the running
  trial ``FAIL`` at once; the sampler and the pruner ignore failed trials. A file that is not an
  Optuna study, or a damaged one, is refused before Optuna writes to it
  (:func:`check_study_file`).

The result is the best trial's complete zoo entry as a YAML snippet (every config value that
differs from the agent's defaults, the budget as ``num_queries``, and ``env_kwargs``) with its
provenance in comments (study, storage, trials, budget, objective, date), ready to go into
``zoo_configs/<agent>.yml``.

Search spaces (:func:`suggest`): ``lr`` log-uniform in ``[3e-5, 3e-3]`` for token agents (their
default is ``1e-4``) and in ``[1e-4, 1e-2]`` for tabular agents with an ``lr``; token Nash-MP also ``eta`` in ``{1, 2, 4} x beta`` (``ema_rate`` log-uniform in
``[0.01, 0.5]`` for design (C)); token Nash-MD the mixture schedule (``harmonic`` or a constant
coefficient, log-uniform in ``[1/32, 1/2]``); a tabular agent without ``lr`` its step (the key of
``default_step``), log-uniform within a factor 4 of the theory's value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import math
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.config import ConfigError, config_to_dict
from nlhf_envs.errors import NlhfError
from nlhf_envs.progress import Progress, Reporter, reporter

__all__ = [
    "TuneResult",
    "tune",
    "suggest",
    "validation_exploitability",
    "storage_url",
    "to_yaml",
    "add_arguments",
    "cmd_tune",
]


@dataclass
class TuneResult:
    """What a :func:`tune` call leaves.

    Attributes:
        study_name: the Optuna study.
        storage: its storage URL (``None``: in memory).
        agent: the agent tuned.
        env_id: the environment.
        budget: preference queries per trial (the final budget of each trial).
        n_complete: finished trials that ran their whole budget.
        n_pruned: trials the median pruner stopped.
        best_value: the best trial's objective (validation exploitability at the budget).
        best_number: the best trial's number in the study.
        best_params: the settings the search chose for the best trial.
        entry: the best trial's zoo entry (config values differing from the defaults, plus
            ``num_queries`` and ``env_kwargs``).
        yaml: :attr:`entry` as a YAML snippet with its provenance.
        new_trials: trials this call ran.
    """

    study_name: str
    storage: str | None
    agent: str
    env_id: str
    budget: int
    n_complete: int
    n_pruned: int
    best_value: float
    best_number: int
    best_params: dict[str, Any]
    entry: dict[str, Any]
    yaml: str
    new_trials: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _storage_lock(url: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``<study file>.lock`` (nothing for an in-memory study): Optuna's
    SQLite storage creates its tables on first use, and two processes doing that at once fail
    (a unique-constraint error on the schema version)."""
    if url is None:
        yield
        return
    path = Path(url.removeprefix("sqlite:///") + ".lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _storage_name(url: str | None) -> str:
    """The study file's name for provenance comments (never its folder: a zoo file that is
    shared or committed must not carry a machine's paths)."""
    return "in memory" if url is None else f"file {Path(url.removeprefix('sqlite:///')).name}"


def storage_url(storage: str | os.PathLike[str] | None) -> str | None:
    """``sqlite:///<absolute path>`` for a path, the URL itself for ``sqlite:///...``.

    Raises:
        ConfigError: for another URL scheme, or a folder that does not exist.
    """
    if storage is None:
        return None
    text = os.fspath(storage)
    if "://" in text:
        if not text.startswith("sqlite:///"):
            raise ConfigError(f"--storage {text}: expected a file path or sqlite:///path")
        path = Path(text.removeprefix("sqlite:///"))
    else:
        path = Path(text)
    if path.is_dir():
        raise ConfigError(f"--storage {text}: is a folder; give the path of a study file")
    if not path.parent.is_dir():
        raise ConfigError(f"--storage {text}: folder {path.parent} does not exist")
    return f"sqlite:///{path.resolve()}"


#: the first 16 bytes of every SQLite database file
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_study_file(url: str | None) -> None:
    """Refuse a ``--storage`` file that is not an Optuna study, before Optuna opens (and would
    write into) it: an existing non-empty file must be a SQLite database that is empty or holds
    Optuna's tables. A missing or empty file is a new study.

    Raises:
        ConfigError: naming the file: another kind of file, a damaged SQLite file, or a SQLite
            database of something else (nothing is written to any of them).
    """
    if url is None:
        return
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file() or path.stat().st_size == 0:
        return
    keep = "nothing was written to it; give the path of a study file or of a new file"
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_HEADER))
    if head != _SQLITE_HEADER:
        raise ConfigError(
            f"--storage {path}: not a SQLite study file (it holds other data); {keep}"
        )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.text_factory = bytes  # damaged text must not fail to decode here
            names = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
            tables = {n.decode("utf-8", "replace") for n in names if isinstance(n, bytes)}
            check = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.Error as exc:
        raise ConfigError(f"--storage {path}: damaged SQLite file ({exc}); {keep}") from None
    except UnicodeDecodeError:  # SQLite's message quoting a damaged schema
        raise ConfigError(f"--storage {path}: damaged SQLite file (its schema); {keep}") from None
    if check != [b"ok"]:
        first = check[0].decode("utf-8", "replace") if check else "no answer"
        raise ConfigError(f"--storage {path}: damaged SQLite file ({first}); {keep}")
    if tables and "studies" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise ConfigError(
            f"--storage {path}: a SQLite database that is not an Optuna study (tables {shown}); "
            f"{keep}"
        )


@contextlib.contextmanager
def _storage_errors(url: str | None, reading: bool = False) -> Iterator[None]:
    """A damaged or unreadable study file is one line naming it: Optuna's storage raises
    SQLAlchemy's errors (a full disk among them), and damaged rows decode badly. With
    ``reading`` (a block that only reads and writes the study, no trial's code) every error of
    the data is the file's; otherwise only the storage's own."""
    try:
        yield
    except Exception as exc:
        try:
            from sqlalchemy.exc import SQLAlchemyError
        except ImportError:  # pragma: no cover - Optuna depends on SQLAlchemy
            raise exc from None
        kinds: tuple[type[BaseException], ...] = (SQLAlchemyError, UnicodeDecodeError)
        if reading:
            kinds += (ValueError, KeyError, TypeError)
        if not isinstance(exc, kinds) or isinstance(exc, NlhfError) or url is None:
            raise
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise ConfigError(
            f"--storage {url.removeprefix('sqlite:///')}: the study file cannot be used "
            f"({type(exc).__name__}: {detail}); restore it or give a new file"
        ) from None


#: the user attribute of a trial naming the process that runs it (see :class:`_Owner`)
OWNER_KEY = "tune_owner"


class _Owner:
    """This process's claim on the trials it runs, so that others can tell a live trial from one
    whose process died.

    The claim is an ``fcntl.flock`` on ``<study file>.tune/<token>.lock``, held while the process
    runs; the kernel releases it when the process ends in any way (SIGKILL included). Each trial
    the process starts records the token (user attribute :data:`OWNER_KEY`). A ``RUNNING`` trial
    is stale when the lock of its token can be taken (or its file is gone): no process holds it.
    On a study file shared between machines this is as reliable as the file system's locks,
    which SQLite needs as well.
    """

    def __init__(self, url: str | None) -> None:
        self.folder = None if url is None else Path(url.removeprefix("sqlite:///") + ".tune")
        self.token = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._fd: int | None = None

    def __enter__(self) -> _Owner:
        if self.folder is None:
            return self
        path = self.folder / f"{self.token}.lock"
        for attempt in range(5):
            self.folder.mkdir(exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileNotFoundError:  # another process removed the empty folder meanwhile
                if attempt == 4:
                    raise
                continue
            break
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None and self.folder is not None:
            with contextlib.suppress(OSError):
                (self.folder / f"{self.token}.lock").unlink()
            os.close(self._fd)  # releases the lock
            self._fd = None
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # when no other process holds a claim

    def holds(self, token: Any) -> bool:
        """Whether a live process holds ``token`` (this one included)."""
        if self.folder is None:
            return token == self.token  # an in-memory study: only this process runs trials
        if not isinstance(token, str) or "/" in token or token.startswith("."):
            return False
        path = self.folder / f"{token}.lock"
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return False  # the file is gone: its process ended (or a checker removed it)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True  # held: the process runs
        finally:
            os.close(fd)  # (releases the lock just taken, if it was)
        with contextlib.suppress(OSError):
            path.unlink()  # its process died without removing it
        return False


def _fail_stale_trials(study: Any, owner: _Owner) -> list[int]:
    """Mark ``FAIL`` every ``RUNNING`` trial of ``study`` that no live process holds (killed by
    SIGKILL, a power cut, ...); returns their numbers. Called under the storage lock."""
    import optuna

    stale = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if owner.holds(t.user_attrs.get(OWNER_KEY)):
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        stale.append(t.number)
    return stale


def trial_seed(seed: int, finished: int, running: Sequence[int] = ()) -> int:
    """The TPE sampler's seed for the next trial of a study: a function of the study's ``seed``,
    its number of finished (complete or pruned) trials and the numbers of the trials other
    processes are running. A resumed study therefore draws what the uninterrupted one drew at the
    same point (trials of a killed process are failed first, and ignored), and no two trials that
    run or finish side by side draw from the same seed and history: two starts with the same
    finished trials and the same running ones are apart only when the first of them failed."""
    import numpy as np

    running = sorted(int(n) for n in running)
    # the length, and numbers shifted by one: SeedSequence ignores trailing zeros
    entropy = [int(seed), int(finished), len(running), *(n + 1 for n in running)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def suggest(trial: Any, agent: Any) -> dict[str, Any]:
    """The trial's settings for ``agent`` (a probe built from the zoo entry; see the module
    docstring for the spaces)."""
    fields = {f.name for f in dataclasses.fields(agent.config)}
    out: dict[str, Any] = {}
    if "lr" in fields:
        low, high = (3e-5, 3e-3) if agent.kind == "text" else (1e-4, 1e-2)
        out["lr"] = trial.suggest_float("lr", low, high, log=True)
    elif agent.kind == "matrix":
        try:
            key, value = agent.default_step(agent.game)
        except NotImplementedError:
            key, value = None, None
        if key is not None and key in fields:
            out[key] = trial.suggest_float(key, value / 4.0, value * 4.0, log=True)
    if agent.kind == "text" and agent.name == "nash_mp":
        out["eta"] = trial.suggest_categorical("eta_over_beta", [1.0, 2.0, 4.0]) * agent.beta
        if agent.config.variant == "ema":
            out["ema_rate"] = trial.suggest_float("ema_rate", 0.01, 0.5, log=True)
    if agent.kind == "text" and agent.name == "nash_md":
        schedule = trial.suggest_categorical("schedule", ["harmonic", "constant"])
        out["schedule"] = schedule
        if schedule == "constant":
            out["mixture_coef"] = trial.suggest_float("mixture_coef", 1 / 32, 0.5, log=True)
    return out


_EXACT_GAMES: dict[tuple[Any, ...], tuple[Any, Any]] = {}

#: the prompt splits a tuning objective may score
VALIDATION_SPLITS: tuple[str, ...] = ("validation", "train")


def _check_split(agent: Any, split: str) -> None:
    """Refuse an objective split that the agent's env does not have (before any trial runs)."""
    world = getattr(agent, "world", None)
    prompts = getattr(world, "prompts", None)
    own = getattr(agent.env, "prompts", None)  # nlhf/HFTokenDuel-v0: the env's own prompt sets
    if prompts is not None:
        has, where = prompts.has_split(split), f"world {world.name!r}"
    elif isinstance(own, dict):
        has, where = bool(own.get(split)), "this nlhf/HFTokenDuel-v0 env"
    else:
        has, where = split == "train", "this env"
    if not has:
        hint = (
            "give it validation prompts (env_kwargs validation_prompts or validation_fraction)"
            if isinstance(own, dict)
            else "tune on an env with a validation split (nlhf/TinyTokenDuel-v1)"
        )
        raise ConfigError(
            f"{where} has no {split!r} prompts to tune on; pass validation_split='train' "
            "(--validation-split train: the objective then scores the prompts trained on, an "
            f"optimisation objective) or {hint}"
        )


def validation_exploitability(agent: Any, split: str = "train") -> float:
    """Exploitability of ``agent``'s current policy on the prompts of ``split`` (token agents) or
    of the game (tabular agents); exact where it can be (see the module docstring)."""
    if agent.kind == "matrix":
        return float(agent.metrics()["game/exploitability"])
    agent.model.eval()
    try:
        if agent.enumerable():
            from nlhf_envs.solvers import regularized_nash
            from nlhf_envs.text.exact import exact_game, exact_metrics

            env_key = (getattr(agent.env, "env_id", None), agent.world.name if agent.world else "")
            key = (*env_key, split, agent.config.payer, agent.beta, agent.engine.max_new_tokens)
            if key not in _EXACT_GAMES:
                game = exact_game(
                    agent.env, split, payer=agent.config.payer, beta=agent.beta,
                    reference=agent.reference,
                )  # fmt: skip
                _EXACT_GAMES[key] = (game, regularized_nash(game))
            game, star = _EXACT_GAMES[key]
            return float(
                exact_metrics(agent.model, game, agent.env, split, nash=star)["exploitability"]
            )
        from nlhf_envs.text.estimate import estimate_nash_metrics

        n = agent.config.nash_eval_samples
        native = agent.backend.kind == "native"  # else the env estimates with its own parts
        est = estimate_nash_metrics(
            agent.model, agent.env, split=split, num_prompts=agent.config.nash_eval_prompts,
            n=n, m=2 * n, seed=agent.seed, payer=agent.config.payer, beta=agent.beta,
            reference=agent.reference if native else None, device=agent.device,
        )  # fmt: skip
        return float(est.as_dict("eval/")["eval/exploitability"])
    finally:
        agent.model.train()


def _yaml_value(value: Any) -> str:
    """One YAML value as the zoo writes it: floats as ``3.0e-4`` or ``0.2`` (every YAML parser
    reads these as floats), mappings in flow style."""
    if isinstance(value, float) and math.isfinite(value):
        if value != 0 and not 1e-3 <= abs(value) < 1e4:
            mantissa, exp = f"{value:.4e}".split("e")
            mantissa = mantissa.rstrip("0")
            mantissa = mantissa + "0" if mantissa.endswith(".") else mantissa
            return f"{mantissa}e{exp[0]}{int(exp[1:])}"
        return repr(float(f"{value:.6g}"))
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def to_yaml(env_id: str, entry: Mapping[str, Any], comments: Sequence[str]) -> str:
    """The zoo snippet ``env_id: {entry}`` with ``comments`` above it."""
    lines = [f"# {c}" for c in comments]
    lines.append(f"{env_id}:")
    for key, value in entry.items():
        lines.append(f"  {key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def _entry_of(
    config: Any, defaults: Any, budget: int, env_kwargs: Mapping[str, Any], layer_keys: set[str]
) -> dict:
    """Every config value that differs from the dataclass defaults or that a zoo layer sets (so the
    snippet is the whole entry whatever the file's ``default`` entry holds), then the meta keys."""
    got, base = config_to_dict(config), config_to_dict(defaults)
    entry = {k: v for k, v in got.items() if base.get(k) != v or k in layer_keys}
    entry["num_queries"] = int(budget)
    if env_kwargs:
        entry["env_kwargs"] = dict(env_kwargs)
    return entry


def _run_trials(
    study: Any,
    objective: Callable[[Any], float],
    owner: _Owner,
    url: str | None,
    n_trials: int,
    seed: int,
    enqueue: Sequence[Mapping[str, Any]],
    poll_seconds: float,
    report: Reporter | None = None,
) -> int:
    """Run trials until the study holds ``n_trials`` finished ones; returns how many this call
    finished.

    Under the storage lock, each round fails the stale trials (:func:`_fail_stale_trials`),
    counts the finished and the running trials and starts a new trial only while their sum is
    below ``n_trials`` (so processes sharing the study never finish more), with a TPE sampler
    seeded by :func:`trial_seed`. When the other processes' running trials complete the count,
    it waits for them (polling every ``poll_seconds``), failing those whose process dies.
    A trial stopped by an exception, Ctrl-C or SIGTERM is marked ``FAIL`` before the exception
    goes on. ``report`` (if given) is told the study's finished trials after every trial, with the
    trial's value and the best value so far.
    """
    import optuna

    states = optuna.trial.TrialState
    ran = 0
    while True:
        with _storage_lock(url):
            _fail_stale_trials(study, owner)
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials)
            if report is not None and report.active and done != report.done:
                values = [t.value for t in trials if t.state == states.COMPLETE]
                info = {"best": min(values)} if values else {}
                report.update(done, **info)
            running = [t.number for t in trials if t.state == states.RUNNING]
            trial = None
            if done + len(running) < n_trials:
                if done + len(running) == 0:
                    for fixed in enqueue:
                        study.enqueue_trial(dict(fixed), skip_if_exists=True)
                study.sampler = optuna.samplers.TPESampler(seed=trial_seed(seed, done, running))
                trial = study.ask()
                trial.set_user_attr(OWNER_KEY, owner.token)
        if trial is None:
            if not running:
                return ran
            time.sleep(poll_seconds)  # other processes finish the study's last trials
            continue
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=states.PRUNED)
        except BaseException:
            study.tell(trial, state=states.FAIL)
            raise
        else:
            study.tell(trial, value)
        ran += 1
        if report is not None and report.active:
            finished = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))
            values = [t.value for t in finished if t.state == states.COMPLETE]
            info = {"best": min(values)} if values else {}
            report.update(len(finished), **info)


def _evaluation_points(budget: int, per_iteration: int, n: int) -> list[int]:
    """``n`` evenly spaced budgets ending at ``budget``, each a whole number of iterations."""
    whole = budget // per_iteration
    pts = sorted({max(1, round(whole * i / n)) * per_iteration for i in range(1, n + 1)})
    return pts


def tune(
    agent_name: str,
    env_id: str,
    *,
    n_trials: int,
    budget: int | None = None,
    n_evaluations: int = 4,
    seed: int = 0,
    storage: str | os.PathLike[str] | None = None,
    study_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    validation_split: str = "validation",
    pruner_startup_trials: int = 5,
    enqueue: Sequence[Mapping[str, Any]] = (),
    space: Callable[[Any, Any], dict[str, Any]] | None = None,
    today: _dt.date | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    poll_seconds: float = 1.0,
    progress: Progress = None,
) -> TuneResult:
    """Tune ``agent_name`` on ``env_id`` (see the module docstring); returns the :class:`TuneResult`.

    Args:
        agent_name: a registered agent.
        env_id: an environment id (or game family).
        n_trials: the study's total of finished trials (complete or pruned); a resumed study runs
            only the missing ones.
        budget: preference queries per trial (default: the zoo entry's ``num_queries``).
        n_evaluations: evaluation points per trial (the pruner's steps).
        seed: the agents' seed (the same for every trial: common random numbers) and the TPE
            sampler's.
        storage: SQLite file of the study (``None``: in memory, nothing kept).
        study_name: default ``"<agent>:<env_id>:<budget>q:seed<seed>"``.
        params: fixed overrides of the zoo entry, applied to every trial.
        config_dir: folder of the zoo YAML files.
        validation_split: prompts of the objective on token worlds: ``"validation"`` (default)
            or ``"train"`` (the prompts trained on, for worlds without validation prompts); never
            the held-out prompts.
        pruner_startup_trials: trials that always finish before the median pruner acts.
        enqueue: settings (the search's parameter names) to try first, e.g. the current zoo
            values.
        space: ``space(trial, probe_agent) -> settings`` replacing :func:`suggest`.
        today: the date written in the provenance (default: today, UTC).
        env_kwargs: keyword arguments of the environment, merged over the zoo entry's (e.g. the
            parts of ``nlhf/HFTokenDuel-v0``: ``reference``, ``judge``, ``prompts``, ...).
        poll_seconds: how often a process whose share of the study is done looks whether the
            trials other processes run have finished.
        progress: the study's finished trials (of ``n_trials``) after every trial, with the best
            validation exploitability so far: ``True`` for a bar on stderr, a callable for
            :class:`~nlhf_envs.progress.ProgressEvent` objects (task ``"tune"``, unit
            ``"trials"``), ``None`` (default) for nothing.

    Raises:
        ConfigError: for a bad argument, a budget below one iteration, a stored study that was
            run with other settings, or a storage file that is not a study (or is damaged).
    """
    import optuna

    import agents
    from agents.api import plan_budget
    from agents.zoo import configs as zoo

    if validation_split not in VALIDATION_SPLITS:
        raise ConfigError(
            f"validation split: expected 'validation' or 'train' (the held-out prompts report "
            f"results, they are never tuned on); got {validation_split!r}"
        )
    for key, val, low in (("n_trials", n_trials, 1), ("n_evaluations", n_evaluations, 1),
                          ("pruner_startup_trials", pruner_startup_trials, 0), ("seed", seed, 0)):  # fmt: skip
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ConfigError(f"{key}: must be an integer >= {low}; got {val!r}")
    fixed = dict(params or {})
    if env_kwargs:
        fixed["env_kwargs"] = {**dict(fixed.get("env_kwargs") or {}), **dict(env_kwargs)}
    base = zoo.resolve(agent_name, env_id, config_dir=config_dir, params=fixed)
    budget = base.num_queries if budget is None else budget
    if budget is None:
        raise ConfigError(f"no budget for {agent_name} on {env_id}: pass the budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget: must be an integer >= 1; got {budget!r}")

    def build(extra: Mapping[str, Any]) -> Any:
        entry = zoo.resolve(agent_name, env_id, config_dir=config_dir, params={**fixed, **extra})
        cfg = config_to_dict(entry.config)
        agent = agents.make(
            agent_name, env_id, seed=seed, env_kwargs=entry.env_kwargs or None, **cfg
        )
        return entry, agent

    _, probe = build({})
    if probe.kind == "text":
        _check_split(probe, validation_split)
    plan = plan_budget(probe, budget)
    if plan.iterations == 0:
        raise ConfigError(
            f"a budget of {budget:,} queries is below one iteration of {agent_name} "
            f"({plan.per_iteration:,} queries)"
        )
    space = space or suggest
    name = study_name or f"{agent_name}:{env_id}:{budget}q:seed{seed}"
    url = storage_url(storage)
    attrs = {"agent": agent_name, "env_id": env_id, "budget": int(budget), "seed": int(seed),
             "params": {k: fixed[k] for k in sorted(fixed)}, "n_evaluations": int(n_evaluations),
             "validation_split": validation_split}  # fmt: skip
    pruner = optuna.pruners.MedianPruner(n_startup_trials=pruner_startup_trials)
    check_study_file(url)
    with _storage_errors(url, reading=True), _storage_lock(url):  # one process creates it
        study = optuna.create_study(
            study_name=name, storage=url, sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruner, direction="minimize", load_if_exists=True,
        )  # fmt: skip
        stored = study.user_attrs.get("tune")
        if stored is None:
            study.set_user_attr("tune", attrs)
        study.get_trials(deepcopy=False)  # every stored trial read once: damage shows here
    if stored is not None and yaml.safe_dump(stored, sort_keys=True) != yaml.safe_dump(
        attrs, sort_keys=True
    ):
        diff = sorted(k for k in set(stored) | set(attrs) if stored.get(k) != attrs.get(k))
        raise ConfigError(
            f"study {name!r} in {url} was run with other settings ("
            + ", ".join(f"{k}: {stored.get(k)!r}, not {attrs.get(k)!r}" for k in diff)
            + "); give another --study-name"
        )

    def objective(trial: Any) -> float:
        settings = space(trial, probe)
        _, agent = build(settings)
        points = _evaluation_points(budget, plan_budget(agent, budget).per_iteration,
                                    n_evaluations)  # fmt: skip
        value = float("nan")
        for step, target in enumerate(points, start=1):
            agent.learn(num_queries=target - agent.queries_used)
            value = validation_exploitability(agent, validation_split)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("settings", settings)
        trial.set_user_attr("queries", int(agent.queries_used))
        return value

    from agents.zoo.runs import TerminateAsInterrupt

    with (
        _storage_errors(url),
        TerminateAsInterrupt(),
        _Owner(url) as owner,
        reporter(progress, "tune", n_trials, "trials") as report,
    ):
        ran = _run_trials(
            study, objective, owner, url, n_trials, seed, enqueue, poll_seconds, report
        )
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    if not complete:
        raise ConfigError(f"study {name!r}: no trial finished its budget; run more trials")
    best = min(complete, key=lambda t: (t.value, t.number))
    settings = best.user_attrs["settings"]
    entry, best_agent = build(settings)
    layer_keys = set(fixed) | set(settings)
    zoo_file = Path(config_dir or zoo.default_config_dir()) / f"{agent_name}.yml"
    if zoo_file.exists():
        data = zoo.load_yaml(zoo_file)
        layer_keys |= set(data.get("default", {})) | set(data.get(env_id, {}))
    body = _entry_of(
        entry.config, type(best_agent.config)(), budget, entry.env_kwargs,
        layer_keys - set(zoo.META_KEYS),
    )  # fmt: skip
    date = (today or _dt.datetime.now(_dt.timezone.utc).date()).isoformat()
    where = (
        "exact"
        if best_agent.kind == "matrix" or (best_agent.kind == "text" and best_agent.enumerable())
        else "estimated"
    )
    what = "the game" if best_agent.kind == "matrix" else f"the {validation_split!r} prompts"
    comments = [
        f"nlhf-zoo tune: study {name!r} ({_storage_name(url)}), {len(complete)} complete + "
        f"{n_pruned} pruned trials (TPE sampler seed {seed}, median pruner over "
        f"{n_evaluations} evaluations)",
        f"budget {budget:,} queries per trial; objective: {where} exploitability on {what} "
        f"at the budget = {best.value:.6g} (trial {best.number}); date {date}",
    ]
    return TuneResult(
        study_name=name,
        storage=url,
        agent=agent_name,
        env_id=env_id,
        budget=int(budget),
        n_complete=len(complete),
        n_pruned=n_pruned,
        best_value=float(best.value),
        best_number=int(best.number),
        best_params=dict(best.params),
        entry=body,
        yaml=to_yaml(env_id, body, comments),
        new_trials=ran,
        attrs=attrs,
    )


def add_arguments(p: Any) -> None:
    """The options of ``nlhf-zoo tune`` on the argparse subparser ``p``."""
    p.add_argument("--agent", required=True, help="registered agent to tune")
    p.add_argument("--env", required=True, help="environment id (or game family)")
    p.add_argument(
        "--n-trials", type=int, required=True,
        help="the study's total of finished trials (the same for every agent: a fair budget)",
    )  # fmt: skip
    p.add_argument(
        "-n", "--num-queries", type=int, default=None,
        help="preference queries per trial (default: the zoo entry's num_queries)",
    )  # fmt: skip
    p.add_argument("--n-evaluations", type=int, default=4, help="evaluations per trial (pruning)")
    p.add_argument("--seed", type=int, default=0, help="agents' and TPE sampler's seed")
    p.add_argument(
        "--storage", default=None,
        help="study file (sqlite:///path or a path): processes sharing it share the study; a "
        "stopped study resumes",
    )  # fmt: skip
    p.add_argument("--study-name", default=None, help="default: agent:env:budget:seed")
    p.add_argument(
        "--params", nargs="*", default=[], metavar="KEY:VALUE",
        help="fixed config overrides for every trial",
    )  # fmt: skip
    p.add_argument(
        "--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE",
        help="environment keyword arguments (merged over the zoo entry's env_kwargs), e.g. the "
        "reference, judge and prompts of nlhf/HFTokenDuel-v0",
    )  # fmt: skip
    p.add_argument("--conf-dir", default=None, help="folder of the zoo YAML files")
    p.add_argument(
        "--validation-split", default="validation", choices=list(VALIDATION_SPLITS),
        help="prompts of the objective on token worlds: 'validation' (default) or 'train' for "
        "worlds without validation prompts (never the held-out ones)",
    )  # fmt: skip
    p.add_argument(
        "--pruner-startup-trials", type=int, default=5,
        help="trials that always finish before the median pruner acts",
    )  # fmt: skip
    p.add_argument("--output", default=None, help="write the YAML snippet to this new file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (trials)")


def cmd_tune(args: Any) -> int:
    """Run ``nlhf-zoo tune``: the study, then the winning zoo snippet on stdout (and ``--output``).

    Raises:
        ConfigError: for bad arguments or a missing Optuna install (one line each).
    """
    import sys

    from agents.zoo import configs as zoo

    try:
        import optuna
    except ImportError:
        raise ConfigError("tune needs Optuna: install the 'tune' extra of nlhf-zoo") from None
    out = None if args.output is None else Path(args.output)
    if out is not None and (out.exists() or not out.parent.is_dir()):
        what = "exists (nothing is overwritten)" if out.exists() else "has no such folder"
        raise ConfigError(f"--output {out}: {what}; give the path of a new file")
    if args.conf_dir is not None and not Path(args.conf_dir).is_dir():
        raise ConfigError(f"--conf-dir {args.conf_dir}: no such folder")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = tune(
        args.agent, args.env, n_trials=args.n_trials, budget=args.num_queries,
        n_evaluations=args.n_evaluations, seed=args.seed, storage=args.storage,
        study_name=args.study_name, params=zoo.parse_params(args.params),
        config_dir=args.conf_dir, validation_split=args.validation_split,
        pruner_startup_trials=args.pruner_startup_trials,
        env_kwargs=zoo.parse_params(args.env_kwargs), progress=not args.no_progress,
    )  # fmt: skip
    print(
        f"nlhf-zoo: study {result.study_name!r}: {result.new_trials} new trial(s); "
        f"{result.n_complete} complete, {result.n_pruned} pruned; best {result.best_value:.6g} "
        f"(trial {result.best_number})",
        file=sys.stderr,
    )
    if out is not None:
        from nlhf_envs.atomic import atomic_write_text

        atomic_write_text(out, result.yaml)
    print(result.yaml, end="")
    return 0
