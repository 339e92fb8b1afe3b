"""Nash-MP: the linear-rate guarantee of Tiapkin et al. (2025) and its closed form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agents
from agents.updates import nash_mp_prox_step, softmax
from nlhf_envs import make_game, solvers

# (family, K, beta, seed): several families and sizes, beta from 0.01 to 0.5
CASES = [
    ("uniform", 3, 0.5, 0),
    ("uniform", 10, 0.1, 1),
    ("skew_gaussian", 30, 0.05, 2),
    ("cyclic", 7, 0.2, 0),
    ("condorcet", 50, 0.01, 3),
    ("disc", 100, 0.1, 4),
    ("bradley_terry", 20, 0.3, 5),
    ("uniform", 1000, 0.01, 6),
    ("skew_gaussian", 1000, 0.5, 7),
]


def _game(family, K, beta, seed):
    kw = {"num_actions": K, "beta": beta}
    if family != "cyclic":
        kw["seed"] = seed
    return make_game(family, **kw)


@pytest.mark.parametrize("family,K,beta,seed", CASES)
@pytest.mark.parametrize("eta_factor", [2.0, 1.0, 0.3])
def test_kl_contracts_at_least_at_the_theory_rate(family, K, beta, seed, eta_factor):
    """KL(pi*||pi_k) <= (1 + eta)^(-k) KL(pi*||pi_0) at every k, for eta <= 2 beta."""
    game = _game(family, K, beta, seed)
    eta = eta_factor * beta
    iters = 60 if K < 1000 else 25
    agent = agents.make("nash_mp", game, seed=seed, eta=eta, init="random")
    kl0 = agent.metrics()["game/kl_to_nash"]
    agent.learn(num_iterations=iters)
    kls = np.array([row["game/kl_to_nash"] for row in agent.history])
    k = np.arange(1, iters + 1)
    bound = kl0 * (1.0 + eta) ** (-k)
    # the bound must hold at every iteration (tiny slack for float rounding near 1e-14)
    assert np.all(kls <= bound * (1 + 1e-9) + 1e-14), (kls / bound).max()
    assert kl0 > 1e-3  # the random start is far from pi*
    assert agent.queries_used == 2 * iters


def test_rate_is_not_vacuous_for_too_large_steps():
    """eta far above 2 beta on RPS: the bound (1 + eta)^(-k) is violated (the condition matters)."""
    game = make_game("rps", beta=0.01)
    eta = 50 * 2 * game.beta
    agent = agents.make("nash_mp", game, seed=0, eta=eta, init="random").learn(num_iterations=30)
    kls = np.array([row["game/kl_to_nash"] for row in agent.history])
    kl0 = solvers.kl_to_nash(
        game, softmax(agents.make("nash_mp", game, seed=0, init="random").log_pi)
    )
    assert np.any(kls > kl0 * (1.0 + eta) ** (-np.arange(1, 31)))


def test_exact_iteration_matches_closed_form_and_costs_two_queries():
    game = make_game("uniform", num_actions=8, beta=0.1, seed=0)
    agent = agents.make("nash_mp", game, seed=0, init="random")
    l0 = agent.log_pi.copy()
    q0 = game.queries
    agent.learn(num_iterations=1)
    assert game.queries - q0 == 2
    eta, beta, l_ref = 0.2, 0.1, np.log(game.pi_ref)
    g0 = game.win_rates_all(softmax(l0))
    lh = l0 + eta * l_ref + (eta / beta) * g0
    lh = lh / (1 + eta)
    lh -= np.log(np.exp(lh).sum())
    g1 = game.win_rates_all(softmax(lh))
    l1 = (l0 + eta * l_ref + (eta / beta) * g1) / (1 + eta)
    l1 -= np.log(np.exp(l1).sum())
    np.testing.assert_allclose(agent.log_pi, l1, atol=1e-12)


def test_nash_is_a_fixed_point_of_the_prox_step():
    game = make_game("skew_gaussian", num_actions=20, beta=0.05, seed=1)
    star = solvers.regularized_nash(game)[None]
    l_star = np.log(star)
    out = nash_mp_prox_step(l_star, np.log(game.pi_ref), game.win_rates_all(star), 0.1, 0.05)
    np.testing.assert_allclose(out, l_star, atol=1e-10)


@pytest.mark.parametrize("beta", [0.5, 0.1, 0.01])
def test_queries_to_1e_minus_6_within_theory(beta):
    """Nash-MP at eta = 2 beta shrinks KL by 1e-6 within 2 ln(1e6)/ln(1 + 2 beta) queries."""
    game = make_game("uniform", num_actions=100, beta=beta, seed=0)
    agent = agents.make("nash_mp", game, seed=0, init="random")
    kl0 = agent.metrics()["game/kl_to_nash"]
    budget = 2 * int(np.ceil(np.log(1e6) / np.log(1 + 2 * beta)))
    agent.learn(num_queries=budget)
    assert agent.history[-1]["game/kl_to_nash"] <= 1e-6 * kl0


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    family=st.sampled_from(["uniform", "skew_gaussian", "condorcet", "disc", "cyclic"]),
    K=st.integers(2, 200),
    beta=st.floats(0.01, 0.5),
    eta_factor=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
    contexts=st.integers(1, 3),
)
def test_kl_bound_on_random_games(family, K, beta, eta_factor, seed, contexts):
    """Hypothesis sweep of the theorem: every k, eta = eta_factor * 2 beta, contextual games too."""
    kw = {"num_actions": K, "beta": beta}
    if family != "cyclic":
        kw.update(seed=seed, num_contexts=contexts)
    game = make_game(family, **kw)
    eta = eta_factor * 2 * beta
    star = game.as_policy(solvers.regularized_nash(game))
    agent = agents.make("nash_mp", game, seed=seed, eta=eta, init="random", log_every=0)

    def kl(a):
        return float(game.rho @ (star * (np.log(star) - a.log_pi)).sum(axis=1))

    kl0 = kl(agent)
    kls = []
    agent.learn(num_iterations=40, callback=lambda a: kls.append(kl(a)))
    bound = kl0 * (1 + eta) ** -np.arange(1, 41)
    assert np.all(np.array(kls) <= bound * (1 + 1e-9) + 1e-13)
