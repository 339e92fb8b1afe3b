"""The agent API shared by the tabular nlhf-zoo agents: learning loop, metrics, acting, checkpoints.

An agent owns a log-policy ``log_pi`` of shape ``(C, K)`` over the game's contexts and responses and
improves it by its paper's iteration (:meth:`Agent._iteration`, the only method an algorithm must
write). Everything else is shared plumbing:

* ``learn(num_queries=None, num_iterations=None, callback=None) -> self`` runs iterations while the
  next one fits the budgets of this call (it never uses more than ``num_queries``: it stops before
  an iteration that would exceed it, :func:`agents.api.iterations_within_budget`) or until
  ``callback(agent)`` returns ``False``;
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
``game/exploitability``        ``max_pi' P_beta(pi' > pi) - 1/2`` (closed form, equations.md §2)
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

import json
import os
from typing import Any, ClassVar

import numpy as np

from agents.api import AgentBase, Callback, LearningInterrupted
from agents.checkpoint import (
    check_array,
    checkpoint_header,
    fail,
    history_arrays,
    is_int,
    read_history,
    set_rng,
)
from agents.config import AgentConfig, ConfigError, build_config
from agents.estimators import estimate_win_rates
from agents.updates import log_normalize, softmax
from nlhf_envs import solvers
from nlhf_envs.errors import CheckpointError
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


class Agent(AgentBase):
    """Base class of the tabular agents (see the module docstring and :mod:`agents.api`).

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
        self._init_common(config, seed, tensorboard_log)
        self.game = game
        self.rng = np.random.default_rng([self.seed, 0])
        self.act_rng = np.random.default_rng([self.seed, 1])
        self.l_ref = np.log(np.asarray(game.pi_ref, dtype=np.float64))
        self.log_pi = self._initial_log_policy()
        self._setup()

    # ------------------------------------------------------------------ to override
    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the agent's theory/default step on ``game`` (the value its
        config's ``None`` stands for); the convergence study and the docs read it from here."""
        raise NotImplementedError(f"{cls.__name__} has no default step rule")

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

    def _run_iteration(self) -> dict[str, float]:
        before = self.game.queries
        extra = self._iteration()
        self.queries_used += self.game.queries - before
        return extra

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

    def _log_row(self, extra: dict[str, float]) -> dict[str, float]:
        row = self.metrics()
        row.update({k: float(v) for k, v in extra.items()})
        return row

    def evaluate(self) -> dict[str, float]:
        """The exact game and policy metrics of the current policy (:meth:`metrics`)."""
        return self.metrics()

    def policy_table(self, context: int | None = None) -> np.ndarray:
        """The current policy's probabilities (the tabular policy; token agents have ``model``).

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

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_arrays(self, include_history: bool = True) -> dict[str, np.ndarray]:
        """The arrays of this agent's checkpoint (:mod:`agents.checkpoint` writes them).

        ``meta`` (JSON: header, game counters, generator states, scalar state, history keys), the
        game's arrays, ``state/<attr>`` for every array in :attr:`state_attrs` and, unless
        ``include_history`` is false, the history as a float64 table and a mask.
        """
        state: dict[str, Any] = {}
        scalars: dict[str, Any] = {}
        for attr in self.state_attrs:
            value = getattr(self, attr)
            if isinstance(value, np.ndarray):
                state[f"state/{attr}"] = value
            else:
                scalars[attr] = value
        history: dict[str, np.ndarray] = {}
        keys: list[str] = []
        if include_history:
            keys, values, present = history_arrays(self.history)
            history = {"history/values": values, "history/present": present}
        meta = {
            **checkpoint_header(self),
            "game_queries": self.game.queries,
            "game_beta": self.game.beta,
            "game_name": self.game.name,
            "rng": self.rng.bit_generator.state,
            "act_rng": self.act_rng.bit_generator.state,
            "scalars": scalars,
            "history_len": len(self.history),
            "history_keys": keys if include_history else None,
        }
        return {
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            "game/P": np.asarray(self.game.P),
            "game/pi_ref": np.asarray(self.game.pi_ref),
            "game/rho": np.asarray(self.game.rho),
            **state,
            **history,
        }

    @classmethod
    def from_checkpoint(
        cls,
        p: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        game: PreferenceGame | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
    ) -> Agent:
        """Rebuild an agent from a checkpoint's validated header and arrays (:func:`agents.load`).

        Every unpacked field is checked (the game arrays make a valid :class:`PreferenceGame`; state
        arrays match the game and the agent's freshly built state in dtype and shape and are
        finite).

        Raises:
            CheckpointError: naming ``p`` and the field.
        """
        try:
            config = build_config(cls.config_cls, meta["config"], source=p)
        except ConfigError as err:
            raise fail(p, "config", str(err)) from None
        P = arrays.get("game/P")
        if P is None or P.ndim != 3 or P.shape[1] != P.shape[2]:
            raise fail(p, "game/P", f"must be a (C, K, K) array; got {getattr(P, 'shape', None)}")
        C, K = P.shape[0], P.shape[1]
        P = check_array(p, "game/P", P, None, np.float64)
        pi_ref = check_array(
            p, "game/pi_ref", arrays.get("game/pi_ref", np.empty(0)), (C, K), np.float64
        )
        rho = check_array(p, "game/rho", arrays.get("game/rho", np.empty(0)), (C,), np.float64)
        beta = meta.get("game_beta")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise fail(p, "game_beta", f"must be a number; got {beta!r}")
        if not isinstance(meta.get("game_name"), str):
            raise fail(p, "game_name", f"must be a string; got {meta.get('game_name')!r}")
        game_queries = meta.get("game_queries")
        if not is_int(game_queries) or game_queries < 0:
            raise fail(p, "game_queries", f"must be a non-negative integer; got {game_queries!r}")
        try:
            stored = PreferenceGame(P, pi_ref, beta, rho, name=meta["game_name"])
        except ValueError as err:
            raise fail(p, "game", str(err)) from None
        if game is None:
            game = stored
            game.queries = game_queries
        elif not (
            np.array_equal(game.P, stored.P)
            and np.array_equal(game.pi_ref, stored.pi_ref)
            and np.array_equal(game.rho, stored.rho)
            and game.beta == stored.beta
        ):
            raise CheckpointError(
                f"{p!r}: the given game differs from the game stored in the checkpoint"
            )
        history = read_history(p, meta, arrays)
        scalars = meta.get("scalars")
        if not isinstance(scalars, dict):
            raise fail(p, "scalars", f"must be a mapping; got {scalars!r}")
        agent = cls(game, config, seed=int(meta["seed"]), tensorboard_log=tensorboard_log)
        agent.queries_used = int(meta["queries_used"])
        agent.num_iterations = int(meta["num_iterations"])
        agent.history = history
        set_rng(p, "rng", agent.rng, meta.get("rng"))
        set_rng(p, "act_rng", agent.act_rng, meta.get("act_rng"))
        for attr in cls.state_attrs:
            key = f"state/{attr}"
            fresh = getattr(agent, attr)
            if key in arrays:
                arr = arrays[key]
                if attr == "log_pi":
                    value = check_array(p, key, arr, game.shape, np.float64)
                elif isinstance(fresh, np.ndarray):
                    # same dtype and rank as the fresh state; a leading length may vary (a pool of
                    # snapshots, an optimiser state that is empty before the first update)
                    same = arr.ndim == fresh.ndim and arr.shape[1:] == fresh.shape[1:]
                    value = check_array(
                        p, key, arr, arr.shape if same else fresh.shape, fresh.dtype
                    )
                else:  # created lazily (e.g. OMWU's previous win rates): one value per (x, y)
                    value = check_array(p, key, arr, game.shape, np.float64)
                try:
                    setattr(agent, attr, value)
                except ValueError as err:
                    raise fail(p, key, str(err)) from None
            elif attr in scalars:
                value = scalars[attr]
                if isinstance(fresh, np.ndarray) or not (
                    value is None or isinstance(value, (int, float, str))
                ):
                    raise fail(p, key, f"must be an array like the agent's {attr}; got {value!r}")
                setattr(agent, attr, value)
            else:
                raise CheckpointError(f"{p!r}: missing state {attr!r} of agent {meta['name']!r}")
        return agent

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(game={self.game!r}, mode={self.config.mode!r}, "
            f"iterations={self.num_iterations}, queries={self.queries_used})"
        )
