"""Estimated Nash metrics of any policy in ``nlhf/HFTokenDuel-v0`` (real models, real judges).

The estimator of :mod:`nlhf_envs.text.estimate` (Munos et al. 2024: the regularised game's fixed
point ``pi*_beta(y | x) = pi_ref(y | x) exp((g_{pi*}(y) - c) / beta)``), with the env's own parts:
its prompts (encoded as the env encodes them), its reference causal LM ``pi_ref``, its EOS, and its
text judge on decoded answers. Per prompt:

1. ``n`` answers of ``pi_ref`` are a support on which the regularised game (uniform ``pi_ref``
   mass ``1/n``) is solved by :func:`~nlhf_envs.solvers.regularized_nash`, giving ``q`` and the
   density ratio ``r(y_i) ~= n q_i``;
2. ``KL(pi* || pi) ~= sum_i q_i [log pi_ref(y_i) + log(n q_i) - log pi(y_i)]``;
3. exploitability ``beta log E_{y ~ pi_ref} exp(g_pi(y) / beta) + beta KL(pi || pi_ref) - 1/2``
   with ``g_pi(y) = E_{y' ~ pi} P(y > y')`` on fresh samples (``m`` of each side).

A judge is not required to be antisymmetric here: the preference used is the seat-averaged
``(P(a > b) + 1 - P(b > a)) / 2`` (the env's game averaged over who sits first), which equals the
judge's own probability for an antisymmetric judge. Means over prompts carry 95% t-intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nlhf_envs.errors import GameError
from nlhf_envs.text.engine import Generation, generate
from nlhf_envs.text.estimate import NashEstimate, _nash_estimate, forced_log_probs

__all__ = ["estimate_hf_nash_metrics"]


def _texts(env: Any, gen: Generation) -> list[str]:
    rows = [gen.tokens[i][gen.mask[i]].tolist() for i in range(gen.tokens.shape[0])]
    return env.tokenizer.batch_decode(rows, skip_special_tokens=True)


def _seat_averaged(env: Any, prompt: str, a: list[str], b: list[str]) -> np.ndarray:
    """``(P(a_i > b_j) + 1 - P(b_j > a_i)) / 2``, float64 ``[len(a), len(b)]``, by the env's judge."""
    pairs = [(x, y) for x in a for y in b]
    flipped = [(y, x) for x, y in pairs]
    p = env._judge([prompt] * len(pairs), pairs).double().numpy()
    q = env._judge([prompt] * len(pairs), flipped).double().numpy()
    return ((p + 1.0 - q) / 2.0).reshape(len(a), len(b))


@torch.no_grad()
def estimate_hf_nash_metrics(
    policy: Any,
    env: Any,
    *,
    split: str = "heldout",
    num_prompts: int = 16,
    n: int = 32,
    m: int = 32,
    seed: int = 0,
    beta: float | None = None,
    device: torch.device | str = "cpu",
) -> NashEstimate:
    """Estimate exploitability and ``KL(pi* || pi)`` of ``policy`` in a
    :class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv` (see the module docstring).

    Args:
        policy: a policy of the engine's signature over the env's tokenizer (e.g. an
            :class:`~nlhf_envs.text.hf.HFPolicy`; ``env.reference`` is ``pi_ref``).
        env: the env (its prompts, reference, EOS and judge).
        split: ``"heldout"``, ``"train"``, ``"all"`` or ``"validation"`` prompts of the env.
        num_prompts: prompts drawn without replacement (all of them when fewer).
        n: ``pi_ref`` samples per prompt on which the game is solved.
        m: fresh samples per prompt of ``pi_ref`` and of ``policy``.
        seed: seed of the prompt choice and of every sample.
        beta: KL strength (default: the env's).
        device: where generation runs (the models must be there).

    Returns:
        A :class:`~nlhf_envs.text.estimate.NashEstimate`; ``per_prompt["prompt_index"]`` indexes
        ``env.prompts[split]``.

    Raises:
        GameError: for non-positive sample sizes or a split without prompts.
    """
    from nlhf_envs.text.hf_prompts import prompt_text

    for name, v in (("num_prompts", num_prompts), ("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GameError(f"{name} must be a positive integer, got {v!r}")
    pool = env.prompts.get(split) if split in ("train", "heldout", "all", "validation") else None
    if not pool:
        raise GameError(f"split {split!r} of the env has no prompts")
    beta = env.beta if beta is None else float(beta)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(pool), size=min(num_prompts, len(pool)), replace=False))
    prompts = [pool[int(i)] for i in chosen]
    rows = [env.encode_prompt(p, int(i)) for p, i in zip(prompts, chosen, strict=True)]
    width = env.max_prompt_tokens
    p_ids = torch.full((len(rows), width), env.pad_id, dtype=torch.long)
    p_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, ids in enumerate(rows):
        p_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        p_mask[r, width - len(ids) :] = True
    device = torch.device(device)
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    ref = env.reference
    C, L = len(rows), env.max_new_tokens
    gen = torch.Generator(device).manual_seed(int(seed))

    def sample(model: Any, k: int) -> tuple[Generation, torch.Tensor, torch.Tensor]:
        ids, mask = p_ids.repeat_interleave(k, 0), p_mask.repeat_interleave(k, 0)
        g = generate(model, ids, mask, L, generator=gen, eos_id=env.eos_id)
        lp_pol = forced_log_probs(policy, ids, mask, g.tokens, g.mask)
        lp_ref = forced_log_probs(ref, ids, mask, g.tokens, g.mask)
        return g, lp_pol.reshape(C, k).cpu(), lp_ref.reshape(C, k).cpu()

    sup, sup_pol, sup_ref = sample(ref, n)
    fresh_ref, _, _ = sample(ref, m)
    fresh_pol, fp_pol, fp_ref = sample(policy, m)
    sup_t, fr_t, fp_t = _texts(env, sup), _texts(env, fresh_ref), _texts(env, fresh_pol)
    P_sup = np.empty((C, n, n))
    g_pi = np.empty((C, m))
    for c in range(C):
        x = prompt_text(prompts[c])
        s_c = sup_t[c * n : (c + 1) * n]
        P_sup[c] = _seat_averaged(env, x, s_c, s_c)
        g_pi[c] = _seat_averaged(env, x, fr_t[c * m : (c + 1) * m], fp_t[c * m : (c + 1) * m]).mean(
            axis=1
        )
    i = np.arange(n)
    P_sup[:, i, i] = 0.5
    return _nash_estimate(P_sup, sup_ref, sup_pol, fp_pol, fp_ref, g_pi, beta, chosen)
