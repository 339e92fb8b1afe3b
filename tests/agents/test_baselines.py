"""Maths of the baselines: equivalences, last-iterate convergence (or its absence) and biases."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from agents.pg import default_nash_mp_pg_lr, nash_mp_pg_half_step
from agents.updates import (
    default_explicit_step,
    log_normalize,
    mmd_step,
    nash_md_mixture,
    nash_mp_prox_step,
    payoff_lipschitz,
    regularized_explicit_step,
    softmax,
)
from nlhf_envs import make_game


def _random_log_policy(shape, seed):
    return log_normalize(np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize("beta,eta", [(0.1, 0.2), (0.01, 0.02), (0.5, 0.3)])
def test_nash_mp_half_step_equals_one_mmd_step(beta, eta):
    """One Nash-MP half-step = one MMD step with lr = eta / beta (from the same pi_k)."""
    game = make_game("skew_gaussian", num_actions=12, num_contexts=3, beta=beta, seed=2)
    l_k = _random_log_policy(game.shape, 0)
    g = game.win_rates_all(softmax(l_k))
    l_ref = np.log(game.pi_ref)
    half = nash_mp_prox_step(l_k, l_ref, g, eta, beta)
    np.testing.assert_allclose(mmd_step(l_k, l_ref, g, eta / beta, beta), half, atol=1e-13)
    # the same through the agents: one MMD iteration is Nash-MP's first half-step
    mmd = agents.make("mmd", game, seed=4, init="random", lr=eta / beta).learn(num_iterations=1)
    nmp = agents.make("nash_mp", game, seed=4, init="random", eta=eta)
    start = nmp.log_pi
    expected = nash_mp_prox_step(start, l_ref, game.win_rates_all(softmax(start)), eta, beta)
    np.testing.assert_allclose(mmd.log_pi, expected, atol=1e-13)


def test_mmd_step_is_the_explicit_step_with_shrunk_lam():
    """MMD(lr) = explicit step with lam = lr / (1 + lr beta): the two default steps coincide."""
    game = make_game("uniform", num_actions=9, beta=0.1, seed=3)
    l = _random_log_policy(game.shape, 1)
    g = game.win_rates_all(softmax(l))
    l_ref = np.log(game.pi_ref)
    lr = 2.5
    np.testing.assert_allclose(
        mmd_step(l, l_ref, g, lr, 0.1),
        regularized_explicit_step(l, l_ref, g, lr / (1 + lr * 0.1), 0.1),
        atol=1e-13,
    )
    L = payoff_lipschitz(game.P)
    lr_mmd = 0.1 / L**2
    assert default_explicit_step(game.P, 0.1) == pytest.approx(lr_mmd / (1 + lr_mmd * 0.1))


def test_exact_online_ipo_equals_exact_inpo():
    game = make_game("condorcet", num_actions=15, num_contexts=2, beta=0.05, seed=1)
    ipo = agents.make("online_ipo", game, seed=9, init="random", lam=3.0).learn(num_iterations=40)
    inpo = agents.make("inpo", game, seed=9, init="random", eta=3.0).learn(num_iterations=40)
    np.testing.assert_array_equal(ipo.log_pi, inpo.log_pi)
    assert ipo.queries_used == inpo.queries_used == 40


LINEAR = ["nash_mp", "online_ipo", "inpo", "mmd", "egpo", "omwu"]


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("family,kw", [("uniform", {"num_actions": 10}), ("cyclic", {})])
def test_last_iterate_reaches_the_regularised_nash(name, family, kw):
    """At their default steps the linearly convergent methods reach pi*_beta to KL < 1e-10."""
    game = make_game(family, beta=0.1, **kw)
    agent = agents.make(name, game, seed=0, init="random").learn(num_queries=4000)
    assert agent.history[-1]["game/kl_to_nash"] < 1e-10
    assert agent.history[-1]["game/exploitability"] < 1e-9


def test_nash_md_harmonic_converges_like_one_over_t():
    game = make_game("uniform", num_actions=10, beta=0.1, seed=0)
    agent = agents.make("nash_md", game, seed=0, init="random", log_every=1)
    agent.learn(num_iterations=3000)
    kl = np.array([r["game/kl_to_nash"] for r in agent.history])
    assert kl[-1] < 1e-6
    # O(1/T): ten times more iterations shrink the KL by at least 10 (here much more)
    assert kl[2999] < kl[299] / 10


def test_nash_md_constant_step_is_biased():
    """Constant-step Nash-MD converges, but to a biased fixed point (KL(pi*||pi) stalls > 1e-4).

    The stall point solves beta (l - l_ref) = g_{pi^mu} + c (Nash-MD's fixed-point equation), not
    beta (l - l_ref) = g_pi + c (the Nash equation).
    """
    game = make_game("uniform", num_actions=10, beta=0.1, seed=0)
    eta = 5.0  # eta beta = 1/2
    agent = agents.make("nash_md", game, seed=0, schedule="constant", eta=eta, log_every=1)
    agent.learn(num_iterations=3000)
    kl = np.array([r["game/kl_to_nash"] for r in agent.history])
    assert abs(kl[-1] - kl[-500]) < 1e-12  # it has converged ...
    assert kl[-1] > 1e-4  # ... away from pi*_beta
    l = agent.log_pi
    l_mu = nash_md_mixture(l, np.log(game.pi_ref), eta, game.beta)

    def spread(r):
        return float(np.ptp(r))

    fixed = game.beta * (l - np.log(game.pi_ref)) - game.win_rates_all(softmax(l_mu))
    nash = game.beta * (l - np.log(game.pi_ref)) - game.win_rates_all(softmax(l))
    assert spread(fixed) < 1e-10
    assert spread(nash) > 1e-3
    harmonic = agents.make("nash_md", game, seed=0).learn(num_iterations=3000)
    assert harmonic.history[-1]["game/kl_to_nash"] < 1e-2 * kl[-1]


def test_sppo_last_iterate_does_not_reach_the_regularised_nash_but_its_average_helps():
    game = make_game("rps", beta=0.1)
    agent = agents.make("sppo", game, seed=0, init="random").learn(num_iterations=2000)
    kls = [r["game/kl_to_nash"] for r in agent.history[-200:]]
    assert min(kls) > 0.05  # the last iterate cycles around uniform
    avg = agent.history[-1]["policy/avg_unreg_exploitability"]
    assert avg < 0.02 < agent.history[0]["game/unreg_exploitability"]
    np.testing.assert_allclose(agent.average_policy(), 1 / 3, atol=0.03)


@pytest.mark.parametrize(
    "family,kw,steps,batch", [("rps", {}, 4000, 256), ("uniform", {"num_actions": 10}, 4000, 1024)]
)
def test_pg_inner_loop_matches_closed_form_half_step(family, kw, steps, batch):
    """M stochastic PG steps (long enough) match the closed-form prox step to 1e-3 in TV."""
    game = make_game(family, beta=0.1, **kw)
    eta = 0.2
    l_k = _random_log_policy(game.shape, 0)
    pi_opp = softmax(_random_log_policy(game.shape, 1))
    l_ref = np.log(game.pi_ref)
    target = softmax(nash_mp_prox_step(l_k, l_ref, game.win_rates_all(pi_opp), eta, 0.1))
    lr = default_nash_mp_pg_lr(game.num_actions, 0.1, eta)
    q0 = game.queries
    out = nash_mp_pg_half_step(
        game, l_k, l_k, l_ref, pi_opp, eta=eta, steps=steps, batch_size=batch, lr=lr,
        average=True, rng=np.random.default_rng(1),
    )  # fmt: skip
    assert game.queries - q0 == steps * batch
    tv = 0.5 * np.abs(softmax(out) - target).sum()
    assert tv < 1e-3
    # and a short inner loop is far from it (the test can fail)
    short = nash_mp_pg_half_step(
        game, l_k, l_k, l_ref, pi_opp, eta=eta, steps=2, batch_size=8, lr=lr,
        average=False, rng=np.random.default_rng(1),
    )  # fmt: skip
    assert 0.5 * np.abs(softmax(short) - target).sum() > 1e-2


# (agent, mode, config, query budget) for exploitability < 0.01 on RPS and a 10-action uniform game
STOCHASTIC = [
    ("nash_mp", "sampled", {"batch_size": 256}, 20_000),
    ("nash_mp", "pg", {}, 40_000),
    ("online_ipo", "sampled", {"batch_size": 256}, 20_000),
    ("online_ipo", "pg", {}, 20_000),
    ("inpo", "pg", {}, 40_000),
    ("mmd", "sampled", {"batch_size": 256}, 20_000),
    ("egpo", "sampled", {"batch_size": 256}, 20_000),
    ("omwu", "sampled", {"batch_size": 256}, 20_000),
    ("nash_md", "sampled", {"batch_size": 256}, 20_000),
]


@pytest.mark.parametrize("name,mode,cfg,budget", STOCHASTIC)
@pytest.mark.parametrize("family,kw", [("rps", {}), ("uniform", {"num_actions": 10})])
def test_stochastic_modes_reach_low_exploitability(name, mode, cfg, budget, family, kw):
    """Mean exploitability of the last 10 iterates < 0.01 within the stated budget (beta = 0.1)."""
    game = make_game(family, beta=0.1, **kw)
    agent = agents.make(name, game, seed=0, init="random", mode=mode, **cfg)
    start = agent.metrics()["game/exploitability"]
    agent.learn(num_queries=budget)
    assert budget - 2 * 20 * 32 < agent.queries_used <= budget  # never past it, < 1 iteration short
    tail = np.mean([r["game/exploitability"] for r in agent.history[-10:]])
    assert tail < 0.01 < start
