"""Validation of PreferenceGame: every bad input of the spec gives an error naming the problem."""

import numpy as np
import pytest

from nlhf_envs import GameValidationError, PreferenceGame, make_game
from nlhf_envs.families import FAMILIES

RPS = np.array([[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]])


def test_valid_game_shapes():
    g = PreferenceGame(RPS)
    assert g.shape == (1, 3) and not g.contextual
    np.testing.assert_allclose(g.pi_ref, np.full((1, 3), 1 / 3))
    gc = PreferenceGame(np.stack([RPS, RPS.T]), pi_ref=[0.2, 0.3, 0.5], rho=[0.25, 0.75])
    assert gc.shape == (2, 3) and gc.contextual
    np.testing.assert_allclose(gc.pi_ref[1], [0.2, 0.3, 0.5])


@pytest.mark.parametrize(
    "P, message",
    [
        (np.ones((2, 3)) * 0.5, r"P must be square: got matrices of shape \(2, 3\)"),
        (np.ones(3) * 0.5, r"P must have shape \(K, K\) or \(C, K, K\)"),
        (
            np.array([[0.5, 1.5], [-0.5, 0.5]]),
            r"P entries must lie in \[0, 1\]: found 1.5 at \(0, 1\)",
        ),
        (
            np.array([[0.5, 0.7], [0.7, 0.5]]),
            r"P \+ P.T must equal 1 .* max deviation 0.4 at \(0, 1\)",
        ),
        (
            np.array([[0.4, 0.5], [0.5, 0.6]]),
            r"the diagonal of P must be 1/2 .* found 0.4 at \(0, 0\)",
        ),
        (np.array([[0.5, np.nan], [0.5, 0.5]]), r"P must be finite: found nan at \(0, 1\)"),
        (np.array([[0.5, np.inf], [0.5, 0.5]]), r"P must be finite: found inf"),
    ],
)
def test_bad_matrix_messages(P, message):
    with pytest.raises(GameValidationError, match=message):
        PreferenceGame(P)


def test_tolerance_1e9():
    P = RPS.copy()
    P[0, 1] += 5e-10
    PreferenceGame(P)  # within tolerance
    P[0, 1] += 1e-8
    with pytest.raises(GameValidationError, match="P \\+ P.T must equal 1"):
        PreferenceGame(P)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"pi_ref": [0.5, 0.5, 0.5]},
            r"pi_ref must be a probability distribution \(sum to 1\); row 0 sums to 1.5",
        ),
        ({"pi_ref": [1.0, 0.0, 0.0]}, r"pi_ref must be strictly positive .* found 0.0 at \(1,\)"),
        ({"pi_ref": [0.5, 0.5]}, r"pi_ref must have shape \(3,\) or \(1, 3\); got \(2,\)"),
        ({"pi_ref": [np.nan, 0.5, 0.5]}, r"pi_ref must be finite"),
        ({"beta": 0.0}, r"beta must be a finite number > 0; got 0.0"),
        ({"beta": -1}, r"beta must be a finite number > 0; got -1"),
        ({"beta": float("nan")}, r"beta must be a finite number > 0"),
        (
            {"rho": [0.5, 0.5]},
            r"rho must have shape \(1,\) \(one probability per context\); got \(2,\)",
        ),
        ({"rho": [2.0]}, r"rho must be a probability distribution \(sum to 1\); row 0 sums to 2"),
    ],
)
def test_bad_parameters_messages(kwargs, message):
    with pytest.raises(GameValidationError, match=message):
        PreferenceGame(RPS, **kwargs)


def test_negative_rho_rejected():
    with pytest.raises(GameValidationError, match="rho must be non-negative"):
        PreferenceGame(np.stack([RPS, RPS]), rho=[1.5, -0.5])


def test_arrays_are_read_only():
    g = PreferenceGame(RPS)
    with pytest.raises(ValueError):
        g.P[0, 0, 1] = 0.3


@pytest.mark.parametrize("family", list(FAMILIES))
def test_families_are_valid_and_deterministic(family):
    kwargs = {} if family in ("rps", "biased_rps") else {"num_actions": 7}
    if family not in ("rps", "biased_rps", "cyclic"):
        kwargs["seed"] = 3
    a, b = make_game(family, **kwargs), make_game(family, **kwargs)
    np.testing.assert_array_equal(a.P, b.P)
    np.testing.assert_allclose(a.P + np.swapaxes(a.P, 1, 2), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    "family", ["uniform", "skew_gaussian", "bradley_terry", "condorcet", "disc"]
)
def test_contextual_families(family):
    g = make_game(family, num_actions=5, num_contexts=4, seed=1)
    assert g.shape == (4, 5)
    assert not np.allclose(g.P[0], g.P[1])  # independent matrices per context
    g2 = make_game(family, num_actions=5, num_contexts=4, seed=2)
    assert not np.allclose(g.P, g2.P)


def test_make_game_errors():
    with pytest.raises(ValueError, match="unknown game family 'rpss'; expected one of rps,"):
        make_game("rpss")
    with pytest.raises(
        ValueError, match="game family 'rps' takes no argument\\(s\\) 'num_actions'"
    ):
        make_game("rps", num_actions=4)


def _has_3_cycle(P: np.ndarray) -> bool:
    W = P > 0.5
    return bool(np.trace(np.linalg.matrix_power(W.astype(int), 3)) > 0)


def test_transitivity_of_families():
    assert not _has_3_cycle(make_game("bradley_terry", num_actions=30, seed=0).P[0])
    for family in ("rps", "condorcet", "uniform", "skew_gaussian", "disc"):
        kw = {} if family == "rps" else {"num_actions": 30, "seed": 0}
        assert _has_3_cycle(make_game(family, **kw).P[0]), family


def test_win_rates_and_query_counting():
    g = make_game("uniform", num_actions=6, seed=0)
    pi = np.full(6, 1 / 6)
    np.testing.assert_allclose(g.win_rates(pi), g.P[0] @ pi)
    assert g.queries == 1
    gc = make_game("uniform", num_actions=4, num_contexts=3, seed=0)
    pis = np.random.default_rng(0).dirichlet(np.ones(4), size=3)
    out = gc.win_rates(pis)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[2], gc.P[2] @ pis[2])
    np.testing.assert_allclose(gc.win_rates(pis, context=1), gc.P[1] @ pis[1])
    with pytest.raises(
        ValueError, match=r"pi must have shape \(4,\) or \(3, 4\) for this game; got \(5,\)"
    ):
        gc.win_rates(np.ones(5) / 5)


def test_sample_is_unbiased_and_seeded():
    g = make_game("uniform", num_actions=5, seed=0)
    rng = np.random.default_rng(0)
    n = 200_000
    y = np.full(n, 1)
    yp = np.full(n, 3)
    o = g.sample(y, yp, rng)
    assert o.dtype == np.uint8 and g.queries == n
    p = g.P[0, 1, 3]
    assert abs(o.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    a = g.sample(y[:100], yp[:100], np.random.default_rng(7))
    b = g.sample(y[:100], yp[:100], np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_sample_contexts_and_errors():
    g = make_game("uniform", num_actions=3, num_contexts=2, seed=0)
    rng = np.random.default_rng(0)
    n = 100_000
    x = np.repeat([0, 1], n // 2)
    o = g.sample(np.zeros(n, int), np.full(n, 2), rng, contexts=x)
    for c in (0, 1):
        assert abs(o[x == c].mean() - g.P[c, 0, 2]) < 0.01
    with pytest.raises(ValueError, match="contexts are required for a contextual game"):
        g.sample(np.zeros(3, int), np.zeros(3, int), rng)
    with pytest.raises(ValueError, match=r"responses must lie in \[0, 3\); got values in \[0, 3\]"):
        g.sample(np.array([0, 3]), np.array([1, 1]), rng, contexts=np.array([0, 0]))
    with pytest.raises(ValueError, match="y and y_prime must have the same shape"):
        g.sample(np.zeros(3, int), np.zeros(2, int), rng, contexts=np.zeros(3, int))
