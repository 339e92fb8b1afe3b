"""Token-level Nash Prox (issue 32, item 3): Online IPO's step on the prox game, the anchor's
refresh and EMA, exact resume, checkpoint errors, and a short exact run below pi_ref."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import agents
from agents.checkpoint import CheckpointError
from agents.config import ConfigError

ENV = "nlhf/TokenDuel-v0"
SMALL = {"batch_size": 8, "eval_every": 0, "lr": 1e-3}
ENV_KW = {"max_new_tokens": 8}


def make(name: str = "nash_prox", seed: int = 0, **kw):
    return agents.make(name, ENV, seed=seed, env_kwargs=ENV_KW, **{**SMALL, **kw})


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_registered_for_text_and_matrix():
    from agents.text import TextNashProx

    assert agents.registry.get_agent_class("nash_prox", "text") is TextNashProx
    assert agents.registry.get_agent_class("nash_prox", "matrix").kind == "matrix"
    assert "nash_prox" in agents.available("text")


def test_first_step_is_online_ipo_with_beta_prime():
    """While the anchor is pi_theta = pi_ref (the first anchor of a run), pi_ref' = pi_ref and the
    loss is Online IPO's with beta' = beta (1 + 1/eta): one step of each from the same seed gives
    the same parameters (same prompts, answers and outcomes; the anchor's log-probs draw nothing)."""
    # plain SGD without clipping: a step proportional to the gradient (Adam's normalised step would
    # blow rounding differences of near-zero gradients up to lr, and clipping equalises the norms)
    sgd = {"optimizer": "sgd", "lr": 0.01, "grad_clip": None}
    prox = make(eta=0.5, **sgd)
    ipo = make("online_ipo", beta=prox.beta * (1 + 1 / 0.5), **sgd)
    assert prox.beta_prox == pytest.approx(0.3)
    prox.learn(num_iterations=1)
    ipo.learn(num_iterations=1)
    plain = make("online_ipo", **sgd).learn(num_iterations=1)  # Online IPO at the game's beta

    def gap(a, b) -> float:
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))

    p, q, r = _params(prox.model), _params(ipo.model), _params(plain.model)
    # equal to rounding (w log pi_ref + (1 - w) log pi_k is log pi_ref to a few ulps), while the
    # step at the game's beta is another step
    assert gap(p, q) < 1e-6 and gap(p, r) > 1e-3
    assert prox.history[-1]["loss/nash_prox"] == pytest.approx(ipo.history[-1]["loss/ipo"])


def test_the_frozen_anchor_is_refreshed_every_inner_steps():
    agent = make(inner_steps=3)
    anchors = []
    for _ in range(7):
        agent.learn(num_iterations=1)
        anchors.append(_params(agent.anchor_model))
    # iterations 1-3 share the anchor taken at iteration 0 (pi_ref), 4-6 the one at 3, 7 its own
    ref = _params(agent.reference)
    assert _same(anchors[0], ref) and _same(anchors[2], ref)
    assert _same(anchors[3], anchors[5]) and not _same(anchors[3], anchors[2])
    assert not _same(anchors[6], anchors[5])
    # the anchor of iteration 7 is pi_theta after 6 steps: take 6 steps again from the same seed
    twin = make(inner_steps=3).learn(num_iterations=6)
    assert _same(anchors[6], _params(twin.model))


def test_the_ema_anchor_follows_the_parameters():
    agent = make(anchor="ema", ema_rate=0.25)
    before = _params(agent.anchor_model)
    agent.learn(num_iterations=1)
    expected = [b + 0.25 * (p - b) for b, p in zip(before, _params(agent.model), strict=True)]
    for a, e in zip(_params(agent.anchor_model), expected, strict=True):
        torch.testing.assert_close(a, e)


def test_resume_reproduces_the_uninterrupted_run_mid_anchor(tmp_path):
    full = make(inner_steps=4, seed=3).learn(num_iterations=10)
    part = make(inner_steps=4, seed=3).learn(num_iterations=6)  # two steps into its second anchor
    loaded = agents.load(part.save(tmp_path / "prox"))
    assert _same(_params(loaded.anchor_model), _params(part.anchor_model))
    loaded.learn(num_iterations=4)
    assert _same(_params(loaded.model), _params(full.model))
    assert _same(_params(loaded.anchor_model), _params(full.anchor_model))


def test_a_checkpoint_without_or_with_a_broken_anchor_is_refused(tmp_path):
    path = make().learn(num_iterations=1).save(tmp_path / "prox")
    data = dict(np.load(path, allow_pickle=False))
    no_anchor = {k: v for k, v in data.items() if not k.startswith("anchor/")}
    np.savez(tmp_path / "bad1.npz", **no_anchor)
    with pytest.raises(CheckpointError, match="missing the anchor"):
        agents.load(tmp_path / "bad1.npz")
    key = next(k for k in data if k.startswith("anchor/") and data[k].dtype.kind == "f")
    broken = dict(data)
    broken[key] = np.full_like(data[key], np.nan)
    np.savez(tmp_path / "bad2.npz", **broken)
    with pytest.raises(CheckpointError, match="must be finite"):
        agents.load(tmp_path / "bad2.npz")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="eta: must be > 0"):
        make(eta=-1.0)
    with pytest.raises(ConfigError, match="anchor: expected one of 'frozen', 'ema'"):
        make(anchor="copy")
    with pytest.raises(ConfigError, match="inner_steps: must be an integer >= 1"):
        make(inner_steps=0)
    with pytest.raises(ConfigError, match=r"ema_rate: must lie in \(0, 1\]"):
        make(ema_rate=0.0)


def test_a_short_run_ends_below_pi_ref_on_the_exact_tiny_world():
    """6,144 queries on the 256-prompt world (judge probabilities, batch 256): the exact
    exploitability on the held-out prompts falls below pi_ref's (0.0560)."""
    from nlhf_envs.text.exact import exact_metrics

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = agents.make("nash_prox", "nlhf/TinyTokenDuel-v1", seed=0, mode="probability",
                            batch_size=256, lr=5e-4, eval_every=0)  # fmt: skip
    game, star = agent.exact_game("heldout")
    ref = exact_metrics(agent.reference, game, agent.env, "heldout", nash=star)["exploitability"]
    agent.learn(num_queries=6144)
    agent.model.eval()
    got = exact_metrics(agent.model, game, agent.env, "heldout", nash=star)["exploitability"]
    assert ref == pytest.approx(0.0560, abs=5e-4)
    assert got < 0.5 * ref
