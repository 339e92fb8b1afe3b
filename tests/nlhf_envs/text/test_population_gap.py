"""The multiplayer duality gap of token policies: exact on the tiny world (checked against the
solver and its closed forms), estimated with an interval that covers the exact value, bad input."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
import torch
from scipy.special import logsumexp

import nlhf_envs  # noqa: F401  (registers the ids)
from nlhf_envs.solvers import exploitability, kl, multiplayer_duality_gap
from nlhf_envs.text import exact
from nlhf_envs.text.estimate import estimate_population_gap
from nlhf_envs.text.models import load_reference_policy
from nlhf_envs.text.multiplayer import MultiTokenDuelEnv
from nlhf_envs.text.population import (
    enumerable,
    exact_population_gap,
    population_duality_gap,
)
from nlhf_envs.text.train import drifted_policies

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_env():
    return pettingzoo.make("parallel", "nlhf/TinyTokenDuel-v0")


@pytest.fixture(scope="module")
def population(tiny_env):
    ref = load_reference_policy(world="tiny")
    return [ref, *drifted_policies(ref, tiny_env.world, 2, 5, (1.0, 1.5))]


@pytest.fixture(scope="module")
def game(tiny_env):
    return exact.exact_game(tiny_env, "heldout")


def test_exact_gap_is_the_solvers_gap_of_the_sequence_policies(tiny_env, population, game):
    pis = [exact.sequence_policy(p, tiny_env, "heldout") for p in population]
    gap = exact_population_gap(population, tiny_env)
    assert gap == pytest.approx(multiplayer_duality_gap(game, pis), abs=1e-12)
    assert gap > 0.05
    # one policy in every seat: 2 Expl_beta(pi); two seats: the two-player duality gap
    drifted = population[1]
    two_expl = 2 * exploitability(game, pis[1])
    assert exact_population_gap([drifted] * 3, tiny_env, game=game) == pytest.approx(
        two_expl, abs=1e-12
    )
    pair = exact_population_gap(population[:2], tiny_env, game=game)
    assert pair == pytest.approx(
        exploitability(game, pis[0]) + exploitability(game, pis[1]), abs=1e-12
    )
    # the n-player env stands for the same game, and "auto" is exact on the tiny world
    multi = MultiTokenDuelEnv(3, world="tiny")
    assert enumerable(multi) and not enumerable("default")
    auto = population_duality_gap(population, multi)
    assert auto == {"population_duality_gap": pytest.approx(gap, abs=1e-12)}
    by_id = population_duality_gap(population, "nlhf/MultiTinyTokenDuel-v0")
    assert by_id == {"population_duality_gap": pytest.approx(gap, abs=1e-12)}


def test_estimated_gap_interval_covers_the_exact_gap(tiny_env, population, game):
    truth = exact_population_gap(population, tiny_env, game=game)
    est = estimate_population_gap(
        population, tiny_env, split="heldout", num_prompts=8, n=8, m=128, seed=0
    )
    lo, hi = est.gap_ci
    assert lo <= truth <= hi and hi - lo < 0.1
    assert est.per_prompt["gap"].shape == (8,) and est.per_prompt["best_response"].shape == (3, 8)
    # each member's exploitability term covers its exact value too (the estimator it builds on)
    pis = [exact.sequence_policy(p, tiny_env, "heldout") for p in population]
    for i, pi in enumerate(pis):
        assert est.exploitability[i] == pytest.approx(exploitability(game, pi), abs=0.03)
        assert est.kl_ref[i] == pytest.approx(float(game.rho @ kl(pi, game.pi_ref)), abs=0.05)
    # each seat's best-response term: beta E_x log E_ref exp(gbar_i / beta) + beta mean_j KL_j
    g = np.stack([game.win_rates_all(pi) for pi in pis])
    kls = np.stack([kl(pi, game.pi_ref) for pi in pis])
    beta = game.beta
    for i in range(3):
        others = [j for j in range(3) if j != i]
        lse = beta * logsumexp(g[others].mean(0) / beta, b=game.pi_ref, axis=1)
        best = float(game.rho @ (lse + beta * kls[others].mean(0)))
        assert est.per_prompt["best_response"][i].mean() == pytest.approx(best, abs=0.015)
    assert est.as_dict("eval/") == {
        "eval/population_duality_gap": est.gap,
        "eval/population_duality_gap_low": lo,
        "eval/population_duality_gap_high": hi,
    }
    forced = population_duality_gap(
        population, tiny_env, mode="estimate", num_prompts=8, n=8, m=128, seed=0
    )
    assert forced == est.as_dict()


def test_bad_input(tiny_env, population):
    one = "population must hold at least 2 policies \\(one per seat\\); got 1"
    with pytest.raises(ValueError, match=one):
        exact_population_gap(population[:1], tiny_env)
    with pytest.raises(ValueError, match=one):
        estimate_population_gap(population[:1], tiny_env)
    with pytest.raises(ValueError, match="m must be a positive integer, got 0"):
        estimate_population_gap(population, tiny_env, m=0)
    with pytest.raises(ValueError, match="unknown mode 'guess'; expected one of auto, exact"):
        population_duality_gap(population, tiny_env, mode="guess")
