"""The n-player token duel: PettingZoo conformance for n = 2, 3, 5, multi-step determinism, the
n = 2 equivalence with the two-player duel, mean pairwise judge preferences, and bad input."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pettingzoo
import pytest
import torch
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test, seed_test
from trace_equality import assert_same

import nlhf_envs  # noqa: F401  (registers the ids)
from nlhf_envs.game import GameValidationError
from nlhf_envs.registration import MULTIPLAYER_TEXT_ENV_IDS
from nlhf_envs.text.env import TokenDuelEnv, default_judge
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.multiplayer import MultiTokenDuelEnv
from nlhf_envs.text.world import get_world

torch.set_num_threads(1)
TINY = "nlhf/MultiTinyTokenDuel-v0"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("n", [2, 3, 5])
def test_pettingzoo_conformance(n):
    make = lambda kind, **kw: pettingzoo.make(kind, TINY, num_players=n, **kw)  # noqa: E731
    parallel_api_test(make("parallel"), num_cycles=20)
    api_test(make("aec"), num_cycles=20)
    seed_test(lambda: make("aec"), num_cycles=8)
    parallel_seed_test(lambda: make("parallel"))
    render_test(lambda render_mode=None: make("aec", render_mode=render_mode))
    env = make("parallel")
    assert env.possible_agents == [f"player_{i}" for i in range(n)]
    assert env.observation_space("player_0") is env.observation_space(f"player_{n - 1}")
    assert len(env.pairs) == n * (n - 1) // 2 and env.pairs[-1] == (n - 2, n - 1)


def test_the_full_world_id_is_registered():
    assert sorted(MULTIPLAYER_TEXT_ENV_IDS) == [
        "nlhf/MultiTinyTokenDuel-v0",
        "nlhf/MultiTokenDuel-v0",
    ]
    env = pettingzoo.make("parallel", "nlhf/MultiTokenDuel-v0", max_new_tokens=4)
    assert env.metadata["name"] == "nlhf/MultiTokenDuel-v0" and env.num_players == 3
    assert env.world.name == "default" and env.judge_version == "latest"
    parallel_api_test(env, num_cycles=8)


def _rollout(env, seed, action_seed, **reset_kw):
    """A whole seeded episode with random token actions (finished players omit theirs)."""
    rng = np.random.default_rng(action_seed)
    obs, infos = env.reset(seed=seed, **reset_kw)
    trace = [obs, infos]
    while env.agents:
        acts = {}
        for a in env.agents:
            if not bool(env._answers[a].finished[0]):
                # words and <eos> (id 2): answers of every length
                acts[a] = int(rng.choice([2, *rng.integers(5, env.action_space(a).n, 3)]))
        trace.extend(env.step(acts))
    return trace


@pytest.mark.parametrize("n", [3, 5])
def test_multi_step_determinism(n):
    # parallel_seed_test checks only the first step: compare whole episodes, several in a row
    def episodes(seed):
        env = MultiTokenDuelEnv(n, world="tiny")
        out = _rollout(env, seed, 0)
        for k in range(3):
            out += _rollout(env, None, k + 1)
        return out

    a, b = episodes(4), episodes(4)
    assert len(a) == len(b) > 4 * 7
    for x, y in zip(a, b, strict=True):
        assert_same(x, y)
    c = episodes(5)
    prompts = [t["player_0"]["prompt"] for t in (a[1], c[1])]
    assert (
        prompts[0] != prompts[1]
        or len(a) != len(c)
        or any(not np.array_equal(x["player_0"], y["player_0"]) for x, y in zip(a[2::5], c[2::5]))
    )


@pytest.mark.parametrize(
    ("world", "judge_version", "mode", "payer"),
    [
        ("tiny", "latest", "outcome", "judge"),
        ("tiny", "latest", "centered", "ground_truth"),
        ("default", "latest", "probability", "judge"),
        ("default", "v0", "outcome", "judge"),
    ],
)
def test_two_players_is_the_two_player_duel(world, judge_version, mode, payer):
    """n = 2 plays the same seeded episodes as nlhf_envs.text.env, to the bit: observations, rewards,
    terminations, truncations and infos (which only add ``answers``), judge probabilities included."""
    kw = {
        "world": world,
        "judge_version": judge_version,
        "reward_mode": mode,
        "payer": payer,
        "max_new_tokens": 5,
    }
    two, multi = TokenDuelEnv(**kw), MultiTokenDuelEnv(2, **kw)
    assert two.fingerprint() == multi.fingerprint()
    for seed in range(6):
        a, b = _rollout(two, seed, seed), _rollout(multi, seed, seed)
        assert len(a) == len(b) >= 7
        last = b[-1]
        for agent in last:
            assert last[agent].pop("answers") == (last[agent]["answer_0"], last[agent]["answer_1"])
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
        info = a[-1]["player_0"]
        assert 0.0 < info["judge_prob"] < 1.0 and 0.0 < info["true_prob"] < 1.0


@pytest.mark.parametrize("mode", ["probability", "outcome"])
def test_each_seat_is_paid_its_mean_pairwise_preference(mode):
    world = get_world("tiny")
    words = world.language.answer_words
    answers = [[words[0], words[1]], [words[2]], [], [words[3], words[4], words[5]]]
    prompt = world.prompts.texts[0]
    n = len(answers)
    env = MultiTokenDuelEnv(n, world="tiny", reward_mode=mode, render_mode="ansi")
    env.reset(seed=3, options={"prompt": prompt})
    tok = world.tokenizer
    scripts = [[tok.token_id(w) for w in ans] + [tok.eos_id] for ans in answers]
    for t in range(3):  # max_new_tokens = 3 cuts player_3's answer before its <eos>
        acts = {f"player_{i}": s[t] for i, s in enumerate(scripts) if t < len(s)}
        obs, rewards, terms, truncs, infos = env.step(acts)
    assert all(terms.values()) and not any(truncs.values()) and env.agents == []
    texts = [" ".join(a) for a in answers]
    judge, truth = default_judge("tiny"), ground_truth(world)
    P = np.array([[float(judge.prob([prompt], [a], [b])[0]) for b in texts] for a in texts])
    T = np.array([[float(truth.prob([prompt], [a], [b])[0]) for b in texts] for a in texts])
    off = ~np.eye(n, dtype=bool)
    want = (P * off).sum(axis=1) / (n - 1)
    for i in range(n):
        info = infos[f"player_{i}"]
        assert info["answers"] == tuple(texts)
        assert info["prob"] == pytest.approx(want[i], abs=1e-6) == info["judge_prob"]
        assert info["true_prob"] == pytest.approx((T * off).sum(axis=1)[i] / (n - 1), abs=1e-6)
    got = np.array([rewards[f"player_{i}"] for i in range(n)])
    assert got.sum() == pytest.approx(n / 2, abs=1e-6)  # constant-sum: n (n - 1) / 2 queries
    if mode == "probability":
        np.testing.assert_allclose(got, want, atol=1e-6)
    else:
        assert set(np.round(got * (n - 1), 9)) <= {0.0, 1.0, 2.0, 3.0}
        won = np.array([infos[f"player_{i}"]["outcome"] for i in range(n)])
        np.testing.assert_allclose(got, won, atol=1e-12)
    text = env.render()
    assert f"player_0 : {texts[0]}  [3/3 done]" in text  # two words and <eos>
    assert f"player_3 : {texts[3]}  [3/3 done]" in text  # cut at max_new_tokens = 3
    assert text.count("P(player_") == 6 and "P(player_2 > player_3)" in text


def test_bad_input_is_refused_with_one_line_errors():
    with pytest.raises(GameValidationError, match="num_players must be >= 2; got 1"):
        MultiTokenDuelEnv(1, world="tiny")
    with pytest.raises(GameValidationError, match=r"num_players must be an integer >= 2; got 3.0"):
        MultiTokenDuelEnv(3.0, world="tiny")
    with pytest.raises(ValueError, match="unknown payer 'crowd'"):
        MultiTokenDuelEnv(3, world="tiny", payer="crowd")
    env = MultiTokenDuelEnv(3, world="tiny")
    env.reset(seed=0)
    before = {a: env._observe(a) for a in env.agents}
    for acts, message in [
        ({"player_0": 5, "player_1": 5}, "player_2 has not finished its answer and must act"),
        ({"player_0": 5, "player_1": 5, "player_2": 999}, "action 999 of player_2 is not a token"),
        ({"player_0": 5, "player_1": 5, "player_2": 5, "player_3": 5}, "unknown agents"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.step(acts)
        for a, o in before.items():  # nothing was applied
            np.testing.assert_array_equal(env._observe(a), o)
    eos = {a: 2 for a in env.agents}
    env.step(eos)
    with pytest.raises(RuntimeError, match="after the duel ended"):
        env.step(eos)
