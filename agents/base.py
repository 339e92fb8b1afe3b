"""The agent API shared by the tabular nlhf-zoo agents: learning loop, metrics, acting, checkpoints.

An agent owns a log-policy ``log_pi`` of shape ``(C, K)`` over the game's contexts and responses and
improves it by its paper's iteration (:meth:`Agent._iteration`, the only method an algorithm must
write). Everything else is shared plumbing:

* ``learn(num_queries=None, num_iterations=None, callback=None) -> self`` runs iterations until a
  budget of this call is spent (checked between iterations, so it stops at the first iteration
  boundary at or past ``num_queries``) or ``callback(agent)`` returns ``False``;
* ``policy(context=None)`` returns probabilities: ``(K,)`` for a matrix game or one context,
  ``(C, K)`` for all contexts of a contextual game;
* ``act(observation, deterministic=False)`` maps the matrix environment's observation (the float32
  one-hot context, ``[1.0]`` for a matrix game) or a context index to a response, sampling with the
  agent's own acting generator (separate from the learning generator, so playing does not change
  what ``learn`` does next);
* ``save(path)`` / :func:`agents.load` round-trip the agent exactly (see :mod:`agents.checkpoint`).

Metrics (``history`` and TensorBoard; every record's step is ``queries_used``):

============================== =====================================================================
name                           meaning
============================== =====================================================================
``game/queries``               preference queries used so far by this agent (exact evaluations of a
                               win-rate vector in ``exact`` mode, Bernoulli outcomes otherwise)
``game/kl_to_nash``            ``E_x KL(pi*_beta || pi)``, the quantity Nash-MP's theorem bounds
``game/exploitability``        ``max_pi' P_beta(pi' > pi) - 1/2`` (closed form, algorithms.md §2)
``game/span_to_nash``          span semi-norm of ``log pi - log pi*_beta``
``game/unreg_exploitability``  ``E_x max_y g_pi(y|x) - 1/2``, exploitability without regularisation
``policy/entropy``             Shannon entropy of ``pi`` in nats (``rho``-averaged)
``policy/kl_ref``              ``E_x KL(pi || pi_ref)``
``time/iterations``            iterations done so far
``loss/...``                   agent-specific training losses (``loss/ipo``: Online IPO, pg)
============================== =====================================================================

The game metrics use the exact solution :func:`nlhf_envs.solvers.regularized_nash` and never count
queries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from agents.config import AgentConfig, ConfigError
from agents.estimators import estimate_win_rates
from agents.logger import make_logger
from agents.updates import log_normalize, softmax
from nlhf_envs import solvers
from nlhf_envs.game import PreferenceGame

__all__ = ["Agent", "METRIC_NAMES", "Callback", "LearningInterrupted"]

#: Every metric name an agent records in ``history`` (agents may add ``loss/...`` names).
METRIC_NAMES: tuple[str, ...] = (
    "game/queries",
    "game/kl_to_nash",
    "game/exploitability",
    "game/span_to_nash",
    "game/unreg_exploitability",
    "policy/entropy",
    "policy/kl_ref",
    "time/iterations",
)

#: ``callback(agent)`` is called after every iteration; returning ``False`` stops ``learn``.
Callback = Callable[["Agent"], "bool | None"]


def check_learn_args(
    num_queries: int | None, num_iterations: int | None, callback: Callable | None
) -> None:
    """Validate the budgets and callback of ``learn`` (shared by every agent kind).

    Raises:
        ValueError: if neither budget is given or a budget is not a non-negative integer.
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


def iterations_within_budget(
    agent: Any,
    num_queries: int | None,
    num_iterations: int | None,
    callback: Callable | None,
) -> Iterator[None]:
    """The budget loop of every agent's ``learn``: yields once per iteration to run.

    Validates the arguments (:func:`check_learn_args`), then yields while this call has used fewer
    than ``num_queries`` queries (``agent.queries_used``) and fewer than ``num_iterations``
    iterations (``agent.num_iterations``, which the loop body increments); after each iteration it
    stops if ``callback(agent)`` returns ``False``.

    Ctrl-C (SIGINT, main thread) during an iteration is deferred: the iteration and its callback
    finish, then :class:`LearningInterrupted` (a ``KeyboardInterrupt``) is raised at the boundary,
    so the agent never holds a half-done iteration. A second Ctrl-C interrupts at once.
    """
    check_learn_args(num_queries, num_iterations, callback)
    from agents.runs import DeferredInterrupt

    q0, i0 = agent.queries_used, agent.num_iterations
    with DeferredInterrupt() as interrupt:
        while (num_iterations is None or agent.num_iterations - i0 < num_iterations) and (
            num_queries is None or agent.queries_used - q0 < num_queries
        ):
            yield
            if callback is not None and callback(agent) is False:
                return
            if interrupt.requested:
                raise LearningInterrupted(agent)


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


class Agent:
    """Base class of the tabular agents (see the module docstring for the API).

    Args:
        game: the preference game to learn on.
        config: the agent's config dataclass (default: its defaults).
        seed: seed of the agent's generators; ``None`` draws fresh entropy (recorded in ``seed``, so
            a saved agent still continues reproducibly).
        tensorboard_log: folder for TensorBoard runs; ``None`` disables TensorBoard.

    Attributes:
        game: the game.
        config: the resolved config.
        seed: the seed actually used.
        queries_used: preference queries used so far.
        num_iterations: iterations done so far.
        history: one metrics dict per logged iteration (every ``config.log_every``-th).
        logger: the SB3 logger, or ``None``.
        log_pi: ``(C, K)`` log-probabilities of the current policy.
        rng: the learning generator.
    """

    #: registry name (set by :func:`agents.register_agent`).
    name: ClassVar[str] = ""
    #: ``"matrix"`` for the tabular agents.
    kind: ClassVar[str] = "matrix"
    #: the config dataclass of the agent.
    config_cls: ClassVar[type[AgentConfig]] = AgentConfig
    #: names of the array/scalar attributes that make up the learning state (saved in checkpoints).
    state_attrs: ClassVar[tuple[str, ...]] = ("log_pi",)

    def __init__(
        self,
        game: PreferenceGame,
        config: AgentConfig | None = None,
        *,
        seed: int | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(game, PreferenceGame):
            raise TypeError(f"game must be a PreferenceGame; got {type(game).__name__}")
        if config is None:
            config = self.config_cls()
        if not isinstance(config, self.config_cls):
            raise TypeError(
                f"config must be a {self.config_cls.__name__}; got {type(config).__name__}"
            )
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int or None; got {seed!r}")
        self.game = game
        self.config = config
        self.seed = int(seed)
        self.rng = np.random.default_rng([self.seed, 0])
        self.act_rng = np.random.default_rng([self.seed, 1])
        self.queries_used = 0
        self.num_iterations = 0
        self.history: list[dict[str, float]] = []
        self.logger: Any = None
        if tensorboard_log is not None:
            self.logger = make_logger(tensorboard_log, self.name or type(self).__name__)
        self.l_ref = np.log(np.asarray(game.pi_ref, dtype=np.float64))
        self.log_pi = self._initial_log_policy()
        self._setup()

    # ------------------------------------------------------------------ to override
    def _setup(self) -> None:
        """Create algorithm-specific state (listed in ``state_attrs``). Default: nothing."""

    def _iteration(self) -> dict[str, float]:
        """One iteration of the algorithm; returns extra metrics (e.g. ``loss/...``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared plumbing
    @property
    def beta(self) -> float:
        """The game's regularisation strength ``beta``."""
        return self.game.beta

    def _initial_log_policy(self) -> np.ndarray:
        C, K = self.game.shape
        init = self.config.init
        if init == "ref":
            return log_normalize(self.l_ref.copy())
        if init == "uniform":
            return np.full((C, K), -np.log(K))
        return log_normalize(self.rng.standard_normal((C, K)))

    def win_rates(self, pi_opp: np.ndarray) -> np.ndarray:
        """``g_{pi_opp}``, shape ``(C, K)``: exact (1 query) or estimated (``batch_size`` queries).

        ``exact`` mode calls the counting oracle :meth:`PreferenceGame.win_rates`; the other modes
        use :func:`agents.estimators.estimate_win_rates` with the agent's generator.
        """
        if self.config.mode == "exact":
            return np.reshape(self.game.win_rates(pi_opp), self.game.shape)
        return estimate_win_rates(
            self.game, pi_opp, self.config.batch_size, self.rng, stratified=self.config.stratified
        )

    def learn(
        self,
        num_queries: int | None = None,
        num_iterations: int | None = None,
        callback: Callback | None = None,
    ) -> Agent:
        """Run iterations until a budget of this call is spent or the callback says stop.

        Args:
            num_queries: stop at the first iteration boundary where at least this many queries have
                been used by this call.
            num_iterations: stop after this many iterations of this call.
            callback: ``callback(agent)`` after every iteration; returning ``False`` stops.

        Returns:
            ``self``.

        Raises:
            ValueError: if neither budget is given or a budget is negative.
        """
        for _ in iterations_within_budget(self, num_queries, num_iterations, callback):
            before = self.game.queries
            extra = self._iteration()
            self.queries_used += self.game.queries - before
            self.num_iterations += 1
            every = self.config.log_every
            if every and self.num_iterations % every == 0:
                self._record(extra)
        return self

    def metrics(self) -> dict[str, float]:
        """The game and policy metrics of the current policy (no queries counted)."""
        game = self.game
        pi = softmax(self.log_pi)
        nash = solvers.regularized_nash(game)
        g = game.win_rates_all(pi)
        return {
            "game/queries": float(self.queries_used),
            "game/kl_to_nash": solvers.kl_to_nash(game, pi, nash),
            "game/exploitability": solvers.exploitability(game, pi),
            "game/span_to_nash": solvers.span_to_nash(game, pi, nash),
            "game/unreg_exploitability": float(game.rho @ g.max(axis=1) - 0.5),
            "policy/entropy": solvers.entropy(game, pi),
            "policy/kl_ref": float(game.rho @ solvers.kl(pi, game.pi_ref)),
            "time/iterations": float(self.num_iterations),
        }

    def _record(self, extra: dict[str, float]) -> None:
        row = self.metrics()
        row.update({k: float(v) for k, v in extra.items()})
        self.history.append(row)
        if self.logger is not None:
            for key, value in row.items():
                self.logger.record(key, value)
            self.logger.dump(step=self.queries_used)

    def policy(self, context: int | None = None) -> np.ndarray:
        """The current policy's probabilities.

        Args:
            context: a context index; ``None`` means all contexts.

        Returns:
            ``(K,)`` for one context or a matrix game, else ``(C, K)`` (a fresh array).
        """
        pi = softmax(self.log_pi)
        if context is None:
            return self.game.squeeze(pi).copy()
        C = self.game.num_contexts
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)):
            raise TypeError(f"context must be an int or None; got {context!r}")
        if not 0 <= context < C:
            raise ValueError(f"context must lie in [0, {C}); got {context}")
        return pi[int(context)].copy()

    def _context_of(self, observation: Any) -> int:
        C = self.game.num_contexts
        if isinstance(observation, (int, np.integer)) and not isinstance(observation, bool):
            ctx = int(observation)
            if not 0 <= ctx < C:
                raise ValueError(f"context index must lie in [0, {C}); got {ctx}")
            return ctx
        obs = np.asarray(observation, dtype=np.float64)
        if obs.shape != (C,):
            raise ValueError(
                f"observation must be the one-hot context of shape ({C},) (or a context index); "
                f"got shape {obs.shape}"
            )
        ctx = int(np.argmax(obs))
        if not (obs[ctx] == 1.0 and np.count_nonzero(obs) == 1):
            raise ValueError(f"observation must be one-hot; got {observation!r}")
        return ctx

    def act(self, observation: Any, deterministic: bool = False) -> int:
        """A response for the observed context.

        Args:
            observation: the matrix env's observation (float one-hot context of shape ``(C,)``) or
                a context index.
            deterministic: return the most likely response instead of sampling.

        Returns:
            A response in ``[0, K)``.
        """
        ctx = self._context_of(observation)
        row = self.log_pi[ctx]
        if deterministic:
            return int(np.argmax(row))
        return int(self.act_rng.choice(row.shape[0], p=softmax(row)))

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[int, None]:
        """SB3-style alias of :meth:`act`: returns ``(action, None)``."""
        return self.act(observation, deterministic=deterministic), None

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write a self-describing checkpoint atomically; returns the path written.

        ``.npz`` is appended when the path has no suffix. See :mod:`agents.checkpoint`.
        """
        from agents.checkpoint import save_agent

        return save_agent(self, path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(game={self.game!r}, mode={self.config.mode!r}, "
            f"iterations={self.num_iterations}, queries={self.queries_used})"
        )
