"""PettingZoo environment that plays a (contextual) preference game.

Description:
    Two players answer the same context simultaneously; a judge (the preference matrix) says which
    answer it prefers. Each round draws a context ``x ~ rho``; both players pick a response
    ``y0, y1`` in ``{0, ..., K - 1}``; the outcome is ``o ~ Bernoulli(P_x[y0, y1])``. This is the
    symmetric constant-sum game of Nash learning from human feedback (Munos et al. 2024). The KL
    regularisation toward ``pi_ref`` is not paid by the environment: it belongs to the learner's
    objective (as in RLHF practice); the game's ``beta`` and ``pi_ref`` ride along in ``env.game`` for
    agents and exact metrics.

Agents:
    ``player_0`` and ``player_1``.

Action Space:
    ``Discrete(K)`` for both players. Any other value (out of range, non-integer, a missing
    player) raises ``ValueError``.

Observation Space:
    ``Box(0, 1, shape=(C,), float32)``: the one-hot encoding of the current context (``C = 1`` for a
    matrix game, whose observation is always ``[1.0]``). Both players see the same observation.

Rewards:
    With ``p = P_x[y0, y1]`` and ``o ~ Bernoulli(p)`` (see :mod:`nlhf_envs.rewards`):
    ``reward_mode="outcome"`` (default): ``player_0`` gets ``o``, ``player_1`` gets ``1 - o``;
    ``"centered"``: ``o - 1/2`` and ``1/2 - o``; ``"probability"``: ``p`` and ``1 - p``.
    ``infos[agent]`` carry ``prob`` (the exact probability that this agent's answer is preferred),
    ``context`` (the context the round was played in), ``opponent_action`` and ``round``.

Episode End:
    Never terminates; truncates (both players) after ``num_rounds`` rounds.

Environment arguments:
    ``game``: a :class:`~nlhf_envs.game.PreferenceGame` or a family name of
    :data:`nlhf_envs.families.FAMILIES` (default ``"rps"``); ``num_rounds`` (default 1);
    ``reward_mode``; ``render_mode`` (``None``, ``"ansi"`` returns the round as text,
    ``"human"`` prints it, ``"rgb_array"`` returns a frame of the round on ``P_x``); ``max_cycles``: PettingZoo's name for
    ``num_rounds`` (when given it overrides it); any other keyword goes to the family factory
    (``num_actions``, ``seed``, ``num_contexts``, ``beta``, ...).

Exact Solution:
    ``nlhf_envs.solvers.regularized_nash(env.game)``.

References:
    Munos et al., "Nash Learning from Human Feedback", ICML 2024; Tiapkin et al., "Accelerating Nash
    Learning from Human Feedback via Mirror Prox", 2025.

Version History:
    * v0: initial release. The AEC form (``env()``, ``raw_env()``) became a native ``AECEnv``
      instead of ``parallel_to_aec`` of the parallel env, with the same trajectories (no
      behaviour change, so no version bump).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import wrappers

from nlhf_envs.families import make_game
from nlhf_envs.game import GameValidationError, PreferenceGame, check_int
from nlhf_envs.rendering import render_text
from nlhf_envs.rewards import check_reward_mode

__all__ = [
    "ContextGameEnvBase",
    "PreferenceGameEnv",
    "PreferenceGameAECEnv",
    "parallel_env",
    "raw_env",
    "env",
    "check_actions",
    "pair_rewards",
]

AGENTS = ("player_0", "player_1")


def check_actions(actions: dict[str, Any], agents: list[str], num_actions: int) -> list[int]:
    """Validate a joint action dict and return the actions in agent order.

    Raises:
        ValueError: if a player's action is missing, not an integer, or outside ``[0, num_actions)``.
    """
    if not isinstance(actions, dict):
        raise ValueError(
            f"actions must be a dict mapping agent -> action; got {type(actions).__name__}"
        )
    extra = set(actions) - set(agents)
    if extra:
        raise ValueError(f"actions given for unknown or finished agent(s) {sorted(extra)}")
    out = []
    for agent in agents:
        if agent not in actions:
            raise ValueError(f"missing action for {agent}; both players act every round")
        a = actions[agent]
        arr = np.asarray(a)
        if arr.shape not in ((), (1,)) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"illegal action {a!r} for {agent}: expected an integer in [0, {num_actions})"
            )
        a_int = int(arr.reshape(()))
        if not 0 <= a_int < num_actions:
            raise ValueError(
                f"illegal action {a_int} for {agent}: expected an integer in [0, {num_actions})"
            )
        out.append(a_int)
    return out


def pair_rewards(mode: str, p: float, o: float) -> tuple[float, float]:
    """The two players' rewards of one duel with probability ``p`` and outcome ``o`` in reward mode
    ``mode`` (:func:`nlhf_envs.rewards.duel_rewards` on Python floats: the same float64
    arithmetic, without the arrays)."""
    if mode == "outcome":
        return o, 1.0 - o
    if mode == "centered":
        return o - 0.5, 0.5 - o
    return p, 1.0 - p


def resolve_game(game: PreferenceGame | str, game_kwargs: dict[str, Any]) -> PreferenceGame:
    """``game`` itself, or the family ``game`` built with ``game_kwargs``.

    Raises:
        GameValidationError: for family arguments given with a game, or a ``game`` of another type.
    """
    if isinstance(game, str):
        return make_game(game, **game_kwargs)
    if isinstance(game, PreferenceGame):
        if game_kwargs:
            raise GameValidationError(
                f"game family arguments {sorted(game_kwargs)} given with a PreferenceGame instance"
            )
        return game
    raise GameValidationError(
        f"game must be a PreferenceGame or a family name; got {type(game).__name__}"
    )


class ContextGameEnvBase(ParallelEnv):
    """What the parallel matrix-game envs share (:class:`PreferenceGameEnv` and the n-player
    :class:`~nlhf_envs.multiplayer.MultiplayerPreferenceGameEnv`): the game and its arguments, the
    one-hot context observation of every seat, the context draws and ``reset``."""

    metadata: dict[str, Any]

    def _init_game(
        self,
        agents: list[str],
        game: PreferenceGame | str,
        num_rounds: int,
        reward_mode: str,
        render_mode: str | None,
        max_cycles: int | None,
        game_kwargs: dict[str, Any],
    ) -> None:
        """Check the arguments and set the game, the seats ``agents`` and their spaces.

        Raises:
            GameValidationError: for an unknown family or render mode or a bad number of rounds.
            ValueError: for an unknown reward mode.
        """
        game = resolve_game(game, game_kwargs)
        if max_cycles is not None:
            num_rounds = check_int("max_cycles", max_cycles, 1)
        check_int("num_rounds", num_rounds, 1)
        modes = self.metadata["render_modes"]
        if render_mode is not None and render_mode not in modes:
            names = ", ".join(repr(m) for m in modes[:-1])
            raise GameValidationError(
                f"render_mode must be None, {names} or {modes[-1]!r}; got {render_mode!r}"
            )
        self.game: PreferenceGame = game
        self.num_rounds = int(num_rounds)
        self.reward_mode = check_reward_mode(reward_mode)
        self.render_mode = render_mode
        self.possible_agents = list(agents)
        self.agents: list[str] = []
        C, K = game.shape
        self._C, self._K = C, K
        self._eye = np.eye(C, dtype=np.float32)
        obs_space = spaces.Box(0.0, 1.0, shape=(C,), dtype=np.float32)
        self.observation_spaces = {a: obs_space for a in self.possible_agents}
        #: the space of :meth:`state` (PettingZoo's convention for envs with a global state)
        self.state_space = obs_space
        self.action_spaces = {a: spaces.Discrete(K) for a in self.possible_agents}
        self.np_random, _ = seeding.np_random(None)
        self._round = 0
        self._context = 0
        self._last: dict[str, Any] | None = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def _draw_context(self) -> None:
        if self._C == 1:
            self._context = 0
        else:
            self._context = int(self.np_random.choice(self._C, p=self.game.rho))

    def _observe(self) -> np.ndarray:
        return self._eye[self._context].copy()

    def state(self) -> np.ndarray:
        """Global state: the one-hot current context (what every player observes)."""
        return self._observe()

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self.agents = list(self.possible_agents)
        self._round = 0
        self._last = None
        self._draw_context()
        obs = {a: self._observe() for a in self.agents}
        infos = {a: {"context": self._context} for a in self.agents}
        return obs, infos

    def close(self) -> None:
        pass


class PreferenceGameEnv(ContextGameEnvBase):
    """Parallel PettingZoo environment of a preference game (see the module docstring)."""

    metadata = {
        "name": "nlhf_matrix_game_v0",
        "render_modes": ["ansi", "human", "rgb_array"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        game: PreferenceGame | str = "rps",
        num_rounds: int = 1,
        reward_mode: str = "outcome",
        render_mode: str | None = None,
        max_cycles: int | None = None,
        **game_kwargs: Any,
    ) -> None:
        self._init_game(
            list(AGENTS), game, num_rounds, reward_mode, render_mode, max_cycles, game_kwargs
        )

    def _play(self, a0: int, a1: int) -> tuple[int, float, float, float, bool]:
        """Resolve one round on validated actions: ``(context, p, r0, r1, done)``.

        Draws the outcome and, unless the episode ends, the next context from ``np_random`` (the
        one code path of the parallel and the AEC env, so both replay the same seeded episode).
        """
        x = self._context
        p, o = self.game.duel(x, a0, a1, self.np_random)  # one counted query
        r0, r1 = pair_rewards(self.reward_mode, p, o)
        self._round += 1
        self._last = {"context": x, "actions": (a0, a1), "prob": p, "outcome": o}
        done = self._round >= self.num_rounds
        if not done:
            self._draw_context()
        return x, p, r0, r1, done

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        a0, a1 = check_actions(actions, self.agents, self.game.num_actions)
        x, p, r0, r1, done = self._play(a0, a1)
        rewards = {"player_0": r0, "player_1": r1}
        infos = {
            "player_0": {"prob": p, "context": x, "opponent_action": a1, "round": self._round},
            "player_1": {
                "prob": 1.0 - p,
                "context": x,
                "opponent_action": a0,
                "round": self._round,
            },
        }
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        obs = {a: self._observe() for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: return the last round as text; ``"human"``: print it; ``"rgb_array"``: a
        ``(360, 480, 3)`` frame of the round on the context's preference matrix
        (:func:`nlhf_envs.rendering.matrix_frame`); ``None``: nothing."""
        if self.render_mode == "rgb_array":
            from nlhf_envs.rendering import matrix_frame

            last = self._last
            ctx = self._context if last is None else last["context"]
            title = f"{self.game.name} context {ctx}, round {self._round}/{self.num_rounds}"
            return matrix_frame(
                self.game.P[ctx],
                None if last is None else last["actions"],
                None if last is None else last["outcome"],
                title,
            )
        return render_text(self.render_mode, self._render_text)

    def _render_text(self) -> str:
        header = (
            f"{self.game.name} (K={self.game.num_actions}) round {self._round}/{self.num_rounds}"
        )
        if self._last is None:
            return f"{header}: context {self._context}, no move yet"
        a0, a1 = self._last["actions"]
        return (
            f"{header}: context {self._last['context']} | player_0 -> {a0}, player_1 -> {a1} | "
            f"P(player_0 preferred) = {self._last['prob']:.3f} | outcome "
            f"{'player_0' if self._last['outcome'] else 'player_1'}"
        )


class PreferenceGameAECEnv(AECEnv):
    """Native AEC PettingZoo environment of a preference game (see the module docstring).

    ``player_0`` then ``player_1`` choose their answers; the round is resolved (by the same code as
    :class:`PreferenceGameEnv`, whose random stream it shares) when ``player_1`` acts. Observations,
    rewards, ``_cumulative_rewards``, infos and the order of the final dead steps are those of
    ``parallel_to_aec(parallel_env(...))``, so the same seed and actions give the same trajectory;
    there is just no generic conversion layer in between. Takes the arguments of
    :class:`PreferenceGameEnv`; ``game``, ``num_rounds``, ``reward_mode`` and ``np_random`` are
    those of the parallel env it holds.
    """

    metadata = {**PreferenceGameEnv.metadata}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._par = PreferenceGameEnv(**kwargs)
        self.game: PreferenceGame = self._par.game
        self.render_mode = self._par.render_mode
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._obs_spaces = self._par.observation_spaces
        self._act_spaces = self._par.action_spaces
        if hasattr(self._par, "state_space"):  # as parallel_to_aec does
            self.state_space = self._par.state_space
        self._pending: Any = None

    @property
    def num_rounds(self) -> int:
        """Rounds per episode."""
        return self._par.num_rounds

    @property
    def reward_mode(self) -> str:
        """How outcomes become rewards (see :mod:`nlhf_envs.rewards`)."""
        return self._par.reward_mode

    @property
    def np_random(self) -> np.random.Generator:
        """The generator of contexts and outcomes (seeded by ``reset(seed=...)``)."""
        return self._par.np_random

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self._observations, self.infos = self._par.reset(seed=seed, options=options)
        self.agents = list(AGENTS)
        self.agent_selection = "player_0"
        self.terminations = {"player_0": False, "player_1": False}
        self.truncations = {"player_0": False, "player_1": False}
        self.rewards = {"player_0": 0, "player_1": 0}
        self._cumulative_rewards = {"player_0": 0, "player_1": 0}
        self._skip_agent_selection = None
        self._pending = None

    def observe(self, agent: str) -> np.ndarray:
        return self._observations[agent]

    def state(self) -> np.ndarray:
        """Global state: the one-hot current context (what both players observe)."""
        return self._par.state()

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        if agent == "player_0":
            self._pending = action
            self.rewards = {"player_0": 0, "player_1": 0}
            self.agent_selection = "player_1"
            return
        a0, a1 = self._pending, action
        K = self._par._K
        if not (type(a0) is int and type(a1) is int and 0 <= a0 < K and 0 <= a1 < K):
            a0, a1 = check_actions({"player_0": a0, "player_1": a1}, list(AGENTS), K)
        par = self._par
        x, p, r0, r1, done = par._play(a0, a1)
        obs = par._eye[par._context]
        self._observations = {"player_0": obs.copy(), "player_1": obs.copy()}
        self.rewards = {"player_0": r0, "player_1": r1}
        self._cumulative_rewards = {"player_0": r0, "player_1": r1}
        if done:
            self.truncations = {"player_0": True, "player_1": True}
        rnd = par._round
        self.infos = {
            "player_0": {"prob": p, "context": x, "opponent_action": a1, "round": rnd},
            "player_1": {"prob": 1.0 - p, "context": x, "opponent_action": a0, "round": rnd},
        }
        if done:
            par.agents = []
            self._deads_step_first()
        else:
            self.agent_selection = "player_0"

    def render(self) -> str | None:
        """See :meth:`PreferenceGameEnv.render`."""
        return self._par.render()

    def close(self) -> None:
        self._par.close()


def parallel_env(**kwargs: Any) -> PreferenceGameEnv:
    """Build the parallel environment (see :class:`PreferenceGameEnv` for the arguments)."""
    return PreferenceGameEnv(**kwargs)


def raw_env(**kwargs: Any) -> PreferenceGameAECEnv:
    """The native AEC environment (same trajectories as ``parallel_to_aec(parallel_env(...))``)."""
    return PreferenceGameAECEnv(**kwargs)


def env(**kwargs: Any):
    """The AEC environment with PettingZoo's standard wrappers (order enforcing, bounds checks)."""
    aec = raw_env(**kwargs)
    aec = wrappers.AssertOutOfBoundsWrapper(aec)
    return wrappers.OrderEnforcingWrapper(aec)
