"""A probability-table player that does not fit its seat is refused with one error naming the problem."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import nlhf_envs  # noqa: F401  (registers the ids)
from nlhf_envs.errors import GameError
from nlhf_envs.players import TablePlayer, as_player


def test_single_seat_view_refuses_a_short_opponent_table():
    with pytest.raises(
        GameError,
        match=r"^a probability-table player has 2 probabilities per row but the seat has 3 "
        r"actions$",
    ):
        gymnasium.make("nlhf/RPS-SingleSeat-v0", opponent=[0.5, 0.5])


def test_single_seat_view_refuses_a_long_opponent_table():
    with pytest.raises(GameError, match=r"has 4 probabilities per row but the seat has 3 actions"):
        as_player([0.25] * 4, action_space=gymnasium.spaces.Discrete(3))


def test_a_fitting_table_still_plays_every_action():
    env = gymnasium.make("nlhf/RPS-SingleSeat-v0", opponent=[0.2, 0.3, 0.5])
    env.reset(seed=0)
    seen = np.zeros(3, dtype=int)
    for _ in range(600):
        _, _, terminated, truncated, info = env.step(0)
        seen[int(info["opponent_action"])] += 1
        if terminated or truncated:
            env.reset()
    assert np.all(seen > 0)
    np.testing.assert_allclose(seen / seen.sum(), [0.2, 0.3, 0.5], atol=0.06)


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        (
            [np.nan, 0.5, 0.5],
            r"^a probability-table player must be finite and non-negative; "
            r"entry 0 is nan$",
        ),
        ([0.5, np.inf, 0.0], r"entry 1 is inf$"),
        ([[0.5, 0.5, 0.0], [0.2, -0.1, 0.9]], r"entry \(1, 1\) is -0\.1$"),
        (
            [0.5, 0.6, 0.1],
            r"^each row of a probability-table player must sum to 1; row 0 sums "
            r"to 1\.2$",
        ),
        (["a", "b"], r"^a probability-table player must be numeric: "),
    ],
)
def test_table_player_errors_are_game_errors(probs, message):
    with pytest.raises(GameError, match=message):
        TablePlayer(probs)
