"""Reward conventions shared by every nlhf-zoo environment.

A duel between ``player_0`` and ``player_1`` has a preference probability ``p = P(y0 > y1 | x)``
(the matrix entry, or the judge's probability in the token game) and, by default, a sampled
outcome ``o ~ Bernoulli(p)``. The reward modes are:

``"outcome"`` (default)
    ``player_0`` receives ``o`` and ``player_1`` receives ``1 - o``: one preference query, constant-sum
    with total 1, as in Munos et al. (2024) and Tiapkin et al. (2025).
``"centered"``
    ``player_0`` receives ``o - 1/2`` and ``player_1`` receives ``1/2 - o``: the same query in
    zero-sum form (what most multi-agent RL code expects).
``"probability"``
    ``player_0`` receives ``p`` and ``player_1`` receives ``1 - p``: the expected outcome, noiseless.

Nothing here draws random numbers itself: the caller passes the uniform draw ``u`` (or the generator),
so that seeding stays with the environment.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

RewardMode = Literal["outcome", "centered", "probability"]
REWARD_MODES: tuple[str, ...] = ("outcome", "centered", "probability")


def check_reward_mode(mode: str) -> RewardMode:
    """Return ``mode`` if it is a known reward mode, else raise a ``ValueError`` naming the options."""
    if mode not in REWARD_MODES:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {', '.join(REWARD_MODES)}")
    return mode  # type: ignore[return-value]


def duel_rewards(
    prob: np.ndarray | float, outcome: np.ndarray | float, mode: RewardMode
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of ``player_0`` and ``player_1`` for duels with probability ``prob`` and outcome ``outcome``.

    Args:
        prob: ``P(y0 > y1 | x)``, scalar or array, in [0, 1].
        outcome: the sampled Bernoulli outcome (0 or 1) of the same shape; ignored in ``"probability"`` mode.
        mode: one of :data:`REWARD_MODES`.

    Returns:
        ``(r0, r1)`` as float64 arrays of the input shape.
    """
    prob = np.asarray(prob, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    if mode == "outcome":
        return outcome, 1.0 - outcome
    if mode == "centered":
        return outcome - 0.5, 0.5 - outcome
    if mode == "probability":
        return prob, 1.0 - prob
    raise ValueError(f"unknown reward mode {mode!r}; expected one of {', '.join(REWARD_MODES)}")
