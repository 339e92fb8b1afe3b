"""SB3 PPO self-play as a zoo agent: API, checkpoints, zoo config, and what self-play does on biased RPS.

Stated thresholds (biased rock-paper-scissors, beta = 0.1, uniform pi_ref; the uniform policy has
regularised exploitability 0.040 and unregularised exploitability 0.083):

* regularised self-play (``ent_coef=None``, the default) reaches ``game/exploitability < 0.015`` at
  every one of the last 5 of 25 iterations (6400 queries; seeds 0-3 measured 0.0043-0.0097);
* plain unregularised self-play (``ent_coef=0``) does not converge to the Nash equilibrium
  (1/16, 10/16, 5/16): it drifts to the boundary (a near-pure policy, max probability > 0.85) where its
  unregularised exploitability stays >= 0.03 (pure paper: 0.05), as theory predicts for last-iterate
  gradient self-play in a cyclic game.
"""

from __future__ import annotations

import numpy as np
import pytest

import agents
from agents.config import ConfigError
from agents.zoo import resolve
from nlhf_envs import make_game, solvers
from nlhf_envs.registration import MATRIX_ENV_IDS


def test_registered_and_built_by_make():
    assert "sb3_ppo_selfplay" in agents.available("matrix")
    agent = agents.make("sb3_ppo_selfplay", "nlhf/BiasedRPS-v0", seed=0, batch_size=64)
    np.testing.assert_allclose(
        agent.policy_table(), 1 / 3, atol=0.01
    )  # init="ref": pi_ref = uniform
    agent.learn(num_queries=150)
    assert (
        agent.queries_used == 128 and agent.num_iterations == 2
    )  # two rollouts of 64 steps fit 150
    assert agent.history[-1]["game/queries"] == 128
    assert {"loss/ppo_policy_gradient", "policy/ppo_approx_kl"} <= set(agent.history[-1])
    obs = np.ones(1, dtype=np.float32)
    assert agent.act(obs, deterministic=True) == int(np.argmax(agent.policy_table()))
    assert agent.predict(obs)[0] in (0, 1, 2)


def test_policy_is_the_networks_distribution():
    import torch

    agent = agents.make("sb3_ppo_selfplay", "nlhf/ContextualUniform-v0", seed=1, batch_size=64)
    agent.learn(num_iterations=2)
    with torch.no_grad():
        probs = agent.ppo.policy.get_distribution(torch.eye(8)).distribution.probs.numpy()
    np.testing.assert_allclose(agent.policy_table(), probs, atol=1e-6)
    np.testing.assert_allclose(agent.policy_table(3), probs[3], atol=1e-6)


def test_seeded_runs_reproduce_and_leave_global_rngs_alone():
    import torch

    np.random.seed(123)  # noqa: NPY002  (the caller's global state must survive learning)
    torch.manual_seed(7)
    expect_np, expect_torch = np.random.rand(), torch.rand(1)  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(7)
    a = agents.make("sb3_ppo_selfplay", "biased_rps", seed=4, batch_size=64).learn(num_iterations=3)
    assert np.random.rand() == expect_np and torch.rand(1) == expect_torch  # noqa: NPY002
    b = agents.make("sb3_ppo_selfplay", "biased_rps", seed=4, batch_size=64).learn(num_iterations=3)
    c = agents.make("sb3_ppo_selfplay", "biased_rps", seed=5, batch_size=64).learn(num_iterations=3)
    np.testing.assert_array_equal(a.policy_table(), b.policy_table())
    assert a.history == b.history
    assert not np.array_equal(a.policy_table(), c.policy_table())


def test_checkpoint_round_trip_continues_bit_for_bit(tmp_path):
    game = make_game("biased_rps")
    full = agents.make("sb3_ppo_selfplay", game, seed=2, batch_size=32, pool_size=3).learn(
        num_iterations=6
    )
    part = agents.make(
        "sb3_ppo_selfplay", make_game("biased_rps"), seed=2, batch_size=32, pool_size=3
    ).learn(num_iterations=3)
    loaded = agents.load(part.save(tmp_path / "ppo"))
    assert type(loaded) is agents.SB3PPOSelfPlay and len(loaded.pool) == 3
    np.testing.assert_array_equal(loaded.policy_table(), part.policy_table())
    np.testing.assert_array_equal(loaded.ppo_parameters, part.ppo_parameters)
    np.testing.assert_array_equal(loaded.ppo_optimizer, part.ppo_optimizer)
    loaded.learn(num_iterations=3)
    np.testing.assert_array_equal(loaded.policy_table(), full.policy_table())
    assert loaded.history == full.history


def test_bad_config_is_named():
    with pytest.raises(
        ConfigError, match=r"batch_size: must be a multiple of n_envs \(8\); got 30"
    ):
        agents.make("sb3_ppo_selfplay", "rps", batch_size=30)
    with pytest.raises(ConfigError, match="mode: 'exact' is not a mode of SB3PPOConfig"):
        agents.make("sb3_ppo_selfplay", "rps", mode="exact")
    with pytest.raises(ConfigError, match="opponent_sampling: expected one of 'latest', 'uniform'"):
        agents.make("sb3_ppo_selfplay", "rps", opponent_sampling="best")
    with pytest.raises(ConfigError, match="ent_coef: must be >= 0"):
        agents.make("sb3_ppo_selfplay", "rps", ent_coef=-0.1)


@pytest.mark.parametrize("env_id", ["default", *sorted(MATRIX_ENV_IDS)])
def test_zoo_config_resolves(env_id):
    entry = resolve("sb3_ppo_selfplay", "nlhf/RPS-v0" if env_id == "default" else env_id)
    assert entry.config.lr == 3.0e-3 and entry.config.gamma == 0.0
    # SB3's name for the step size is still read (older YAML files and checkpoints)
    old = agents.config.build_config(type(entry.config), {"learning_rate": 1e-2}, source="old")
    assert old.lr == 1e-2
    assert entry.num_queries and entry.num_queries >= 20000


def test_regularised_self_play_on_biased_rps_reaches_low_exploitability():
    game = make_game("biased_rps")
    uniform = solvers.exploitability(game, np.ones(3) / 3)
    assert uniform == pytest.approx(0.0399, abs=1e-3)
    agent = agents.make("sb3_ppo_selfplay", game, seed=0).learn(num_queries=25 * 256)
    last = [row["game/exploitability"] for row in agent.history[-5:]]
    assert max(last) < 0.015, last
    assert solvers.kl_to_nash(game, agent.policy_table()) < 0.05


def test_unregularised_self_play_drifts_to_the_boundary_instead_of_nash():
    game = make_game("biased_rps")
    nash = solvers.nash_lp(game).reshape(-1)
    np.testing.assert_allclose(nash, [1 / 16, 10 / 16, 5 / 16], atol=1e-6)
    agent = agents.make("sb3_ppo_selfplay", game, seed=0, ent_coef=0.0)
    unreg, maxprob = [], []
    for _ in range(40):
        agent.learn(num_iterations=1)
        unreg.append(solvers.unregularized_exploitability(game, agent.policy_table()))
        maxprob.append(agent.policy_table().max())
    assert unreg[0] > 0.0 and min(unreg[20:]) >= 0.03, np.round(unreg, 3)
    assert min(maxprob[20:]) > 0.85, np.round(maxprob, 3)  # Nash's largest probability: 0.625
