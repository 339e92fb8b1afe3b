"""Issue 32, item 6: on the enumerable worlds every token agent's policy stays in the judge's answer
alphabet by construction. The tokens outside it are masked in the policy's logits (``-1e4``, a
non-trainable buffer), so no learning rate moves mass there: after steps large enough to wreck the
policy, the probability of every other token is exactly zero and no sampled answer contains one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import agents
from nlhf_envs.text.exact import sequence_policy
from nlhf_envs.text.world import get_world

ENV = "nlhf/TinyTokenDuel-v1"
#: every token agent trained by this library's losses, with settings that make an iteration cheap
AGENTS = {
    "nash_mp": {"inner_steps": 1},
    "nash_md": {},
    "online_ipo": {},
    # MNPO's squared loss at lr 0.5 overflows to NaN weights in three steps; 0.1 still wrecks it
    "mnpo": {"inner_steps": 1, "history": 2, "lr": 0.1},
    "nash_prox": {"inner_steps": 2},
}


def test_every_library_token_agent_is_checked():
    assert set(AGENTS) == {a for a in agents.available("text") if not a.startswith("sb3_")}


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_a_wrecked_policy_still_emits_only_answer_words(name):
    torch.set_num_threads(1)
    world = get_world("tiny-wide")
    suppressed = torch.tensor(world.suppressed_token_ids)
    assert len(suppressed) == world.vocab_size - 7  # <eos> and six answer words remain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        settings = {"lr": 0.5, **AGENTS[name]}
        agent = agents.make(name, ENV, seed=0, batch_size=32, optimizer="sgd", grad_clip=None,
                            eval_every=0, **settings)  # fmt: skip
    before = [p.detach().clone() for p in agent.model.parameters()]
    agent.learn(num_iterations=3)
    moved = max(
        float((p.detach() - b).abs().max()) for p, b in zip(agent.model.parameters(), before)
    )
    assert moved > 0.1  # the steps were large
    agent.model.eval()
    # next-token probabilities after every prompt and partial answer of the world: exactly zero
    texts = list(world.prompts.texts[:64])
    ids, mask = world.tokenizer.encode_prompts(texts, world.prompt_len)
    with torch.no_grad():
        logits = agent.model(ids, mask)[0]
        probs = torch.softmax(logits.float(), -1)
    assert float(probs[..., suppressed].max()) == 0.0
    # exact sequence policy: all the mass is on the 259 enumerated answers (checked to 1e-6)
    pi = sequence_policy(agent.model, agent.env, "heldout")
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, atol=1e-9)
    # sampled answers: answer words and <eos> only
    gen = torch.Generator().manual_seed(1)
    out = agent.engine.generate(agent.model, ids, mask, gen)
    used = set(out.tokens[out.mask].tolist())
    assert used <= set(world.answer_token_ids)
