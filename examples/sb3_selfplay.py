# Stable-Baselines3: PPO on one seat of biased rock-paper-scissors through the Gymnasium view, first
# against a fixed zoo agent, then as the zoo's self-play agent `sb3_ppo_selfplay`.
import gymnasium
import numpy as np
from stable_baselines3 import PPO

import agents
import nlhf_envs
from nlhf_envs import solvers

# 1. plain SB3 on the registered view; the opponent seat is played by a trained Nash-MP agent
nash_mp = agents.make("nash_mp", "biased_rps", seed=0).learn(num_queries=200)
env = gymnasium.make("nlhf/BiasedRPS-SingleSeat-v0", opponent=nash_mp)
model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, gamma=0.0, seed=0).learn(2048)
action, _ = model.predict(np.ones(1, dtype=np.float32), deterministic=True)
print("best answer to Nash-MP:", int(action))

# 2. the zoo agent: SB3 PPO in self-play, with the agent API (policy, save/load, tournaments)
ppo = agents.make("sb3_ppo_selfplay", "nlhf/BiasedRPS-v0", seed=0).learn(num_queries=6400)
game = nlhf_envs.make_game("biased_rps")
print(
    "self-play policy",
    ppo.policy_table().round(3),
    "exploitability",
    solvers.exploitability(game, ppo.policy_table()),
)
