"""The engine's sampling loop: seeded samples of the default sampler unchanged, the inverse-CDF
sampler's distribution, and the 2B batch of self-play."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlhf_envs.text import DuelEngine, generate, load_judge, load_reference_policy
from nlhf_envs.text.engine import (
    SAMPLERS,
    apply_tokens,
    new_answers,
    sample_inverse_cdf,
    sequence_log_probs,
)
from nlhf_envs.text.tokenizer import EOS, PAD


@torch.no_grad()
def _generate_with_cat(policy, prompt_ids, prompt_mask, max_new_tokens, generator, use_cache):
    """The loop as it was before the in-place buffers (torch.cat every step): the oracle."""
    batch = prompt_ids.shape[0]
    state = new_answers(batch, max_new_tokens)
    log_probs = torch.zeros(batch, max_new_tokens)
    mask, seq = prompt_mask.bool(), prompt_ids
    logits, cache = policy(prompt_ids, attention_mask=mask)
    for t in range(max_new_tokens):
        lp = F.log_softmax(logits[:, -1].float(), dim=-1)
        tok = torch.multinomial(lp.exp(), 1, generator=generator).squeeze(1)
        tok = torch.where(state.finished, torch.full_like(tok, PAD), tok)
        active = apply_tokens(state, tok, EOS)
        log_probs[:, t] = torch.where(active, lp.gather(1, tok[:, None]).squeeze(1), 0.0)
        if t == max_new_tokens - 1 or bool(state.finished.all()):
            break
        mask = torch.cat([mask, active[:, None]], dim=1)
        if use_cache:
            logits, cache = policy(tok[:, None], attention_mask=mask, past_key_values=cache)
        else:
            seq = torch.cat([seq, tok[:, None]], dim=1)
            logits, _ = policy(seq, attention_mask=mask)
    return state.tokens, log_probs, state.lengths


@pytest.fixture(scope="module")
def setup():
    ref = load_reference_policy()
    engine = DuelEngine(load_judge())
    gen = torch.Generator().manual_seed(0)
    _, ids, mask = engine.sample_prompts(32, gen)
    return ref, engine, ids, mask


@pytest.mark.parametrize("use_cache", [True, False])
def test_default_sampler_keeps_the_seeded_samples(setup, use_cache):
    ref, _, ids, mask = setup
    out = generate(
        ref, ids, mask, 24, generator=torch.Generator().manual_seed(7), use_cache=use_cache
    )
    tokens, log_probs, lengths = _generate_with_cat(
        ref, ids, mask, 24, torch.Generator().manual_seed(7), use_cache
    )
    assert torch.equal(out.tokens, tokens) and torch.equal(out.lengths, lengths)
    torch.testing.assert_close(out.log_probs, log_probs, rtol=0, atol=1e-6)


def test_inverse_cdf_sampler_draws_the_right_distribution():
    probs = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0])
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    draws = sample_inverse_cdf(probs.expand(n, 5).contiguous(), gen)
    freq = torch.bincount(draws, minlength=5).double() / n
    sigma = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert freq[1] == 0 and freq[4] == 0  # probability-zero tokens are never drawn
    assert torch.all((freq - probs.double()).abs() <= 5 * sigma + 1e-12)
    # unnormalised rows: the same distribution
    again = sample_inverse_cdf(3.0 * probs.expand(n, 5), torch.Generator().manual_seed(0))
    assert torch.equal(again, draws)


def test_inverse_cdf_generation_is_seeded_and_consistent(setup):
    ref, _, ids, mask = setup
    a = generate(
        ref, ids, mask, 24, generator=torch.Generator().manual_seed(3), sampler="inverse_cdf"
    )
    b = generate(
        ref, ids, mask, 24, generator=torch.Generator().manual_seed(3), sampler="inverse_cdf"
    )
    assert torch.equal(a.tokens, b.tokens)
    # the returned log-probs are those of the policy on the sampled tokens
    lp = sequence_log_probs(ref, ids, mask, a.tokens, a.mask)
    torch.testing.assert_close(a.log_probs.sum(-1), lp, rtol=1e-4, atol=1e-4)
    assert bool((a.tokens[~a.mask] == PAD).all())
    with pytest.raises(
        ValueError, match=r"unknown sampler 'gumbel'; expected one of multinomial, inverse_cdf"
    ):
        generate(ref, ids, mask, 4, sampler="gumbel")
    assert SAMPLERS == ("multinomial", "inverse_cdf")


def test_self_play_samples_both_seats_in_one_batch(setup):
    ref, _, ids, mask = setup
    engine = DuelEngine(load_judge(), sampler="inverse_cdf")
    calls = []

    def counted(*args, **kw):
        calls.append(args[0].shape[0])
        return ref(*args, **kw)

    res = engine.play(counted, counted, ids, mask, torch.Generator().manual_seed(1))
    # the B prompts encoded once, then one batch of 2B per step
    assert calls[0] == ids.shape[0] and set(calls[1:]) == {2 * ids.shape[0]}
    assert res.answers_0.tokens.shape == res.answers_1.tokens.shape == (32, 24)
    assert not torch.equal(res.answers_0.tokens, res.answers_1.tokens)
    for a in (res.answers_0, res.answers_1):
        lp = sequence_log_probs(ref, ids, mask, a.tokens, a.mask)
        torch.testing.assert_close(a.log_probs.sum(-1), lp, rtol=1e-4, atol=1e-4)
    # two different policy objects: one batch of B each
    calls.clear()
    engine.play(counted, ref, ids, mask, torch.Generator().manual_seed(1))
    assert set(calls) == {32}
    with pytest.raises(ValueError, match=r"unknown sampler 'x'"):
        DuelEngine(load_judge(), sampler="x")


def test_multinomial_is_argmax_over_exponentials():
    # why the default sampler cannot be made cheaper with the same samples (benchmarks/README.md):
    # one draw per row is argmax(p / E), E ~ Exp(1) per vocabulary entry, from the same generator
    probs = torch.softmax(
        3.0 * torch.randn(64, 317, generator=torch.Generator().manual_seed(0)), -1
    )
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(20):
        drawn = torch.multinomial(probs, 1, generator=g1).squeeze(1)
        exp = torch.empty_like(probs).exponential_(1, generator=g2)
        assert torch.equal(drawn, torch.argmax(probs / exp, -1))
