"""Design (C) of Nash-MP (issue 23, item 5): the exact-gradient tabular analogue of the token agent's
``variant="ema"`` has the beta-regularised Nash equilibrium as its fixed point."""

from __future__ import annotations

import numpy as np
import pytest

from agents.nash_mp_ema import nash_mp_ema_step, run_nash_mp_ema
from nlhf_envs import make_game, solvers
from nlhf_envs.game import PreferenceGame


def _contextual_game() -> PreferenceGame:
    rng = np.random.default_rng(7)
    C, K = 3, 5
    A = rng.uniform(-0.5, 0.5, (C, K, K))
    P = 0.5 + (A - A.transpose(0, 2, 1)) / 2
    ref = rng.dirichlet(np.ones(K) * 2, C)
    return PreferenceGame(P, ref, beta=0.2, rho=[0.5, 0.3, 0.2], name="random_contextual")


GAMES = {
    "biased_rps": lambda: make_game("biased_rps"),
    "uniform": lambda: make_game("uniform", num_actions=10, seed=0),
    "contextual": _contextual_game,
}


@pytest.mark.parametrize("name", sorted(GAMES))
@pytest.mark.parametrize(("eta_over_beta", "kappa"), [(2.0, 0.1), (0.5, 0.5)])
def test_design_c_reaches_the_exact_regularised_nash(name, eta_over_beta, kappa):
    game = GAMES[name]()
    star = np.reshape(solvers.regularized_nash(game), game.shape)
    pi = run_nash_mp_ema(game, 10000, eta=eta_over_beta * game.beta, lr=1.0, kappa=kappa)
    assert solvers.kl_to_nash(game, pi, star) < 1e-9
    assert abs(solvers.exploitability(game, pi)) < 1e-9
    np.testing.assert_allclose(pi, star, rtol=0, atol=1e-5)


def test_the_regularised_nash_is_a_rest_point_and_pi_ref_is_not():
    game = _contextual_game()
    star = np.log(np.reshape(solvers.regularized_nash(game), game.shape))
    theta, theta_bar = nash_mp_ema_step(game, star, star, eta=0.4, lr=1.0, kappa=0.1)
    np.testing.assert_allclose(theta, star, rtol=0, atol=1e-12)
    np.testing.assert_allclose(theta_bar, star, rtol=0, atol=1e-12)
    ref = np.log(game.pi_ref)
    theta, theta_bar = nash_mp_ema_step(game, ref, ref, eta=0.4, lr=1.0, kappa=0.1)
    assert np.abs(theta - ref).max() > 1e-3
    # the EMA moves a tenth of the way: theta_bar = 0.9 ref + 0.1 theta (normalised logits)
    mix = 0.9 * ref + 0.1 * theta
    mix -= np.log(np.exp(mix).sum(-1, keepdims=True))
    np.testing.assert_allclose(theta_bar, mix, rtol=0, atol=1e-12)


def test_bad_steps_are_refused():
    game = make_game("rps")
    ref = np.log(np.reshape(game.pi_ref, game.shape))
    with pytest.raises(ValueError, match=r"kappa in \(0, 1\]; got lr=1.0, kappa=0.0"):
        nash_mp_ema_step(game, ref, ref, eta=0.2, lr=1.0, kappa=0.0)
