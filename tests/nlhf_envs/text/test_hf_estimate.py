"""Estimated Nash metrics in ``nlhf/HFTokenDuel-v0``: the native estimator's numbers on the tiny
world through the Hugging Face path, and closed forms with a real random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from hf_parts import length_judge, prompts, tiny_gpt2, word_tokenizer  # noqa: E402

from nlhf_envs.text import load_reference_policy  # noqa: E402
from nlhf_envs.text.estimate import estimate_nash_metrics  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.hf_estimate import estimate_hf_nash_metrics  # noqa: E402
from nlhf_envs.text.hf_judges import RewardModelJudge  # noqa: E402

torch.set_num_threads(1)


class Tempered:
    """A policy whose logits are those of ``policy`` divided by ``t``."""

    def __init__(self, policy, t):
        self.policy, self.t = policy, t

    def __call__(self, ids, attention_mask=None, past_key_values=None):
        logits, cache = self.policy(
            ids, attention_mask=attention_mask, past_key_values=past_key_values
        )
        return logits / self.t, cache


def test_the_estimate_through_the_hf_path_equals_the_native_estimate():
    env = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    native_ref = load_reference_policy(world="tiny")
    kw = {"num_prompts": 4, "n": 16, "m": 16, "seed": 1}
    got = estimate_hf_nash_metrics(Tempered(env.reference, 0.5), env, **kw)
    want = estimate_nash_metrics(Tempered(native_ref, 0.5), "nlhf/TinyTokenDuel-v0", **kw)
    assert got.kl_ref == pytest.approx(want.kl_ref, abs=1e-9) and got.kl_ref > 0.05
    for key in ("exploitability", "kl_to_nash"):
        assert getattr(got, key) == pytest.approx(getattr(want, key), abs=1e-6)
        lo, hi = getattr(got, key + "_ci")
        assert lo < getattr(got, key) < hi
    texts = env.world.prompts.texts
    held = [env.prompts["heldout"][i] for i in got.per_prompt["prompt_index"]]
    assert held == [texts[i] for i in want.per_prompt["prompt_index"]]
    # estimate_nash_metrics takes the Hugging Face env too (it dispatches to the HF estimator)
    same = estimate_nash_metrics(Tempered(env.reference, 0.5), env, **kw)
    assert same.exploitability == got.exploitability and same.kl_to_nash == got.kl_to_nash
    with pytest.raises(ValueError, match="no ground truth"):
        estimate_nash_metrics(env.reference, env, payer="ground_truth", **kw)


def test_a_seat_biased_judge_is_averaged_over_seats():
    tok, model = word_tokenizer(300), tiny_gpt2(300, seed=2)
    env = HFTokenDuelEnv(
        model,
        tok,
        lambda p, pairs: [0.7] * len(pairs),  # always prefers the first seat: no preference at all
        prompts(6),
        heldout_fraction=0.5,
        max_prompt_tokens=4,
        max_new_tokens=3,
        beta=0.2,
    )
    kw = {"num_prompts": 3, "n": 8, "m": 8, "seed": 0}
    at_ref = estimate_hf_nash_metrics(env.reference, env, **kw)
    assert at_ref.kl_ref == 0.0
    assert np.abs(at_ref.per_prompt["exploitability"]).max() < 1e-12
    # with P = 1/2 everywhere pi* = pi_ref and exploitability = beta KL(pi || pi_ref)
    other = estimate_hf_nash_metrics(HFPolicy(tiny_gpt2(300, seed=3), num_tokens=300), env, **kw)
    assert other.kl_ref > 0.01
    expect = 0.2 * other.per_prompt["kl_ref"]
    assert np.allclose(other.per_prompt["exploitability"], expect, atol=1e-12)
    assert np.allclose(at_ref.per_prompt["kl_to_nash"], 0.0, atol=1e-12)


def _reward_model(vocab: int, seed: int):
    """A random one-layer GPT-2 reward model (one output) with the pad id of ``word_tokenizer``."""
    import transformers

    config = transformers.GPT2Config(
        vocab_size=vocab, n_layer=1, n_embd=16, n_head=2, num_labels=1, pad_token_id=0
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.GPT2ForSequenceClassification(config).eval()


class CountingRewardModel(RewardModelJudge):
    """A reward-model judge that counts the answers its model scores."""

    scored = 0

    def rewards(self, prompts, answers):
        CountingRewardModel.scored += len(answers)
        return super().rewards(prompts, answers)


def _rm_env(judge):
    tok = word_tokenizer(300)
    return HFTokenDuelEnv(
        tiny_gpt2(300, seed=4),
        tok,
        judge,
        prompts(8),
        heldout_fraction=0.5,
        max_prompt_tokens=4,
        max_new_tokens=4,
        beta=0.1,
    )


def test_a_reward_model_scores_each_answer_once_and_equals_the_pairwise_path():
    tok = word_tokenizer(300)
    rm = CountingRewardModel(_reward_model(300, seed=5), tok)
    calls = []

    def pairwise(prompts, pairs):  # the same judge, seen as a plain pairwise callable
        calls.append(list(pairs))
        return rm(prompts, pairs)

    scored, plain = _rm_env(rm), _rm_env(pairwise)
    assert scored._judge.has_scores and not plain._judge.has_scores
    policy = Tempered(HFPolicy(tiny_gpt2(300, seed=6), num_tokens=300), 0.7)
    kw = {"num_prompts": 4, "n": 8, "m": 12, "seed": 3}
    CountingRewardModel.scored = 0
    got = estimate_hf_nash_metrics(policy, scored, **kw)
    C = len(got.per_prompt["prompt_index"])
    assert C == 4
    assert 0 < CountingRewardModel.scored <= C * (8 + 2 * 12)  # n + 2m answers per prompt
    want = estimate_hf_nash_metrics(policy, plain, **kw)
    # one call per prompt, each pair next to its mirror: n (n - 1) support pairs, 2 m^2 fresh
    assert len(calls) == C
    for pairs in calls:
        assert len(pairs) == 8 * 7 + 2 * 12 * 12
        assert all(pairs[k] == pairs[k + 1][::-1] for k in range(0, len(pairs), 2))
    assert got.kl_ref == want.kl_ref and got.kl_ref > 0.01  # the same samples
    for key in ("exploitability", "kl_to_nash"):
        assert np.allclose(got.per_prompt[key], want.per_prompt[key], rtol=0, atol=1e-6)
    assert abs(got.exploitability) > 1e-3  # the judge has preferences: not a trivial zero


def test_a_judge_score_that_is_not_finite_is_named():
    tok = word_tokenizer(300)

    class Broken(RewardModelJudge):
        def scores(self, prompts, answers):
            out = super().scores(prompts, answers)
            out[1] = float("nan")
            return out

    env = _rm_env(Broken(_reward_model(300, seed=5), tok))
    with pytest.raises(
        ValueError, match=r"judge \S*Broken returned the score nan for answer 1; expected a finite"
    ):
        estimate_hf_nash_metrics(env.reference, env, num_prompts=2, n=4, m=4)


def test_the_estimate_reports_progress_and_stops_when_its_callback_raises():
    env = _rm_env(length_judge)
    events = []
    estimate_hf_nash_metrics(env.reference, env, num_prompts=3, n=4, m=4, progress=events.append)
    assert [e.done for e in events] == list(range(1, 5 + 3 + 1))
    assert {e.total for e in events} == {5 + 3} and {e.task for e in events} == {"nash estimate"}

    def stop(event):
        if event.done == 2:
            raise KeyboardInterrupt

    seen = []
    with pytest.raises(KeyboardInterrupt):
        estimate_hf_nash_metrics(
            env.reference,
            env,
            num_prompts=3,
            n=4,
            m=4,
            progress=lambda e: (seen.append(e), stop(e)),
        )
    assert len(seen) == 2
