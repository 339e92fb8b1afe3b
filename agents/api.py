"""The one agent API of nlhf-zoo, shared by the tabular (matrix-game) and the token-level agents.

Every agent, whatever it learns on, offers (the :class:`ZooAgent` protocol):

* ``learn(num_queries=None, num_iterations=None, callback=None) -> self``: iterations while the
  next one fits the budgets of this call (``num_queries`` is never exceeded: the loop stops before an
  iteration that would take it past, see :func:`iterations_within_budget`) or until
  ``callback(agent)`` returns ``False``;
* ``iteration_queries()``: the preference queries the next iteration will use (an upper bound where
  the count is random);
* ``act(observation, deterministic=False)`` and the Stable-Baselines3-style ``predict``;
* ``evaluate()``: a dict of evaluation metrics (exact game metrics for tabular agents, win rates and
  Nash metrics for token agents);
* ``save(path)`` (read back with :func:`agents.load`);
* ``queries_used``, ``num_iterations``, ``history`` (one metrics dict per logged iteration),
  ``config`` (the resolved config dataclass), ``seed``, ``name`` and ``kind`` (``"matrix"`` or
  ``"text"``).

What differs is explicit: a tabular agent's policy is a table, :meth:`agents.base.Agent.policy_table`;
a token agent's policy is a network, ``agent.model`` (a :class:`~nlhf_envs.text.models.TinyCausalLM`).

:class:`AgentBase` holds the plumbing both kinds share (argument checks, the budget loop with Ctrl-C
deferred to an iteration boundary, recording to ``history`` and TensorBoard, ``predict``, ``save``),
so an algorithm writes only its iteration (``_iteration``) and its kind writes how one iteration is
accounted (``_run_iteration``) and which metrics a logged row holds (``_log_row``).
"""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from agents.checkpoint import save_agent
from agents.config import ConfigError
from agents.logger import make_logger
from nlhf_envs.progress import Progress, reporter

__all__ = [
    "ZooAgent",
    "AgentBase",
    "Callback",
    "LearningInterrupted",
    "DeferredInterrupt",
    "check_learn_args",
    "iterations_within_budget",
    "BudgetPlan",
    "plan_budget",
    "logs_iteration",
    "LearnProgress",
]

#: ``callback(agent)`` is called after every iteration; returning ``False`` stops ``learn``.
Callback = Callable[[Any], "bool | None"]


@runtime_checkable
class ZooAgent(Protocol):
    """What every nlhf-zoo agent offers (see the module docstring)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    config: Any
    seed: int
    queries_used: int
    num_iterations: int
    history: list[dict[str, float]]

    def learn(
        self,
        num_queries: int | None = None,
        num_iterations: int | None = None,
        callback: Callback | None = None,
        progress: Progress = None,
    ) -> Any: ...

    def act(self, observation: Any, deterministic: bool = False) -> Any: ...

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[Any, None]: ...

    def evaluate(self) -> dict[str, float]: ...

    def iteration_queries(self) -> int: ...

    def save(self, path: str | os.PathLike[str]) -> str: ...


def check_learn_args(
    num_queries: int | None, num_iterations: int | None, callback: Callable | None
) -> None:
    """Validate the budgets and callback of ``learn`` (shared by every agent kind).

    Raises:
        ConfigError: if neither budget is given or a budget is not a non-negative integer.
        TypeError: if ``callback`` is not callable.
    """
    if num_queries is None and num_iterations is None:
        raise ConfigError("learn() needs num_queries or num_iterations (or both)")
    for key, val in (("num_queries", num_queries), ("num_iterations", num_iterations)):
        if val is not None and (
            isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 0
        ):
            raise ConfigError(f"{key} must be a non-negative integer; got {val!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(agent) -> bool | None; got {callback!r}")


class DeferredInterrupt:
    """Context manager: the first SIGINT sets :attr:`requested` instead of raising.

    The training loop checks :attr:`requested` at every iteration boundary and stops there; a
    second SIGINT raises :class:`KeyboardInterrupt` at once. Outside the main thread (where signal
    handlers cannot be installed) it does nothing and SIGINT behaves as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False


class LearningInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``learn`` at an iteration boundary: the agent's state is consistent.

    Saving the agent now and learning the rest of the budget later gives exactly the result of the
    uninterrupted call.
    """

    def __init__(self, agent: Any) -> None:
        super().__init__(
            f"learning interrupted after iteration {agent.num_iterations} "
            f"({agent.queries_used} queries), at an iteration boundary"
        )
        self.agent = agent


def iterations_within_budget(
    agent: Any,
    num_queries: int | None,
    num_iterations: int | None,
    callback: Callable | None,
) -> Iterator[None]:
    """The budget loop of every agent's ``learn``: yields once per iteration to run.

    Validates the arguments (:func:`check_learn_args`), then yields while the next iteration fits
    both budgets of this call: fewer than ``num_iterations`` iterations done (``agent.num_iterations``,
    which the loop body increments) and, with ``num_queries``, the queries used so far by this call
    plus ``agent.iteration_queries()`` (the next iteration's cost) at most ``num_queries``. The query
    budget is therefore exact: a call never uses more than ``num_queries`` queries; it stops
    *before* an iteration that would exceed it (no iteration is truncated, so every iteration is
    the algorithm's whole step), and the remainder (less than one iteration) is left unused. After
    each iteration it stops if ``callback(agent)`` returns ``False``.

    Ctrl-C (SIGINT, main thread) during an iteration is deferred: the iteration and its callback
    finish, then :class:`LearningInterrupted` (a ``KeyboardInterrupt``) is raised at the boundary,
    so the agent never holds a half-done iteration. A second Ctrl-C interrupts at once. An agent
    with an ``agree_on_stop(requested) -> bool`` method (the token agents on several processes)
    decides with its peers, so all of them stop at the same boundary.

    Raises:
        ConfigError: bad budgets (:func:`check_learn_args`), or an agent whose iteration claims to
            use no queries under a query budget alone (the loop would never end).
    """
    check_learn_args(num_queries, num_iterations, callback)
    q0, i0 = agent.queries_used, agent.num_iterations

    def fits() -> bool:
        if num_iterations is not None and agent.num_iterations - i0 >= num_iterations:
            return False
        if num_queries is None:
            return True
        cost = int(agent.iteration_queries())
        if cost < 1 and num_iterations is None:
            raise ConfigError(
                f"{type(agent).__name__}.iteration_queries() is {cost}: a query budget cannot "
                "end this loop; give num_iterations"
            )
        return agent.queries_used - q0 + cost <= num_queries

    # an agent trained by several processes stops at a boundary where any of them was interrupted
    agree = getattr(agent, "agree_on_stop", None)
    with DeferredInterrupt() as interrupt:
        while fits():
            yield
            if callback is not None and callback(agent) is False:
                return
            stop = interrupt.requested if agree is None else agree(interrupt.requested)
            if stop:
                raise LearningInterrupted(agent)


@dataclass(frozen=True)
class BudgetPlan:
    """What ``learn(num_queries=budget)`` will do from an agent's current state.

    Attributes:
        budget: the query budget of the call.
        per_iteration: queries of one iteration (``agent.iteration_queries()``; an upper bound
            where the count is random).
        iterations: whole iterations that fit: ``budget // per_iteration``.
        queries: queries they use at most: ``iterations * per_iteration`` (``<= budget``).
    """

    budget: int
    per_iteration: int
    iterations: int
    queries: int

    @property
    def unused(self) -> int:
        """Queries of the budget left unused (less than one iteration)."""
        return self.budget - self.queries


def plan_budget(agent: Any, num_queries: int) -> BudgetPlan:
    """How many whole iterations of ``agent`` a budget of ``num_queries`` queries buys.

    Args:
        agent: any nlhf-zoo agent (:class:`ZooAgent`).
        num_queries: the query budget (a non-negative integer).

    Returns:
        The :class:`BudgetPlan` (``iterations == 0`` when the budget is below one iteration).

    Raises:
        ConfigError: if ``num_queries`` is not a non-negative integer.
    """
    check_learn_args(num_queries, None, None)
    cost = max(int(agent.iteration_queries()), 1)
    iterations = int(num_queries) // cost
    return BudgetPlan(int(num_queries), cost, iterations, iterations * cost)


class LearnProgress:
    """The progress of one ``learn`` call (see :meth:`AgentBase.learn`).

    Reports the call's queries (unit ``"queries"``) after every judged batch that the agent
    announces (:meth:`AgentBase._queries_counted`; a Nash-MP iteration at ``inner_steps: 8`` is
    16 of them) and after every iteration, with ``queries_per_s``: the training queries per
    second of the current iteration (evaluations between iterations excluded) and
    ``iterations``: the agent's iterations so far. The total is ``num_queries``, else
    ``num_iterations`` times :meth:`AgentBase.iteration_queries`.
    """

    def __init__(
        self,
        agent: Any,
        progress: Progress,
        num_queries: int | None,
        num_iterations: int | None,
    ) -> None:
        self.agent = agent
        self.q0 = int(agent.queries_used)
        total = num_queries
        if total is None and num_iterations is not None and progress not in (None, False):
            total = int(num_iterations) * max(int(agent.iteration_queries()), 1)
        self.report = reporter(progress, "train", None if total is None else int(total), "queries")
        self.t_start, self.q_start = time.perf_counter(), self.q0

    def __enter__(self) -> LearnProgress:
        if self.report.active:
            self.agent._learn_progress = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.agent.__dict__.pop("_learn_progress", None)
        self.report.close()

    def iteration_started(self) -> None:
        """An iteration starts: its queries per second are counted from now."""
        self.t_start, self.q_start = time.perf_counter(), int(self.agent.queries_used)

    def batch_done(self) -> None:
        """A batch of queries inside the iteration was counted."""
        self._send()

    def iteration_done(self) -> None:
        """The iteration is done (before its evaluation, if it logs one)."""
        self._send()

    def _send(self) -> None:
        if not self.report.active:
            return
        queries = int(self.agent.queries_used)
        elapsed = max(time.perf_counter() - self.t_start, 1e-9)
        self.report.update(
            queries - self.q0,
            queries_per_s=(queries - self.q_start) / elapsed,
            iterations=float(self.agent.num_iterations),
        )


def logs_iteration(t: int, every: int | None) -> bool:
    """Whether iteration ``t`` (1-based, counted over the agent's whole life) is logged.

    ``every``: ``0`` never, ``k`` every ``k``-th iteration, ``None`` two significant digits of
    ``t`` (every iteration up to 100, every 10th up to 1,000, every 100th up to 10,000, ...). A
    function of ``t`` alone, so a resumed run logs exactly the rows of the uninterrupted one.
    """
    if every is not None:
        return bool(every) and t % every == 0
    step = 10 ** max(len(str(int(t))) - 2, 0)
    return t % step == 0


class AgentBase:
    """The plumbing shared by every agent kind (see the module docstring).

    Subclasses call :meth:`_init_common` first in ``__init__`` and write :meth:`_run_iteration`
    (one iteration, counting its queries into ``queries_used``; returns extra metrics) and
    :meth:`_log_row` (the metrics of a logged iteration).
    """

    #: registry name (set by :func:`agents.register_agent`).
    name: ClassVar[str] = ""
    #: ``"matrix"`` (tabular agents) or ``"text"`` (token agents).
    kind: ClassVar[str] = ""
    #: the config dataclass of the agent.
    config_cls: ClassVar[type] = object

    config: Any
    seed: int
    queries_used: int
    num_iterations: int
    history: list[dict[str, float]]
    logger: Any

    def _init_common(
        self,
        config: Any,
        seed: int | None,
        tensorboard_log: str | os.PathLike[str] | None,
    ) -> Any:
        """Check and store the config and seed; start the counters, history and logger.

        Returns:
            The config (the class's defaults when ``config`` is ``None``).

        Raises:
            TypeError: for a config of another class.
            ConfigError: for a seed that is not an integer in ``[0, 2**63 - 1]``.
        """
        if config is None:
            config = self.config_cls()
        if not isinstance(config, self.config_cls):
            raise TypeError(
                f"config must be a {self.config_cls.__name__}; got {type(config).__name__}"
            )
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int or None; got {seed!r}")
        if seed > 2**63 - 1:  # recorded as a 64-bit integer; torch's generators take no more
            raise ConfigError(f"seed must be at most 2**63 - 1; got {seed}")
        self.config = config
        self.seed = int(seed)
        self.queries_used = 0
        self.num_iterations = 0
        self.history = []
        self.logger = None
        if tensorboard_log is not None:
            self.logger = make_logger(tensorboard_log, self.name or type(self).__name__)
        return config

    # ------------------------------------------------------------------ to override
    def _iteration(self) -> Any:
        """One iteration of the algorithm (the only method an algorithm must write)."""
        raise NotImplementedError

    def _run_iteration(self) -> dict[str, float]:
        """Run :meth:`_iteration`, count its queries into ``queries_used``; return extra metrics."""
        raise NotImplementedError

    def _log_row(self, extra: dict[str, float]) -> dict[str, float]:
        """The metrics of a logged iteration (``extra`` included)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Evaluation metrics of the current policy (no training queries counted)."""
        raise NotImplementedError

    def act(self, observation: Any, deterministic: bool = False) -> Any:
        """An action for ``observation`` (sampled with the agent's acting generator)."""
        raise NotImplementedError

    def iteration_queries(self) -> int:
        """Preference queries the next iteration will use (an upper bound where the count is random).

        The budget loop (:func:`iterations_within_budget`) runs an iteration only if this many more
        queries fit ``learn(num_queries=...)``. Agents that know their cost from the config
        override this (the token agents do). Default: measured by running one iteration on a deep
        copy of the agent (the agent itself is untouched), once per config value; this is exact for
        agents whose every iteration costs the same queries, as every tabular agent's does (its
        cost is set by ``mode``, ``batch_size`` and, in ``pg`` mode, ``inner_steps`` and
        ``pg_batch_size``; ``tests/agents/test_exact_budget.py`` checks it for every agent and mode).
        """
        key = repr(self.config)
        cached = getattr(self, "_probed_iteration_queries", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        logger, self.logger = self.logger, None  # a TensorBoard writer is not copied
        listening = self.__dict__.pop("_learn_progress", None)  # nor learn's progress reports
        try:
            twin = copy.deepcopy(self)
        finally:
            self.logger = logger
            if listening is not None:
                self._learn_progress = listening
        before = twin.queries_used
        twin._run_iteration()
        cost = int(twin.queries_used - before)
        self._probed_iteration_queries = (key, cost)
        return cost

    # ------------------------------------------------------------------ shared
    def learn(
        self,
        num_queries: int | None = None,
        num_iterations: int | None = None,
        callback: Callback | None = None,
        progress: Progress = None,
    ) -> Any:
        """Run iterations until a budget of this call is spent or the callback says stop.

        Args:
            num_queries: use at most this many queries in this call: the loop stops before an
                iteration that would exceed it (:meth:`iteration_queries` says what one costs), so
                up to one iteration's queries of the budget may stay unused.
            num_iterations: stop after this many iterations of this call.
            callback: ``callback(agent)`` after every iteration; returning ``False`` stops.
            progress: ``None`` (default: silent), ``True`` (a ``tqdm`` bar on stderr) or a
                callable receiving :class:`~nlhf_envs.progress.ProgressEvent` objects (task
                ``"train"``, unit ``"queries"``: the queries of this call, out of ``num_queries``,
                else ``num_iterations`` iterations' worth); see :class:`LearnProgress`.

        Returns:
            ``self``.

        Raises:
            ConfigError: (a ``ValueError``) if neither budget is given or a budget is negative.
            LearningInterrupted: Ctrl-C, raised at the next iteration boundary.
        """
        check_learn_args(num_queries, num_iterations, callback)
        with LearnProgress(self, progress, num_queries, num_iterations) as report:
            for _ in iterations_within_budget(self, num_queries, num_iterations, callback):
                report.iteration_started()
                extra = self._run_iteration()
                self.num_iterations += 1
                report.iteration_done()
                if logs_iteration(self.num_iterations, self.config.log_every):
                    self._record(extra)
        return self

    def _queries_counted(self) -> None:
        """Called by an iteration each time it has counted a batch of queries into
        ``queries_used`` (the token agents do, once per judged batch): moves ``learn``'s progress
        within an iteration. Nothing happens when no one listens."""
        report = getattr(self, "_learn_progress", None)
        if report is not None:
            report.batch_done()

    def _record(self, extra: dict[str, float]) -> None:
        row = self._log_row(extra)
        self.history.append(row)
        if self.logger is not None:
            for key, value in row.items():
                self.logger.record(key, value)
            self.logger.dump(step=self.queries_used)

    #: rank of one observation (a batch has one more leading axis): 1 for the matrix games' one-hot
    #: context, 2 for the token duel's ``(2, L)`` array.
    observation_rank: ClassVar[int] = 1

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[Any, None]:
        """SB3-style :meth:`act`: ``(action, None)`` for one observation; for a batch (one more
        leading axis, as a vectorised env gives) ``(actions, None)`` with an int64 array of actions."""
        obs = observation if isinstance(observation, (int, np.integer)) else np.asarray(observation)
        if isinstance(obs, np.ndarray) and obs.ndim == self.observation_rank + 1:
            actions = [self.act(row, deterministic=deterministic) for row in obs]
            return np.asarray(actions, dtype=np.int64), None
        return self.act(observation, deterministic=deterministic), None

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write a self-describing checkpoint atomically; returns the path written.

        ``.npz`` is appended when the path has no suffix. See :mod:`agents.checkpoint`.
        """
        return save_agent(self, path)
