"""Single-agent Gymnasium views of the nlhf-zoo games: one seat against a fixed or self-play opponent.

Description:
    :class:`SingleSeatEnv` turns any nlhf-zoo PettingZoo ``ParallelEnv`` (a matrix game or the
    token duel) into a ``gymnasium.Env`` for single-agent learners (Stable-Baselines3, CleanRL, ...).
    The learner plays one seat (``player_0`` or ``player_1``); the other seat is played by an
    *opponent*, which may be

    * ``None`` or ``"uniform"``: uniformly random actions (the default);
    * a zoo agent (anything with ``act(observation, deterministic)``, e.g. ``agents.make(...)``);
    * a path (``str`` / ``os.PathLike``) of a checkpoint written by ``Agent.save`` (read with
      ``agents.load``);
    * a Stable-Baselines3 model (anything with ``predict(observation, deterministic=...)``);
    * a fixed mixed strategy: an array of probabilities of shape ``(K,)`` or ``(C, K)`` (matrix games);
    * a callable ``observation -> action``;
    * a :class:`SelfPlayPool` of past snapshots (each snapshot is itself one of the above).

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

Arguments:
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

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = [
    "SingleSeatEnv",
    "SelfPlayPool",
    "as_opponent",
    "register_gym_views",
    "gym_view_ids",
    "SEATS",
]

SEATS: tuple[str, str] = ("player_0", "player_1")
_ENTRY_POINT = "nlhf_envs.gym_views:SingleSeatEnv"
GENERIC_ID = "nlhf/SingleSeat-v0"


# ---------------------------------------------------------------------------------------------------
# opponents
# ---------------------------------------------------------------------------------------------------
class _Opponent:
    """Internal adapter: every opponent spec becomes ``reset(rng)`` + ``act(obs, rng, space)``."""

    def reset(self, rng: np.random.Generator) -> None:
        """Called at the start of every episode."""

    def act(self, observation: Any, rng: np.random.Generator, action_space: spaces.Space) -> Any:
        raise NotImplementedError


class _UniformOpponent(_Opponent):
    def act(self, observation: Any, rng: np.random.Generator, action_space: spaces.Space) -> Any:
        if isinstance(action_space, spaces.Discrete):
            return int(action_space.start + rng.integers(action_space.n))
        raise TypeError(
            f"a uniform opponent needs a Discrete action space; got {type(action_space).__name__}"
        )


def _context_index(observation: Any) -> int:
    obs = np.asarray(observation)
    if obs.ndim != 1 or obs.dtype.kind not in "fiu":
        raise ValueError(
            "a probability-table opponent needs the matrix game's one-hot context observation; "
            f"got {type(observation).__name__}"
        )
    return int(np.argmax(obs))


class _TableOpponent(_Opponent):
    def __init__(self, probs: Any) -> None:
        table = np.array(probs, dtype=np.float64)
        if table.ndim == 1:
            table = table[None]
        if table.ndim != 2 or table.shape[1] < 1:
            raise ValueError(
                f"a probability-table opponent must have shape (K,) or (C, K); got {table.shape}"
            )
        if not np.all(np.isfinite(table)) or np.any(table < 0):
            raise ValueError("a probability-table opponent must be finite and non-negative")
        sums = table.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-6):
            row = int(np.argmax(np.abs(sums - 1.0)))
            raise ValueError(
                f"each row of a probability-table opponent must sum to 1; row {row} sums to "
                f"{sums[row]:.6g}"
            )
        self.table = table / sums[:, None]

    def act(self, observation: Any, rng: np.random.Generator, action_space: spaces.Space) -> Any:
        ctx = _context_index(observation)
        if not 0 <= ctx < self.table.shape[0]:
            raise ValueError(
                f"probability table has {self.table.shape[0]} context rows; observation is "
                f"context {ctx}"
            )
        return int(rng.choice(self.table.shape[1], p=self.table[ctx]))


class _AgentOpponent(_Opponent):
    """A zoo agent. Matrix agents (with ``game`` and ``policy``) are sampled from their current
    ``policy(context)`` with the view's generator (reproducible); others call ``act``."""

    def __init__(self, agent: Any, deterministic: bool) -> None:
        self.agent = agent
        self.deterministic = deterministic
        self.tabular = hasattr(agent, "game") and hasattr(agent.game, "num_contexts")

    def act(self, observation: Any, rng: np.random.Generator, action_space: spaces.Space) -> Any:
        if not self.tabular:
            return self.agent.act(observation, deterministic=self.deterministic)
        probs = np.asarray(self.agent.policy(_context_index(observation)), dtype=np.float64)
        if self.deterministic:
            return int(np.argmax(probs))
        return int(rng.choice(probs.shape[0], p=probs / probs.sum()))


def _sb3_action_probs(model: Any, observation: Any) -> np.ndarray | None:
    """Action probabilities of an SB3 policy for one observation, or ``None`` if not available."""
    policy = getattr(model, "policy", None)
    if policy is None or not hasattr(policy, "get_distribution"):
        return None
    import torch  # an SB3 model exists, so torch is importable

    with torch.no_grad():
        obs_tensor, _ = policy.obs_to_tensor(observation)
        dist = policy.get_distribution(obs_tensor)
        probs = getattr(getattr(dist, "distribution", None), "probs", None)
        if probs is None:
            return None
        return probs.cpu().numpy().astype(np.float64).reshape(-1)


class _ModelOpponent(_Opponent):
    """An SB3 model (``predict``). For ``Discrete`` actions it samples from the policy's
    distribution with the view's generator (reproducible); otherwise it calls ``predict``."""

    def __init__(self, model: Any, deterministic: bool) -> None:
        self.model = model
        self.deterministic = deterministic

    def act(self, observation: Any, rng: np.random.Generator, action_space: spaces.Space) -> Any:
        if isinstance(action_space, spaces.Discrete):
            probs = _sb3_action_probs(self.model, observation)
            if probs is not None and probs.shape == (action_space.n,):
                if self.deterministic:
                    return int(np.argmax(probs))
                return int(rng.choice(probs.shape[0], p=probs / probs.sum()))
        action, _ = self.model.predict(observation, deterministic=self.deterministic)
        return action


class _CallableOpponent(_Opponent):
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def act(self, observation: Any, rng: np.random.Generator, action_space: spaces.Space) -> Any:
        return self.fn(observation)


class SelfPlayPool(_Opponent):
    """A pool of past policy snapshots; each episode the opponent is one of them.

    Args:
        snapshots: initial snapshots; each is any opponent spec accepted by :func:`as_opponent`
            except another pool (typically probability tables, zoo agents or SB3 models).
        max_size: keep at most this many snapshots (the oldest is dropped); ``None``: unbounded.
        sampling: ``"latest"``: always the newest snapshot (plain self-play against the current
            policy); ``"uniform"``: a snapshot drawn uniformly at the start of every episode
            (fictitious-play-like self-play against the past).
        deterministic: whether snapshots that can (agents, SB3 models) pick their most likely action.

    Raises:
        ValueError: for an unknown ``sampling`` or a ``max_size`` below 1.
    """

    def __init__(
        self,
        snapshots: Sequence[Any] = (),
        *,
        max_size: int | None = None,
        sampling: Literal["latest", "uniform"] = "latest",
        deterministic: bool = False,
    ) -> None:
        if sampling not in ("latest", "uniform"):
            raise ValueError(f"sampling must be 'latest' or 'uniform'; got {sampling!r}")
        if max_size is not None and (isinstance(max_size, bool) or int(max_size) < 1):
            raise ValueError(f"max_size must be an int >= 1 or None; got {max_size!r}")
        self.max_size = None if max_size is None else int(max_size)
        self.sampling = sampling
        self.deterministic = deterministic
        self._specs: list[Any] = []
        self._opponents: list[_Opponent] = []
        self._current = -1
        for snap in snapshots:
            self.add(snap)

    def add(self, snapshot: Any) -> None:
        """Append a snapshot (dropping the oldest when the pool is full).

        Raises:
            TypeError: for a pool inside a pool or a spec :func:`as_opponent` does not accept.
        """
        if isinstance(snapshot, SelfPlayPool):
            raise TypeError("a SelfPlayPool cannot hold another SelfPlayPool")
        self._opponents.append(as_opponent(snapshot, deterministic=self.deterministic))
        self._specs.append(snapshot)
        if self.max_size is not None and len(self._specs) > self.max_size:
            del self._specs[0], self._opponents[0]

    def clear(self) -> None:
        """Remove every snapshot."""
        self._specs.clear()
        self._opponents.clear()
        self._current = -1

    @property
    def snapshots(self) -> list[Any]:
        """The stored snapshots, oldest first (a copy of the list)."""
        return list(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def reset(self, rng: np.random.Generator) -> None:
        if not self._specs:
            raise RuntimeError("SelfPlayPool is empty: add() a snapshot before playing")
        if self.sampling == "latest":
            self._current = len(self._specs) - 1
        else:
            self._current = int(rng.integers(len(self._specs)))
        self._opponents[self._current].reset(rng)

    def act(self, observation: Any, rng: np.random.Generator, action_space: spaces.Space) -> Any:
        if not 0 <= self._current < len(self._opponents):
            self.reset(rng)
        return self._opponents[self._current].act(observation, rng, action_space)

    def __repr__(self) -> str:
        return (
            f"SelfPlayPool(size={len(self)}, max_size={self.max_size}, sampling={self.sampling!r})"
        )


def as_opponent(spec: Any, *, deterministic: bool = False) -> _Opponent:
    """Turn an opponent spec (see the module docstring) into the internal opponent adapter.

    Args:
        spec: ``None``/``"uniform"``, a checkpoint path, a zoo agent, an SB3 model, a probability
            table, a callable or a :class:`SelfPlayPool`.
        deterministic: agents and SB3 models pick their most likely action.

    Raises:
        ValueError: for a path without a checkpoint or an invalid probability table.
        TypeError: for anything else.
    """
    if isinstance(spec, _Opponent):
        return spec
    if spec is None or (isinstance(spec, str) and spec == "uniform"):
        return _UniformOpponent()
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if not (os.path.exists(path) or os.path.exists(path + ".npz")):
            raise ValueError(
                f"opponent {path!r} is neither 'uniform' nor the path of a saved agent "
                "(Agent.save / agents.load)"
            )
        import agents  # lazy: nlhf_envs stays torch-free at import

        return _AgentOpponent(agents.load(path), deterministic)
    if isinstance(spec, (np.ndarray, list, tuple)):
        return _TableOpponent(spec)
    if hasattr(spec, "act") and callable(spec.act):
        return _AgentOpponent(spec, deterministic)
    if hasattr(spec, "predict") and callable(spec.predict):
        return _ModelOpponent(spec, deterministic)
    if callable(spec):
        return _CallableOpponent(spec)
    raise TypeError(
        "opponent must be None/'uniform', a checkpoint path, a zoo agent (.act), an SB3 model "
        "(.predict), a probability table, a callable observation -> action or a SelfPlayPool; "
        f"got {type(spec).__name__}"
    )


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
        opponent: the other seat's policy (see :func:`as_opponent`); default uniform random.
        opponent_deterministic: agents and SB3 models pick their most likely action.
        env_kwargs: keyword arguments of ``pettingzoo.make`` when ``env`` is an id.
        horizon_is_terminal: report the end of the duel as termination (see Episode End).
        render_mode: ``None`` or ``"ansi"`` (forwarded to the PettingZoo env built from an id; an
            env instance keeps its own).

    Raises:
        ValueError: for an unknown id or seat, ``env_kwargs`` with an instance, or an env whose
            agents are not ``player_0``/``player_1``.
        TypeError: for an opponent spec that is not understood.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

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
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi'; got {render_mode!r}")
        kwargs = dict(env_kwargs or {})
        if isinstance(env, str):
            import pettingzoo

            from nlhf_envs.registration import registered_ids

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
        self.opponent = as_opponent(opponent, deterministic=opponent_deterministic)
        self.horizon_is_terminal = bool(horizon_is_terminal)
        self.render_mode = render_mode if render_mode is not None else None
        self.observation_space = env.observation_space(seat)
        self.action_space = env.action_space(seat)
        self._opp_space = env.action_space(self.other)
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
        self.opponent.reset(self.np_random)
        self._running = True
        return observations[self.seat], dict(infos.get(self.seat, {}))

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Play ``action`` for the seat and the opponent's action for the other seat."""
        if not self._running:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        mine = _as_int_action(action, self.action_space, "the learner's")
        theirs = _as_int_action(
            self.opponent.act(self._opp_obs, self.np_random, self._opp_space),
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

    def render(self) -> str | None:
        """``"ansi"``: the inner env's text rendering; ``None``: nothing."""
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
    from nlhf_envs.registration import registered_ids

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
