"""Hugging Face adapter with tiny random models built from configs (no downloads)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nlhf_envs.text import DuelEngine, load_judge, load_reference_policy, world  # noqa: E402
from nlhf_envs.text.engine import generate, token_log_probs  # noqa: E402
from nlhf_envs.text.hf import HFPolicy, HFTextDuel, make_hf_tokenizer  # noqa: E402

torch.set_num_threads(1)
TOK = world.default_tokenizer()


def _tiny_gpt2(vocab_size: int, seed: int = 0) -> HFPolicy:
    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_layer=1, n_embd=32, n_head=2, n_positions=64
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config).eval()
    return HFPolicy(model)


def test_hf_tokenizer_has_the_world_ids():
    hf_tok = make_hf_tokenizer()
    text = "sure - cats - fur ."
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == TOK.encode(text)
    assert hf_tok.eos_token_id == TOK.eos_id and hf_tok.pad_token_id == TOK.pad_id
    assert hf_tok.decode(TOK.encode(text)) == text


def test_hf_policy_cache_matches_full_recomputation_with_left_padding():
    policy = _tiny_gpt2(TOK.vocab_size)
    ids, mask = TOK.encode_prompts(["describe cats", "list facts about rain briefly"], 12)
    g1 = generate(policy, ids, mask, 10, generator=torch.Generator().manual_seed(0))
    g2 = generate(
        policy, ids, mask, 10, generator=torch.Generator().manual_seed(0), use_cache=False
    )
    assert torch.equal(g1.tokens, g2.tokens)
    lp = token_log_probs(policy, ids, mask, g1.tokens, g1.mask)
    assert torch.allclose(lp, g1.log_probs, atol=1e-4)
    # Left padding is invisible: the same prompt with less padding gives the same next-token logits.
    short, short_mask = TOK.encode_prompts(["describe cats"], 4)
    la, _ = policy(ids[:1], attention_mask=mask[:1])
    lb, _ = policy(short, attention_mask=short_mask)
    assert torch.allclose(la[:, -1], lb[:, -1], atol=1e-5)


def test_hf_model_duels_the_reference_policy_in_the_engine():
    engine = DuelEngine(load_judge(), reward_mode="centered")
    gen = torch.Generator().manual_seed(1)
    _, ids, mask = engine.sample_prompts(8, gen)
    result = engine.play(_tiny_gpt2(TOK.vocab_size), load_reference_policy(), ids, mask, gen)
    r0, r1 = result.payoff.reward_0, result.payoff.reward_1
    assert torch.equal(r0 + r1, torch.zeros(8))
    assert set(r0.tolist()) <= {-0.5, 0.5}
    # A random model rarely writes on-topic text: the trained reference wins most duels.
    assert float(result.payoff.judge_prob.mean()) < 0.4


def test_text_duel_with_a_text_judge():
    hf_tok = make_hf_tokenizer()
    judge = load_judge()
    duel = HFTextDuel(hf_tok, judge, max_new_tokens=8, reward_mode="probability")
    prompts = ["describe cats", "list facts about rain"]
    res = duel.play(
        _tiny_gpt2(TOK.vocab_size, 1),
        _tiny_gpt2(TOK.vocab_size, 2),
        prompts,
        torch.Generator().manual_seed(0),
    )
    assert len(res.answers_0) == 2 and all(isinstance(t, str) for t in res.answers_1)
    expect = judge.prob(prompts, res.answers_0, res.answers_1)
    assert torch.allclose(res.prob, expect, atol=1e-6)
    assert torch.allclose(res.reward_0 + res.reward_1, torch.ones(2))
    nan_duel = HFTextDuel(hf_tok, lambda p, pairs: [float("nan")] * len(pairs), max_new_tokens=4)
    with pytest.raises(ValueError, match="judge returned nan for pair 0"):
        nan_duel.play(_tiny_gpt2(TOK.vocab_size), _tiny_gpt2(TOK.vocab_size), prompts)
