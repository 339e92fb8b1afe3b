"""Generation's KV cache with room reserved for the answer (``reserve_cache``): new positions are
written in place instead of concatenated, with the same keys, values, logits and samples."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")
cache_utils = pytest.importorskip("transformers.cache_utils")
if not hasattr(cache_utils, "DynamicLayer"):  # pragma: no cover - transformers before 4.56
    pytest.skip("transformers without DynamicLayer", allow_module_level=True)

from nlhf_envs.text import engine, hf_cache  # noqa: E402
from nlhf_envs.text.engine import generate, reserve_cache  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from tests.nlhf_envs.text.hf_parts import tiny_gpt2  # noqa: E402


def _prompts(rows: int = 5, width: int = 6, vocab: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, width), generator=g)
    mask = torch.ones(rows, width, dtype=torch.bool)
    for r in range(rows):  # left padding of different lengths
        mask[r, : r % 3] = False
        ids[r, : r % 3] = 0
    return ids, mask


def _policy(vocab: int = 40) -> HFPolicy:
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        lm = transformers.LlamaForCausalLM(config).eval()
    return HFPolicy(lm, num_tokens=vocab)


def _reserved_and_plain(extra: int):
    """The policy, prompts, and the prompts' cache twice: reserved with ``extra`` positions of
    room, and as transformers built it (concatenating)."""
    policy = _policy()
    ids, mask = _prompts()
    _, cache = policy(ids, attention_mask=mask)
    plain = copy.deepcopy(cache)
    reserve_cache(cache, extra)
    return policy, ids, mask, cache, plain


@torch.no_grad()
def test_reserved_layers_write_in_place_and_equal_the_concatenated_cache():
    policy, ids, mask, cache, plain = _reserved_and_plain(4)
    layer = cache.layers[0]
    assert type(layer).__name__ == "ReservedDynamicLayer"
    start = layer.keys.data_ptr()
    full = mask.clone()
    g = torch.Generator().manual_seed(1)
    for _ in range(4):  # four new positions: all inside the reserved room
        tok = torch.randint(3, 40, (ids.shape[0], 1), generator=g)
        full = torch.cat([full, torch.ones(ids.shape[0], 1, dtype=torch.bool)], 1)
        a, cache = policy(tok, attention_mask=full, past_key_values=cache)
        b, plain = policy(tok, attention_mask=full, past_key_values=plain)
        assert torch.equal(a, b)
    for got, want in zip(cache.layers, plain.layers, strict=True):
        assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)
    assert layer.keys.data_ptr() == start  # never reallocated
    assert layer.keys.shape[-2] == ids.shape[1] + 4
    # a fifth position does not fit: the layer concatenates as DynamicLayer does, correctly
    tok = torch.full((ids.shape[0], 1), 7)
    full = torch.cat([full, torch.ones(ids.shape[0], 1, dtype=torch.bool)], 1)
    a, cache = policy(tok, attention_mask=full, past_key_values=cache)
    b, plain = policy(tok, attention_mask=full, past_key_values=plain)
    assert torch.equal(a, b) and layer.keys.data_ptr() != start
    assert torch.equal(cache.layers[1].keys, plain.layers[1].keys)


@torch.no_grad()
def test_a_reordered_reserved_cache_falls_back_to_concatenation():
    policy, _, mask, cache, plain = _reserved_and_plain(8)
    index = torch.tensor([4, 0, 0, 2])
    for c in (cache, plain):
        c.reorder_cache(index)
    full = torch.cat([mask[index], torch.ones(4, 1, dtype=torch.bool)], 1)
    tok = torch.full((4, 1), 9)
    a, cache = policy(tok, attention_mask=full, past_key_values=cache)
    b, _ = policy(tok, attention_mask=full, past_key_values=plain)
    assert torch.equal(a, b)
    assert cache.layers[0]._room is None  # replaced keys: the buffers are let go


def test_generation_samples_the_same_answers_with_and_without_the_reserved_room(monkeypatch):
    """The engine's sampling (shared prompts, both samplers, a GPT-2 and a Llama) gives the same
    tokens and log-probs bit for bit whether the cache is reserved or concatenated."""
    ids, mask = _prompts(rows=3)
    rows = torch.tensor([0, 1, 2, 0, 1, 2])
    for policy in (_policy(), HFPolicy(tiny_gpt2(40), num_tokens=40)):
        for sampler in ("multinomial", "inverse_cdf"):
            runs = []
            for reserve in (True, False):
                if not reserve:
                    monkeypatch.setattr(engine, "reserve_cache", lambda cache, extra: cache)
                with torch.no_grad():
                    runs.append(
                        generate(
                            policy,
                            ids,
                            mask,
                            7,
                            generator=torch.Generator().manual_seed(2),
                            eos_id=1,
                            sampler=sampler,
                            prompt_rows=rows,
                        )  # fmt: skip
                    )
                monkeypatch.undo()
            assert torch.equal(runs[0].tokens, runs[1].tokens)
            assert torch.equal(runs[0].log_probs, runs[1].log_probs)
            assert runs[0].lengths.float().mean() > 3  # answers long enough to use the room


def test_no_room_is_reserved_for_a_cache_that_records_gradients():
    """A cache built with gradients keeps DynamicLayer (an in-place write would break the
    backward pass); the gradient through it is the one without reservation."""
    policy = _policy()
    ids, mask = _prompts(rows=2)
    full = torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], 1)
    weight = policy.model.model.embed_tokens.weight
    grads = []
    for reserve in (True, False):
        _, cache = policy(ids, attention_mask=mask)
        assert cache.layers[0].keys.requires_grad
        if reserve:
            reserve_cache(cache, 4)
            assert type(cache.layers[0]).__name__ == "DynamicLayer"
        out, _ = policy(torch.full((2, 1), 5), attention_mask=full, past_key_values=cache)
        weight.grad = None
        out.sum().backward()
        grads.append(weight.grad.clone())
    assert bool(grads[0].abs().sum() > 0) and torch.equal(grads[0], grads[1])


def test_caches_of_other_kinds_are_returned_as_they_are():
    t = torch.zeros(2, 3)
    assert reserve_cache(t, 4) is t
    assert reserve_cache(None, 4) is None
    pair = (t, [t])
    assert reserve_cache(pair, 4) is pair
    # transformers before DynamicLayer, or another layer class: left alone
    sliding = type("Sliding", (cache_utils.DynamicLayer,), {})()
    holder = type("Cache", (), {"layers": [sliding]})()
    hf_cache.reserve_layers(holder, 4)
    assert holder.layers[0] is sliding
