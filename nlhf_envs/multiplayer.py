"""PettingZoo environment of the n-player preference game (Multiplayer NLHF).

Description:
    ``n >= 2`` players answer the same context simultaneously; every pair of answers is judged by
    the preference matrix, and each player is paid its mean preference against the others. Each
    round draws a context ``x ~ rho``; player ``i`` picks a response ``y_i`` in ``{0, ..., K - 1}``;
    for every pair ``i < j`` (in lexicographic order) the outcome ``o_ij ~ Bernoulli(P_x[y_i, y_j])``
    is drawn (one counted preference query each, ``n (n - 1) / 2`` per round). This is the n-player
    game of Multiplayer Nash Preference Optimization (Wu et al. 2025), in which every policy
    competes against a population of opponents; with ``n = 2`` it is exactly the two-player game
    of :mod:`nlhf_envs.matrix_game` (the same random draws, rewards, observations and infos). As
    there, the KL regularisation toward ``pi_ref`` belongs to the learner's objective; ``beta`` and
    ``pi_ref`` ride along in ``env.game``.

Agents:
    ``player_0``, ..., ``player_{n-1}``.

Action Space:
    ``Discrete(K)`` for every player. Any other value (out of range, non-integer, a missing
    player) raises ``ValueError``.

Observation Space:
    ``Box(0, 1, shape=(C,), float32)``: the one-hot encoding of the current context (``[1.0]`` in a
    matrix game). Every player sees the same observation; :meth:`MultiplayerPreferenceGameEnv.state`
    returns it too.

Rewards:
    Pair ``i < j`` has ``p_ij = P_x[y_i, y_j]`` and ``o_ij ~ Bernoulli(p_ij)``; its pairwise
    rewards are those of the two-player game (:mod:`nlhf_envs.rewards`): ``(o_ij, 1 - o_ij)`` for
    ``reward_mode="outcome"`` (default), ``(o_ij - 1/2, 1/2 - o_ij)`` for ``"centered"`` and
    ``(p_ij, 1 - p_ij)`` for ``"probability"``. Player ``i`` receives the mean of its pairwise
    rewards over the ``n - 1`` others,

        r_i = 1/(n - 1) sum_{j != i} r_ij,

    so the game is constant-sum (total ``n/2`` in the outcome and probability modes, 0 centred) and
    ``E[r_i] = 1/(n - 1) sum_{j != i} P(y_i > y_j | x)`` in the outcome mode: the multiplayer
    preference of Wu et al. ``infos[agent]`` carry ``prob`` (the mean over the others of the exact
    probability that this agent's answer is preferred), ``context``, ``round`` and
    ``opponent_actions`` (the other players' actions, in seat order); with two players also
    ``opponent_action`` (the one opponent's action, the two-player env's key).

Episode End:
    Never terminates; truncates (every player) after ``num_rounds`` rounds.

Environment arguments:
    ``num_players`` (default 3, at least 2); ``game``: a :class:`~nlhf_envs.game.PreferenceGame`
    or a family name of :data:`nlhf_envs.families.FAMILIES` (default ``"rps"``); ``num_rounds``
    (default 1); ``reward_mode``; ``render_mode`` (``None``, ``"ansi"`` returns the round as text,
    ``"human"`` prints it); ``max_cycles``: PettingZoo's name for ``num_rounds`` (when given it
    overrides it); any other keyword goes to the family factory (``num_actions``, ``seed``,
    ``num_contexts``, ``beta``, ...).

Exact Solution:
    The symmetric profile in which every player plays ``nlhf_envs.solvers.regularized_nash(game)``
    is a Nash equilibrium of the beta-regularised n-player game (the payoff is an average of
    two-player payoffs); :func:`nlhf_envs.solvers.multiplayer_duality_gap` is zero there.

References:
    Wu et al., "Multiplayer Nash Preference Optimization", arXiv 2509.23102, 2025; Munos et al.,
    "Nash Learning from Human Feedback", ICML 2024.

Version History:
    * v0: initial release (the matrix and contextual families; the n-player token duel is
      :mod:`nlhf_envs.text.multiplayer`, ``nlhf/MultiTokenDuel-v0``).
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils import parallel_to_aec, wrappers

from nlhf_envs.game import PreferenceGame, check_int
from nlhf_envs.matrix_game import ContextGameEnvBase, check_actions, pair_rewards
from nlhf_envs.rendering import render_text

__all__ = ["MultiplayerPreferenceGameEnv", "parallel_env", "raw_env", "env", "seat_names"]


def seat_names(num_players: int) -> list[str]:
    """``["player_0", ..., "player_{n-1}"]`` for ``n = num_players``."""
    return [f"player_{i}" for i in range(num_players)]


class MultiplayerPreferenceGameEnv(ContextGameEnvBase):
    """Parallel PettingZoo environment of the n-player preference game (see the module docstring).

    Args:
        num_players: number of seats ``n >= 2``.
        game: a :class:`PreferenceGame` or a family name.
        num_rounds: rounds per episode (``>= 1``).
        reward_mode: ``"outcome"``, ``"centered"`` or ``"probability"``.
        render_mode: ``None``, ``"ansi"`` or ``"human"``.
        max_cycles: PettingZoo's name for ``num_rounds`` (overrides it when given).
        **game_kwargs: arguments of the family factory when ``game`` is a name.

    Raises:
        GameValidationError: for a bad number of players or rounds, an unknown family or render mode.
    """

    metadata = {
        "name": "nlhf_multiplayer_game_v0",
        "render_modes": ["ansi", "human"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        num_players: int = 3,
        game: PreferenceGame | str = "rps",
        num_rounds: int = 1,
        reward_mode: str = "outcome",
        render_mode: str | None = None,
        max_cycles: int | None = None,
        **game_kwargs: Any,
    ) -> None:
        n = check_int("num_players", num_players, 2)
        self.num_players = n
        self._init_game(
            seat_names(n), game, num_rounds, reward_mode, render_mode, max_cycles, game_kwargs
        )
        #: the pairs ``(i, j)``, ``i < j``, in the order their duels are drawn
        self.pairs: tuple[tuple[int, int], ...] = tuple(
            (i, j) for i in range(n) for j in range(i + 1, n)
        )

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        if isinstance(actions, dict):
            missing = [a for a in self.agents if a not in actions]
            if missing:
                raise ValueError(
                    f"missing action for {', '.join(missing)}; every player acts every round"
                )
        acts = check_actions(actions, self.agents, self._K)
        n, x = self.num_players, self._context
        rewards = [0.0] * n
        probs = [0.0] * n
        outcomes: dict[tuple[int, int], float] = {}
        for i, j in self.pairs:
            p, o = self.game.duel(x, acts[i], acts[j], self.np_random)  # one counted query
            ri, rj = pair_rewards(self.reward_mode, p, o)
            rewards[i] += ri
            rewards[j] += rj
            probs[i] += p
            probs[j] += 1.0 - p
            outcomes[(i, j)] = o
        scale = float(n - 1)
        self._round += 1
        self._last = {"context": x, "actions": tuple(acts), "outcomes": outcomes}
        done = self._round >= self.num_rounds
        if not done:
            self._draw_context()
        names = self.possible_agents
        infos: dict[str, dict[str, Any]] = {}
        for i, a in enumerate(names):
            info: dict[str, Any] = {"prob": probs[i] / scale, "context": x}
            if n == 2:
                info["opponent_action"] = acts[1 - i]
            info["round"] = self._round
            info["opponent_actions"] = tuple(acts[:i] + acts[i + 1 :])
            infos[a] = info
        rew = {a: rewards[i] / scale for i, a in enumerate(names)}
        terminations = {a: False for a in names}
        truncations = {a: done for a in names}
        obs = {a: self._observe() for a in names}
        if done:
            self.agents = []
        return obs, rew, terminations, truncations, infos

    def render(self) -> str | None:
        """``"ansi"``: return the last round as text; ``"human"``: print it; ``None``: nothing."""
        return render_text(self.render_mode, self._render_text)

    def _render_text(self) -> str:
        header = (
            f"{self.game.name} (K={self._K}, n={self.num_players}) "
            f"round {self._round}/{self.num_rounds}"
        )
        if self._last is None:
            return f"{header}: context {self._context}, no move yet"
        acts = ", ".join(f"player_{i} -> {a}" for i, a in enumerate(self._last["actions"]))
        wins = ", ".join(
            f"{i}>{j}" if o else f"{j}>{i}" for (i, j), o in self._last["outcomes"].items()
        )
        return f"{header}: context {self._last['context']} | {acts} | outcomes {wins}"


def parallel_env(**kwargs: Any) -> MultiplayerPreferenceGameEnv:
    """Build the parallel environment (see :class:`MultiplayerPreferenceGameEnv`)."""
    return MultiplayerPreferenceGameEnv(**kwargs)


def raw_env(**kwargs: Any):
    """The AEC form: ``parallel_to_aec`` of :func:`parallel_env` (players act in seat order)."""
    return parallel_to_aec(parallel_env(**kwargs))


def env(**kwargs: Any):
    """The AEC environment with PettingZoo's standard wrappers (order enforcing, bounds checks)."""
    aec = raw_env(**kwargs)
    aec = wrappers.AssertOutOfBoundsWrapper(aec)
    return wrappers.OrderEnforcingWrapper(aec)
