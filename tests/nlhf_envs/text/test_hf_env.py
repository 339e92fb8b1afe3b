"""``nlhf/HFTokenDuel-v0``: PettingZoo conformance and seeding at a 50,000-token vocabulary, rules,
rewards and infos, with a tiny random GPT-2 and a word-level tokenizer built locally."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
import torch

pytest.importorskip("transformers")

from hf_parts import length_judge, prompts, tiny_gpt2, word_tokenizer  # noqa: E402
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test  # noqa: E402

from nlhf_envs import registration  # noqa: E402
from nlhf_envs.text import hf_env  # noqa: E402
from nlhf_envs.text.engine import generate  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

torch.set_num_threads(1)
BIG = 50_000


@pytest.fixture(scope="module")
def big():
    """A 50,000-token tokenizer and a GPT-2 whose embedding matrix is padded to 50,048 rows."""
    return word_tokenizer(BIG), tiny_gpt2(BIG + 48)


def _kwargs(parts, **over):
    tok, model = parts
    kw = {
        "reference": model,
        "tokenizer": tok,
        "judge": length_judge,
        "prompts": prompts(6),
        "max_prompt_tokens": 5,
        "max_new_tokens": 4,
    }
    kw.update(over)
    return kw


def test_registered_id_plays_a_duel_at_50k_tokens(big):
    registration.register_all()
    env = pettingzoo.make("parallel", "nlhf/HFTokenDuel-v0", **_kwargs(big))
    assert isinstance(env, HFTokenDuelEnv)
    assert env.action_space("player_0").n == BIG  # the tokenizer's size, not the 50,048 embeddings
    assert env.observation_space("player_0").shape == (2, 5 + 4)
    assert env.observation_space("player_1").high[0].max() == BIG - 1
    obs, infos = env.reset(seed=3)
    assert infos["player_0"]["prompt"] in prompts(6)
    # player_0 writes three words then <eos>; player_1 writes <eos> at once
    w = env.tokenizer.convert_tokens_to_ids(["w100", "w200", "w49999"])
    eos = env.tokenizer.eos_token_id
    out = env.step({"player_0": w[0], "player_1": eos})
    assert out[2] == {"player_0": False, "player_1": False}
    env.step({"player_0": w[1]})  # player_1 has ended: it may omit its action
    env.step({"player_0": w[2], "player_1": None})
    obs, rewards, terms, truncs, infos = env.step({"player_0": eos})
    assert all(terms.values()) and not any(truncs.values()) and env.agents == []
    info = infos["player_0"]
    assert info["answer_0"] == "w100 w200 w49999" and info["answer_1"] == ""
    p = 1.0 / (1.0 + np.exp(-3.0))  # the length judge: 3 words against 0
    assert info["judge_prob"] == pytest.approx(p, abs=1e-6) and info["prob"] == info["judge_prob"]
    assert infos["player_1"]["judge_prob"] == pytest.approx(1 - p, abs=1e-6)
    assert rewards["player_0"] + rewards["player_1"] == 1.0
    assert rewards["player_0"] == info["outcome"]
    assert obs["player_0"][0, 5:].tolist() == [*w, eos]
    assert obs["player_0"][1, 5:].tolist() == [1, 1, 1, 1]
    assert obs["player_1"][0, 5:].tolist() == [eos, 0, 0, 0]  # right-padded with the pad id
    assert obs["player_1"][1].sum() == obs["player_1"][1, :5].sum() + 1
    aec = pettingzoo.make("aec", "nlhf/HFTokenDuel-v0", **_kwargs(big))
    aec.reset(seed=0)
    assert aec.agents == ["player_0", "player_1"]


def test_parallel_api_at_50k_tokens(big):
    parallel_api_test(HFTokenDuelEnv(**_kwargs(big)), num_cycles=30)


def test_aec_api_at_50k_tokens(big):
    api_test(hf_env.env(**_kwargs(big)), num_cycles=30)


def test_seed_test_at_50k_tokens(big):
    parallel_seed_test(lambda: HFTokenDuelEnv(**_kwargs(big)))


def _episodes(env, seed, n=5):
    """``n`` whole duels with actions drawn from the action spaces seeded with ``seed``."""
    out = []
    env.reset(seed=seed)
    for a in env.possible_agents:
        env.action_space(a).seed(seed)
    for _ in range(n):
        obs, _ = env.reset()
        trace = [obs["player_0"].copy()]
        while env.agents:
            acts = {a: env.action_space(a).sample() for a in env.agents}
            obs, rew, _, _, infos = env.step(acts)
            trace.append(obs["player_1"].copy())
        out.append((trace, rew, infos["player_0"]["outcome"], infos["player_0"]["prompt"]))
    return out


def test_whole_episodes_are_reproducible_from_the_seed(big):
    env_a = HFTokenDuelEnv(**_kwargs(big, reward_mode="centered"))
    env_b = HFTokenDuelEnv(**_kwargs(big, reward_mode="centered"))
    a, b, c = _episodes(env_a, 7), _episodes(env_b, 7), _episodes(env_b, 8)
    for (ta, ra, oa, pa), (tb, rb, ob, pb) in zip(a, b, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(ta, tb, strict=True))
        assert ra == rb and oa == ob and pa == pb
        assert set(ra.values()) <= {-0.5, 0.5}
    assert [e[3] for e in a] != [e[3] for e in c] or any(
        not np.array_equal(x[0][0], y[0][0]) for x, y in zip(a, c, strict=True)
    )


def test_reward_modes_pay_as_the_token_duel(big):
    env = HFTokenDuelEnv(**_kwargs(big, reward_mode="probability", max_new_tokens=2))
    env.reset(seed=0)
    eos = env.tokenizer.eos_token_id
    w = env.tokenizer.convert_tokens_to_ids("w7")
    env.step({"player_0": w, "player_1": w})
    _, rewards, _, _, infos = env.step({"player_0": eos, "player_1": w})
    p = 1.0 / (1.0 + np.exp(1.0))  # 1 word against 2
    assert rewards["player_0"] == pytest.approx(p, abs=1e-6)
    assert rewards["player_1"] == pytest.approx(1 - p, abs=1e-6)
    assert infos["player_0"]["answer_1"] == "w7 w7"


def test_the_reference_policy_reads_the_observation_and_respects_the_alphabet(big):
    tok, model = big
    allowed = [tok.eos_token_id, *tok.convert_tokens_to_ids(["w11", "w12", "w13"])]
    env = HFTokenDuelEnv(**_kwargs(big, allowed_token_ids=allowed, max_new_tokens=6))
    obs, _ = env.reset(seed=1)
    ids = torch.as_tensor(obs["player_0"][0:1, :5])
    mask = torch.as_tensor(obs["player_0"][1:2, :5]).bool()
    gen = generate(
        env.reference, ids, mask, 6, generator=torch.Generator().manual_seed(0), eos_id=env.eos_id
    )
    assert gen.tokens.shape == (1, 6)
    written = gen.tokens[0][gen.mask[0]].tolist()
    assert set(written) <= set(allowed) and len(written) >= 1
    logits, _ = env.reference(ids, attention_mask=mask)
    assert logits.shape[-1] == BIG  # padded embedding rows dropped
    for t in written:  # the env accepts what the reference writes
        acts = {a: t for a in env.agents}
        env.step(acts)
    # as in nlhf/TokenDuel-v1 every token id is a legal action; the mask marks the alphabet
    assert env.action_mask.sum() == 4 and env.action_mask[allowed].all()
    env.reset(seed=1)
    space = env.action_space("player_0")
    masked = {int(space.sample(mask=env.action_mask)) for _ in range(50)}
    assert masked <= set(allowed)
    env.step({"player_0": 14, "player_1": allowed[1]})
    assert env._text("player_0") == "w14"


def test_render_and_fixed_prompt(big):
    env = HFTokenDuelEnv(**_kwargs(big, render_mode="ansi"))
    _, infos = env.reset(options={"prompt": "w5 w6"})
    assert infos["player_0"]["prompt"] == "w5 w6"
    eos = env.tokenizer.eos_token_id
    env.step({"player_0": eos, "player_1": eos})
    text = env.render()
    assert text.splitlines()[0] == "prompt   : w5 w6"
    assert "judge P(player_0 > player_1) = 0.500" in text


def test_the_fingerprint_covers_the_weights_the_judge_and_the_prompts():
    """Two envs pay the same duels iff their fingerprints agree: same parts give the same
    fingerprint; other reference weights, another judge model's weights, other prompts or another
    beta give another one (a tournament's resume key and game check rely on it)."""
    import transformers

    from nlhf_envs.text.hf_judges import RewardModelJudge

    tok = word_tokenizer(40)

    def reward_model(seed):
        config = transformers.GPT2Config(vocab_size=40, n_layer=1, n_embd=8, n_head=2,
                                         num_labels=1, pad_token_id=0)  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return transformers.GPT2ForSequenceClassification(config).eval()

    def env(seed=0, judge_seed=0, **over):
        judge = RewardModelJudge(reward_model(judge_seed), tok)
        kw = {"reference": tiny_gpt2(40, seed=seed), "tokenizer": tok, "judge": judge,
              "prompts": prompts(6), "max_prompt_tokens": 5, "max_new_tokens": 4, **over}  # fmt: skip
        return HFTokenDuelEnv(**kw)

    base = env().fingerprint()
    assert env().fingerprint() == base and len(base) == 16
    others = [
        env(seed=1),
        env(judge_seed=1),
        env(prompts=prompts(5)),
        env(beta=0.2),
        env(judge=length_judge),
    ]
    assert len({e.fingerprint() for e in others} | {base}) == len(others) + 1
