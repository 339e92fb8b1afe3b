"""The SuperSuit path users try first: ``pettingzoo_env_to_vec_env_v1`` + ``concat_vec_envs_v1`` + SB3.

Both seats are driven by one shared policy (parameter-sharing self-play). Pitfall found here and
documented in docs/integrations.md: SB3 2.x calls ``env.seed(seed)`` when a model is built with ``seed=...``,
and SuperSuit's ``ConcatVecEnv`` has no ``seed`` method, so pass no ``seed`` to the model (seed
torch with ``stable_baselines3.common.utils.set_random_seed`` instead).
"""

from __future__ import annotations

import numpy as np
import pytest

import nlhf_envs  # noqa: F401  (registers the ids)
from nlhf_envs import solvers

ss = pytest.importorskip("supersuit", reason="needs supersuit (the dev extra)")


def test_vector_view_of_the_parallel_env():
    import pettingzoo

    vec = ss.pettingzoo_env_to_vec_env_v1(pettingzoo.make("parallel", "nlhf/BiasedRPS-v0"))
    assert vec.num_envs == 2  # one slot per seat
    obs, _ = vec.reset(seed=0)
    np.testing.assert_array_equal(obs, np.ones((2, 1), dtype=np.float32))
    total = []
    for a0 in range(3):
        for a1 in range(3):
            obs, rewards, terms, truncs, infos = vec.step(np.array([a0, a1]))
            total.append(rewards.sum())
            assert truncs.all() and not terms.any()  # one-round duel: PettingZoo truncates
            assert infos[0]["prob"] + infos[1]["prob"] == pytest.approx(1.0)
    np.testing.assert_array_equal(total, 1.0)  # constant-sum: o + (1 - o)


def test_sb3_ppo_parameter_sharing_self_play_finds_the_dominant_response(one_torch_thread):
    import pettingzoo
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    env = pettingzoo.make("parallel", "nlhf/BradleyTerry-v0", reward_mode="centered")
    game = env.game
    best = int(np.argmax(solvers.nash_lp(game).reshape(-1)))  # transitive game: a pure Nash
    vec = ss.pettingzoo_env_to_vec_env_v1(env)
    venv = ss.concat_vec_envs_v1(vec, 4, num_cpus=0, base_class="stable_baselines3")
    set_random_seed(0)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, gamma=0.0, learning_rate=3.0e-3)
    model.learn(total_timesteps=6000)
    import torch

    with torch.no_grad():
        probs = model.policy.get_distribution(torch.ones(1, 1)).distribution.probs.numpy()[0]
    assert probs[best] > 0.8, np.round(probs, 3)
    assert solvers.unregularized_exploitability(game, probs) < 0.05
