"""Token-level MNPO: its loss is INPO's with one history policy, the agent runs INPO step for step
with history = 1, the population mechanics, mixture sampling, checkpoints and config errors."""

from __future__ import annotations

import pytest
import torch

import agents
from agents.config import ConfigError
from agents.text.common import frozen_copy
from agents.text.mnpo import mixture_generation, mnpo_loss
from nlhf_envs.text.engine import Generation

ENV = "nlhf/TokenDuel-v0"
SMALL = {"batch_size": 8, "eval_every": 0, "inner_steps": 2}
ENV_KW = {"max_new_tokens": 6}


def make(seed: int = 0, **kw):
    return agents.make("mnpo", ENV, seed=seed, env_kwargs=ENV_KW, **{**SMALL, **kw})


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _inpo_loss(lp_w, lp_l, lr_w, lr_l, lt_w, lt_l, mw, ml, eta, beta):
    """Zhang et al.'s INPO loss written out: (h(y_w, y_l) - eta/2)^2 with sequence sums."""

    def s(x, m):
        return (x * m).sum(-1)

    h = (
        s(lp_w, mw) - s(lp_l, ml)
        - eta * beta * (s(lr_w, mw) - s(lr_l, ml))
        - (1 - eta * beta) * (s(lt_w, mw) - s(lt_l, ml))
    )  # fmt: skip
    return ((h - eta / 2) ** 2).mean()


def test_loss_with_one_history_policy_is_inpo_loss_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    B, N, N2 = 6, 5, 4
    mask = torch.rand(B, N, generator=g) < 0.8
    mask2 = torch.rand(B, N2, generator=g) < 0.8
    a = torch.randn(B, N, generator=g, requires_grad=True)
    b = torch.randn(B, N2, generator=g, requires_grad=True)
    ref = (torch.randn(B, N, generator=g), torch.randn(B, N2, generator=g))
    hist = (torch.randn(B, N, generator=g), torch.randn(B, N2, generator=g))
    o = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    eta, beta = 2.0, 0.1
    out = mnpo_loss((a, b), ref, [hist], [1.0], (mask, mask2), o, eta=eta, beta=beta)
    ga, gb = torch.autograd.grad(out.loss, (a, b))
    # the same pairs as (winner, loser) rows, padded to a common width
    w = o.bool()[:, None]

    def pad(x):
        return torch.nn.functional.pad(x, (0, N - x.shape[1]))

    def win(x, y):
        return torch.where(w, x, pad(y)), torch.where(w, pad(y), x)

    (pw, pl), (rw, rl), (tw, tl) = win(a, b), win(*ref), win(*hist)
    mw, ml = win(mask.float(), mask2.float())
    expected = _inpo_loss(pw, pl, rw, rl, tw, tl, mw, ml, eta, beta)
    ea, eb = torch.autograd.grad(expected, (a, b))
    value = float(out.terms["loss/mnpo"])
    assert value == pytest.approx(float(expected.detach()), abs=1e-6)
    assert value > 0.01
    torch.testing.assert_close(ga, ea, rtol=0, atol=1e-6)
    torch.testing.assert_close(gb, eb, rtol=0, atol=1e-6)
    # a second member with weight 0 changes nothing; with weight 1/2 it does
    other = (torch.randn(B, N, generator=g), torch.randn(B, N2, generator=g))
    same = mnpo_loss((a, b), ref, [hist, other], [1.0, 0.0], (mask, mask2), o, eta=eta, beta=beta)
    assert float(same.terms["loss/mnpo"]) == pytest.approx(value, abs=1e-6)
    mixed = mnpo_loss((a, b), ref, [hist, other], [0.5, 0.5], (mask, mask2), o, eta=eta, beta=beta)
    assert abs(float(mixed.terms["loss/mnpo"]) - value) > 1e-3


def test_history_one_agent_is_inpo_step_for_step():
    """The agent with H = 1 against INPO's iteration run by hand on its plumbing: freeze pi_t,
    draw y, y' ~ pi_t, take inner_steps steps on the INPO loss, repeat."""
    agent = make(seed=1, history=1, eta=3.0)
    twin = make(seed=1, history=1, eta=3.0)
    eta, beta = 3.0, agent.beta
    for _ in range(3):
        agent.learn(num_iterations=1)
        pi_t = frozen_copy(twin.model)
        for _ in range(twin.config.inner_steps):
            # the agent's plumbing: padding columns cut, y and y' scored in one pass per model
            duel = twin.duel(opponent=pi_t, policy=pi_t).trimmed()
            o = duel.outcome.bool()[:, None]
            lp = list(twin.pair_log_probs(twin.model, duel))
            with torch.no_grad():
                lr = list(twin.pair_log_probs(twin.reference, duel))
                lt = list(twin.pair_log_probs(pi_t, duel))
            ms = [duel.y.mask.float(), duel.y2.mask.float()]
            width = max(x.shape[1] for x in lp)

            def pad(x, width=width):
                return torch.nn.functional.pad(x, (0, width - x.shape[1]))

            def win(pair, o=o):
                x, y = pad(pair[0]), pad(pair[1])
                return torch.where(o, x, y), torch.where(o, y, x)

            loss = _inpo_loss(*win(lp), *win(lr), *win(lt), *win(ms), eta, beta)
            twin.optimise(loss)
        for pa, pb in zip(_params(agent.model), _params(twin.model)):
            torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)
    assert agent.queries_used == twin.queries_used == 3 * 2 * 8
    assert all(
        torch.equal(x, y) for x, y in zip(_params(agent.population[0]), _params(agent.model))
    )


def test_population_holds_the_last_iterates_and_queries_are_counted():
    agent = make(seed=2, history=3, weights=[0.5, 0.3, 0.2])
    start = _params(agent.model)
    snaps = []
    for _ in range(2):
        agent.learn(num_iterations=1)
        snaps.append(_params(agent.model))
    assert agent.queries_used == 2 * 2 * 8
    members = [_params(m) for m in agent.population]
    for got, want in zip(members, [snaps[1], snaps[0], start]):
        assert all(torch.equal(x, y) for x, y in zip(got, want))
    assert not all(torch.equal(x, y) for x, y in zip(snaps[1], start))
    assert "loss/mnpo" in agent.history[-1] and agent.history[-1]["loss/mnpo"] > 0


def test_mixture_generation_takes_each_row_from_its_member():
    def gen(fill, width):
        tokens = torch.full((3, width), fill)
        return Generation(
            tokens,
            torch.full((3, width), -float(fill)),
            torch.ones(3, width, dtype=torch.bool),
            torch.full((3,), width),
        )

    out = mixture_generation([gen(5, 2), gen(7, 4)], torch.tensor([1, 0, 1]))
    assert out.tokens.tolist() == [[7, 7, 7, 7], [5, 5, 0, 0], [7, 7, 7, 7]]
    assert out.mask.tolist()[1] == [True, True, False, False]
    assert out.lengths.tolist() == [4, 2, 4]
    assert out.log_probs[1].tolist() == [-5.0, -5.0, 0.0, 0.0]


def test_resume_restores_the_population(tmp_path):
    straight = make(seed=5, history=2).learn(num_iterations=3)
    first = make(seed=5, history=2).learn(num_iterations=2)
    resumed = agents.load(first.save(tmp_path / "m"))
    for got, want in zip(resumed.population, first.population):
        assert all(torch.equal(x, y) for x, y in zip(_params(got), _params(want)))
    resumed.learn(num_iterations=1)
    for pa, pb in zip(_params(resumed.model), _params(straight.model)):
        assert torch.equal(pa, pb)


def test_config_errors():
    with pytest.raises(ConfigError, match="weights: must sum to 1; they sum to 0.9"):
        make(history=2, weights=[0.5, 0.4])
    with pytest.raises(ConfigError, match=r"weights: must be non-negative; weights\[0\] = -0.5"):
        make(history=2, weights=[-0.5, 1.5])
    with pytest.raises(ConfigError, match="eta: MNPO needs eta \\* beta <= 1; got eta = 20"):
        make(eta=20.0)
    agent = make()
    assert agent.eta == pytest.approx(1 / (3 * agent.beta))


def test_a_query_budget_is_never_exceeded():
    """An iteration judges ``inner_steps`` batches: ``learn(num_queries=N)`` stops before an
    iteration that would go past ``N`` (before, the budget loop counted one batch per iteration
    and a budget of 40 used 160 queries)."""
    import agents

    agent = agents.make(
        "mnpo", "nlhf/TinyTokenDuel-v0", seed=0, batch_size=8, inner_steps=4, eval_every=0
    )
    assert agent.iteration_queries() == 32
    agent.learn(num_queries=40)
    assert (agent.num_iterations, agent.queries_used) == (1, 32)
