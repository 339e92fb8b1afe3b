"""``learn(progress=...)`` of the tabular agents: one report per iteration, the queries of the
call out of its budget, and the same training as without it."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from nlhf_envs.progress import ProgressEvent, reporter


def test_a_tabular_agent_reports_each_iteration_and_learns_the_same():
    events: list[ProgressEvent] = []
    agent = agents.make("nash_mp", "nlhf/BiasedRPS-v0", seed=3, batch_size=64)
    agent.learn(num_queries=640, progress=events.append)  # the budget probes a deep copy
    plain = agents.make("nash_mp", "nlhf/BiasedRPS-v0", seed=3, batch_size=64)
    plain.learn(num_queries=640)
    assert np.array_equal(agent.policy_table(), plain.policy_table())
    per = agent.iteration_queries()
    assert [e.done for e in events] == [per * (k + 1) for k in range(agent.num_iterations)]
    assert {e.total for e in events} == {640} and {e.task for e in events} == {"train"}
    assert events[-1].info["iterations"] == agent.num_iterations


def test_progress_takes_none_a_bool_or_a_callable():
    assert not reporter(None, "t", 3, "steps").active
    assert not reporter(False, "t", 3, "steps").active
    with pytest.raises(TypeError, match="progress must be None, a bool or a callable"):
        reporter("yes", "t", 3, "steps")
