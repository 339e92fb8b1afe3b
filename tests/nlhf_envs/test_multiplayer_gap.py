"""The multiplayer duality gap against closed forms and direct evaluation of the n-player payoff."""

import numpy as np
import pytest

import nlhf_envs
from nlhf_envs import solvers


def _random_policy(rng, C, K):
    pi = rng.dirichlet(np.ones(K), size=C)
    return pi


def _p_beta(game, pi, pi2):
    """``P_beta(pi > pi2)`` evaluated directly from the matrices (rho-averaged)."""
    beta = game.beta
    win = np.einsum("ck,ckl,cl->c", pi, game.P, pi2)
    return float(
        game.rho @ (win - beta * solvers.kl(pi, game.pi_ref) + beta * solvers.kl(pi2, game.pi_ref))
    )


def _payoff(game, pi, others):
    """Seat payoff ``J(pi, others) = mean_j P_beta(pi > pi_j)``."""
    return float(np.mean([_p_beta(game, pi, o) for o in others]))


def _direct_gap(game, pop):
    """The definition, with the maximiser and minimisers plugged in and J evaluated directly."""
    gaps = []
    for i, pi in enumerate(pop):
        others = [p for j, p in enumerate(pop) if j != i]
        mix = np.mean(others, axis=0)
        br = np.reshape(solvers.best_response(game, mix), game.shape)  # argmax of J(., others)
        worst = np.reshape(solvers.best_response(game, pi), game.shape)  # argmin for each opponent
        gaps.append(_payoff(game, br, others) - _payoff(game, pi, [worst] * len(others)))
    return float(np.mean(gaps))


GAMES = [
    lambda: nlhf_envs.make_game("uniform", num_actions=5, seed=1, beta=0.2),
    lambda: nlhf_envs.make_game("biased_rps", beta=0.1),
    lambda: nlhf_envs.make_game("skew_gaussian", num_actions=4, num_contexts=3, seed=2, beta=0.3),
]


@pytest.mark.parametrize("make", GAMES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_gap_matches_direct_evaluation(make, n):
    game = make()
    rng = np.random.default_rng(n)
    pop = [_random_policy(rng, *game.shape) for _ in range(n)]
    gap = solvers.multiplayer_duality_gap(game, pop)
    assert gap == pytest.approx(_direct_gap(game, pop), abs=1e-12)
    assert gap > 1e-3


@pytest.mark.parametrize("make", GAMES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_symmetric_population_is_twice_the_exploitability(make, n):
    game = make()
    pi = _random_policy(np.random.default_rng(0), *game.shape)
    gap = solvers.multiplayer_duality_gap(game, [pi] * n)
    assert gap == pytest.approx(2 * solvers.exploitability(game, pi), abs=1e-12)
    assert gap == pytest.approx(solvers.duality_gap(game, pi), abs=1e-12)


@pytest.mark.parametrize("make", GAMES)
def test_two_seats_is_the_two_player_duality_gap(make):
    game = make()
    rng = np.random.default_rng(5)
    pi1, pi2 = (_random_policy(rng, *game.shape) for _ in range(2))
    gap = solvers.multiplayer_duality_gap(game, [pi1, pi2])
    # max_pi' P_beta(pi' > pi2) - min_pi' P_beta(pi1 > pi'), evaluated at the best responses
    br2 = np.reshape(solvers.best_response(game, pi2), game.shape)
    br1 = np.reshape(solvers.best_response(game, pi1), game.shape)
    two_player = _p_beta(game, br2, pi2) - _p_beta(game, pi1, br1)
    assert gap == pytest.approx(two_player, abs=1e-12)
    expl = solvers.exploitability(game, pi1) + solvers.exploitability(game, pi2)
    assert gap == pytest.approx(expl, abs=1e-12)


@pytest.mark.parametrize("make", GAMES)
def test_zero_at_the_regularised_nash_and_positive_elsewhere(make):
    game = make()
    star = solvers.regularized_nash(game)
    assert abs(solvers.multiplayer_duality_gap(game, [star] * 4)) < 1e-10
    # one seat off the equilibrium: the gap is positive, and at least that seat's exploitability
    off = np.reshape(game.pi_ref, game.shape)
    gap = solvers.multiplayer_duality_gap(game, [star, star, off])
    assert gap >= solvers.exploitability(game, off) / 3 - 1e-12
    assert gap > 1e-4


def test_population_array_and_errors():
    game = nlhf_envs.make_game("rps")
    pop = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    assert solvers.multiplayer_duality_gap(game, pop) == pytest.approx(
        solvers.multiplayer_duality_gap(game, list(pop)), abs=0
    )
    with pytest.raises(ValueError, match="population must hold at least 2 policies .*; got 1"):
        solvers.multiplayer_duality_gap(game, [pop[0]])
    with pytest.raises(ValueError, match="pi must sum to 1 in every context"):
        solvers.multiplayer_duality_gap(game, [pop[0], [0.5, 0.5, 0.5]])
