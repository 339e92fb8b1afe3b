"""Estimated Nash metrics in ``nlhf/HFTokenDuel-v0``: the native estimator's numbers on the tiny
world through the Hugging Face path, and closed forms with a real random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from hf_parts import prompts, tiny_gpt2, word_tokenizer  # noqa: E402

from nlhf_envs.text import load_reference_policy  # noqa: E402
from nlhf_envs.text.estimate import estimate_nash_metrics  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.hf_estimate import estimate_hf_nash_metrics  # noqa: E402

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
