"""Token MNPO logs the multiplayer duality gap of its population at every evaluation: exact on the
tiny world (the solver's gap of the members' sequence policies; ``2 Expl`` with one history policy),
estimated with an interval on the full world, absent when Nash metrics are off."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from nlhf_envs.solvers import multiplayer_duality_gap
from nlhf_envs.text import exact
from nlhf_envs.text.multiplayer import MultiTokenDuelEnv
from nlhf_envs.text.population import population_duality_gap

TINY = "nlhf/TinyTokenDuel-v0"


def test_exact_population_gap_on_the_tiny_world():
    agent = agents.make(
        "mnpo", TINY, seed=0, history=2, batch_size=8, inner_steps=2, eval_every=1, eval_prompts=8
    )
    agent.learn(num_iterations=2)
    rows = [r for r in agent.history if "eval/population_duality_gap" in r]
    assert len(rows) == 2
    game, _ = agent.exact_game()
    members = [agent.model, agent.population[1]]
    pis = [exact.sequence_policy(m, agent.env) for m in members]
    want = multiplayer_duality_gap(game, pis)
    assert rows[-1]["eval/population_duality_gap"] == pytest.approx(want, abs=1e-12)
    assert want > 0.0 and "eval/population_duality_gap_low" not in rows[-1]
    # the population moved: pi_2 and pi_1 are different policies, so the gap is not 2 Expl(pi_2)
    assert abs(want - 2 * rows[-1]["eval/exploitability"]) > 1e-6
    queries = agent.queries_used
    assert agent.population_gap() == {"eval/population_duality_gap": pytest.approx(want, abs=1e-12)}
    assert agent.queries_used == queries  # measuring costs no queries


def test_one_history_policy_logs_twice_its_exploitability():
    agent = agents.make(
        "mnpo", TINY, seed=1, history=1, batch_size=8, inner_steps=1, eval_every=1, eval_prompts=8
    )
    agent.learn(num_iterations=1)
    row = agent.history[-1]
    assert row["eval/population_duality_gap"] == pytest.approx(
        2 * row["eval/exploitability"], abs=1e-12
    )


def test_estimated_population_gap_on_the_full_world():
    common = {
        "seed": 0,
        "history": 2,
        "batch_size": 4,
        "inner_steps": 1,
        "eval_every": 1,
        "eval_prompts": 4,
        "nash_eval_prompts": 4,
        "nash_eval_samples": 4,
        "env_kwargs": {"max_new_tokens": 4},
    }
    agent = agents.make("mnpo", "nlhf/TokenDuel-v0", **common)
    agent.learn(num_iterations=1)
    row = agent.history[-1]
    gap = row["eval/population_duality_gap"]
    assert np.isfinite(gap)
    assert row["eval/population_duality_gap_low"] <= gap <= row["eval/population_duality_gap_high"]
    assert row["eval/population_duality_gap_low"] < row["eval/population_duality_gap_high"]
    off = agents.make("mnpo", "nlhf/TokenDuel-v0", **{**common, "nash_eval": "off"})
    off.learn(num_iterations=1)
    assert not any(k.startswith("eval/population") for k in off.history[-1])


def test_trains_on_the_n_player_env_and_its_population_plays_the_seats():
    env = MultiTokenDuelEnv(3, world="tiny", reward_mode="probability")
    agent = agents.make("mnpo", env, seed=0, history=2, batch_size=4, inner_steps=1, eval_every=0)
    agent.learn(num_iterations=2)
    assert agent.queries_used == 2 * 4
    gap = population_duality_gap(agent.members(), env)["population_duality_gap"]
    assert gap == pytest.approx(agent.population_gap()["eval/population_duality_gap"], abs=1e-12)
    obs, _ = env.reset(seed=0)
    while env.agents:
        acts = {a: agent.act(obs[a]) for a in env.agents if not env._answers[a].finished[0]}
        obs, rewards, terms, _, infos = env.step(acts)
    assert all(terms.values()) and sum(rewards.values()) == pytest.approx(1.5, abs=1e-6)
    assert len(infos["player_2"]["answers"]) == 3


def test_agents_make_takes_the_n_player_token_id():
    import agents

    agent = agents.make("mnpo", "nlhf/MultiTinyTokenDuel-v0", seed=0, batch_size=8, eval_every=0)
    assert type(agent.env).__name__ == "MultiTokenDuelEnv" and agent.env.num_players == 3
    assert agent.learn(num_queries=64).queries_used == 64
