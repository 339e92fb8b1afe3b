"""Estimated Nash metrics of token policies where answers cannot be enumerated.

For a prompt ``x``, ``pi*_beta(y | x) = pi_ref(y | x) r(y)`` with ``r = exp((g_{pi*}(y) - c) / beta)``
(algorithms: Munos et al. 2024, the fixed point of the regularised game). Per prompt this module

1. **solves the game on a sample of pi_ref**: ``n`` answers ``y_1..y_n ~ pi_ref(. | x)``; on this
   support, with ``pi_ref``'s mass ``1/n`` per sample (self-normalised importance weights), the
   regularised game is a matrix game whose equilibrium ``q`` (by
   :func:`~nlhf_envs.solvers.regularized_nash`) estimates the density ratio ``r(y_i) ~= n q_i``;
2. **KL to the equilibrium**: ``KL(pi* || pi) ~= sum_i q_i [log pi_ref(y_i) + log(n q_i) - log
   pi(y_i)]`` with exact sequence log-probabilities of ``pi_ref`` and ``pi`` at the samples;
3. **exploitability** from the closed form ``beta log E_{y ~ pi_ref} exp(g_pi(y) / beta) + beta
   KL(pi || pi_ref) - 1/2``, ``g_pi(y) = E_{y' ~ pi} P(y > y')``, with *fresh* samples: ``m`` answers
   of ``pi_ref`` for the outer expectation, ``m`` answers of ``pi`` for ``g_pi`` and for the
   Monte-Carlo ``KL(pi || pi_ref)`` (never the samples used to solve).

The means over prompts come with t-intervals (95%) over prompts. The estimates are biased for small
``n``/``m`` (the log of a Monte-Carlo mean under-estimates; a sampled support misses rare answers);
``python benchmarks/token_games.py`` (its "estimator error" study, ``estimator_study``) measures the
error against :func:`nlhf_envs.text.exact.exact_game` on the tiny worlds for several ``n`` and how
often the 95% interval covers the exact value (README: "Nash metrics for token policies").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from nlhf_envs.game import PreferenceGame
from nlhf_envs.solvers import regularized_nash
from nlhf_envs.text.engine import generate
from nlhf_envs.text.exact import (
    _antisymmetrise,
    _reference,
    preference_matrix,
    resolve_setting,
)
from nlhf_envs.text.ground_truth import ground_truth

__all__ = ["NashEstimate", "estimate_nash_metrics", "forced_log_probs"]


@dataclass
class NashEstimate:
    """Estimated Nash metrics of a token policy (means over prompts, 95% t-intervals).

    Attributes:
        exploitability: mean estimated exploitability.
        exploitability_ci: its interval ``(low, high)``.
        kl_to_nash: mean estimated ``KL(pi* || pi)``.
        kl_to_nash_ci: its interval.
        kl_ref: mean Monte-Carlo ``KL(pi || pi_ref)``.
        per_prompt: per-prompt values (``"exploitability"``, ``"kl_to_nash"``, ``"kl_ref"``) and the
            prompt indices (``"prompt_index"``) into ``world.prompts.texts``.
        n: support samples per prompt; ``m``: fresh samples per prompt and side.
    """

    exploitability: float
    exploitability_ci: tuple[float, float]
    kl_to_nash: float
    kl_to_nash_ci: tuple[float, float]
    kl_ref: float
    n: int
    m: int
    per_prompt: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics (``{prefix}exploitability``, ``..._low``, ``..._high``, ...)."""
        return {
            f"{prefix}exploitability": self.exploitability,
            f"{prefix}exploitability_low": self.exploitability_ci[0],
            f"{prefix}exploitability_high": self.exploitability_ci[1],
            f"{prefix}kl_to_nash": self.kl_to_nash,
            f"{prefix}kl_to_nash_low": self.kl_to_nash_ci[0],
            f"{prefix}kl_to_nash_high": self.kl_to_nash_ci[1],
            f"{prefix}kl_ref": self.kl_ref,
        }


def _interval(values: np.ndarray) -> tuple[float, float]:
    k = len(values)
    mean = float(values.mean())
    if k < 2:
        return (mean, mean)
    half = float(stats.t.ppf(0.975, k - 1) * values.std(ddof=1) / np.sqrt(k))
    return (mean - half, mean + half)


@torch.no_grad()
def estimate_nash_metrics(
    policy: Any,
    env_or_id: Any,
    *,
    split: str = "heldout",
    num_prompts: int = 64,
    n: int = 64,
    m: int = 128,
    seed: int = 0,
    payer: str = "judge",
    beta: float | None = None,
    reference: Any = None,
    device: torch.device | str | None = None,
) -> NashEstimate:
    """Estimate exploitability and ``KL(pi* || pi)`` of a token policy (see the module docstring).

    Args:
        policy: a policy of the engine's signature.
        env_or_id: a token-duel env, id or world name (its judge pays; its ``beta`` by default).
        split: prompt split.
        num_prompts: prompts drawn without replacement from the split (all of them when fewer).
        n: ``pi_ref`` samples per prompt on which the game is solved.
        m: fresh samples per prompt of ``pi_ref`` and of ``policy`` for the exploitability.
        seed: seed of the prompt choice and of every sample.
        payer: ``"judge"`` or ``"ground_truth"``.
        beta: KL strength (default: the env's).
        reference: ``pi_ref`` (default: the world's shipped reference policy).
        device: where generation runs (default: the policy's parameters' device, else CPU).

    Returns:
        A :class:`NashEstimate`.

    Raises:
        ValueError: for non-positive sample sizes or an unknown payer.
    """
    for name, v in (("num_prompts", num_prompts), ("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if payer not in ("judge", "ground_truth"):
        raise ValueError(f"unknown payer {payer!r}; expected 'judge' or 'ground_truth'")
    s = resolve_setting(env_or_id)
    world = s.world
    judge = s.judge if payer == "judge" else ground_truth(world)
    beta = s.beta if beta is None else float(beta)
    ref = reference if reference is not None else _reference(world)
    if device is None:
        params = list(policy.parameters()) if isinstance(policy, torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    if isinstance(ref, torch.nn.Module):
        ref_params = list(ref.parameters())
        if ref_params and ref_params[0].device != device:
            ref = _copy_to(ref, device)
    rng = np.random.default_rng(seed)
    pool = world.prompts.indices(split)
    chosen = np.sort(rng.choice(pool, size=min(num_prompts, len(pool)), replace=False))
    texts = [world.prompts.texts[i] for i in chosen]
    C, L = len(texts), s.max_new_tokens
    p_ids, p_mask = world.tokenizer.encode_prompts(texts, world.prompt_len, device=device)
    gen = torch.Generator(device).manual_seed(int(seed))

    def sample(model: Any, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = p_ids.repeat_interleave(k, 0), p_mask.repeat_interleave(k, 0)
        g = generate(model, ids, mask, L, generator=gen)
        lp_pol = forced_log_probs(policy, ids, mask, g.tokens, g.mask)
        lp_ref = forced_log_probs(ref, ids, mask, g.tokens, g.mask)
        return g.tokens, g.mask, lp_pol.reshape(C, k), lp_ref.reshape(C, k)

    sup_ids, sup_mask, sup_pol, sup_ref = sample(ref, n)
    fr_ids, fr_mask, _, _ = sample(ref, m)
    fp_ids, fp_mask, fp_pol, fp_ref = sample(policy, m)
    P_sup = np.empty((C, n, n))
    g_pi = np.empty((C, m))
    for c in range(C):
        one = (p_ids[c : c + 1].cpu(), p_mask[c : c + 1].cpu())
        sl, fl = slice(c * n, (c + 1) * n), slice(c * m, (c + 1) * m)
        sup = (sup_ids[sl].cpu(), sup_mask[sl].cpu())
        P_sup[c] = preference_matrix(judge, world, *one, sup)
        g_pi[c] = preference_matrix(
            judge,
            world,
            *one,
            (fr_ids[fl].cpu(), fr_mask[fl].cpu()),
            (fp_ids[fl].cpu(), fp_mask[fl].cpu()),
        ).mean(axis=1)
    P_sup = _antisymmetrise(P_sup, f"the {payer} of world {world.name!r}")
    q = regularized_nash(PreferenceGame(P_sup, np.full((C, n), 1.0 / n), beta))
    q = q.reshape(C, n)
    log_star = sup_ref.cpu().numpy() + np.log(n * q)
    kl_star = (q * (log_star - sup_pol.cpu().numpy())).sum(axis=1)
    kl_ref = (fp_pol - fp_ref).cpu().numpy().mean(axis=1)
    lse = beta * (np.logaddexp.reduce(g_pi / beta, axis=1) - np.log(m))
    expl = lse + beta * kl_ref - 0.5
    return NashEstimate(
        exploitability=float(expl.mean()),
        exploitability_ci=_interval(expl),
        kl_to_nash=float(kl_star.mean()),
        kl_to_nash_ci=_interval(kl_star),
        kl_ref=float(kl_ref.mean()),
        n=n,
        m=m,
        per_prompt={
            "prompt_index": chosen,
            "exploitability": expl,
            "kl_to_nash": kl_star,
            "kl_ref": kl_ref,
        },
    )


@torch.no_grad()
def forced_log_probs(
    policy: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
) -> torch.Tensor:
    """``log pi(y | x)`` (float64 ``[B]``) of given answers, fed token by token through the policy's
    cache exactly as :func:`~nlhf_envs.text.engine.generate` feeds its samples, so it works for any
    policy of the engine's signature (also those that only return the last position's logits)."""
    logits, cache = policy(prompt_ids, attention_mask=prompt_mask.bool())
    mask = prompt_mask.bool()
    total = torch.zeros(prompt_ids.shape[0], dtype=torch.float64, device=prompt_ids.device)
    width = answer_ids.shape[1]
    for t in range(width):
        lp = F.log_softmax(logits[:, -1].double(), dim=-1)
        tok = answer_ids[:, t]
        on = answer_mask[:, t].bool()
        total += torch.where(on, lp.gather(1, tok[:, None]).squeeze(1), 0.0)
        if t == width - 1 or not bool(answer_mask[:, t + 1 :].any()):
            break
        mask = torch.cat([mask, on[:, None]], dim=1)
        logits, cache = policy(tok[:, None], attention_mask=mask, past_key_values=cache)
    return total


def _copy_to(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(device)
