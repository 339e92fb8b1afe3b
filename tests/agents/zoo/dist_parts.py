"""The tiny world's game as Hugging Face folders, for ``nlhf-zoo train`` on
``nlhf/HFTokenDuel-v0``: the world's reference exported to GPT-2 (``tiny_to_gpt2``) with its
tokenizer, a reward-model judge on that tokenizer (it rewards one token) and the world's prompts."""

from __future__ import annotations

from pathlib import Path

import torch

#: the token the judge rewards
REWARDED = 7


def tiny_world_parts(root: Path) -> Path:
    """Write ``ref/``, ``judge/`` and ``prompts.txt`` under ``root``; returns ``root``."""
    import transformers

    from nlhf_envs.text.hf import make_hf_tokenizer
    from nlhf_envs.text.hf_convert import tiny_to_gpt2
    from nlhf_envs.text.models import load_reference_policy
    from nlhf_envs.text.world import get_world

    world = get_world("tiny")
    tok = make_hf_tokenizer(world.tokenizer)
    ref = tiny_to_gpt2(load_reference_policy(world=world))
    ref.save_pretrained(root / "ref")
    tok.save_pretrained(root / "ref")
    config = transformers.GPT2Config(
        vocab_size=ref.config.vocab_size, n_layer=1, n_embd=8, n_head=2, num_labels=1
    )
    config.pad_token_id = tok.pad_token_id
    config.bos_token_id = config.eos_token_id = tok.eos_token_id
    rm = transformers.GPT2ForSequenceClassification(config)
    with torch.no_grad():
        for p in rm.parameters():
            p.zero_()
        rm.transformer.wte.weight[REWARDED, 0] = 5.0
        rm.transformer.ln_f.weight.fill_(1.0)
        rm.score.weight[0, 0] = 3.0
    rm.save_pretrained(root / "judge")
    tok.save_pretrained(root / "judge")
    (root / "prompts.txt").write_text("\n".join(world.prompts.texts) + "\n")
    return root


def env_kwargs(root: Path) -> list[str]:
    """``--env-kwargs`` of the game of :func:`tiny_world_parts`."""
    return [
        f"reference:{root / 'ref'}",
        f"judge:{root / 'judge'}",
        f"prompts:{root / 'prompts.txt'}",
        "heldout_fraction:0.25",
        "max_new_tokens:4",
        "max_prompt_tokens:8",
    ]
