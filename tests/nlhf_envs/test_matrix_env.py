"""PettingZoo conformance and behaviour of every registered matrix-game id."""

import contextlib
import io
import types
import warnings

import numpy as np
import pettingzoo
import pytest
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
    seed_test,
)

import nlhf_envs
from nlhf_envs import matrix_game
from nlhf_envs.registration import MATRIX_ENV_IDS

IDS = list(MATRIX_ENV_IDS)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("env_id", IDS)
def test_pettingzoo_conformance(env_id):
    parallel_api_test(pettingzoo.make("parallel", env_id, num_rounds=5), num_cycles=50)
    api_test(pettingzoo.make("aec", env_id, num_rounds=5), num_cycles=50)
    seed_test(lambda: pettingzoo.make("aec", env_id, num_rounds=5), num_cycles=10)
    parallel_seed_test(lambda: pettingzoo.make("parallel", env_id, num_rounds=5))
    kw = MATRIX_ENV_IDS[env_id]
    mod = types.SimpleNamespace(
        parallel_env=lambda **k: matrix_game.parallel_env(**kw, **k),
        env=lambda **k: matrix_game.env(**kw, **k),
    )
    max_cycles_test(mod)
    render_test(lambda render_mode=None: pettingzoo.make("aec", env_id, render_mode=render_mode))


def _rollout(env, seed, rounds, action_seed):
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    trace = [obs["player_0"].copy()]
    for _ in range(rounds):
        K = env.action_space("player_0").n
        acts = {a: int(rng.integers(K)) for a in env.agents}
        obs, rew, term, trunc, info = env.step(acts)
        trace += [
            obs["player_0"].copy(),
            rew["player_0"],
            rew["player_1"],
            info["player_0"]["prob"],
        ]
        if not env.agents:
            break
    return trace


@pytest.mark.parametrize(
    "env_id", ["nlhf/ContextualUniform-v0", "nlhf/UniformGame-v0", "nlhf/RPS-v0"]
)
def test_multi_round_determinism(env_id):
    # PettingZoo 1.27.0's parallel_seed_test checks one step only: check a whole episode.
    make = lambda: pettingzoo.make("parallel", env_id, num_rounds=40)  # noqa: E731
    a = _rollout(make(), 123, 40, 0)
    b = _rollout(make(), 123, 40, 0)
    assert len(a) == 1 + 4 * 40
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = _rollout(make(), 124, 40, 0)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    # re-seeding the same instance replays the episode
    env = make()
    first = _rollout(env, 5, 40, 1)
    again = _rollout(env, 5, 40, 1)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)


def test_rewards_modes_and_infos():
    game = nlhf_envs.make_game("uniform", num_actions=4, seed=0)
    p = game.P[0, 1, 2]
    for mode in ("outcome", "centered", "probability"):
        env = matrix_game.parallel_env(game=game, reward_mode=mode, num_rounds=2000)
        env.reset(seed=0)
        r0s, r1s = [], []
        while env.agents:
            _, r, _, _, info = env.step({"player_0": 1, "player_1": 2})
            r0s.append(r["player_0"])
            r1s.append(r["player_1"])
            assert info["player_0"]["prob"] == pytest.approx(p)
            assert info["player_1"]["prob"] == pytest.approx(1 - p)
        r0, r1 = np.array(r0s), np.array(r1s)
        if mode == "outcome":
            assert set(np.unique(r0)) <= {0.0, 1.0}
            np.testing.assert_allclose(r0 + r1, 1.0)
            assert abs(r0.mean() - p) < 4 * np.sqrt(p * (1 - p) / 2000)
        elif mode == "centered":
            assert set(np.unique(r0)) <= {-0.5, 0.5}
            np.testing.assert_allclose(r0 + r1, 0.0)
            assert abs(r0.mean() + 0.5 - p) < 4 * np.sqrt(p * (1 - p) / 2000)
        else:
            np.testing.assert_allclose(r0, p)
            np.testing.assert_allclose(r1, 1 - p)


def test_contexts_follow_rho_and_observations_are_one_hot():
    P = nlhf_envs.make_game("uniform", num_actions=3, num_contexts=3, seed=0).P
    game = nlhf_envs.PreferenceGame(P, rho=[0.6, 0.3, 0.1])
    env = matrix_game.parallel_env(game=game, num_rounds=6000)
    obs, info = env.reset(seed=3)
    counts = np.zeros(3)
    while env.agents:
        assert obs["player_0"].dtype == np.float32 and obs["player_0"].sum() == 1.0
        x = int(np.argmax(obs["player_0"]))
        counts[x] += 1
        obs, _, _, _, info = env.step({"player_0": 0, "player_1": 1})
        assert info["player_0"]["context"] == x
        assert info["player_0"]["prob"] == pytest.approx(P[x, 0, 1])
    np.testing.assert_allclose(counts / counts.sum(), [0.6, 0.3, 0.1], atol=0.03)


def test_truncation_after_num_rounds():
    env = pettingzoo.make("parallel", "nlhf/RPS-v0", num_rounds=3)
    env.reset(seed=0)
    for t in range(3):
        _, _, term, trunc, _ = env.step({"player_0": 0, "player_1": 1})
        assert not any(term.values())
        assert all(trunc.values()) == (t == 2)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="finished episode; call reset"):
        env.step({"player_0": 0, "player_1": 1})


@pytest.mark.parametrize(
    "actions, message",
    [
        (
            {"player_0": 3, "player_1": 0},
            r"illegal action 3 for player_0: expected an integer in \[0, 3\)",
        ),
        ({"player_0": -1, "player_1": 0}, r"illegal action -1 for player_0"),
        ({"player_0": 0, "player_1": 1.5}, r"illegal action 1.5 for player_1"),
        ({"player_0": 0}, r"missing action for player_1"),
        (
            {"player_0": 0, "player_1": 0, "player_2": 0},
            r"unknown or finished agent\(s\) \['player_2'\]",
        ),
        ([0, 1], r"actions must be a dict"),
    ],
)
def test_illegal_actions_raise(actions, message):
    env = pettingzoo.make("parallel", "nlhf/RPS-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(actions)


def test_numpy_integer_actions_accepted():
    env = pettingzoo.make("parallel", "nlhf/RPS-v0")
    env.reset(seed=0)
    _, r, _, _, info = env.step({"player_0": np.int64(1), "player_1": np.array([0])})
    assert info["player_0"]["prob"] == 1.0 and r["player_0"] == 1.0  # paper beats rock


def test_generic_id_takes_game_or_family():
    game = nlhf_envs.make_game("condorcet", num_actions=6, seed=1)
    env = pettingzoo.make("parallel", "nlhf/MatrixGame-v0", game=game)
    assert env.game is game
    env2 = pettingzoo.make("parallel", "nlhf/MatrixGame-v0", game="skew_gaussian", num_actions=12)
    assert env2.action_space("player_0").n == 12
    with pytest.raises(ValueError, match="unknown game family 'nope'"):
        pettingzoo.make("parallel", "nlhf/MatrixGame-v0", game="nope")
    with pytest.raises(
        ValueError, match="render_mode must be None, 'ansi', 'human' or 'rgb_array'"
    ):
        pettingzoo.make("parallel", "nlhf/RPS-v0", render_mode="video")
    with pytest.raises(ValueError, match="unknown reward mode 'win'"):
        pettingzoo.make("parallel", "nlhf/RPS-v0", reward_mode="win")


def test_ansi_render_describes_the_round():
    env = pettingzoo.make("parallel", "nlhf/RPS-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step({"player_0": 1, "player_1": 0})
    text = env.render()
    assert "player_0 -> 1, player_1 -> 0" in text and "P(player_0 preferred) = 1.000" in text


def test_state_space_holds_the_state():
    env = pettingzoo.make("parallel", "nlhf/ContextualUniform-v0")
    env.reset(seed=3)
    s = env.state()
    assert env.state_space.contains(s) and s.sum() == 1.0
    assert env.state_space == env.observation_space("player_0")


def _aec_trace(env, seed, action_seed, num_iter=10_000):
    """Every ``last()`` and ``agents``/``agent_selection`` of a seeded AEC episode, then a re-reset."""
    rng = np.random.default_rng(action_seed)
    trace = []
    for s in (seed, None):
        env.reset(seed=s)
        for agent in env.agent_iter(num_iter):
            obs, rew, term, trunc, info = env.last()
            trace.append(
                (
                    agent,
                    obs.tolist(),
                    rew,
                    term,
                    trunc,
                    dict(info),
                    list(env.agents),
                    env.state().tolist(),
                )
            )
            trace.append(dict(env.rewards))
            if term or trunc:
                action = None
            else:
                action = int(rng.integers(env.action_space(agent).n))
            env.step(action)
        trace.append(("end", list(env.agents)))
    return trace


@pytest.mark.parametrize(
    "family, kwargs",
    [
        ("rps", {}),
        ("uniform", {"num_actions": 5, "num_contexts": 3, "seed": 1}),
        ("skew_gaussian", {"num_actions": 4, "num_contexts": 2, "seed": 2}),
    ],
)
@pytest.mark.parametrize("reward_mode", ["outcome", "centered", "probability"])
def test_native_aec_env_replays_parallel_to_aec_exactly(family, kwargs, reward_mode):
    from pettingzoo.utils import parallel_to_aec

    for rounds in (1, 7):
        kw = dict(game=family, num_rounds=rounds, reward_mode=reward_mode, **kwargs)
        native = matrix_game.raw_env(**kw)
        assert isinstance(native, matrix_game.PreferenceGameAECEnv)
        reference = parallel_to_aec(matrix_game.parallel_env(**kw))
        for seed in (0, 11):
            a = _aec_trace(native, seed, seed + 5)
            b = _aec_trace(reference, seed, seed + 5)
            assert len(a) == len(b) == 2 * (2 * (2 * rounds + 2)) + 2
            assert a == b


def test_native_aec_env_matches_the_parallel_env_round_by_round():
    kw = dict(game="uniform", num_actions=6, num_contexts=4, seed=3, num_rounds=30)
    aec, par = matrix_game.env(**kw), matrix_game.parallel_env(**kw)
    aec.reset(seed=9)
    obs, _ = par.reset(seed=9)
    rng = np.random.default_rng(0)
    while par.agents:
        np.testing.assert_array_equal(aec.observe("player_0"), obs["player_0"])
        a0, a1 = (int(v) for v in rng.integers(6, size=2))
        aec.step(a0)
        aec.step(a1)
        obs, rew, _, trunc, info = par.step({"player_0": a0, "player_1": a1})
        assert aec.rewards == rew and aec.truncations == trunc and aec.infos == info
    assert aec.unwrapped.game is aec.unwrapped._par.game
    raw = aec.unwrapped
    assert getattr(raw, "state_space", None) is getattr(raw._par, "state_space", None)


def test_native_aec_env_rejects_illegal_actions_like_the_parallel_env():
    env = matrix_game.raw_env(game="rps")
    env.reset(seed=0)
    env.step(1)
    with pytest.raises(
        ValueError, match=r"illegal action 3 for player_1: expected an integer in \[0, 3\)"
    ):
        env.step(3)
    env.reset(seed=0)
    env.step(2.0)
    with pytest.raises(ValueError, match=r"illegal action 2.0 for player_0"):
        env.step(np.int64(1))


def test_every_round_is_one_query_counted_by_the_game():
    from nlhf_envs import make_game

    game = make_game("biased_rps")
    env = pettingzoo.make("parallel", "nlhf/MatrixGame-v0", game=game, num_rounds=3)
    env.reset(seed=0)
    while env.agents:
        env.step({"player_0": 0, "player_1": 1})
    assert game.queries == 3
    aec = pettingzoo.make("aec", "nlhf/MatrixGame-v0", game=game, num_rounds=2)
    aec.reset(seed=0)
    for _agent in aec.agent_iter():
        *_, term, trunc, _ = aec.last()
        aec.step(None if term or trunc else 0)
    assert game.queries == 5
