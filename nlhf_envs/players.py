"""Who can play a seat: the :class:`Player` protocol, shared by single-seat views and tournaments.

A *player* picks an action for one seat from that seat's observation, with a generator supplied by
whoever runs the episode (a :class:`~nlhf_envs.gym_views.SingleSeatEnv`, a tournament match), so a
seeded episode is reproducible whoever plays it. Where the player's distribution is known it says
so, which lets a tournament draw whole matches at once and compute exact exploitability.

This module is the environment side of the contract and needs neither torch nor the agents: it
defines the protocol and the players that need nothing else (uniform, a probability table, a plain
callable). Players made from zoo agents, checkpoints and Stable-Baselines3 models live on the agents
side (:mod:`agents.players`), which registers an *adapter* here with :func:`register_adapter` when
:mod:`agents` is imported; :func:`as_player` asks the adapters first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from nlhf_envs.errors import GameError

__all__ = [
    "Player",
    "BasePlayer",
    "UniformPlayer",
    "TablePlayer",
    "CallablePlayer",
    "SelfPlayPool",
    "as_player",
    "register_adapter",
    "context_index",
]


@runtime_checkable
class Player(Protocol):
    """One seat's policy: ``act(observation, rng) -> action``.

    Optional methods (see :class:`BasePlayer` for their defaults): ``bind(action_space)`` when it
    takes a seat; ``reset(rng)`` at the start of every episode; ``action_probabilities(observation)``, the distribution ``act`` samples from, or
    ``None`` when it is not known; ``policy_table()``, the ``(C, K)`` probabilities over every
    context of a matrix game, or ``None``.
    """

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        """An action for ``observation``; random choices use ``rng``."""
        ...


class BasePlayer:
    """Defaults of the optional :class:`Player` methods (subclass it, or implement them)."""

    def bind(self, action_space: spaces.Space) -> None:
        """Called when the player takes a seat, with that seat's action space. Default: nothing."""

    def reset(self, rng: np.random.Generator) -> None:
        """Called at the start of every episode. Default: nothing."""

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def action_probabilities(self, observation: Any) -> np.ndarray | None:
        """The distribution :meth:`act` samples from for ``observation``; ``None``: not known."""
        return None

    def policy_table(self) -> np.ndarray | None:
        """``(C, K)`` probabilities over every context of a matrix game; ``None``: not known."""
        return None


def context_index(observation: Any) -> int:
    """The context of a matrix game's observation (the one-hot context vector, ``[1.0]`` without)."""
    obs = np.asarray(observation)
    if obs.ndim != 1 or obs.dtype.kind not in "fiu":
        raise ValueError(
            "a probability-table player needs the matrix game's one-hot context observation; "
            f"got {type(observation).__name__}"
        )
    return int(np.argmax(obs))


class UniformPlayer(BasePlayer):
    """Uniformly random actions of a ``Discrete`` action space.

    Args:
        action_space: the seat's action space (else the one :meth:`bind` gives).

    Raises:
        TypeError: for an action space that is not ``Discrete``.
    """

    def __init__(self, action_space: spaces.Space | None = None) -> None:
        self.action_space: spaces.Discrete | None = None
        if action_space is not None:
            self.bind(action_space)

    def bind(self, action_space: spaces.Space) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(
                f"a uniform player needs a Discrete action space; got {type(action_space).__name__}"
            )
        self.action_space = action_space

    def _space(self) -> spaces.Discrete:
        if self.action_space is None:
            raise RuntimeError("a uniform player must take a seat (bind) before it acts")
        return self.action_space

    def act(self, observation: Any, rng: np.random.Generator) -> int:
        space = self._space()
        return int(space.start + rng.integers(space.n))

    def action_probabilities(self, observation: Any) -> np.ndarray:
        n = int(self._space().n)
        return np.full(n, 1.0 / n)


class TablePlayer(BasePlayer):
    """A fixed mixed strategy of a matrix game: probabilities of shape ``(K,)`` or ``(C, K)``.

    Raises:
        GameError: (a ``ValueError``) for a table that is not numeric or not 1-D/2-D, holds a
            non-finite or negative entry (its position is named), or whose rows do not sum to 1
            (within ``1e-6``; rows are then renormalised exactly); when it takes a seat
            (:meth:`bind`), for a ``Discrete`` action space whose size differs from ``K``.
    """

    def __init__(self, probs: Any) -> None:
        try:
            table = np.array(probs, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise GameError(f"a probability-table player must be numeric: {exc}") from None
        if table.ndim == 1:
            table = table[None]
        if table.ndim != 2 or table.shape[1] < 1:
            raise GameError(
                f"a probability-table player must have shape (K,) or (C, K); got {table.shape}"
            )
        bad = np.argwhere(~np.isfinite(table) | (table < 0))
        if bad.size:
            row, col = (int(v) for v in bad[0])
            where = f"entry {col}" if table.shape[0] == 1 else f"entry ({row}, {col})"
            raise GameError(
                f"a probability-table player must be finite and non-negative; {where} is "
                f"{table[row, col]}"
            )
        sums = table.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-6):
            row = int(np.argmax(np.abs(sums - 1.0)))
            raise GameError(
                f"each row of a probability-table player must sum to 1; row {row} sums to "
                f"{sums[row]:.6g}"
            )
        self.table = table / sums[:, None]

    def bind(self, action_space: spaces.Space) -> None:
        """Check that the table has one probability per action of the seat's ``Discrete`` space.

        Raises:
            GameError: the table's ``K`` differs from the number of actions (a shorter table would
                silently never play the remaining actions).
        """
        if isinstance(action_space, spaces.Discrete) and int(action_space.n) != self.table.shape[1]:
            raise GameError(
                f"a probability-table player has {self.table.shape[1]} probabilities per row but "
                f"the seat has {int(action_space.n)} actions"
            )

    def _row(self, observation: Any) -> np.ndarray:
        ctx = context_index(observation)
        if not 0 <= ctx < self.table.shape[0]:
            raise ValueError(
                f"probability table has {self.table.shape[0]} context rows; observation is "
                f"context {ctx}"
            )
        return self.table[ctx]

    def act(self, observation: Any, rng: np.random.Generator) -> int:
        row = self._row(observation)
        return int(rng.choice(row.shape[0], p=row))

    def action_probabilities(self, observation: Any) -> np.ndarray:
        return self._row(observation).copy()

    def policy_table(self) -> np.ndarray:
        return self.table.copy()


class CallablePlayer(BasePlayer):
    """A plain function ``observation -> action`` (its own randomness, if any, is its business)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        return self.fn(observation)


#: ``adapter(spec, deterministic) -> Player | None``, asked in registration order.
Adapter = Callable[[Any, bool], "Player | None"]
_ADAPTERS: list[Adapter] = []


def register_adapter(adapter: Adapter) -> None:
    """Let :func:`as_player` turn more kinds of specs into players (idempotent per function).

    :mod:`agents` registers one for zoo agents, checkpoint paths and Stable-Baselines3 models.
    """
    if adapter not in _ADAPTERS:
        _ADAPTERS.append(adapter)


def as_player(
    spec: Any, *, action_space: spaces.Space | None = None, deterministic: bool = False
) -> Player:
    """Turn a seat spec into a :class:`Player`.

    Args:
        spec: a :class:`Player`; ``None`` or ``"uniform"`` (needs ``action_space``); a probability
            table ``(K,)``/``(C, K)``; a callable ``observation -> action``; or anything a
            registered adapter accepts (with :mod:`agents` imported: a zoo agent, a checkpoint
            path, a Stable-Baselines3 model).
        action_space: the seat's action space; the player is bound to it (``bind``).
        deterministic: adapters' players (agents, models) pick their most likely action.

    Raises:
        ValueError: for a path that is not a checkpoint, or an invalid probability table.
        TypeError: for anything else.
    """
    player = _resolve(spec, deterministic)
    if action_space is not None:
        bind = getattr(player, "bind", None)
        if bind is not None:
            bind(action_space)
    return player


def _resolve(spec: Any, deterministic: bool) -> Player:
    for adapter in _ADAPTERS:
        player = adapter(spec, deterministic)
        if player is not None:
            return player
    if spec is None or (isinstance(spec, str) and spec == "uniform"):
        return UniformPlayer()
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if not (os.path.exists(path) or os.path.exists(path + ".npz")):
            raise ValueError(
                f"player {path!r} is neither 'uniform' nor the path of a saved agent "
                "(Agent.save / agents.load)"
            )
        raise TypeError(
            f"player {path!r} is a saved agent: `import agents` to play checkpoints "
            "(or pass agents.load(path))"
        )
    if isinstance(spec, (np.ndarray, list, tuple)):
        return TablePlayer(spec)
    if isinstance(spec, Player) and not hasattr(spec, "predict"):
        return spec
    if callable(spec) and not hasattr(spec, "predict"):
        return CallablePlayer(spec)
    raise TypeError(
        "a player must be None/'uniform', a Player (act(observation, rng)), a probability table, a "
        "callable observation -> action, or, with `import agents`, a zoo agent, a checkpoint path, "
        f"an SB3 model or a SelfPlayPool; got {type(spec).__name__}"
    )


class SelfPlayPool(BasePlayer):
    """A pool of past policy snapshots; each episode the seat is played by one of them.

    Args:
        snapshots: initial snapshots; each is any spec :func:`as_player` accepts except another pool
            (typically probability tables, zoo agents or SB3 models).
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
        snapshots: Any = (),
        *,
        max_size: int | None = None,
        sampling: str = "latest",
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
        self._players: list[Player] = []
        self._space: spaces.Space | None = None
        self._current = -1
        for snap in snapshots:
            self.add(snap)

    def add(self, snapshot: Any) -> None:
        """Append a snapshot (dropping the oldest when the pool is full).

        Raises:
            TypeError: for a pool inside a pool or a spec :func:`as_player` does not accept.
        """
        if isinstance(snapshot, SelfPlayPool):
            raise TypeError("a SelfPlayPool cannot hold another SelfPlayPool")
        self._players.append(
            as_player(snapshot, action_space=self._space, deterministic=self.deterministic)
        )
        self._specs.append(snapshot)
        if self.max_size is not None and len(self._specs) > self.max_size:
            del self._specs[0], self._players[0]

    def bind(self, action_space: spaces.Space) -> None:
        """Seat every snapshot (and those added later) on ``action_space``."""
        self._space = action_space
        for player in self._players:
            bind = getattr(player, "bind", None)
            if bind is not None:
                bind(action_space)

    def clear(self) -> None:
        """Remove every snapshot."""
        self._specs.clear()
        self._players.clear()
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
        reset = getattr(self._players[self._current], "reset", None)
        if reset is not None:
            reset(rng)

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        if not 0 <= self._current < len(self._players):
            self.reset(rng)
        return self._players[self._current].act(observation, rng)

    def __repr__(self) -> str:
        return (
            f"SelfPlayPool(size={len(self)}, max_size={self.max_size}, sampling={self.sampling!r})"
        )
