"""Issue 11: Nash-MP's inner loop computes the prox step (prox fidelity on the exact tiny game,
``equations.md`` §7) and the noise-floor options (learning-rate schedules)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import agents
from agents.config import ConfigError
from agents.text.nash_mp import exact_prox_step, prox_fidelity
from agents.zoo import resolve

TINY = "nlhf/TinyTokenDuel-v0"


def _objective(pi, g, ref, pi_k, beta, eta):
    kl = lambda p, q: (p * (np.log(p) - np.log(q))).sum(-1)  # noqa: E731
    return (pi * g).sum(-1) - beta * kl(pi, ref) - (beta / eta) * kl(pi, pi_k)


def test_exact_prox_step_is_the_maximiser_of_the_half_step_objective():
    rng = np.random.default_rng(0)
    C, N, beta, eta = 3, 6, 0.1, 0.2
    A = rng.uniform(-0.5, 0.5, (C, N, N))
    P = 0.5 + (A - A.transpose(0, 2, 1)) / 2
    ref = rng.dirichlet(np.ones(N), C)
    pi_k = rng.dirichlet(np.ones(N), C)
    half = np.exp(exact_prox_step(np.log(pi_k), np.log(ref), P, beta=beta, eta=eta))
    np.testing.assert_allclose(half.sum(-1), 1.0, atol=1e-12)
    g = np.einsum("cij,cj->ci", P, pi_k)
    best = _objective(half, g, ref, pi_k, beta, eta)
    for _ in range(200):
        other = np.exp(np.log(half) + 0.3 * rng.standard_normal((C, N)))
        other /= other.sum(-1, keepdims=True)
        assert (_objective(other, g, ref, pi_k, beta, eta) < best + 1e-12).all()
    # eta -> 0 keeps pi_k; a huge eta gives the regularised best response pi_ref exp(g / beta)
    np.testing.assert_allclose(
        np.exp(exact_prox_step(np.log(pi_k), np.log(ref), P, beta=beta, eta=1e-9)), pi_k, atol=1e-6
    )
    br = ref * np.exp(g / beta)
    br /= br.sum(-1, keepdims=True)
    big = np.exp(exact_prox_step(np.log(pi_k), np.log(ref), P, beta=beta, eta=1e9))
    np.testing.assert_allclose(big, br, atol=1e-6)


def test_nash_mp_half_step_follows_the_exact_prox_step_at_the_zoo_defaults():
    entry = resolve("nash_mp", TINY)
    assert entry.config.optimizer_state == "reset" and entry.config.mode == "probability"
    cfg = {**dataclasses.asdict(entry.config), "eval_every": 0}
    figures = [prox_fidelity(agents.make("nash_mp", TINY, seed=s, **cfg)) for s in range(3)]
    corr = np.mean([f.correlation for f in figures])
    # held-out prompts (the network must generalise the step); about 0.65-0.7 measured
    assert corr >= 0.5, [f.correlation for f in figures]
    for f in figures:
        # the neural half-step lands nearer the exact one than pi_k is (the step is taken)
        assert f.kl_neural_to_exact < f.kl_step_exact, f
        assert 0.2 * f.kl_step_exact < f.kl_step_neural < 5.0 * f.kl_step_exact, f


def test_prox_fidelity_leaves_the_agent_unchanged():
    agent = agents.make("nash_mp", TINY, seed=0, batch_size=16, inner_steps=2, eval_every=0)
    before = [p.detach().clone() for p in agent.model.parameters()]
    f = prox_fidelity(agent)
    assert -1.0 <= f.correlation <= 1.0 and f.kl_step_exact > 0.0
    assert agent.queries_used == 32
    for a, b in zip(before, agent.model.parameters(), strict=True):
        assert (a == b).all()


@pytest.mark.parametrize(
    ("schedule", "factor"), [("constant", 1.0), ("inverse", 0.5), ("inverse_sqrt", 2**-0.5)]
)
def test_learning_rate_schedules(schedule, factor):
    agent = agents.make(
        "online_ipo", TINY, seed=0, batch_size=50, lr=1e-3, lr_schedule=schedule,
        lr_decay_queries=100, eval_every=0,
    )  # fmt: skip
    assert agent.current_lr() == pytest.approx(1e-3)
    agent.learn(num_iterations=2)
    assert agent.queries_used == 100
    assert agent.current_lr() == pytest.approx(1e-3 * factor)
    # the last step's queries are counted before it is taken: it used the rate at 100 queries
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)


def test_learning_rate_schedule_config_errors():
    with pytest.raises(ConfigError, match="lr_schedule: expected one of"):
        agents.make("online_ipo", TINY, lr_schedule="cosine")
    with pytest.raises(ConfigError, match="lr_decay_queries: must be >= 1"):
        agents.make("nash_md", TINY, lr_decay_queries=0)


@pytest.mark.parametrize("split", ["heldout", "all"])
def test_text_agents_train_on_the_env_prompt_split(split, tmp_path):
    # issue 11's Nash protocol trains on all prompts: the agent samples the env's prompt_split
    agent = agents.make(
        "online_ipo", TINY, seed=0, env_kwargs={"prompt_split": split}, batch_size=256, eval_every=0
    )
    world = agent.world
    texts = [world.prompts.texts[i] for i in world.prompts.indices(split)]
    ids, _ = world.tokenizer.encode_prompts(texts, world.prompt_len)
    allowed = {tuple(row) for row in ids.tolist()}
    seen = {tuple(row) for row in agent.duel(agent.reference).prompt_ids.tolist()}
    assert seen <= allowed
    assert len(seen) == len(allowed) == {"heldout": 8, "all": 32}[split]
    path = agent.save(str(tmp_path / "agent.npz"))
    assert agents.load(path).env.prompt_split == split


def test_sgd_optimizer_takes_plain_gradient_steps(tmp_path):
    agent = agents.make(
        "nash_mp", TINY, seed=0, batch_size=16, inner_steps=1, optimizer="sgd", lr=0.05,
        grad_clip=None, eval_every=0,
    )  # fmt: skip
    assert isinstance(agent.optimizer, torch.optim.SGD)
    before = [p.detach().clone() for p in agent.model.parameters()]
    duel = agent.duel(agent.reference)
    loss = -agent.log_probs(agent.model, duel).sum(-1).mean()
    grads = torch.autograd.grad(loss, list(agent.model.parameters()))
    agent.optimise(-agent.log_probs(agent.model, duel).sum(-1).mean())
    for b, g, p in zip(before, grads, agent.model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), b - 0.05 * g, rtol=0, atol=1e-6)
    # Nash-MP's half-steps start a fresh optimiser of the same kind; SGD has no state to save
    agent.learn(num_iterations=1)
    assert isinstance(agent.optimizer, torch.optim.SGD)
    loaded = agents.load(agent.save(str(tmp_path / "sgd.npz")))
    assert loaded.config.optimizer == "sgd" and isinstance(loaded.optimizer, torch.optim.SGD)
    for a, b in zip(agent.model.parameters(), loaded.model.parameters(), strict=True):
        assert (a == b).all()
    with pytest.raises(ConfigError, match="optimizer: expected one of 'adam', 'sgd'"):
        agents.make("online_ipo", TINY, optimizer="rmsprop")


def test_sampler_option_reaches_the_engine_and_batches_self_play():
    # the default sampler: Online IPO's self-play pair is one batch of 2B too (rows :B are y)
    agent = agents.make("online_ipo", TINY, seed=0, batch_size=8, eval_every=0)
    assert agent.engine.sampler == "multinomial"
    gen = torch.Generator().manual_seed(0)
    gen.set_state(agent.rng.get_state())
    prompts = agent.prompt_generator()  # the prompts' own stream (common random numbers)
    duel = agent.duel(agent.model)
    _, ids, mask = agent.engine.sample_prompts(8, prompts, split="train")
    assert torch.equal(duel.prompt_ids, ids)
    both = agent.engine.generate(agent.model, ids.repeat(2, 1), mask.repeat(2, 1), gen)
    assert torch.equal(torch.cat([duel.y.tokens, duel.y2.tokens]), both.tokens)
    # inverse_cdf: the same, with one uniform per row and step
    fast = agents.make(
        "online_ipo", TINY, seed=0, batch_size=8, eval_every=0, sampler="inverse_cdf"
    )
    assert fast.engine.sampler == "inverse_cdf"
    gen.set_state(fast.rng.get_state())
    prompts = fast.prompt_generator()
    duel = fast.duel(fast.model)
    _, ids, mask = fast.engine.sample_prompts(8, prompts, split="train")
    both = fast.engine.generate(fast.model, ids.repeat(2, 1), mask.repeat(2, 1), gen)
    assert torch.equal(torch.cat([duel.y.tokens, duel.y2.tokens]), both.tokens)
    fast.learn(num_iterations=2)
    assert fast.queries_used == 8 + 2 * 8  # the duel above, then two iterations
    with pytest.raises(
        ConfigError, match="sampler: expected one of 'auto', 'multinomial', 'inverse_cdf'"
    ):
        agents.make("nash_md", TINY, sampler="gumbel")
    with pytest.raises(ConfigError, match="optimizer: the SB3 PPO agent trains with SB3's Adam"):
        agents.make("sb3_ppo_selfplay", TINY, optimizer="sgd")


def test_agents_with_one_seed_train_on_the_same_prompts_step_by_step():
    # common random numbers: the k-th duel's prompts depend on (seed, k) only, not on the agent
    kw = dict(seed=5, batch_size=16, eval_every=0)
    ipo, md = agents.make("online_ipo", TINY, **kw), agents.make("nash_md", TINY, **kw)
    for _ in range(3):
        a, b = ipo.duel(ipo.model), md.duel(md.reference)
        assert torch.equal(a.prompt_ids, b.prompt_ids)
        assert not torch.equal(a.y.tokens, b.y2.tokens)  # answers come from each agent's own draws
    other = agents.make("online_ipo", TINY, seed=6, batch_size=16, eval_every=0)
    assert not torch.equal(other.duel(other.model).prompt_ids, ipo.duel(ipo.model).prompt_ids)
