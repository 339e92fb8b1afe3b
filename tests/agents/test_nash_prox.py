"""Nash Prox (issue 32, item 3): the proximal-point outer step contracts KL(pi*||pi_k) by
1/(1 + eta) for any eta, its self-play inner loop computes that step, and the prox game makes
self-play steps stable that are not stable on the game itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agents
from agents.nash_prox import prox_beta, prox_game, prox_reference, proximal_point_step
from agents.updates import softmax
from nlhf_envs import make_game, solvers

# (family, K, beta, seed, contexts): several families, sizes and betas
CASES = [
    ("rps", 3, 0.03, 0, 1),
    ("uniform", 10, 0.1, 1, 1),
    ("skew_gaussian", 30, 0.01, 2, 1),
    ("cyclic", 7, 0.05, 0, 1),
    ("condorcet", 40, 0.03, 3, 1),
    ("disc", 60, 0.1, 4, 1),
    ("bradley_terry", 20, 0.3, 5, 1),
    ("uniform", 12, 0.03, 6, 4),
]


def _game(family, K, beta, seed, contexts=1):
    if family == "rps":
        return make_game("rps", beta=beta)
    kw = {"num_actions": K, "beta": beta}
    if family != "cyclic":
        kw.update(seed=seed, num_contexts=contexts)
    return make_game(family, **kw)


def _kl(game, star, pi):
    return float(game.rho @ (star * (np.log(star) - np.log(pi))).sum(axis=1))


@pytest.mark.parametrize("family,K,beta,seed,contexts", CASES)
@pytest.mark.parametrize("eta", [0.05, 0.3, 1.0, 10.0, 100.0])
def test_exact_outer_step_contracts_by_one_over_one_plus_eta_for_any_eta(
    family, K, beta, seed, contexts, eta
):
    """KL(pi*||pi_{k+1}) <= KL(pi*||pi_k) / (1 + eta) at every exact proximal-point step, from a
    random start, for steps far below and far above Nash-MP's eta <= 2 beta."""
    game = _game(family, K, beta, seed, contexts)
    star = game.as_policy(solvers.regularized_nash(game))
    pi = softmax(np.random.default_rng(seed).standard_normal(game.shape))
    kl = _kl(game, star, pi)
    assert kl > 1e-2  # the start is far from pi*
    for _ in range(5):
        pi = proximal_point_step(game, pi, eta)
        new = _kl(game, star, pi)
        assert new <= kl / (1.0 + eta) * (1 + 1e-9) + 1e-13, (new, kl)
        kl = new


def test_the_contraction_factor_is_nearly_attained():
    """The bound is the right rate, not a loose one: for eta = beta the KL falls by 0.86-0.9 of the
    factor 1/(1 + eta) per step on a uniform game (the term eta KL(pi_{k+1}||pi*) that the bound
    drops is small there)."""
    game = make_game("uniform", num_actions=10, beta=0.1, seed=0)
    star = game.as_policy(solvers.regularized_nash(game))
    pi = softmax(np.random.default_rng(0).standard_normal(game.shape))
    ratios = []
    for _ in range(6):
        new = proximal_point_step(game, pi, 0.1)
        ratios.append(_kl(game, star, new) * 1.1 / _kl(game, star, pi))
        pi = new
    assert 0.85 < min(ratios) and max(ratios) < 0.9


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    family=st.sampled_from(["uniform", "skew_gaussian", "condorcet", "disc", "cyclic"]),
    K=st.integers(2, 60),
    beta=st.floats(0.01, 0.5),
    log_eta=st.floats(-3.0, 3.0),
    seed=st.integers(0, 10_000),
    contexts=st.integers(1, 3),
)
def test_contraction_on_random_games(family, K, beta, log_eta, seed, contexts):
    """Hypothesis sweep of the contraction: eta from 1e-3 to 1e3, contextual games too."""
    game = _game(family, max(K, 3), beta, seed, contexts)
    eta = float(10.0**log_eta)
    star = game.as_policy(solvers.regularized_nash(game))
    pi = softmax(np.random.default_rng(seed).standard_normal(game.shape))
    kl = _kl(game, star, pi)
    for _ in range(3):
        pi = proximal_point_step(game, pi, eta)
        new = _kl(game, star, pi)
        assert new <= kl / (1.0 + eta) * (1 + 1e-8) + 1e-12
        kl = new


def test_the_prox_game_folds_both_regularisers_into_one():
    """beta KL(pi||pi_ref) + (beta/eta) KL(pi||pi_k) = beta' KL(pi||pi_ref') + a constant, with
    beta' = beta (1 + 1/eta) and pi_ref' the normalised geometric mixture; and the prox step is
    the implicit Nash-MP step l = (l_k + eta l_ref + (eta/beta) g_{pi_{k+1}}) / (1 + eta)."""
    game = make_game("skew_gaussian", num_actions=9, beta=0.07, seed=3)
    rng = np.random.default_rng(0)
    l_ref = np.log(game.pi_ref)
    l_k = np.log(softmax(rng.standard_normal(game.shape)))
    eta = 0.6
    ref2 = softmax(prox_reference(l_ref, l_k, eta))
    beta2 = prox_beta(game.beta, eta)
    assert beta2 == pytest.approx(0.07 * (1 + 1 / 0.6))

    def kl(p, q):
        return float((p * (np.log(p) - np.log(q))).sum())

    consts = []
    for _ in range(5):
        pi = softmax(rng.standard_normal(game.shape))
        lhs = game.beta * kl(pi, game.pi_ref) + game.beta / eta * kl(pi, np.exp(l_k))
        consts.append(lhs - beta2 * kl(pi, ref2))
    np.testing.assert_allclose(consts, consts[0], atol=1e-12)
    new = proximal_point_step(game, np.exp(l_k), eta)
    g = game.win_rates_all(new)
    implicit = (l_k + eta * l_ref + (eta / game.beta) * g) / (1 + eta)
    implicit -= np.log(np.exp(implicit).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.log(new), implicit, atol=1e-9)
    assert prox_game(game, np.exp(l_k), eta).beta == pytest.approx(beta2)


def test_nash_is_the_fixed_point_of_the_outer_step():
    game = make_game("condorcet", num_actions=25, beta=0.02, seed=1)
    star = game.as_policy(solvers.regularized_nash(game))
    np.testing.assert_allclose(proximal_point_step(game, star, 0.5), star, atol=1e-10)


def test_the_self_play_inner_loop_computes_the_outer_step():
    """M exact self-play steps on the prox game (the agent's inner loop, Online IPO's update with
    beta' and pi_ref') reach the exact proximal-point step; the anchor is then refreshed."""
    game = make_game("uniform", num_actions=8, beta=0.1, seed=2)
    M = 400
    agent = agents.make("nash_prox", game, seed=0, init="random", eta=0.5, inner_steps=M,
                        log_every=0)  # fmt: skip
    start = softmax(agent.log_pi.copy())
    agent.learn(num_iterations=M)
    assert agent.queries_used == M  # one exact win-rate evaluation per self-play step
    np.testing.assert_allclose(
        agent.policy_table(), proximal_point_step(game, start, 0.5)[0], atol=1e-10
    )
    agent.learn(num_iterations=1)
    np.testing.assert_allclose(np.exp(agent.anchor), proximal_point_step(game, start, 0.5),
                               atol=1e-10)  # fmt: skip


def test_the_prox_game_stabilises_a_self_play_step_that_cycles_on_the_game():
    """The stability limitation and its fix: on rock-paper-scissors at beta = 0.03 the self-play
    step lam = 1.5 is unstable (|1 - lam beta + i lam omega| > 1 at omega = sqrt(3)/6): Online IPO
    circles pi* at a KL of 0.05 or more for ever; inside the prox game (eta = 0.25, beta' = 0.15)
    the same step contracts, and Nash Prox reaches pi*."""
    game = make_game("rps", beta=0.03)
    star = game.as_policy(solvers.regularized_nash(game))
    ipo = agents.make("online_ipo", game, seed=0, init="random", lam=1.5, log_every=0)
    ipo.learn(num_iterations=3000)
    tail = []
    ipo.learn(
        num_iterations=300, callback=lambda a: tail.append(_kl(game, star, softmax(a.log_pi)))
    )
    assert min(tail) > 0.05
    prox = agents.make("nash_prox", game, seed=0, init="random", lam=1.5, eta=0.25,
                       inner_steps=20, log_every=0)  # fmt: skip
    prox.learn(num_iterations=3000)
    assert _kl(game, star, softmax(prox.log_pi)) < 1e-10


@pytest.mark.parametrize("family,beta", [("rps", 0.03), ("uniform", 0.1), ("cyclic", 0.05)])
def test_default_agent_converges_in_the_last_iterate(family, beta):
    game = _game(family, 10, beta, 0)
    agent = agents.make("nash_prox", game, seed=0, init="random", log_every=0)
    agent.learn(num_iterations=4000)
    assert agent.metrics()["game/kl_to_nash"] < 1e-10


def test_sampled_mode_reaches_low_exploitability_on_rps():
    game = make_game("rps", beta=0.1)
    agent = agents.make("nash_prox", game, seed=0, mode="sampled", batch_size=256, log_every=0)
    agent.learn(num_queries=20_000)
    assert agent.metrics()["game/exploitability"] < 0.01


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(agents.ConfigError, match="eta: must be > 0"):
        agents.make("nash_prox", "rps", eta=0.0)
    with pytest.raises(agents.ConfigError, match="inner_steps: must be an integer >= 1"):
        agents.make("nash_prox", "rps", inner_steps=0)
    with pytest.raises(agents.ConfigError, match="lam: .* out of range"):
        agents.make("nash_prox", "rps", lam=100.0)
