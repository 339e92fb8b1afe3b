"""A policy trained under the env's answer alphabet (``allowed_token_ids``) keeps it when saved:
``final_hf/`` (full model or LoRA adapter) records the tokens it never emits as
``generation_config.json``'s ``suppress_tokens`` (what ``transformers``' ``generate`` masks), and a
participant loaded from the folder plays exactly the trained policy, never a token outside the
alphabet (before, it played over the whole vocabulary: a silent change of the policy ranked)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

import agents  # noqa: E402
from agents.zoo.hf_participants import load_hf_participant  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.hf_players import HFModelPlayer  # noqa: E402

V = 24
ALPHABET = (1, 5, 6, 7, 8)  # <eos> and four words
LORA = {"rank": 2, "alpha": 4.0, "target_modules": ["c_attn"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from tests.nlhf_envs.text.hf_parts import length_judge, tiny_gpt2, word_tokenizer

    root = tmp_path_factory.mktemp("alphabet")
    tiny_gpt2(V, seed=0).save_pretrained(root / "ref")
    word_tokenizer(V).save_pretrained(root / "ref")
    return HFTokenDuelEnv(
        reference=root / "ref", judge=length_judge, prompts=[f"w{10 + i}" for i in range(4)],
        max_new_tokens=3, allowed_token_ids=ALPHABET,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_a_saved_policy_plays_its_alphabet_as_a_participant(env, kind, tmp_path):
    from gymnasium import spaces

    extra = {"lora": LORA} if kind == "lora" else {}
    agent = agents.make("online_ipo", env, seed=0, batch_size=4, eval_every=0, lr=0.05, **extra)
    agent.learn(num_iterations=2)
    agent.save(tmp_path / "run.npz")
    folder = tmp_path / "run_hf"
    config = json.loads((folder / "generation_config.json").read_text())
    assert config["suppress_tokens"] == [t for t in range(V) if t not in ALPHABET]
    player = HFModelPlayer(load_hf_participant(folder, "run"))
    player.bind(spaces.Discrete(V))
    obs = np.zeros((2, 4), dtype=np.int64)
    obs[0, :2], obs[1, 1] = [0, 10], 1  # the prompt w10, left-padded (the pad masked out)
    probs = player.action_probabilities(obs)
    outside = [t for t in range(V) if t not in ALPHABET]
    assert probs[outside].max() < 1e-12
    with torch.no_grad():
        logits, _ = agent.model(torch.tensor([[10]]))
    want = torch.softmax(logits[0, -1].double(), -1).numpy()
    assert np.allclose(probs, want, atol=1e-6)  # the trained policy, exactly
