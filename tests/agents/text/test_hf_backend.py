"""The token agents train a Hugging Face causal LM (issue 22): one code path, two policy backends.

Item 6 of the issue: on ``HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")`` (the same game
through Hugging Face parts) each agent, same seed and config, logs the same per-evaluation history
as on ``nlhf/TinyTokenDuel-v0``: the exact Nash metrics to 1e-6.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

import agents  # noqa: E402
from agents.config import ConfigError  # noqa: E402
from agents.text.backend import HFCausalPolicy, HFDuelEngine  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

ENV_ID = "nlhf/TinyTokenDuel-v0"
ITERATIONS = 8
CONFIG = {"batch_size": 4, "eval_every": 1, "eval_prompts": 8}
AGENTS = {
    "nash_mp": {"inner_steps": 2},
    "online_ipo": {},
    "nash_md": {},
}


@pytest.fixture(scope="module")
def hf_env():
    return HFTokenDuelEnv.from_world(ENV_ID)


def _run(name, env, **extra):
    agent = agents.make(name, env, seed=5, **CONFIG, **AGENTS[name], **extra)
    agent.learn(num_iterations=ITERATIONS)
    return agent


@pytest.mark.parametrize("sampler", ["multinomial", "inverse_cdf"])
@pytest.mark.parametrize("name", sorted(AGENTS))
def test_hf_path_equals_native_path(name, sampler, hf_env):
    # each path's default sampler differs (``sampler: auto``); named, the runs are the same
    native = _run(name, ENV_ID, sampler=sampler)
    hf = _run(name, hf_env, sampler=sampler)
    # the Hugging Face agent trains a copy of the env's reference GPT-2, not a TinyCausalLM
    assert isinstance(hf.model, HFCausalPolicy)
    assert type(hf.model.lm).__name__ == "GPT2LMHeadModel"
    assert isinstance(hf.engine, HFDuelEngine)
    assert hf.model.lm is not hf_env.reference_model
    ref_w = hf_env.reference_model.transformer.wte.weight
    assert (hf.model.lm.transformer.wte.weight - ref_w).abs().max() > 1e-4  # it trained
    assert (hf.reference.lm.transformer.wte.weight - ref_w).abs().max() == 0.0  # pi_ref kept
    assert len(native.history) == len(hf.history) == ITERATIONS
    evals = 0
    for row_n, row_h in zip(native.history, hf.history, strict=True):
        assert set(row_n) == set(row_h)
        for key in ("eval/exploitability", "eval/kl_to_nash"):
            assert math.isfinite(row_h[key])
            assert abs(row_n[key] - row_h[key]) <= 1e-6, (key, row_n[key], row_h[key])
        evals += 1
        for key, value in row_n.items():
            if key.startswith("time/") and key != "time/iterations":
                continue
            assert row_h[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert evals == ITERATIONS
    assert hf.queries_used == native.queries_used


def test_hf_engine_draws_the_native_prompts_and_judges_decoded_text(hf_env):
    native = agents.make("online_ipo", ENV_ID, seed=1, **CONFIG)
    hf = agents.make("online_ipo", hf_env, seed=1, **CONFIG, sampler="multinomial")
    # ``sampler: auto``: the native models' multinomial, Hugging Face models' inverse CDF
    assert native.engine.sampler == "multinomial"
    assert agents.make("online_ipo", hf_env, seed=1, **CONFIG).engine.sampler == "inverse_cdf"
    gn, gh = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    tn, idn, mn = native.engine.sample_prompts(16, gn)
    th, idh, mh = hf.engine.sample_prompts(16, gh)
    assert tn == th and torch.equal(idn, idh) and torch.equal(mn, mh)
    yn, y2n = native.engine.generate_pair(native.model, native.reference, idn, mn, gn)
    yh, y2h = hf.engine.generate_pair(hf.model, hf.reference, idh, mh, gh)
    assert torch.equal(yn.tokens, yh.tokens) and torch.equal(y2n.tokens, y2h.tokens)
    pn = native.engine.score(idn, mn, yn, y2n, gn)
    ph = hf.engine.score(idh, mh, yh, y2h, gh)
    assert torch.allclose(pn.prob, ph.prob, atol=1e-6)
    assert torch.equal(pn.outcome, ph.outcome)


def _random_env(**kwargs):
    from tests.nlhf_envs.text import hf_parts

    tok = hf_parts.word_tokenizer(12)
    return HFTokenDuelEnv(
        hf_parts.tiny_gpt2(12),
        tok,
        hf_parts.length_judge,
        hf_parts.prompts(6),
        max_new_tokens=3,
        **kwargs,
    )


def test_ground_truth_payer_needs_a_world():
    env = _random_env(heldout_fraction=0.5)
    with pytest.raises(ConfigError, match="payer: 'ground_truth' needs a game with a ground truth"):
        agents.make("online_ipo", env, payer="ground_truth")


def test_evaluation_needs_held_out_prompts():
    env = _random_env()
    with pytest.raises(ConfigError, match="eval_every: the env has no held-out prompts"):
        agents.make("online_ipo", env)
    agents.make("online_ipo", env, eval_every=0)  # no evaluation: fine


def test_random_model_trains_with_estimated_nash_metrics():
    env = _random_env(heldout_fraction=0.5)
    agent = agents.make(
        "nash_mp", env, seed=0, batch_size=4, inner_steps=1, eval_every=2, eval_prompts=4,
        nash_eval_prompts=3, nash_eval_samples=4,
    )  # fmt: skip
    agent.learn(num_iterations=2)
    row = agent.history[-1]
    assert "eval/win_rate_ref_true" not in row  # this game has no ground truth
    assert 0.0 <= row["eval/win_rate_ref_judge"] <= 1.0
    low, mid, high = (row[f"eval/exploitability{s}"] for s in ("_low", "", "_high"))
    assert low <= mid <= high and math.isfinite(mid)
    assert row["eval/kl_to_nash_low"] <= row["eval/kl_to_nash"] <= row["eval/kl_to_nash_high"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(hf_env):
    with pytest.raises(ConfigError) as err:
        agents.make("nash_md", hf_env, device="cuda")
    assert str(err.value).startswith("device: 'cuda' but this machine has 0 CUDA device(s)")


def test_bf16_autocast_keeps_weights_log_probs_and_losses_in_fp32(hf_env):
    fp32 = agents.make("nash_md", hf_env, seed=2, batch_size=4, eval_every=0)
    bf16 = agents.make("nash_md", hf_env, seed=2, batch_size=4, eval_every=0, precision="bf16")
    ids = torch.tensor([[1, 5, 6, 3]])
    with torch.no_grad():
        a, b = fp32.model(ids)[0], bf16.model(ids)[0]
    assert b.dtype == torch.float32
    assert 0.0 < (a - b).abs().max() < 0.5  # bfloat16 matmuls, not a different model
    bf16.learn(num_iterations=2)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert all(math.isfinite(v) for v in bf16.history[-1].values())
    with pytest.raises(ConfigError, match="precision: 'bf16' is for Hugging Face causal LMs"):
        agents.make("nash_md", ENV_ID, precision="bf16")


def test_a_ground_truth_payer_is_refused_on_the_hugging_face_duel():
    env = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    with pytest.raises(ConfigError, match="payer: 'ground_truth' needs a synthetic world"):
        agents.make("online_ipo", env, seed=0, payer="ground_truth")
