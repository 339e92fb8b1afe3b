"""The synthetic worlds' :class:`~nlhf_envs.text.models.TinyCausalLM` as a ``transformers`` GPT-2.

:class:`~nlhf_envs.text.models.TinyCausalLM` is a pre-LayerNorm causal transformer with learned
absolute positions, fused ``qkv`` attention, an exact-GELU MLP and an output head tied to the token
embedding: GPT-2's architecture (Radford et al., "Language Models are Unsupervised Multitask
Learners", 2019). :func:`tiny_to_gpt2` writes its weights into a ``GPT2LMHeadModel``:

==========================  ==========================================================
TinyCausalLM                GPT-2
==========================  ==========================================================
``tok_emb``, ``pos_emb``     ``transformer.wte``, ``transformer.wpe``
``blocks[i].ln1``/``ln2``    ``transformer.h[i].ln_1``/``ln_2`` (epsilon 1e-5)
``blocks[i].qkv``            ``transformer.h[i].attn.c_attn`` (``Conv1D``: weight transposed)
``blocks[i].proj``           ``transformer.h[i].attn.c_proj`` (transposed)
``blocks[i].ff[0]``/``[2]``  ``transformer.h[i].mlp.c_fc``/``c_proj`` (transposed), ``gelu``
``ln_f``                     ``transformer.ln_f``; ``lm_head`` tied to ``wte``
==========================  ==========================================================

with dropout 0 and SDPA attention, which makes the float32 logits equal. The world's suppressed
tokens are not part of the GPT-2 weights: :class:`~nlhf_envs.text.hf.HFPolicy` applies the same
``-1e4`` logit mask (``suppress_tokens=world.suppressed_token_ids``), and
:meth:`~nlhf_envs.text.hf_env.HFTokenDuelEnv.from_world` does that for you.
"""

from __future__ import annotations

from typing import Any

import torch

from nlhf_envs.text.models import TinyCausalLM
from nlhf_envs.text.tokenizer import BOS, EOS, PAD

try:
    import transformers
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "nlhf_envs.text.hf_convert needs the 'hf' extra: pip install 'nlhf-zoo[hf]'"
    ) from err

__all__ = ["tiny_to_gpt2"]


def tiny_to_gpt2(model: TinyCausalLM) -> Any:
    """A ``transformers.GPT2LMHeadModel`` with the weights of ``model`` (a copy, in eval mode).

    Args:
        model: the synthetic world's language model (e.g. ``load_reference_policy(world="tiny")``).

    Returns:
        The GPT-2 model on the CPU in float32, with ``bos``/``eos``/``pad`` ids of the world
        (1, 2, 0) in its config; its logits equal ``model``'s before the suppressed-token mask.

    Raises:
        TypeError: if ``model`` is not a :class:`~nlhf_envs.text.models.TinyCausalLM`.
    """
    if not isinstance(model, TinyCausalLM):
        raise TypeError(f"tiny_to_gpt2 converts a TinyCausalLM, got {type(model).__name__}")
    cfg = model.config
    config = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_ff,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=True,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    config._attn_implementation = "sdpa"
    gpt = transformers.GPT2LMHeadModel(config)
    src = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    state = {
        "transformer.wte.weight": src["tok_emb.weight"],
        "transformer.wpe.weight": src["pos_emb.weight"],
        "transformer.ln_f.weight": src["ln_f.weight"],
        "transformer.ln_f.bias": src["ln_f.bias"],
    }
    for i in range(cfg.n_layers):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            state[h + theirs + ".weight"] = src[b + ours + ".weight"]
            state[h + theirs + ".bias"] = src[b + ours + ".bias"]
        for ours, theirs in (
            ("qkv", "attn.c_attn"),
            ("proj", "attn.c_proj"),
            ("ff.0", "mlp.c_fc"),
            ("ff.2", "mlp.c_proj"),
        ):  # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out]
            state[h + theirs + ".weight"] = src[b + ours + ".weight"].T.contiguous()
            state[h + theirs + ".bias"] = src[b + ours + ".bias"]
    with torch.no_grad():
        params = dict(gpt.named_parameters())
        for name, value in state.items():
            if tuple(params[name].shape) != tuple(value.shape):  # pragma: no cover - layout bug
                raise RuntimeError(f"{name}: shape {tuple(value.shape)} does not fit")
            params[name].copy_(value)
    gpt.tie_weights()
    return gpt.eval()
