"""Single-agent Gymnasium views of the nlhf-zoo games: one seat against a fixed or self-play opponent.

Description:
    :class:`SingleSeatEnv` turns any nlhf-zoo PettingZoo ``ParallelEnv`` (a matrix game or the
    token duel) into a ``gymnasium.Env`` for single-agent learners (Stable-Baselines3, CleanRL, ...).
    The learner plays one seat (``player_0`` or ``player_1``); the other seat is played by an
    *opponent*, any spec :func:`nlhf_envs.players.as_player` accepts:

    * ``None`` or ``"uniform"``: uniformly random actions (the default);
    * a :class:`~nlhf_envs.players.Player` (``act(observation, rng)``);
    * a fixed mixed strategy: an array of probabilities of shape ``(K,)`` or ``(C, K)`` (matrix games);
    * a callable ``observation -> action``;
    * a :class:`SelfPlayPool` of past snapshots (each snapshot is itself one of these);
    * once :mod:`agents` is imported (it registers its adapters, :mod:`agents.players`): a zoo agent
      (``agents.make(...)``), the path of a checkpoint written by ``Agent.save``, or a
      Stable-Baselines3 model.

    This module knows nothing of the agents or of Stable-Baselines3: who can play a seat is the
    :class:`~nlhf_envs.players.Player` protocol.

    Every view is registered with Gymnasium's registry (:func:`register_gym_views`, called when
    :mod:`nlhf_envs` is imported): ``gymnasium.make("nlhf/RPS-SingleSeat-v0")`` for every PettingZoo
    id ``nlhf/<Name>-v0``, and the generic ``gymnasium.make("nlhf/SingleSeat-v0", env=<id or env>)``.
    Keyword arguments of ``gymnasium.make`` go to :class:`SingleSeatEnv` (``seat``, ``opponent``,
    ``env_kwargs``, ...).

Agents:
    One learner (the seat) against the opponent.

Action Space:
    The seat's action space in the PettingZoo env: ``Discrete(K)`` for matrix games, ``Discrete(V)``
    (token ids) for the token duel. Actions outside it raise ``ValueError``.

Observation Space:
    The seat's observation space in the PettingZoo env: the ``float32`` one-hot context ``(C,)`` for
    matrix games; ``Dict(tokens, mask)`` for the token duel.

Rewards:
    The seat's PettingZoo reward (see :mod:`nlhf_envs.rewards`; ``env_kwargs={"reward_mode": ...}``
    selects ``"outcome"``, ``"centered"`` or ``"probability"``).

Episode End:
    When the PettingZoo episode ends. Matrix games end by *truncation* after ``num_rounds`` rounds in
    PettingZoo; the view reports that end as ``terminated=True`` (``horizon_is_terminal=True``,
    default) because the duel's length is part of the game: no reward follows, so a learner must not
    bootstrap a value past it (and Gymnasium's checker rejects an env that truncates after one step).
    ``horizon_is_terminal=False`` passes PettingZoo's flags through unchanged.

Environment arguments:
    See :class:`SingleSeatEnv`.

Seeding:
    ``reset(seed=s)`` seeds the view's ``np_random``; the inner PettingZoo env is reset with a seed
    drawn from it, and uniform, table, pool and matrix zoo-agent opponents sample with it, so a seeded
    view is reproducible. Opponents that act with their own generators (non-matrix zoo agents,
    callables) are reproducible only if those are seeded.

Version History:
    * v0: initial release.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from nlhf_envs.env_ids import registered_ids
from nlhf_envs.players import SelfPlayPool, as_player

__all__ = [
    "SingleSeatEnv",
    "SelfPlayPool",
    "register_gym_views",
    "gym_view_ids",
    "SEATS",
]

SEATS: tuple[str, str] = ("player_0", "player_1")
_ENTRY_POINT = "nlhf_envs.gym_views:SingleSeatEnv"
GENERIC_ID = "nlhf/SingleSeat-v0"


# ---------------------------------------------------------------------------------------------------
# the view
# ---------------------------------------------------------------------------------------------------
def _as_int_action(action: Any, space: spaces.Space, who: str) -> Any:
    if not isinstance(space, spaces.Discrete):
        return action
    arr = np.asarray(action)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"{who} action {action!r} is not an integer in [{space.start}, {space.start + space.n})"
        )
    value = int(arr.reshape(()))
    if not space.start <= value < space.start + space.n:
        raise ValueError(
            f"{who} action {value} is outside the action space "
            f"[{space.start}, {space.start + space.n})"
        )
    return value


class SingleSeatEnv(gymnasium.Env):
    """One seat of an nlhf-zoo PettingZoo game as a Gymnasium env (see the module docstring).

    Args:
        env: a registered PettingZoo id (``"nlhf/RPS-v0"``, ``"nlhf/TokenDuel-v0"``, ...) or a
            PettingZoo ``ParallelEnv`` instance with ``player_0`` and ``player_1``.
        seat: the learner's seat, ``"player_0"`` or ``"player_1"``.
        opponent: the other seat's player (see :func:`nlhf_envs.players.as_player`); default
            uniform random.
        opponent_deterministic: agents and SB3 models pick their most likely action.
        env_kwargs: keyword arguments of ``pettingzoo.make`` when ``env`` is an id.
        horizon_is_terminal: report the end of the duel as termination (see Episode End).
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"`` (forwarded to the PettingZoo env built
            from an id; an
            env instance keeps its own).

    Raises:
        ValueError: for an unknown id or seat, ``env_kwargs`` with an instance, or an env whose
            agents are not ``player_0``/``player_1``.
        TypeError: for an opponent spec that is not understood.
        nlhf_envs.errors.GameError: for a probability-table opponent that is not a probability
            table, or whose number of probabilities per row differs from the seat's action count
            (``opponent=[0.5, 0.5]`` on a 3-action game would never play the third action).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 1}

    def __init__(
        self,
        env: Any,
        *,
        seat: str = "player_0",
        opponent: Any = None,
        opponent_deterministic: bool = False,
        env_kwargs: dict[str, Any] | None = None,
        horizon_is_terminal: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if seat not in SEATS:
            raise ValueError(f"seat must be 'player_0' or 'player_1'; got {seat!r}")
        if render_mode not in (None, "ansi", "rgb_array"):
            raise ValueError(
                f"render_mode must be None, 'ansi' or 'rgb_array'; got {render_mode!r}"
            )
        kwargs = dict(env_kwargs or {})
        if isinstance(env, str):
            import pettingzoo

            if env not in registered_ids():
                raise ValueError(
                    f"unknown nlhf-zoo env id {env!r}; expected one of {', '.join(registered_ids())}"
                )
            if render_mode is not None:
                kwargs.setdefault("render_mode", render_mode)
            env = pettingzoo.make("parallel", env, **kwargs)
        elif kwargs:
            raise ValueError(f"env_kwargs {sorted(kwargs)} given with an env instance")
        if not hasattr(env, "possible_agents") or list(env.possible_agents) != list(SEATS):
            raise ValueError(
                "env must be a PettingZoo ParallelEnv with agents ['player_0', 'player_1']; got "
                f"{getattr(env, 'possible_agents', type(env).__name__)!r}"
            )
        self.env = env
        self.seat = seat
        self.other = SEATS[1 - SEATS.index(seat)]
        self.horizon_is_terminal = bool(horizon_is_terminal)
        self.render_mode = render_mode if render_mode is not None else None
        self.observation_space = env.observation_space(seat)
        self.action_space = env.action_space(seat)
        self._opp_space = env.action_space(self.other)
        self.opponent = as_player(
            opponent, action_space=self._opp_space, deterministic=opponent_deterministic
        )
        self._opp_obs: Any = None
        self._running = False

    @property
    def game(self) -> Any:
        """The inner env's :class:`~nlhf_envs.game.PreferenceGame` (matrix games), else ``None``."""
        return getattr(self.env, "game", None)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode; the inner env is reset with a seed drawn from ``np_random``."""
        super().reset(seed=seed)
        inner_seed = int(self.np_random.integers(2**31 - 1))
        observations, infos = self.env.reset(seed=inner_seed, options=options)
        self._opp_obs = observations[self.other]
        reset = getattr(self.opponent, "reset", None)
        if reset is not None:
            reset(self.np_random)
        self._running = True
        return observations[self.seat], dict(infos.get(self.seat, {}))

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Play ``action`` for the seat and the opponent's action for the other seat."""
        if not self._running:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        mine = _as_int_action(action, self.action_space, "the learner's")
        theirs = _as_int_action(
            self.opponent.act(self._opp_obs, self.np_random),
            self._opp_space,
            "the opponent's",
        )
        actions = {self.seat: mine, self.other: theirs}
        actions = {a: actions[a] for a in self.env.agents}
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        self._opp_obs = observations.get(self.other)
        terminated = bool(terminations.get(self.seat, False))
        truncated = bool(truncations.get(self.seat, False))
        if self.horizon_is_terminal and truncated and not self.env.agents:
            terminated, truncated = True, False
        if terminated or truncated or not self.env.agents:
            self._running = False
        info = dict(infos.get(self.seat, {}))
        return (
            observations[self.seat],
            float(rewards.get(self.seat, 0.0)),
            terminated,
            truncated,
            info,
        )

    def render(self) -> str | np.ndarray | None:
        """The inner env's rendering: text (``"ansi"``) or an RGB frame (``"rgb_array"``)."""
        if self.render_mode is None:
            return None
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"SingleSeatEnv({type(self.env).__name__}, seat={self.seat!r})"


# ---------------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------------
def gym_view_ids() -> dict[str, str]:
    """Gymnasium id -> PettingZoo id of every registered single-seat view (without the generic one)."""
    out = {}
    for env_id in registered_ids():
        namespace, rest = env_id.split("/", 1)
        name, version = rest.rsplit("-v", 1)
        out[f"{namespace}/{name}-SingleSeat-v{version}"] = env_id
    return out


def register_gym_views() -> None:
    """Register the single-seat views with Gymnasium's registry (idempotent, imports nothing heavy).

    Ids: ``nlhf/<Name>-SingleSeat-v0`` for every PettingZoo id ``nlhf/<Name>-v0`` and the generic
    ``nlhf/SingleSeat-v0``, which needs ``env=<PettingZoo id or env instance>``.
    """
    registry = gymnasium.envs.registration.registry
    for gym_id, env_id in gym_view_ids().items():
        if gym_id not in registry:
            gymnasium.register(gym_id, entry_point=_ENTRY_POINT, kwargs={"env": env_id})
    if GENERIC_ID not in registry:
        gymnasium.register(GENERIC_ID, entry_point=_ENTRY_POINT)
