"""Token-level agents: API, query counting, determinism, checkpoint/resume, acting, config errors,
and a short learning run (win rate vs pi_ref under the judge above 1/2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agents
from agents.checkpoint import CheckpointError
from agents.config import ConfigError

ENV = "nlhf/TokenDuel-v0"
SMALL = {"batch_size": 8, "eval_every": 2, "eval_prompts": 16}
ENV_KW = {"max_new_tokens": 8}
NAMES = ("nash_mp", "online_ipo", "nash_md")
EXTRA = {"nash_mp": {"inner_steps": 2}, "online_ipo": {}, "nash_md": {"schedule": "constant"}}


def make(name: str, seed: int = 0, **kw):
    return agents.make(name, ENV, seed=seed, env_kwargs=ENV_KW, **{**SMALL, **EXTRA[name], **kw})


def _params(agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.model.parameters()]


def _strip_time(history):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in history]


def test_text_agents_are_registered_lazily_under_the_matrix_names():
    assert set(NAMES) <= set(agents.available("text"))
    from agents.text import TextNashMD, TextNashMP, TextOnlineIPO

    assert agents.registry.get_agent_class("nash_mp", "text") is TextNashMP
    assert agents.registry.get_agent_class("online_ipo", "text") is TextOnlineIPO
    assert agents.registry.get_agent_class("nash_md", "text") is TextNashMD
    assert agents.registry.get_agent_class("nash_mp", "matrix").kind == "matrix"


@pytest.mark.parametrize("name", NAMES)
def test_queries_history_and_metric_names(name):
    agent = make(name)
    assert agent.config.device == "cpu" and agent.engine.max_new_tokens == 8
    agent.learn(num_iterations=2)
    per_iter = {"nash_mp": 2 * 2 * 8, "online_ipo": 8, "nash_md": 8}[name]
    assert agent.queries_used == 2 * per_iter and agent.num_iterations == 2
    assert [row["game/queries"] for row in agent.history] == [per_iter, 2 * per_iter]
    last = agent.history[-1]
    for key in agents.text.TEXT_METRIC_NAMES:
        assert key in last, key
    assert 0.0 < last["eval/win_rate_ref_judge"] < 1.0
    assert 0.0 < last["eval/win_rate_ref_true"] < 1.0
    assert 1.0 <= last["policy/answer_length"] <= 8.0
    assert last["policy/entropy"] > 0.0
    assert any(k.startswith("loss/") for k in last)
    # a query budget is never exceeded: 2 iterations fit 2 * per_iter + 1 queries, not 3
    assert agent.iteration_queries() == per_iter
    agent.learn(num_queries=2 * per_iter + 1)
    assert agent.queries_used == 4 * per_iter


def test_nash_mp_restores_theta_k_and_adam_state_between_phases():
    agent = make("nash_mp", inner_steps=3, optimizer_state="carry")
    agent.learn(num_iterations=2)
    # "carry": phase 2 restarts from theta_k's Adam state, so each iteration adds M steps, not 2M
    steps = {float(s["step"]) for s in agent.optimizer.state.values()}
    assert steps == {6.0}
    assert agent.queries_used == 2 * 2 * 3 * 8


def test_nash_mp_resets_adam_per_half_step_by_default():
    agent = make("nash_mp", inner_steps=3)
    assert agent.config.optimizer_state == "reset"
    agent.learn(num_iterations=2)
    # a fresh Adam per half-step: after any number of iterations it has taken exactly M steps
    assert {float(s["step"]) for s in agent.optimizer.state.values()} == {3.0}
    with pytest.raises(ConfigError, match="optimizer_state: expected 'reset' or 'carry'"):
        make("nash_mp", optimizer_state="keep")


def test_nash_mp_extragradient_variant_and_its_config_check():
    agent = make("nash_mp", inner_steps=1, variant="extragradient")
    agent.learn(num_iterations=1)
    assert agent.queries_used == 16
    assert {float(s["step"]) for s in agent.optimizer.state.values()} == {1.0}
    assert agent.history[-1]["loss/pg_kl_anchor"] == 0.0
    with pytest.raises(ConfigError, match="inner_steps: the extragradient variant takes one step"):
        make("nash_mp", inner_steps=4, variant="extragradient")


def test_nash_md_mixture_schedules_indexed_by_integer_iteration():
    harmonic = make("nash_md", schedule="harmonic")
    assert [harmonic.mixture_coef(t) for t in (0, 2, 6)] == [1.0, 0.5, 0.25]
    constant = make("nash_md", mixture_coef=0.3)
    assert constant.mixture_coef(100) == 0.3
    with pytest.raises(ValueError, match="iteration must be a non-negative int; got 1.5"):
        constant.mixture_coef(1.5)
    constant.learn(num_iterations=1)
    assert constant.history[-1]["train/mixture_coef"] == pytest.approx(0.3)


@pytest.mark.parametrize("name", NAMES)
def test_runs_are_deterministic_given_a_seed(name):
    a, b = make(name, seed=3), make(name, seed=3)
    a.learn(num_iterations=2)
    b.learn(num_iterations=2)
    for pa, pb in zip(_params(a), _params(b)):
        assert torch.equal(pa, pb)
    assert _strip_time(a.history) == _strip_time(b.history)
    c = make(name, seed=4).learn(num_iterations=2)
    assert not all(torch.equal(x, y) for x, y in zip(_params(a), _params(c)))


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(name, tmp_path):
    straight = make(name, seed=5).learn(num_iterations=4)
    first = make(name, seed=5).learn(num_iterations=2)
    path = first.save(tmp_path / "ckpt")
    assert path.endswith(".npz")
    resumed = agents.load(path)
    assert type(resumed) is type(first) and resumed.num_iterations == 2
    assert resumed.config == first.config
    resumed.learn(num_iterations=2)
    assert resumed.queries_used == straight.queries_used
    for pa, pb in zip(_params(resumed), _params(straight)):
        assert torch.equal(pa, pb)
    assert _strip_time(resumed.history) == _strip_time(straight.history)


def test_checkpoint_is_written_atomically_and_corrupt_files_are_clear_errors(tmp_path):
    agent = make("online_ipo").learn(num_iterations=1)
    path = agent.save(tmp_path / "a.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary file left behind
    bad = tmp_path / "bad.npz"
    bad.write_bytes(open(path, "rb").read()[:1000])
    with pytest.raises(CheckpointError, match="bad.npz"):
        agents.load(bad)
    with pytest.raises(CheckpointError, match="no agent checkpoint at"):
        agents.load(tmp_path / "missing.npz")


def test_act_plays_the_pettingzoo_env():
    import pettingzoo

    agent = make("nash_md")
    env = pettingzoo.make("parallel", ENV, **ENV_KW)
    obs, _ = env.reset(seed=0)
    steps = 0
    while env.agents:
        actions = {a: agent.act(obs[a]) for a in env.agents}
        obs, rewards, term, trunc, infos = env.step(actions)
        steps += 1
    assert 1 <= steps <= 8
    assert set(infos["player_0"]) >= {"judge_prob", "true_prob"}
    first = agent.act(obs["player_0"], deterministic=True)
    assert first == agent.act(obs["player_0"], deterministic=True)
    with pytest.raises(ValueError, match=r"shape \(2, L\); got shape \(3,\)"):
        agent.act(np.zeros(3, dtype=np.int64))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) 'lrr'"):
        make("online_ipo", lrr=0.1)
    with pytest.raises(ConfigError, match="lam: the token-level Online IPO has no payoff step"):
        make("online_ipo", lam=0.1)
    with pytest.raises(ConfigError, match="payer: expected 'judge' or 'ground_truth'"):
        make("nash_md", payer="human")
    with pytest.raises(ConfigError, match="mode: 'exact' is not a mode of the token-level agents"):
        make("nash_mp", mode="exact")
    with pytest.raises(ConfigError, match="max_new_tokens: 20 exceeds the env's max_new_tokens 8"):
        make("nash_mp", max_new_tokens=20)


def test_ground_truth_can_pay():
    agent = make("online_ipo", payer="ground_truth", mode="probability")
    agent.learn(num_iterations=1)
    assert agent.engine.payer == "ground_truth" and agent.queries_used == 8


def test_short_cpu_run_beats_pi_ref_under_the_judge():
    agent = agents.make(
        "nash_md", ENV, seed=0, batch_size=64, lr=1.0e-3, schedule="constant", eval_every=0
    )
    before = agent.evaluate(num_prompts=512)["eval/win_rate_ref_judge"]
    agent.learn(num_queries=1024)
    after = agent.evaluate(num_prompts=512)
    assert abs(before - 0.5) < 0.03  # pi_theta starts as pi_ref
    assert after["eval/win_rate_ref_judge"] > 0.53
    assert after["eval/kl_ref"] > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nash_mp", "online_ipo"])
def test_short_cpu_run_beats_pi_ref_under_the_judge_slow(name):
    agent = agents.make(name, ENV, seed=0, batch_size=64, lr=1.0e-3, eval_every=0)
    agent.learn(num_queries=4096)
    assert agent.evaluate(num_prompts=512)["eval/win_rate_ref_judge"] > 0.53
