"""``nlhf/TokenDuel-v0``: PettingZoo conformance, determinism, rules, rewards, and the shared engine."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
import torch
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test

from nlhf_envs import registration
from nlhf_envs.text import DuelEngine, load_judge, load_reference_policy, world
from nlhf_envs.text import env as duel_env
from nlhf_envs.text.env import TokenDuelEnv
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.judging import CallableJudge

torch.set_num_threads(1)
TOK = world.default_tokenizer()
EOS = TOK.eos_id


def _word(w: str) -> int:
    return TOK.token_id(w)


def _play(env, script0, script1):
    """Feed two token scripts; returns the final step's outputs."""
    for t in range(max(len(script0), len(script1))):
        acts = {}
        if t < len(script0):
            acts["player_0"] = script0[t]
        if t < len(script1):
            acts["player_1"] = script1[t]
        out = env.step(acts)
    return out


def test_registered_id_plays_full_duels_paid_by_the_shipped_judge():
    registration.register_all()
    env = pettingzoo.make("parallel", "nlhf/TokenDuel-v0")
    obs, infos = env.reset(seed=0)
    assert env.agents == ["player_0", "player_1"]
    steps, rng = 0, np.random.default_rng(0)
    while env.agents:
        actions = {a: int(rng.integers(5, TOK.vocab_size)) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
        steps += 1
    assert steps == 24  # random words never emit <eos>, so both answers run to max_new_tokens
    assert all(terms.values()) and not any(truncs.values())
    info = infos["player_0"]
    assert rewards["player_0"] + rewards["player_1"] == 1.0
    assert rewards["player_0"] in (0.0, 1.0) and info["prob"] == info["judge_prob"]
    assert 0.0 < info["judge_prob"] < 1.0 and 0.0 < info["true_prob"] < 1.0
    assert len(info["answer_0"].split()) == 24
    aec = pettingzoo.make("aec", "nlhf/TokenDuel-v0")
    aec.reset(seed=0)
    assert aec.agents == ["player_0", "player_1"]


def test_parallel_api():
    parallel_api_test(TokenDuelEnv(max_new_tokens=6), num_cycles=40)


def test_aec_api():
    api_test(duel_env.env(max_new_tokens=6), num_cycles=40)


def test_max_cycles_caps_the_answer_length():
    max_cycles_test(duel_env)
    assert TokenDuelEnv(max_cycles=4).max_new_tokens == 4
    assert TokenDuelEnv(max_cycles=100).max_new_tokens == 24


def test_spaces_are_fixed_objects_and_observations_fit():
    env = TokenDuelEnv(max_new_tokens=8)
    assert env.observation_space("player_0") is env.observation_space("player_0")
    assert env.action_space("player_1") is env.action_space("player_1")
    assert env.action_space("player_0").n == TOK.vocab_size == 317
    obs, _ = env.reset(seed=1)
    o = obs["player_0"]
    assert o.shape == (2, 20) and o.dtype == np.int64
    assert env.observation_space("player_0").contains(o)
    assert o[1, 12:].sum() == 0 and o[0, 11] == TOK.sep_id and o[1, 11] == 1


def test_multi_step_determinism_under_a_seed():
    def trajectory(seed):
        env = TokenDuelEnv(max_new_tokens=10)
        obs, infos = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        record = [infos["player_0"]["prompt"]]
        while env.agents:
            acts = {a: int(rng.integers(TOK.vocab_size)) for a in env.agents}
            obs, rewards, *_, infos = env.step(acts)
            record.append((obs["player_0"].tolist(), obs["player_1"].tolist()))
        record.append((rewards, infos["player_0"]["judge_prob"], infos["player_0"]["outcome"]))
        return record

    assert trajectory(5) == trajectory(5)
    # Different seeds change the prompt or the outcome draw in at least one of a few duels.
    assert any(trajectory(s) != trajectory(5) for s in (6, 7, 8))
    # reset(seed) reseeds: the sequence of prompts of an env is reproducible.
    env = TokenDuelEnv()
    first = [env.reset(seed=11)[1]["player_0"]["prompt"]] + [
        env.reset()[1]["player_0"]["prompt"] for _ in range(3)
    ]
    second = [env.reset(seed=11)[1]["player_0"]["prompt"]] + [
        env.reset()[1]["player_0"]["prompt"] for _ in range(3)
    ]
    assert first == second and len(set(first)) > 1


def test_eos_ends_an_answer_and_later_actions_are_ignored():
    env = TokenDuelEnv(reward_mode="probability")
    obs, _ = env.reset(seed=0, options={"prompt": "describe cats"})
    cats, fur, dot = _word("cats"), _word("fur"), _word(".")
    obs, rewards, terms, _, infos = env.step({"player_0": cats, "player_1": fur})
    obs, rewards, terms, _, infos = env.step({"player_0": EOS, "player_1": cats})
    assert not any(terms.values()) and env.agents == ["player_0", "player_1"]
    # player_0 has finished: its actions are ignored, and it may omit them.
    obs, rewards, terms, _, infos = env.step({"player_0": dot, "player_1": dot})
    assert obs["player_0"][1].sum() == 4 + 2  # <bos> describe cats <sep> + "cats <eos>"
    assert obs["player_0"][0, 12:14].tolist() == [cats, EOS]
    assert obs["player_1"][0, 12:15].tolist() == [fur, cats, dot]
    assert obs["player_0"][0, 14:].sum() == 0  # each player sees only its own answer
    obs, rewards, terms, _, infos = env.step({"player_1": EOS})
    assert all(terms.values()) and env.agents == []
    info = infos["player_1"]
    assert info["answer_0"] == "cats" and info["answer_1"] == "fur cats ."
    p = float(load_judge().prob(["describe cats"], ["cats"], ["fur cats ."])[0])
    assert rewards["player_0"] == pytest.approx(p, abs=1e-6)
    assert rewards["player_1"] == pytest.approx(1 - p, abs=1e-6)
    q = float(ground_truth().prob(["describe cats"], ["cats"], ["fur cats ."])[0])
    # infos are from each agent's side: player_1's answer is the first one of its probabilities.
    assert info["true_prob"] == pytest.approx(1 - q, abs=1e-6)
    assert infos["player_0"]["true_prob"] == pytest.approx(q, abs=1e-6)
    assert info["judge_prob"] == pytest.approx(1 - p, abs=1e-6) == info["prob"]
    assert info["outcome"] + infos["player_0"]["outcome"] == 1.0
    with pytest.raises(RuntimeError, match="after the duel ended"):
        env.step({"player_0": cats, "player_1": cats})


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("outcome", {(1.0, 0.0), (0.0, 1.0)}), ("centered", {(0.5, -0.5), (-0.5, 0.5)})],
)
def test_reward_modes(mode, expected):
    seen = set()
    env = TokenDuelEnv(reward_mode=mode, max_new_tokens=2)
    for seed in range(12):
        env.reset(seed=seed)
        _, rewards, *_ = _play(env, [_word("cats"), EOS], [_word("orbit"), EOS])
        seen.add((rewards["player_0"], rewards["player_1"]))
    assert seen <= expected and len(seen) >= 1


def test_ground_truth_can_pay():
    env = TokenDuelEnv(payer="ground_truth", reward_mode="probability")
    env.reset(seed=0, options={"prompt": "describe cats"})
    _, rewards, _, _, infos = _play(env, [_word("cats"), _word("fur"), EOS], [EOS])
    assert rewards["player_0"] == pytest.approx(infos["player_0"]["true_prob"])
    assert infos["player_0"]["prob"] == infos["player_0"]["true_prob"]
    assert infos["player_0"]["true_prob"] > 0.9  # an empty answer loses


def test_a_text_judge_can_pay_and_a_nan_judge_is_an_error():
    fixed = CallableJudge(lambda prompts, pairs: [0.25] * len(pairs), TOK)
    env = TokenDuelEnv(judge=fixed, reward_mode="probability", max_new_tokens=1)
    env.reset(seed=0)
    _, rewards, *_ = env.step({"player_0": EOS, "player_1": EOS})
    assert rewards == {"player_0": 0.25, "player_1": 0.75}
    broken = TokenDuelEnv(
        judge=CallableJudge(lambda p, pairs: [float("nan")], TOK), max_new_tokens=1
    )
    broken.reset(seed=0)
    with pytest.raises(ValueError, match="returned nan for pair 0"):
        broken.step({"player_0": EOS, "player_1": EOS})


@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        (
            {"player_0": 317, "player_1": 5},
            ValueError,
            r"action 317 of player_0 is not a token id in \[0, 317\)",
        ),
        ({"player_0": -1, "player_1": 5}, ValueError, "action -1 of player_0"),
        ({"player_0": 2.5, "player_1": 5}, ValueError, "action 2.5 of player_0"),
        ({"player_0": 5}, ValueError, "player_1 has not finished its answer and must act"),
        ({"player_0": 5, "player_1": 5, "player_2": 5}, ValueError, "unknown agents"),
    ],
)
def test_bad_actions_raise_clear_errors(actions, error, message):
    env = TokenDuelEnv()
    env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(actions)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown reward mode 'win'"):
        TokenDuelEnv(reward_mode="win")
    with pytest.raises(ValueError, match="unknown payer 'crowd'"):
        TokenDuelEnv(payer="crowd")
    with pytest.raises(ValueError, match="unknown render_mode 'video'"):
        TokenDuelEnv(render_mode="video")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        TokenDuelEnv(prompt_split="test")


def test_render_ansi_shows_the_duel():
    env = TokenDuelEnv(render_mode="ansi", max_new_tokens=3)
    env.reset(seed=0, options={"prompt": "describe cats"})
    _play(env, [_word("cats"), EOS], [_word("fur"), _word("."), EOS])
    text = env.render()
    assert "prompt   : describe cats" in text
    assert "player_0 : cats  [2/3 done]" in text and "player_1 : fur .  [3/3 done]" in text
    assert "judge P(player_0 > player_1) =" in text and "wins" in text
    assert TokenDuelEnv().render() is None


def test_pettingzoo_render_test(capsys):
    from pettingzoo.test import render_test

    from nlhf_envs.text.env import env as aec_env

    render_test(lambda render_mode=None: aec_env(render_mode=render_mode, max_new_tokens=3))
    assert "prompt   :" in capsys.readouterr().out  # "human" mode printed the duel


def test_env_and_engine_apply_the_same_rules_and_payment():
    ref = load_reference_policy()
    engine = DuelEngine(load_judge(), reward_mode="probability", with_true_prob=True)
    gen = torch.Generator().manual_seed(0)
    texts, ids, mask = engine.sample_prompts(6, gen)
    result = engine.play(ref, ref, ids, mask, gen)
    env = TokenDuelEnv(reward_mode="probability")
    for i, text in enumerate(texts):
        env.reset(seed=i, options={"prompt": text})
        a0 = result.answers_0.tokens[i][result.answers_0.mask[i]].tolist()
        a1 = result.answers_1.tokens[i][result.answers_1.mask[i]].tolist()
        obs, rewards, terms, _, infos = _play(env, a0, a1)
        assert all(terms.values())
        assert obs["player_0"][0, 12 : 12 + len(a0)].tolist() == a0
        assert rewards["player_0"] == pytest.approx(float(result.payoff.reward_0[i]), abs=1e-6)
        assert infos["player_0"]["true_prob"] == pytest.approx(
            float(result.payoff.true_prob[i]), abs=1e-6
        )


def test_the_reference_policy_plays_from_observations():
    ref = load_reference_policy()
    env = TokenDuelEnv()
    obs, _ = env.reset(seed=3)
    gen = torch.Generator().manual_seed(0)
    while env.agents:
        actions = {}
        for agent in env.agents:
            o = torch.as_tensor(obs[agent])
            last = int(o[1].nonzero().max())  # the last real token
            logits, _ = ref(o[0, None, : last + 1], attention_mask=o[1, None, : last + 1])
            actions[agent] = int(torch.multinomial(logits[0, -1].softmax(-1), 1, generator=gen))
        obs, rewards, terms, _, infos = env.step(actions)
    assert all(terms.values()) and sum(rewards.values()) == 1.0
    for text in (infos["player_0"]["answer_0"], infos["player_0"]["answer_1"]):
        assert 0 < len(text.split()) < 24
