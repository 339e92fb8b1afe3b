"""Batched matches of the Hugging Face token duel: every duel of a match in a few model calls.

A match of ``nlhf/HFTokenDuel-v0`` played episode by episode costs one forward pass per token, seat
and duel, and :class:`~nlhf_envs.text.hf_players.HFModelPlayer` re-reads the whole prefix at
every token. When both participants sample from a known next-token distribution (a causal LM or
an :class:`~nlhf_envs.text.hf.HFPolicy` in an :class:`~nlhf_envs.text.hf_players.HFModelPlayer`,
the env's ``pi_ref`` among them; a token agent trained on the env; ``"uniform"``),
:func:`play_batched` plays the same duels as the env does, in batches of :data:`DUEL_BATCH`:

* duel ``d`` gets the env's reset seed ``s_d`` from the match generator, as the episode loop
  draws it, and from ``np_random(s_d)`` the env's prompt choice and then the uniform ``u_d`` of
  its preference query (the env's own order of draws);
* each participant's answers for all duels are sampled with the KV cache
  (:func:`nlhf_envs.text.engine.generate`, temperature 1, ending at the env's EOS or after
  ``max_new_tokens`` tokens) from its own torch generator, seeded from the match seed;
* the first participant sits as ``player_0`` in even duels, ``player_1`` in odd ones; the env's
  judge gives ``p = P(y_0 > y_1 | x)`` for a batch of duels in one call, ``o = 1[u_d < p]``, and
  the rewards are the env's (:func:`nlhf_envs.text.engine.pay`).

The result depends only on the match spec (seed, participants, env), as every match does; the
answers differ from the episode loop's (another random stream for the tokens), not their
distribution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DUEL_BATCH", "play_batched", "batch_policy"]

#: duels per batch of a batched match (memory stays bounded for any number of duels)
DUEL_BATCH = 256


class _UniformTokens:
    """Uniformly random tokens of a set, as a policy of the engine's signature."""

    def __init__(self, tokens: Any, vocab_size: int) -> None:
        import torch

        self.logits = torch.full((int(vocab_size),), float("-inf"))
        self.logits[torch.as_tensor(np.asarray(tokens, dtype=np.int64))] = 0.0

    def __call__(self, input_ids: Any, attention_mask: Any = None, past_key_values: Any = None):
        rows = input_ids.shape[0]
        return self.logits.to(input_ids.device).expand(rows, 1, -1), None


def batch_policy(participant: Any, env: Any) -> Any:
    """A policy of the engine's signature that samples what ``participant`` plays in ``env``'s
    seats, or ``None`` when it cannot be known (the match is then played episode by episode)."""
    from nlhf_envs.text.hf import HFPolicy
    from nlhf_envs.text.hf_players import HFModelPlayer, UniformTokenPlayer

    player = participant.player
    if isinstance(player, HFModelPlayer) and not player.deterministic:
        policy = player.policy
        if policy.num_tokens != env.vocab_size:  # what bind() does for a model's seat
            if not player._own_policy:
                return None
            policy = HFPolicy.of_model(policy.model, num_tokens=env.vocab_size)
        return policy
    if isinstance(player, UniformTokenPlayer) and player.vocab_size == env.vocab_size:
        return _UniformTokens(player.tokens, env.vocab_size)
    source = participant.source
    model = getattr(source, "model", None)
    if (
        getattr(source, "kind", None) == "text"
        and getattr(getattr(source, "backend", None), "kind", "native") != "native"
        and not getattr(player, "deterministic", False)
        and callable(model)
    ):
        return model  # a token agent's seat samples from softmax(model logits) (its ``act``)
    return None


def _device_of(policy: Any) -> Any:
    import torch

    module = policy if isinstance(policy, torch.nn.Module) else getattr(policy, "model", None)
    params = list(module.parameters()) if isinstance(module, torch.nn.Module) else []
    return params[0].device if params else torch.device("cpu")


def play_batched(
    spec: Any, env: Any, first: Any, second: Any
) -> tuple[list[float], list[float]] | None:
    """The duels of ``spec`` on an HF token-duel ``env``, played in batches (module docstring):
    ``(rewards, probs)``, the first participant's reward and judge probability of each duel, in
    duel order; ``None`` when a participant cannot be batched."""
    import torch
    from gymnasium.utils import seeding

    from nlhf_envs.text.engine import generate, pay
    from nlhf_envs.text.hf_prompts import prompt_text

    policies = [batch_policy(first, env), batch_policy(second, env)]
    if any(p is None for p in policies):
        return None
    n = spec.num_duels
    rng = np.random.default_rng(spec.seed)
    pool = env.prompts[env.prompt_split]
    prompt_of, uniform = np.empty(n, dtype=np.int64), np.empty(n)
    for d in range(n):  # the env's reset seed, its prompt choice, then its query's uniform
        np_random, _ = seeding.np_random(int(rng.integers(2**31)))
        prompt_of[d] = int(np_random.choice(len(env._pool_ids)))
        uniform[d] = np_random.random()
    states = np.random.SeedSequence([int(spec.seed), 3]).generate_state(2)
    gens = [
        torch.Generator(_device_of(p)).manual_seed(int(s))
        for p, s in zip(policies, states, strict=True)
    ]
    width, mode = env.max_prompt_tokens, env.reward_mode
    rewards: list[float] = []
    probs: list[float] = []
    modes = [getattr(p, "training", None) for p in policies]
    try:
        for p in policies:
            if isinstance(p, torch.nn.Module):
                p.eval()
        for start in range(0, n, DUEL_BATCH):
            rows = range(start, min(n, start + DUEL_BATCH))
            ids = torch.full((len(rows), width), env.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for r, d in enumerate(rows):
                tokens = env._pool_ids[prompt_of[d]]
                ids[r, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
                mask[r, width - len(tokens) :] = True
            texts = []
            with torch.no_grad():
                for policy, gen in zip(policies, gens, strict=True):
                    dev = gen.device
                    g = generate(
                        policy, ids.to(dev), mask.to(dev), env.max_new_tokens, generator=gen,
                        eos_id=env.eos_id,
                    )  # fmt: skip
                    tokens, keep = g.tokens.cpu(), g.mask.cpu()
                    answers = [tokens[i][keep[i]].tolist() for i in range(len(rows))]
                    texts.append(env.tokenizer.batch_decode(answers, skip_special_tokens=True))
            swap = np.array([d % 2 == 1 for d in rows])  # odd duels: the first sits as player_1
            pairs = [
                (texts[1][r], texts[0][r]) if swap[r] else (texts[0][r], texts[1][r])
                for r in range(len(rows))
            ]
            prompts = [prompt_text(pool[prompt_of[d]]) for d in rows]
            prob = env._judge(prompts, pairs)  # float32 [B], P(player_0 > player_1)
            u = torch.tensor(uniform[start : start + len(rows)], dtype=torch.float32)
            _, r0, r1 = pay(prob, u, mode)
            for r in range(len(rows)):
                rewards.append(float(r1[r]) if swap[r] else float(r0[r]))
                p = float(prob[r])
                probs.append(1.0 - p if swap[r] else p)
    finally:
        for p, was in zip(policies, modes, strict=True):
            if isinstance(p, torch.nn.Module) and was:
                p.train()
    return rewards, probs
