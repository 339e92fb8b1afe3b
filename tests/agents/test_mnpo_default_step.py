"""Issue 32, item 5: the token-level MNPO's default step converges in the exact dynamics of the
256-prompt token worlds at beta 0.03 and 0.1 (the authors' ratio eta beta = 1/3 cycles on the
cyclic world at beta 0.03), and the linearised analysis behind the cap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import agents
from agents.mnpo import linearised_rate, token_default_eta
from nlhf_envs import make_game, solvers
from nlhf_envs.game import PreferenceGame
from nlhf_envs.text.exact import exact_game

WORLDS = ("nlhf/TinyTokenDuel-v1", "nlhf/TinyTokenDuel-Cyclic-v1")


def _game(env_id: str, beta: float) -> PreferenceGame:
    base = exact_game(env_id, "validation")  # the 32 validation prompts x 259 answers
    return PreferenceGame(base.P, base.pi_ref, beta, atol=1e-9)


def _kl_after(
    game: PreferenceGame, eta: float, history: int, iterations: int = 2000, init: str = "ref"
) -> float:
    star = game.as_policy(solvers.regularized_nash(game))
    agent = agents.make("mnpo", game, seed=0, mode="exact", eta=eta, history=history,
                        init=init, log_every=0)  # fmt: skip
    agent.learn(num_iterations=iterations)
    return float(game.rho @ (star * (np.log(star) - agent.log_pi)).sum(axis=1))


def test_the_default_is_the_released_ratio_capped_at_its_value_at_beta_0_1():
    assert token_default_eta(0.1) == pytest.approx(10 / 3)
    assert token_default_eta(0.5) == pytest.approx(2 / 3)  # eta beta = 1/3 above beta = 0.1
    assert token_default_eta(0.03) == pytest.approx(10 / 3)  # eta beta = 0.1 below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = agents.make("mnpo", "nlhf/TinyTokenDuel-v1", seed=0, env_kwargs={"beta": 0.03})
    assert agent.eta == pytest.approx(10 / 3)


CASES = [
    pytest.param(env_id, beta, history, marks=() if fast else pytest.mark.slow)
    for env_id in WORLDS
    for beta in (0.1, 0.03)
    for history in (1, 2, 3)
    for fast in [(env_id, beta, history) in {(WORLDS[1], 0.03, 1), (WORLDS[1], 0.03, 3),
                                             (WORLDS[0], 0.1, 3), (WORLDS[0], 0.03, 2)}]
]  # fmt: skip


@pytest.mark.parametrize(("env_id", "beta", "history"), CASES)
def test_the_default_step_converges_in_exact_dynamics(env_id, beta, history):
    """Every (world, beta, history) in the slow suite; four of them, the cyclic world at beta
    0.03 among them, in the default one."""
    assert _kl_after(_game(env_id, beta), token_default_eta(beta), history) < 1e-10


@pytest.mark.parametrize("history", [1, 3])
def test_the_released_ratio_cycles_on_the_cyclic_world_at_beta_0_03(history):
    """What the cap fixes: eta = 1 / (3 beta) = 11.1 keeps the exact step away from pi*."""
    game = _game("nlhf/TinyTokenDuel-Cyclic-v1", 0.03)
    assert _kl_after(game, 1 / (3 * 0.03), history) > 1e-3


def test_the_linearised_rate_says_where_a_step_contracts():
    """H = 1: |z| = |1 - eta beta + i eta omega|, below 1 iff eta < 2 beta / (beta^2 + omega^2); a
    population of 3 damps the rotation a little (its rate is below the single iterate's at the
    step 1 / (3 beta)), not enough for rock-paper-scissors at beta = 0.03; the capped step is
    stable there only for rotations below sqrt(0.6 beta - beta^2)."""
    beta, omega = 0.03, np.sqrt(3) / 6  # rock-paper-scissors' rotation at the uniform pi*
    for eta in (0.1, 1.0, 5.0):
        z = abs(1 - eta * beta + 1j * eta * omega)
        assert linearised_rate(eta, beta, [1.0], omega) == pytest.approx(z)
    assert linearised_rate(2 * beta / (beta**2 + omega**2) * 0.99, beta, [1.0], omega) < 1
    uniform3 = np.full(3, 1 / 3)
    big = 1 / (3 * beta)
    assert linearised_rate(big, beta, uniform3, omega) < linearised_rate(big, beta, [1.0], omega)
    assert linearised_rate(token_default_eta(beta), beta, uniform3, omega) > 1
    bound = np.sqrt(0.6 * beta - beta**2)
    eta = token_default_eta(beta)
    assert (
        linearised_rate(eta, beta, [1.0], 0.99 * bound)
        < 1
        < linearised_rate(eta, beta, [1.0], 1.01 * bound)
    )
    # ... and the exact dynamics agree: rock-paper-scissors at beta = 0.03 does not converge
    rps = make_game("rps", beta=beta)
    assert _kl_after(rps, eta, 3, iterations=3000, init="random") > 1e-3
