"""Exact solvers and metrics: fixed points, closed forms, known equilibria."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlhf_envs import PreferenceGame, make_game
from nlhf_envs import solvers as S


def test_importing_solvers_does_not_import_torch():
    import subprocess

    code = "import nlhf_envs.solvers, nlhf_envs, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("beta", [1e-3, 0.1, 1.0])
def test_rps_regularized_nash_is_uniform(beta):
    g = make_game("rps", beta=beta)
    np.testing.assert_allclose(S.regularized_nash(g), np.full(3, 1 / 3), atol=1e-12)
    g7 = make_game("cyclic", num_actions=8, beta=beta)
    np.testing.assert_allclose(S.regularized_nash(g7), np.full(8, 1 / 8), atol=1e-12)


@pytest.mark.parametrize(
    "family, K, beta",
    [("uniform", 50, 0.1), ("skew_gaussian", 40, 0.01), ("condorcet", 30, 0.5), ("disc", 25, 1e-3)],
)
def test_fixed_point(family, K, beta):
    g = make_game(family, num_actions=K, beta=beta, seed=1)
    pi = S.regularized_nash(g)
    logits = np.log(g.pi_ref[0]) + (g.P[0] @ pi) / beta
    target = np.exp(logits - logits.max())
    np.testing.assert_allclose(pi, target / target.sum(), rtol=1e-9, atol=1e-14)
    assert S.exploitability(g, pi) < 1e-12
    np.testing.assert_allclose(S.best_response(g, pi), pi, rtol=1e-9, atol=1e-14)


def test_fixed_point_with_nonuniform_reference():
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(20))
    g = make_game("uniform", num_actions=20, beta=0.05, pi_ref=ref, seed=4)
    pi = S.regularized_nash(g)
    assert S.exploitability(g, pi) < 1e-12
    assert S.kl_to_nash(g, pi) < 1e-20
    assert S.span_to_nash(g, pi) < 1e-9


@pytest.mark.parametrize("K, beta", [(2000, 1e-3), (1000, 0.01), (2000, 0.5)])
def test_regularized_nash_large(K, beta):
    g = make_game("uniform", num_actions=K, beta=beta, seed=0)
    pi = S.regularized_nash(g)
    assert S.exploitability(g, pi) < 1e-10
    assert abs(pi.sum() - 1) < 1e-12 and pi.min() > 0


def test_contextual_nash_solves_each_context():
    g = make_game("skew_gaussian", num_actions=15, num_contexts=6, beta=0.05, seed=2)
    pi = S.regularized_nash(g)
    assert pi.shape == (6, 15)
    for x in range(6):
        gx = PreferenceGame(g.P[x], beta=0.05)
        np.testing.assert_allclose(pi[x], S.regularized_nash(gx), atol=1e-12)
    assert S.exploitability(g, pi) < 1e-12


def test_exploitability_closed_form_matches_best_response_value():
    g = make_game("condorcet", num_actions=8, beta=0.2, seed=3)
    rng = np.random.default_rng(1)
    pi = rng.dirichlet(np.ones(8))
    br = S.best_response(g, pi)

    def p_beta(p, q):  # P_beta(p > q)
        return p @ g.P[0] @ q - g.beta * S.kl(p, g.pi_ref[0]) + g.beta * S.kl(q, g.pi_ref[0])

    assert S.exploitability(g, pi) == pytest.approx(p_beta(br, pi) - 0.5, abs=1e-12)
    # the best response beats every other policy against pi
    for _ in range(20):
        other = rng.dirichlet(np.ones(8))
        assert p_beta(other, pi) <= p_beta(br, pi) + 1e-12
    assert S.duality_gap(g, pi) == pytest.approx(2 * S.exploitability(g, pi))


@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(2, 12),
    seed=st.integers(0, 10_000),
    beta=st.floats(1e-3, 2.0),
    family=st.sampled_from(["uniform", "skew_gaussian", "condorcet", "disc", "bradley_terry"]),
    concentration=st.floats(0.05, 5.0),
)
def test_exploitability_nonnegative_and_zero_only_at_nash(K, seed, beta, family, concentration):
    g = make_game(family, num_actions=K, beta=beta, seed=seed)
    pi = np.random.default_rng(seed).dirichlet(np.full(K, concentration))
    nash = S.regularized_nash(g)
    e_pi, e_star = S.exploitability(g, pi), S.exploitability(g, nash)
    assert e_pi >= -1e-12
    assert abs(e_star) < 1e-10
    assert S.unregularized_exploitability(g, pi) >= -1e-12
    # strict positivity away from pi*: the regularised game has a unique equilibrium
    if np.abs(pi - nash).sum() > 1e-3:
        assert e_pi > 0


def test_transitive_game_concentrates_on_condorcet_winner():
    g = make_game("bradley_terry", num_actions=12, seed=5, scale=2.0)
    winner = int(np.argmax(g.P[0].sum(axis=1)))
    assert np.all(g.P[0][winner, np.arange(12) != winner] > 0.5)
    masses = [S.regularized_nash(g.with_beta(b))[winner] for b in (1.0, 0.1, 0.01, 0.001)]
    assert all(a < b for a, b in zip(masses, masses[1:]))
    assert masses[-1] > 0.99
    np.testing.assert_allclose(S.nash_lp(g), np.eye(12)[winner], atol=1e-9)


def test_lp_nash_rps_like_games():
    np.testing.assert_allclose(S.nash_lp(make_game("rps")), np.full(3, 1 / 3), atol=1e-9)
    np.testing.assert_allclose(
        S.nash_lp(make_game("cyclic", num_actions=5)), np.full(5, 0.2), atol=1e-9
    )
    np.testing.assert_allclose(
        S.nash_lp(make_game("biased_rps")), [1 / 16, 10 / 16, 5 / 16], atol=1e-9
    )
    g = make_game("uniform", num_actions=30, seed=0)
    assert S.unregularized_exploitability(g, S.nash_lp(g)) < 1e-9


def test_kl_and_span_to_nash():
    g = make_game("rps", beta=0.1)
    pi = np.array([0.5, 0.25, 0.25])
    expected = np.sum((1 / 3) * np.log((1 / 3) / pi))
    assert S.kl_to_nash(g, pi) == pytest.approx(expected, rel=1e-12)
    assert S.span_to_nash(g, pi) == pytest.approx(np.log(2), rel=1e-12)
    assert S.kl_to_nash(g, np.array([1.0, 0.0, 0.0])) == np.inf
    assert S.entropy(g, np.full(3, 1 / 3)) == pytest.approx(np.log(3))


def test_metric_input_errors():
    g = make_game("rps")
    with pytest.raises(ValueError, match=r"pi must sum to 1 in every context"):
        S.exploitability(g, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"pi must have shape \(3,\) or \(1, 3\)"):
        S.exploitability(g, [0.5, 0.5])


@pytest.mark.parametrize("family, K", [("uniform", 10), ("skew_gaussian", 100)])
@pytest.mark.parametrize("beta", [1e-4, 1e-6])
def test_regularized_nash_converges_for_small_beta(family, K, beta):
    g = make_game(family, num_actions=K, beta=beta, seed=0)
    pi = S.regularized_nash(g, use_cache=False)
    assert S.exploitability(g, pi) < 1e-9
    assert abs(pi.sum() - 1) < 1e-12 and pi.min() >= 0
    # the fixed point pi = softmax(log pi_ref + g_pi / beta), evaluated in a stable way
    logits = np.log(g.pi_ref[0]) + (g.P[0] @ pi - 0.5) / beta
    target = np.exp(logits - logits.max())
    np.testing.assert_allclose(pi, target / target.sum(), atol=1e-9)


def test_regularized_nash_refuses_an_unverified_answer():
    from nlhf_envs.errors import SolverError

    g = make_game("uniform", num_actions=10, beta=1e-6, seed=0)
    with pytest.raises(SolverError, match=r"did not converge for beta=1e-06"):
        S.regularized_nash(g, max_iter=1, use_cache=False)
    assert S.cached_nash(g) is None


@pytest.mark.parametrize(
    "family, K, C, beta",
    [
        ("uniform", 300, 1, 0.1),
        ("skew_gaussian", 400, 1, 0.01),
        ("condorcet", 300, 1, 0.5),
        ("skew_gaussian", 60, 1, 1e-3),
        ("uniform", 300, 3, 0.05),
    ],
)
def test_krylov_newton_matches_dense_newton(family, K, C, beta):
    g = make_game(family, num_actions=K, num_contexts=C, beta=beta, seed=3)
    dense = S.regularized_nash(g, use_cache=False, method="dense")
    krylov = S.regularized_nash(g, use_cache=False, method="krylov")
    np.testing.assert_allclose(krylov, dense, rtol=1e-9, atol=1e-13)
    assert S.exploitability(g, krylov) < 1e-12
    # the fixed point pi = softmax(log pi_ref + g_pi / beta)
    pi = krylov.reshape(C, K)
    logits = np.log(g.pi_ref) + g.win_rates_all(pi) / beta
    target = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(pi, target / target.sum(axis=1, keepdims=True), rtol=1e-9)


def test_auto_method_uses_krylov_above_dense_max_k():
    assert S.DENSE_MAX_K == 256
    g = make_game("uniform", num_actions=S.DENSE_MAX_K + 1, beta=0.1, seed=0)
    calls = []
    orig = S._newton_krylov
    try:
        S._newton_krylov = lambda *a: calls.append(1) or orig(*a)
        pi = S.regularized_nash(g, use_cache=False)
    finally:
        S._newton_krylov = orig
    assert calls and S.exploitability(g, pi) < 1e-12


def test_krylov_newton_forms_no_k_by_k_temporary():
    import tracemalloc

    K = 1200
    g = make_game("skew_gaussian", num_actions=K, beta=0.01, seed=0)
    tracemalloc.start()
    try:
        pi = S.regularized_nash(g, use_cache=False, method="krylov")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * K * K * 8  # a K x K float64 array would be 11.5 MB; vectors are 10 kB
    assert S.exploitability(g, pi) < 1e-12


def test_krylov_matvec_on_selected_contexts_equals_a_copy():
    g = make_game("uniform", num_actions=30, num_contexts=5, beta=0.1, seed=1)
    v = np.random.default_rng(0).normal(size=(2, 30))
    idx = np.array([4, 1])
    np.testing.assert_allclose(S._matvec(g.P, v, idx), np.einsum("cij,cj->ci", g.P[idx], v))
    w = np.random.default_rng(1).normal(size=(5, 30))
    np.testing.assert_allclose(S._matvec(g.P, w, None), np.einsum("cij,cj->ci", g.P, w))


def test_krylov_refuses_rather_than_guesses_and_auto_falls_back_to_dense(monkeypatch):
    from nlhf_envs.errors import SolverError

    g = make_game("uniform", num_actions=10, beta=1e-6, seed=0)
    with pytest.raises(SolverError, match=r"did not converge for beta=1e-06"):
        S.regularized_nash(g, method="krylov")
    assert S.cached_nash(g) is None
    with pytest.raises(ValueError, match=r"method must be 'auto', 'dense' or 'krylov'; got 'lu'"):
        S.regularized_nash(g, method="lu")
    # an unverifiable Krylov answer (here: a solver that stops at once) is never returned: "auto"
    # redoes it densely
    big = make_game("uniform", num_actions=S.DENSE_MAX_K + 4, beta=0.1, seed=0)

    def stops_at_once(P, ctx, l_ref, b, l, tol, it):
        return l, l + np.arange(l.shape[1]), l  # residual span K - 1: not verified

    monkeypatch.setattr(S, "_newton_krylov", stops_at_once)
    with pytest.raises(SolverError):
        S.regularized_nash(big, use_cache=False, method="krylov")
    pi = S.regularized_nash(big, use_cache=False)
    assert S.exploitability(big, pi) < 1e-12


def test_auto_method_keeps_the_dense_path_for_small_beta_k():
    calls = []
    orig = S._newton_krylov
    try:
        S._newton_krylov = lambda *a: calls.append(1) or orig(*a)
        g = make_game("uniform", num_actions=300, beta=1e-4, seed=0)  # beta K = 0.03 < 1
        pi = S.regularized_nash(g, use_cache=False)
    finally:
        S._newton_krylov = orig
    assert not calls and S.exploitability(g, pi) < 1e-10


@pytest.mark.slow
def test_krylov_newton_solves_k_10000():
    g = make_game("skew_gaussian", num_actions=10_000, beta=0.05, seed=0)
    pi = S.regularized_nash(g, use_cache=False)
    assert S.exploitability(g, pi) < 1e-12
    logits = np.log(g.pi_ref[0]) + (g.P[0] @ pi) / g.beta
    target = np.exp(logits - logits.max())
    np.testing.assert_allclose(pi, target / target.sum(), rtol=1e-9)


def test_krylov_newton_on_a_subset_of_contexts_solves_them_alone():
    # the continuation path solves only the unverified contexts, selected without copying P
    g = make_game("uniform", num_actions=300, num_contexts=3, beta=0.02, seed=5)
    l_ref = np.log(g.pi_ref)
    idx = np.array([2, 0])
    _, F_sub, pi_sub = S._newton_krylov(g.P, idx, l_ref[idx], 0.02, l_ref[idx].copy(), 1e-14, 100)
    for row, c in enumerate(idx):
        alone = PreferenceGame(g.P[c], beta=0.02)
        np.testing.assert_allclose(
            pi_sub[row], S.regularized_nash(alone, method="dense"), atol=1e-13
        )
    assert np.all(F_sub.max(axis=1) - F_sub.min(axis=1) <= S.NASH_VERIFY_TOL)


def test_the_solution_cache_follows_beta_and_lives_outside_the_game():
    g = make_game("biased_rps")
    first = S.regularized_nash(g)
    assert not hasattr(g, "_cache")
    np.testing.assert_array_equal(S.cached_nash(g)[0], first)
    g.beta = 0.5  # a changed beta must be solved again, never answered from the cache
    assert S.cached_nash(g) is None
    again = S.regularized_nash(g)
    np.testing.assert_allclose(
        again, S.regularized_nash(make_game("biased_rps", beta=0.5)), atol=1e-12
    )
    assert np.abs(again - first).max() > 1e-3
