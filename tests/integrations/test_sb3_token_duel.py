"""SB3 PPO trains through the single-seat view of the token duel (a smoke run: it learns nothing yet).

Not a zoo agent: ``sb3_ppo_selfplay`` is registered for matrix games only (see the README).
"""

from __future__ import annotations

import pytest

from nlhf_envs.gym_views import SingleSeatEnv


def test_ppo_runs_through_the_token_duel_view(one_torch_thread):
    import pettingzoo
    from stable_baselines3 import PPO

    try:
        inner = pettingzoo.make("parallel", "nlhf/TokenDuel-v0", max_new_tokens=6)
    except FileNotFoundError as err:  # the shipped judge is not built in this checkout
        pytest.skip(f"token duel unavailable: {err}")
    env = SingleSeatEnv(inner)
    model = PPO("MlpPolicy", env, n_steps=48, batch_size=24, n_epochs=1, seed=0)
    model.learn(total_timesteps=96)
    assert model.num_timesteps == 96
    obs, _ = env.reset(seed=0)
    steps, done = 0, False
    while not done:
        action, _ = model.predict(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        done = terminated or truncated
    assert steps <= 6 and reward in (0.0, 1.0) and 0.0 <= info["prob"] <= 1.0
    assert env.observation_space.contains(obs)
