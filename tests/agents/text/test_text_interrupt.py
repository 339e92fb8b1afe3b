"""Ctrl-C while a token-level agent learns: stopped at an iteration boundary, resumed bit for bit."""

import os
import signal

import pytest
import torch

import agents
from agents.base import LearningInterrupted
from agents.text.online_ipo import TextOnlineIPO

KW = {"batch_size": 8, "eval_every": 2, "eval_prompts": 16}


def _make():
    return agents.make(
        "online_ipo", "nlhf/TokenDuel-v0", seed=3, env_kwargs={"max_new_tokens": 8}, **KW
    )


def test_ctrl_c_during_text_learning_resumes_to_the_same_policy(tmp_path, monkeypatch):
    straight = _make().learn(num_iterations=4)
    original = TextOnlineIPO._iteration

    def iteration_with_ctrl_c(self):
        out = original(self)
        if self.num_iterations == 1:  # the second iteration: its optimiser step is done
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(TextOnlineIPO, "_iteration", iteration_with_ctrl_c)
    agent = _make()
    with pytest.raises(LearningInterrupted, match="after iteration 2"):
        agent.learn(num_iterations=4)
    assert agent.num_iterations == 2 and len(agent.history) == 2
    monkeypatch.undo()
    resumed = agents.load(agent.save(tmp_path / "final.npz"))
    resumed.learn(num_iterations=4 - resumed.num_iterations)
    assert resumed.queries_used == straight.queries_used
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
