"""Issue 23, item 4: ``learn(num_queries=N)`` never uses more than ``N`` queries.

The budget loop stops before an iteration that would exceed ``N`` (``agents.api``); each agent says
what its next iteration costs (``iteration_queries``). Checked for every tabular agent in every mode
and for the token agents at a budget that is not a multiple of their iteration.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import agents
from agents.api import plan_budget
from agents.config import ConfigError

MATRIX_CASES = [
    (name, mode)
    for name in agents.available("matrix")
    if name != "sb3_ppo_selfplay"  # one PPO rollout per iteration: its own test below
    for mode in agents.config_class(name).MODES
]


def _small(name: str, mode: str) -> dict:
    fields = {f.name for f in dataclasses.fields(agents.config_class(name))}
    kw: dict = {"mode": mode, "log_every": 0}
    if "batch_size" in fields:
        kw["batch_size"] = 24
    if "inner_steps" in fields:
        kw["inner_steps"] = 3
    if "pg_batch_size" in fields:
        kw["pg_batch_size"] = 8
    return kw


@pytest.mark.parametrize(("name", "mode"), MATRIX_CASES)
def test_matrix_agent_query_budget_is_never_exceeded(name: str, mode: str) -> None:
    agent = agents.make(name, "rps", seed=3, **_small(name, mode))
    cost = agent.iteration_queries()
    assert cost >= 1
    # the declared cost is what every iteration really uses
    for _ in range(3):
        before = agent.queries_used
        agent.learn(num_iterations=1)
        assert agent.queries_used - before == cost
    # a budget of 2.5 iterations buys exactly 2 of them; one just below an iteration buys none
    before, iters = agent.queries_used, agent.num_iterations
    budget = 2 * cost + cost // 2
    agent.learn(num_queries=budget)
    assert agent.queries_used - before == 2 * cost <= budget
    assert agent.num_iterations - iters == 2
    agent.learn(num_queries=cost - 1)
    assert agent.queries_used - before == 2 * cost
    # an exact multiple is used to the last query
    agent.learn(num_queries=3 * cost)
    assert agent.queries_used - before == 5 * cost


def test_sb3_matrix_agent_query_budget_is_exact() -> None:
    kw = dict(seed=0, batch_size=32, n_epochs=1, log_every=0)
    agent = agents.make("sb3_ppo_selfplay", "rps", **kw)
    assert agent.iteration_queries() == 32  # measured on a copy: the agent is untouched
    agent.learn(num_queries=95)
    assert agent.queries_used == 64 and agent.num_iterations == 2
    twin = agents.make("sb3_ppo_selfplay", "rps", **kw).learn(num_iterations=2)  # never probed
    np.testing.assert_array_equal(agent.policy_table(), twin.policy_table())


def test_iteration_queries_probe_leaves_the_agent_untouched() -> None:
    a = agents.make("nash_mp", "rps", seed=5, mode="sampled", batch_size=16, log_every=1)
    b = agents.make("nash_mp", "rps", seed=5, mode="sampled", batch_size=16, log_every=1)
    assert a.iteration_queries() == 32  # two win-rate estimates of 16 queries
    assert a.queries_used == 0 and a.num_iterations == 0 and a.history == []
    a.learn(num_iterations=4)
    b.learn(num_iterations=4)
    assert a.history[-1]["game/exploitability"] == pytest.approx(
        b.history[-1]["game/exploitability"], rel=0, abs=1e-15
    )
    # a config change is seen
    a.config.batch_size = 8
    assert a.iteration_queries() == 16


def test_plan_budget_counts_whole_iterations() -> None:
    agent = agents.make("nash_mp", "rps", seed=0, mode="sampled", batch_size=100)
    plan = plan_budget(agent, 1000)
    assert (plan.per_iteration, plan.iterations, plan.queries, plan.unused) == (200, 5, 1000, 0)
    plan = plan_budget(agent, 450)
    assert (plan.iterations, plan.queries, plan.unused) == (2, 400, 50)
    assert plan_budget(agent, 199).iterations == 0
    with pytest.raises(ConfigError, match="num_queries must be a non-negative integer; got -1"):
        plan_budget(agent, -1)


TEXT_CASES = [
    ("nash_mp", {"inner_steps": 2, "batch_size": 8}, 32),
    ("online_ipo", {"batch_size": 12}, 12),
    ("nash_md", {"batch_size": 12}, 12),
]


@pytest.mark.parametrize(("name", "kw", "cost"), TEXT_CASES)
def test_token_agent_query_budget_is_never_exceeded(name: str, kw: dict, cost: int) -> None:
    agent = agents.make(
        name, "nlhf/TinyTokenDuel-v0", seed=0, device="cpu", eval_every=0, log_every=0, **kw
    )
    assert agent.iteration_queries() == cost
    agent.learn(num_queries=2 * cost + cost - 1)
    assert agent.queries_used == 2 * cost and agent.num_iterations == 2
    agent.learn(num_queries=cost - 1)
    assert agent.queries_used == 2 * cost and agent.num_iterations == 2


def test_cli_refuses_a_budget_below_one_iteration(tmp_path, capsys) -> None:
    from agents.zoo.cli import main

    argv = ["train", "--agent", "nash_mp", "--env", "nlhf/TinyTokenDuel-v0", "-n", "100"]
    assert main([*argv, "--log-folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "nlhf-zoo: error: a budget of 100 queries is below one iteration of nash_mp "
        "(4,096 queries); give --num-queries 4096 or more"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_says_what_a_budget_buys(tmp_path) -> None:
    from agents.zoo.cli import train_run

    said: list[str] = []
    agent, _ = train_run(
        "nash_mp", "nlhf/RPS-v0", log_folder=tmp_path, num_queries=1001, progress=False,
        notify=said.append,
    )  # fmt: skip
    assert said == [
        "nash_mp uses 512 queries per iteration: a budget of 1,001 buys 1 iteration "
        "(512 queries; 489 left unused)"
    ]
    assert agent.queries_used == 512
    said.clear()
    agent, _ = train_run(
        "nash_mp", "nlhf/RPS-v0", log_folder=tmp_path, num_queries=0, progress=False,
        notify=said.append,
    )  # fmt: skip
    assert said == [] and agent.queries_used == 0  # 0: an untrained run, on purpose


def test_a_resumed_run_says_when_its_remainder_is_below_one_iteration(tmp_path) -> None:
    from agents.zoo.cli import train_run

    kw = dict(log_folder=tmp_path, progress=False, params={"mode": "sampled", "batch_size": 100})
    agent, run = train_run("nash_mp", "nlhf/RPS-v0", num_queries=400, **kw)
    assert agent.queries_used == 400
    said: list[str] = []
    agent, _ = train_run(None, None, resume=run, num_queries=550, progress=False,
                         notify=said.append)  # fmt: skip
    assert agent.queries_used == 400
    assert said[-1] == (
        "the run's remaining 150 queries are below one iteration of nash_mp (200 queries): "
        "nothing more is trained"
    )
