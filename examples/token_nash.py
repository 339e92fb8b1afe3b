import pettingzoo
import torch

import agents
import nlhf_envs  # noqa: F401  (registers the ids)
from nlhf_envs.solvers import exploitability, kl_to_nash, regularized_nash
from nlhf_envs.text.estimate import estimate_nash_metrics
from nlhf_envs.text.exact import enumerate_answers, exact_game, sequence_policy
from nlhf_envs.text.models import load_reference_policy

torch.set_num_threads(1)
env = pettingzoo.make("parallel", "nlhf/TinyTokenDuel-Cyclic-v0")  # beta = env.beta = 0.1
answers = enumerate_answers(env)  # 259 token tuples: k < 3 words + <eos>, or 3 words (cut)
game = exact_game(env, split="heldout")  # a PreferenceGame: 8 prompts x 259 answers
pi_star = regularized_nash(game)  # (8, 259), exploitability < 1e-9
pi_ref = sequence_policy(load_reference_policy(world=env.world), env)  # exact (8, 259)
print(
    f"pi_ref: exploitability {exploitability(game, pi_ref):.4f}, "
    f"KL(pi* || pi_ref) {kl_to_nash(game, pi_ref, pi_star):.4f}"
)

agent = agents.make("online_ipo", env, seed=0, batch_size=32, eval_every=5)
agent.learn(num_queries=320)  # history rows carry eval/exploitability and eval/kl_to_nash (exact)
print({k: round(v, 4) for k, v in agent.history[-1].items() if k.startswith("eval/")})

est = estimate_nash_metrics(agent.model, env, split="heldout", n=64, m=128, seed=0)
print(f"estimated exploitability {est.exploitability:.4f}, 95% CI {est.exploitability_ci}")
