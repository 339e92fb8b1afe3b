"""Design (C) of the token Nash-MP (issue 23, item 5): ``variant="ema"``, one policy-gradient step
per query batch against an EMA network that is both opponent and prox centre."""

from __future__ import annotations

import pytest
import torch

import agents
from agents.config import ConfigError

TINY = "nlhf/TinyTokenDuel-v0"


def _make(**kw):
    base = dict(seed=0, device="cpu", variant="ema", inner_steps=1, batch_size=16, eval_every=0)
    return agents.make("nash_mp", TINY, **{**base, **kw})


def test_config_names_what_is_wrong():
    with pytest.raises(ConfigError, match="inner_steps: the ema variant takes one step per query "
                       r"batch; got 8 \(set inner_steps: 1 or variant: target\)"):  # fmt: skip
        agents.make("nash_mp", TINY, variant="ema", inner_steps=8)
    with pytest.raises(ConfigError, match=r"ema_rate: must lie in \(0, 1\]; got 0.0"):
        _make(ema_rate=0.0)
    with pytest.raises(ConfigError, match="variant: expected one of 'target', 'extragradient', "
                       "'ema'; got 'nope'"):  # fmt: skip
        agents.make("nash_mp", TINY, variant="nope")


def test_one_batch_per_iteration_and_the_ema_update():
    agent = _make(ema_rate=0.25)
    assert agent.iteration_queries() == 16
    theta0 = [p.detach().clone() for p in agent.model.parameters()]
    for p_bar, p in zip(agent.ema_model.parameters(), theta0, strict=True):
        assert torch.equal(p_bar, p)  # theta_bar starts at theta_0 = pi_ref
    agent.learn(num_iterations=1)
    assert agent.queries_used == 16
    moved = 0.0
    for p_bar, p0, p1 in zip(agent.ema_model.parameters(), theta0, agent.model.parameters(),
                             strict=True):  # fmt: skip
        torch.testing.assert_close(p_bar, 0.75 * p0 + 0.25 * p1.detach(), rtol=0, atol=1e-6)
        moved = max(moved, float((p1.detach() - p0).abs().max()))
    assert moved > 1e-5
    assert {"loss/pg_kl_anchor", "loss/pg_preference", "loss/pg_kl_ref"} <= set(agent.history[-1])


def test_resume_from_a_checkpoint_is_exact(tmp_path):
    straight = _make().learn(num_iterations=4)
    first = _make().learn(num_iterations=2)
    path = first.save(tmp_path / "half")
    resumed = agents.load(path)
    assert resumed.config.variant == "ema" and resumed.ema_model is not None
    resumed.learn(num_iterations=2)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_design_c_lowers_exact_exploitability_on_unseen_prompts():
    agent = _make(batch_size=64, mode="probability", lr=3e-4)
    before = agent.nash_metrics()["eval/exploitability"]
    agent.learn(num_queries=3200)
    after = agent.nash_metrics()["eval/exploitability"]
    assert before == pytest.approx(0.0685, abs=5e-4)  # pi_ref on the held-out prompts
    assert after < before - 0.01, (before, after)
