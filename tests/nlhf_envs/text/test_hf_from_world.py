"""The same game through both paths: the tiny world natively and through Hugging Face parts
(``tiny_to_gpt2``, ``make_hf_tokenizer``, ``HFTokenDuelEnv.from_world``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from nlhf_envs.solvers import exploitability, regularized_nash  # noqa: E402
from nlhf_envs.text import load_reference_policy, world  # noqa: E402
from nlhf_envs.text.engine import generate, sequence_log_probs  # noqa: E402
from nlhf_envs.text.env import TokenDuelEnv  # noqa: E402
from nlhf_envs.text.exact import exact_game, exact_metrics  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from nlhf_envs.text.hf_convert import tiny_to_gpt2  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

torch.set_num_threads(1)
TINY = world.get_world("tiny")
ENV_ID = "nlhf/TinyTokenDuel-v0"


@pytest.fixture(scope="module")
def hf_env():
    return HFTokenDuelEnv.from_world(ENV_ID)


def _prompts(n=8):
    texts = [TINY.prompts.texts[i] for i in TINY.prompts.indices("all")[:n]]
    return TINY.tokenizer.encode_prompts(texts, TINY.prompt_len)


def test_converted_model_has_the_native_logits_with_left_padding_and_cache():
    native = load_reference_policy(world=TINY)
    policy = HFPolicy(tiny_to_gpt2(native), suppress_tokens=TINY.suppressed_token_ids)
    ids, mask = _prompts()
    answers = torch.tensor([[7, 8, 2]] * ids.shape[0])
    full = torch.cat([ids, answers], 1)
    full_mask = torch.cat([mask, torch.ones_like(answers, dtype=torch.bool)], 1)
    with torch.no_grad():
        a, cache_a = native(full, attention_mask=full_mask)
        b, cache_b = policy(full, attention_mask=full_mask)
        assert (a - b)[full_mask].abs().max() <= 1e-6
        step = torch.tensor([[11]] * ids.shape[0])
        step_mask = torch.cat([full_mask, torch.ones_like(step, dtype=torch.bool)], 1)
        a2, _ = native(step, attention_mask=step_mask, past_key_values=cache_a)
        b2, _ = policy(step, attention_mask=step_mask, past_key_values=cache_b)
    assert (a2 - b2).abs().max() <= 1e-6
    lp_a = sequence_log_probs(
        native, ids, mask, answers, torch.ones_like(answers, dtype=torch.bool)
    )
    lp_b = sequence_log_probs(
        policy, ids, mask, answers, torch.ones_like(answers, dtype=torch.bool)
    )
    assert torch.allclose(lp_a, lp_b, atol=1e-6)


def test_seeded_samples_are_the_same():
    native = load_reference_policy(world=TINY)
    policy = HFPolicy(tiny_to_gpt2(native), suppress_tokens=TINY.suppressed_token_ids)
    ids, mask = _prompts(16)
    g_a = generate(native, ids, mask, 3, generator=torch.Generator().manual_seed(5))
    g_b = generate(policy, ids, mask, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(g_a.tokens, g_b.tokens) and torch.equal(g_a.mask, g_b.mask)
    assert torch.allclose(g_a.log_probs, g_b.log_probs, atol=1e-6)


def test_from_world_plays_the_native_duels(hf_env):
    native = TokenDuelEnv(world="tiny", judge_version="latest")
    assert hf_env.action_space("player_0").n == native.action_space("player_0").n == 25
    assert hf_env.observation_space("player_0") == native.observation_space("player_0")
    rng = np.random.default_rng(0)
    alphabet = np.array(TINY.answer_token_ids)
    n_won = 0
    for episode in range(12):
        seed = 100 + episode
        obs_n, info_n = native.reset(seed=seed)
        obs_h, info_h = hf_env.reset(seed=seed)
        assert info_n == info_h
        assert np.array_equal(obs_n["player_0"], obs_h["player_0"])
        while native.agents:
            # half the duels use any token id (specials and words outside the alphabet too)
            pool = alphabet if episode % 2 else np.arange(25)
            acts = {a: int(rng.choice(pool)) for a in native.agents}
            out_n = native.step(acts)
            out_h = hf_env.step(acts)
            for a in ("player_0", "player_1"):
                assert np.array_equal(out_n[0][a], out_h[0][a])
            assert out_n[1] == out_h[1] and out_n[2] == out_h[2]
        assert hf_env.agents == []
        i_n, i_h = out_n[4]["player_0"], out_h[4]["player_0"]
        for key in ("prompt", "answer_0", "answer_1", "outcome"):
            assert i_n[key] == i_h[key]
        assert i_h["judge_prob"] == pytest.approx(i_n["judge_prob"], abs=1e-6)
        n_won += int(i_n["outcome"])
    assert 0 < n_won < 12  # both outcomes occurred: the comparison saw real duels


def test_exact_game_through_the_hugging_face_path_equals_the_native_one(hf_env):
    native = exact_game(ENV_ID)
    game = hf_env.exact_game()
    assert game.P.shape == native.P.shape == (8, 259, 259)
    assert np.abs(game.P - native.P).max() <= 1e-9
    assert np.abs(game.pi_ref - native.pi_ref).max() <= 1e-9
    assert game.beta == native.beta
    star = regularized_nash(native)
    e_native = exploitability(native, native.pi_ref)
    assert exploitability(game, game.pi_ref) == pytest.approx(e_native, abs=1e-9)
    assert e_native > 0.01  # pi_ref is far from the Nash equilibrium: a real comparison
    m_native = exact_metrics(load_reference_policy(world=TINY), native, ENV_ID, nash=star)
    m_hf = exact_metrics(hf_env.reference, game, hf_env, nash=star)
    for key, value in m_native.items():
        assert m_hf[key] == pytest.approx(value, abs=1e-9)


def test_exact_game_needs_a_world_and_the_converter_a_tiny_lm():
    with pytest.raises(TypeError, match="tiny_to_gpt2 converts a TinyCausalLM, got Linear"):
        tiny_to_gpt2(torch.nn.Linear(2, 2))
    from hf_parts import length_judge, tiny_gpt2, word_tokenizer

    env = HFTokenDuelEnv(tiny_gpt2(50), word_tokenizer(50), length_judge, ["w5"])
    with pytest.raises(
        ValueError, match="exact_game needs an env built by HFTokenDuelEnv.from_world"
    ):
        env.exact_game()


def test_from_world_env_passes_the_parallel_api_test(hf_env):
    from pettingzoo.test import parallel_api_test

    parallel_api_test(HFTokenDuelEnv.from_world("tiny", reward_mode="centered"), num_cycles=20)
    assert hf_env.world is TINY and hf_env.allowed_token_ids == TINY.answer_token_ids


def test_the_benchmark_script_runs(capsys):
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "hf_token_duel.py"
    bench = runpy.run_path(str(path), run_name="hf_token_duel")
    assert bench["main"](["--rounds", "1", "--duels", "4", "--batch", "4"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")]
    assert len(rows) == 2 + 4  # header, separator, two anchors and two Hugging Face rows
    assert rows[3].startswith(
        "| HFTokenDuelEnv.from_world(tiny) env duels/s, same seeds and rewards |"
    )
