"""API conformance of the agents: make/available/config validation/policy/act/learn/save/load."""

from __future__ import annotations

import os

import numpy as np
import pytest

import agents
from agents.config import AgentConfig, ConfigError, build_config
from nlhf_envs import make_game
from nlhf_envs.registration import MATRIX_ENV_IDS


def test_available_lists_matrix_agents():
    names = agents.available("matrix")
    assert "nash_mp" in names
    assert names == sorted(names)
    assert agents.available("text") == [
        "mnpo",
        "nash_md",
        "nash_mp",
        "nash_prox",
        "online_ipo",
        "sb3_ppo_selfplay",
    ]
    assert agents.available() == sorted(set(names) | set(agents.available("text")))
    with pytest.raises(ValueError, match="kind must be one of"):
        agents.available("neural")


def test_make_unknown_agent_names_available():
    with pytest.raises(ValueError, match="unknown agent 'nope'.*nash_mp"):
        agents.make("nope", "rps")


def test_make_unknown_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError, match=r"'etaa'.*valid keys: .*eta"):
        agents.make("nash_mp", "rps", etaa=0.1)


def test_make_wrong_type_names_key():
    with pytest.raises(
        ConfigError, match=r"eta: expected a float; got '0.1' \(a string, not a number\)"
    ):
        agents.make("nash_mp", "rps", eta="0.1")
    with pytest.raises(ConfigError, match="batch_size: expected an int; got True"):
        agents.make("nash_mp", "rps", batch_size=True)
    with pytest.raises(ConfigError, match="mode: 'bogus' is not a mode"):
        agents.make("nash_mp", "rps", mode="bogus")
    with pytest.raises(ConfigError, match="eta: must be > 0"):
        agents.make("nash_mp", "rps", eta=-1.0)


def test_build_config_int_for_float_and_source_in_message():
    cfg = build_config(agents.config_class("nash_mp"), {"eta": 1}, source="zoo.yml[rps]")
    assert cfg.eta == 1.0 and isinstance(cfg.eta, float)
    with pytest.raises(ConfigError, match=r"\(in zoo.yml\[rps\]\)"):
        build_config(AgentConfig, {"log_every": "1"}, source="zoo.yml[rps]")


def test_text_env_without_text_agent_is_a_clear_error():
    missing = sorted(set(agents.available("matrix")) - set(agents.available("text")))
    assert missing, "every matrix agent has a text implementation: nothing left to check"
    name = missing[0]
    with pytest.raises(ValueError, match=f"agent '{name}' has no text-game implementation yet"):
        agents.make(name, "nlhf/TokenDuel-v0")


def test_unknown_game_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown game or env 'nlhf/Nope-v0'"):
        agents.make("nash_mp", "nlhf/Nope-v0")


@pytest.mark.parametrize("env_id", sorted(MATRIX_ENV_IDS))
def test_every_agent_runs_on_every_matrix_env_id(env_id):
    for name in agents.available("matrix"):
        agent = agents.make(name, env_id, seed=0)
        for mode in agents.config_class(name).MODES:
            small = {"batch_size": 8} if mode == "sampled" else {}
            if mode == "pg":
                small = {"pg_batch_size": 4}
            other = agents.make(name, env_id, seed=0, mode=mode, **small).learn(num_iterations=2)
            assert other.queries_used > 0 and np.all(np.isfinite(other.log_pi))
        C, K = agent.game.shape
        before = agent.metrics()["game/exploitability"]
        agent.learn(num_iterations=3)
        assert agent.num_iterations == 3
        assert agent.queries_used == agent.history[-1]["game/queries"] > 0
        pi = agent.policy_table()
        assert pi.shape == ((K,) if C == 1 else (C, K))
        np.testing.assert_allclose(pi.sum(axis=-1), 1.0)
        obs = np.eye(C, dtype=np.float32)[C - 1]
        assert 0 <= agent.act(obs) < K
        assert agent.act(obs, deterministic=True) == int(np.argmax(agent.policy_table(C - 1)))
        assert np.isfinite(before)


def test_agent_plays_in_the_pettingzoo_env():
    import pettingzoo

    import nlhf_envs  # noqa: F401  (registers the ids)

    env = pettingzoo.make("parallel", "nlhf/ContextualUniform-v0", num_rounds=5)
    a0 = agents.make("nash_mp", env, seed=0).learn(num_iterations=20)
    a1 = agents.make("nash_mp", env, seed=1)
    assert a0.game is env.unwrapped.game
    obs, _ = env.reset(seed=3)
    steps = 0
    while env.agents:
        actions = {"player_0": a0.act(obs["player_0"]), "player_1": a1.act(obs["player_1"])}
        obs, rewards, _, _, _ = env.step(actions)
        assert set(rewards) == {"player_0", "player_1"}
        steps += 1
    assert steps == 5


def test_act_rejects_bad_observations():
    agent = agents.make("nash_mp", make_game("uniform", num_actions=4, num_contexts=3))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        agent.act(np.ones(4))
    with pytest.raises(ValueError, match="one-hot"):
        agent.act(np.array([0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        agent.policy_table(3)
    assert agent.policy_table().shape == (3, 4)
    assert agent.policy_table(1).shape == (4,)


def test_learn_budgets_and_callback():
    agent = agents.make("nash_mp", "rps", seed=0)
    agent.learn(num_queries=7)
    assert agent.queries_used == 6  # 2 queries per iteration: never past the budget of 7
    agent.learn(num_iterations=2)
    assert agent.num_iterations == 5
    seen = []
    agent.learn(
        num_iterations=100, callback=lambda a: seen.append(a.num_iterations) or len(seen) < 3
    )
    assert seen == [6, 7, 8]
    with pytest.raises(ValueError, match="num_queries or num_iterations"):
        agent.learn()
    with pytest.raises(ValueError, match="num_queries must be a non-negative integer"):
        agent.learn(num_queries=-1)


def test_seeded_runs_are_reproducible_and_seeds_differ():
    def run(seed):
        return agents.make("nash_mp", "uniform", seed=seed, mode="sampled", batch_size=32).learn(
            num_iterations=10
        )

    np.testing.assert_array_equal(run(3).policy_table(), run(3).policy_table())
    assert not np.array_equal(run(3).policy_table(), run(4).policy_table())


@pytest.mark.parametrize("mode", ["exact", "sampled", "pg"])
def test_save_load_round_trip_and_continuation(tmp_path, mode):
    game_kw = {"num_actions": 6, "num_contexts": 2, "seed": 5}
    kw = dict(mode=mode, batch_size=16, inner_steps=3, pg_batch_size=8)
    full = agents.make("nash_mp", "uniform", seed=11, env_kwargs=game_kw, **kw).learn(
        num_iterations=10
    )
    part = agents.make("nash_mp", "uniform", seed=11, env_kwargs=game_kw, **kw).learn(
        num_iterations=4
    )
    part.act(np.array([1.0, 0.0]))  # acting must not change the learning stream
    path = part.save(tmp_path / "ckpt")
    assert path.endswith(".npz") and os.path.exists(path)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []
    loaded = agents.load(tmp_path / "ckpt")
    np.testing.assert_array_equal(loaded.policy_table(), part.policy_table())
    assert loaded.config == part.config and loaded.seed == 11
    assert loaded.queries_used == part.queries_used and loaded.history == part.history
    loaded.learn(num_iterations=6)
    np.testing.assert_array_equal(loaded.policy_table(), full.policy_table())
    assert loaded.history == full.history


def test_load_corrupt_or_truncated_file_names_path(tmp_path):
    agent = agents.make("nash_mp", "rps", seed=0).learn(num_iterations=2)
    path = agent.save(tmp_path / "a.npz")
    data = open(path, "rb").read()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(agents.CheckpointError, match="truncated.npz"):
        agents.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(agents.CheckpointError, match="junk.npz"):
        agents.load(junk)
    with pytest.raises(agents.CheckpointError, match="no agent checkpoint at"):
        agents.load(tmp_path / "missing.npz")


def test_tensorboard_logging_writes_events(tmp_path):
    pytest.importorskip("stable_baselines3")
    agent = agents.make("nash_mp", "rps", seed=0, tensorboard_log=tmp_path)
    agent.learn(num_iterations=3)
    agent.logger.close()
    runs = os.listdir(tmp_path)
    assert runs == ["nash_mp_1"]
    files = os.listdir(tmp_path / "nash_mp_1")
    assert any(f.startswith("events.out.tfevents") for f in files)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "nash_mp_1"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"game/kl_to_nash", "game/exploitability", "game/queries", "policy/entropy"} <= tags
    steps = [e.step for e in acc.Scalars("game/queries")]
    assert steps == [2, 4, 6]


def test_history_has_documented_metrics():
    agent = agents.make("nash_mp", "biased_rps", seed=0).learn(num_iterations=2)
    assert set(agents.METRIC_NAMES) <= set(agent.history[-1])
    assert len(agent.history) == 2
    agent2 = agents.make("nash_mp", "biased_rps", seed=0, log_every=0).learn(num_iterations=2)
    assert agent2.history == []


@pytest.mark.parametrize("name", agents.available("matrix"))
def test_every_agent_round_trips_through_a_checkpoint(tmp_path, name):
    game = make_game("uniform", num_actions=5, seed=1)
    full = agents.make(name, game, seed=2, mode="sampled", batch_size=16).learn(num_iterations=9)
    game2 = make_game("uniform", num_actions=5, seed=1)
    part = agents.make(name, game2, seed=2, mode="sampled", batch_size=16).learn(num_iterations=4)
    loaded = agents.load(part.save(tmp_path / name))
    assert type(loaded) is type(part)
    np.testing.assert_array_equal(loaded.policy_table(), part.policy_table())
    loaded.learn(num_iterations=5)
    np.testing.assert_array_equal(loaded.policy_table(), full.policy_table())
    assert loaded.history == full.history


def test_predict_takes_batches_like_sb3():
    agent = agents.make("nash_mp", "nlhf/ContextualUniform-v0", seed=0).learn(num_iterations=3)
    C = agent.game.num_contexts
    batch = np.eye(C, dtype=np.float32)
    actions, state = agent.predict(batch, deterministic=True)
    assert state is None and actions.dtype == np.int64 and actions.shape == (C,)
    expected = [int(np.argmax(agent.policy_table(c))) for c in range(C)]
    assert actions.tolist() == expected
    one, _ = agent.predict(batch[2], deterministic=True)
    assert isinstance(one, int) and one == expected[2]


def test_default_logging_cadence_is_log_spaced_and_resumes_identically(tmp_path):
    from agents.api import logs_iteration

    logged = [t for t in range(1, 2501) if logs_iteration(t, None)]
    assert logged[:3] == [1, 2, 3] and 100 in logged and 101 not in logged and 110 in logged
    assert len(logged) == 100 + 90 + 15  # 1..100, 110..1000 by 10, 1100..2500 by 100
    agent = agents.make("nash_mp", "biased_rps", seed=0).learn(num_iterations=250)
    assert [int(r["time/iterations"]) for r in agent.history] == [t for t in logged if t <= 250]
    # the current state's metrics whatever the cadence
    assert agent.evaluate()["time/iterations"] == 250
    part = agents.make("nash_mp", "biased_rps", seed=0).learn(num_iterations=137)
    part.save(tmp_path / "part")
    resumed = agents.load(tmp_path / "part").learn(num_iterations=113)
    assert resumed.history == agent.history
