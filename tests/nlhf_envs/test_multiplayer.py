"""The n-player preference game: PettingZoo conformance, seeding, rewards, and n = 2 equivalence."""

import contextlib
import io
import warnings

import numpy as np
import pettingzoo
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test, seed_test
from trace_equality import assert_same

import nlhf_envs
from nlhf_envs import matrix_game, multiplayer
from nlhf_envs.game import GameValidationError
from nlhf_envs.registration import MULTIPLAYER_ENV_IDS


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("env_id", sorted(MULTIPLAYER_ENV_IDS))
@pytest.mark.parametrize("n", [2, 3, 5])
def test_pettingzoo_conformance(env_id, n):
    make = lambda kind: pettingzoo.make(kind, env_id, num_players=n, num_rounds=4)  # noqa: E731
    parallel_api_test(make("parallel"), num_cycles=20)
    api_test(make("aec"), num_cycles=20)
    seed_test(lambda: make("aec"), num_cycles=8)
    parallel_seed_test(lambda: make("parallel"))
    render_test(
        lambda render_mode=None: pettingzoo.make(
            "aec", env_id, num_players=n, render_mode=render_mode
        )
    )
    env = make("parallel")
    assert env.possible_agents == [f"player_{i}" for i in range(n)]


def test_contextual_family_conformance():
    make = lambda: multiplayer.parallel_env(  # noqa: E731
        num_players=3, game="uniform", num_actions=4, num_contexts=3, num_rounds=5
    )
    parallel_api_test(make(), num_cycles=20)
    parallel_seed_test(make)


def _rollout(env, seed, rounds, action_seed):
    rng = np.random.default_rng(action_seed)
    obs, infos = env.reset(seed=seed)
    trace = [obs, infos]
    for _ in range(rounds):
        K = env.action_space("player_0").n
        acts = {a: int(rng.integers(K)) for a in env.agents}
        trace.extend(env.step(acts))
        if not env.agents:
            break
    return trace


@pytest.mark.parametrize("n", [3, 5])
def test_multi_round_determinism(n):
    # parallel_seed_test only checks the first step: check whole contextual episodes
    make = lambda: multiplayer.parallel_env(  # noqa: E731
        num_players=n, game="uniform", num_actions=5, num_contexts=4, num_rounds=30
    )
    a, b = _rollout(make(), 7, 30, 0), _rollout(make(), 7, 30, 0)
    assert len(a) == 2 + 5 * 30
    for x, y in zip(a, b):
        assert_same(x, y)
    c = _rollout(make(), 8, 30, 0)
    assert any(not np.array_equal(x["player_0"], y["player_0"]) for x, y in zip(a[2::5], c[2::5]))
    env = make()
    first, again = _rollout(env, 3, 30, 1), _rollout(env, 3, 30, 1)
    for x, y in zip(first, again):
        assert_same(x, y)


@pytest.mark.parametrize("mode", ["outcome", "centered", "probability"])
@pytest.mark.parametrize("kwargs", [{"game": "rps"}, {"game": "uniform", "num_contexts": 3}])
def test_two_players_is_the_two_player_game(mode, kwargs):
    """n = 2 plays the same seeded episode as nlhf_envs.matrix_game, to the bit: observations,
    rewards, terminations, truncations, and infos (which only add ``opponent_actions``)."""
    two = matrix_game.parallel_env(num_rounds=50, reward_mode=mode, **kwargs)
    multi = multiplayer.parallel_env(num_players=2, num_rounds=50, reward_mode=mode, **kwargs)
    a, b = _rollout(two, 11, 50, 3), _rollout(multi, 11, 50, 3)
    assert len(a) == len(b) == 2 + 5 * 50
    for k, (x, y) in enumerate(zip(a, b)):
        if k >= 2 and (k - 2) % 5 == 4:  # infos of a step
            for agent in x:
                extra = dict(y[agent])
                assert extra.pop("opponent_actions") == (x[agent]["opponent_action"],)
                assert_same(x[agent], extra)
        else:
            assert_same(x, y)
    assert two.game.queries == multi.game.queries == 50


def test_rewards_are_mean_pairwise_preferences():
    game = nlhf_envs.make_game("uniform", num_actions=4, seed=0)
    P = game.P[0]
    acts = [1, 2, 3, 1]
    n = len(acts)
    want_prob = np.array(
        [np.mean([P[acts[i], acts[j]] for j in range(n) if j != i]) for i in range(n)]
    )
    env = multiplayer.parallel_env(num_players=n, game=game, reward_mode="probability")
    env.reset(seed=0)
    _, r, _, trunc, info = env.step({f"player_{i}": a for i, a in enumerate(acts)})
    got = np.array([r[f"player_{i}"] for i in range(n)])
    np.testing.assert_allclose(got, want_prob, rtol=0, atol=1e-15)
    np.testing.assert_allclose([info[a]["prob"] for a in r], want_prob, atol=1e-15)
    assert sum(got) == pytest.approx(n / 2, abs=1e-12)  # constant-sum
    assert info["player_2"]["opponent_actions"] == (1, 2, 1)
    assert "opponent_action" not in info["player_2"]
    assert all(trunc.values()) and env.agents == []
    assert game.queries == n * (n - 1) // 2

    # outcome mode: one Bernoulli per pair, mean payoff -> the same expectations
    env = multiplayer.parallel_env(num_players=n, game=game, num_rounds=4000)
    env.reset(seed=1)
    total = np.zeros(n)
    while env.agents:
        _, r, _, _, _ = env.step({f"player_{i}": a for i, a in enumerate(acts)})
        vals = np.array([r[f"player_{i}"] for i in range(n)])
        assert vals.sum() == pytest.approx(n / 2)
        assert set(np.round(vals * (n - 1), 9)) <= set(range(n))  # wins out of n - 1 duels
        total += vals
    np.testing.assert_allclose(total / 4000, want_prob, atol=4 * 0.5 / np.sqrt(4000 * (n - 1)))


def test_render_ansi():
    env = multiplayer.parallel_env(num_players=3, render_mode="ansi")
    env.reset(seed=0)
    assert env.render() == "rps (K=3, n=3) round 0/1: context 0, no move yet"
    env.step({"player_0": 0, "player_1": 1, "player_2": 2})
    text = env.render()
    assert text.startswith("rps (K=3, n=3) round 1/1: context 0 | player_0 -> 0, player_1 -> 1, ")
    assert "outcomes 1>0, 0>2, 2>1" in text  # paper beats rock, rock beats scissors, ...


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_players": 1}, "num_players must be >= 2; got 1"),
        ({"num_players": 2.0}, "num_players must be an integer >= 2; got 2.0 (float)"),
        ({"num_rounds": 0}, "num_rounds must be >= 1; got 0"),
        ({"render_mode": "rgb_array"}, "render_mode must be None, 'ansi' or 'human'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(GameValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        multiplayer.parallel_env(**kwargs)


def test_bad_actions():
    env = multiplayer.parallel_env(num_players=3)
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match="missing action for player_2; every player acts every round"
    ):
        env.step({"player_0": 0, "player_1": 1})
    with pytest.raises(
        ValueError, match=r"illegal action 3 for player_1: expected an integer in \[0, 3\)"
    ):
        env.step({"player_0": 0, "player_1": 3, "player_2": 0})
    with pytest.raises(ValueError, match=r"unknown or finished agent\(s\) \['player_9'\]"):
        env.step({"player_0": 0, "player_1": 1, "player_2": 0, "player_9": 0})
