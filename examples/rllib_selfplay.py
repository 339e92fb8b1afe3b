# RLlib: one shared PPO policy plays both seats of biased rock-paper-scissors (self-play), through
# RLlib's own PettingZoo wrapper. Needs the ray extra: pip install 'nlhf-zoo[ray]'.
import pettingzoo
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
from ray.tune.registry import register_env

import nlhf_envs
from nlhf_envs import solvers

torch.set_num_threads(1)  # tiny networks: more torch threads only add synchronisation
ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
register_env(
    "nlhf_biased_rps",
    lambda cfg: ParallelPettingZooEnv(
        pettingzoo.make("parallel", "nlhf/BiasedRPS-v0", reward_mode="centered")
    ),
)
config = (
    PPOConfig()
    .environment("nlhf_biased_rps")
    .multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, *args, **kw: "shared")
    .env_runners(num_env_runners=0)
    .training(
        train_batch_size_per_learner=256,
        minibatch_size=64,
        num_epochs=4,
        lr=1.0e-3,
        gamma=0.0,  # every round is an independent duel
        entropy_coeff=0.1,  # = the game's beta: regularised self-play (pi_ref is uniform)
    )
    .debugging(seed=0)
)
algo = config.build_algo()
for _ in range(4):  # 4 x 256 env steps (see docs/integrations.md on longer runs)
    algo.train()
logits = algo.get_module("shared").forward_inference({"obs": torch.ones(1, 1)})[
    "action_dist_inputs"
]
policy = torch.softmax(logits, dim=-1).detach().numpy()[0]
game = nlhf_envs.make_game("biased_rps")
print("policy", policy.round(3), "exploitability", round(solvers.exploitability(game, policy), 4))
algo.stop()
