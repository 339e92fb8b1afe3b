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
``python benchmarks/token_games.py --only estimator`` (its "estimator error" study,
``estimator_study``) measures every run's error against :func:`nlhf_envs.text.exact.exact_game` on the
tiny worlds for several ``n`` and how often the 95% interval covers the exact value (results in
``benchmarks/results/token_games.md``; summary in ``docs/nash-metrics.md``, "Estimated metrics of
token policies").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from nlhf_envs.game import PreferenceGame
from nlhf_envs.progress import Progress, reporter
from nlhf_envs.solvers import regularized_nash
from nlhf_envs.text.engine import generate
from nlhf_envs.text.exact import (
    _antisymmetrise,
    _reference,
    preference_matrix,
    resolve_setting,
)
from nlhf_envs.text.ground_truth import ground_truth

__all__ = [
    "NashEstimate",
    "PopulationGapEstimate",
    "estimate_nash_metrics",
    "estimate_population_gap",
    "forced_log_probs",
]


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


def _nash_estimate(
    P_sup: np.ndarray,
    sup_ref: torch.Tensor,
    sup_pol: torch.Tensor,
    fp_pol: torch.Tensor,
    fp_ref: torch.Tensor,
    g_pi: np.ndarray,
    beta: float,
    chosen: np.ndarray,
) -> NashEstimate:
    """Steps 1-3 of the module docstring from the sampled quantities, per prompt ``c``:
    ``P_sup[c]`` (``[n, n]``, the preferences among the ``n`` support answers of ``pi_ref``),
    ``sup_ref[c]``/``sup_pol[c]`` (their log-probabilities under ``pi_ref`` and ``pi``),
    ``fp_pol[c]``/``fp_ref[c]`` (those of the ``m`` fresh answers of ``pi``) and ``g_pi[c]``
    (``[m]``, the fresh ``pi_ref`` answers' preference over ``pi``'s); ``chosen`` names the
    prompts."""
    C, n = P_sup.shape[:2]
    m = g_pi.shape[1]
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


def _judged_setting(
    env_or_id: Any,
    payer: str,
    beta: float | None,
    reference: Any,
    device: torch.device | str | None,
    policy: Any,
) -> tuple[Any, Any, Any, float, Any, torch.device]:
    """``(setting, world, paying judge, beta, pi_ref, device)`` of an estimate: ``beta`` defaults
    to the env's, ``pi_ref`` to the world's shipped reference (copied to ``device``), ``device`` to
    that of ``policy``'s parameters (else CPU)."""
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
    return s, world, judge, beta, ref, device


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
    progress: Progress = None,
) -> NashEstimate:
    """Estimate exploitability and ``KL(pi* || pi)`` of a token policy (see the module docstring).

    Args:
        policy: a policy of the engine's signature.
        env_or_id: a token-duel env, id or world name (its judge pays; its ``beta`` by default),
            or an env with its own ``estimate_nash_metrics`` method, which then estimates it (an
            :class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv`:
            :func:`~nlhf_envs.text.hf_estimate.estimate_hf_nash_metrics`).
        split: prompt split.
        num_prompts: prompts drawn without replacement from the split (all of them when fewer).
        n: ``pi_ref`` samples per prompt on which the game is solved.
        m: fresh samples per prompt of ``pi_ref`` and of ``policy`` for the exploitability.
        seed: seed of the prompt choice and of every sample.
        payer: ``"judge"`` or ``"ground_truth"``.
        beta: KL strength (default: the env's).
        reference: ``pi_ref`` (default: the world's shipped reference policy).
        device: where generation runs (default: the policy's parameters' device, else CPU).
        progress: ``None`` (silent), ``True`` (a bar on stderr) or a callable receiving
            :class:`~nlhf_envs.progress.ProgressEvent` objects (task ``"nash estimate"``: one step
            per sampling, then one per prompt judged); an exception it raises (e.g.
            ``KeyboardInterrupt``) stops the estimate there.

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
    own = getattr(env_or_id, "estimate_nash_metrics", None)  # an env with its own estimator
    if callable(own):
        if payer != "judge" or reference is not None:
            raise ValueError(
                f"{type(env_or_id).__name__} has no ground truth and its own pi_ref: "
                "payer='judge' and reference=None only"
            )
        return own(
            policy, split=split, num_prompts=num_prompts, n=n, m=m, seed=seed, beta=beta,
            device=device, progress=progress,
        )  # fmt: skip
    s, world, judge, beta, ref, device = _judged_setting(
        env_or_id, payer, beta, reference, device, policy
    )
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

    bar = reporter(progress, "nash estimate", 3 + C, "steps")
    try:
        sup_ids, sup_mask, sup_pol, sup_ref = sample(ref, n)
        bar.advance()
        fr_ids, fr_mask, _, _ = sample(ref, m)
        bar.advance()
        fp_ids, fp_mask, fp_pol, fp_ref = sample(policy, m)
        bar.advance()
        P_sup, g_pi = _judged(judge, world, p_ids, p_mask, n, m, sup_ids, sup_mask, fr_ids,
                              fr_mask, fp_ids, fp_mask, bar)  # fmt: skip
    finally:
        bar.close()
    P_sup = _antisymmetrise(P_sup, f"the {payer} of world {world.name!r}")
    return _nash_estimate(P_sup, sup_ref, sup_pol, fp_pol, fp_ref, g_pi, beta, chosen)


def _judged(
    judge: Any,
    world: Any,
    p_ids: torch.Tensor,
    p_mask: torch.Tensor,
    n: int,
    m: int,
    sup_ids: torch.Tensor,
    sup_mask: torch.Tensor,
    fr_ids: torch.Tensor,
    fr_mask: torch.Tensor,
    fp_ids: torch.Tensor,
    fp_mask: torch.Tensor,
    bar: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """The support's preference matrices ``[C, n, n]`` and ``g_pi`` ``[C, m]`` (one step of
    ``bar`` per prompt)."""
    C = p_ids.shape[0]
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
        bar.advance()
    return P_sup, g_pi


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


@dataclass
class PopulationGapEstimate:
    """Estimated multiplayer duality gap of a population of token policies (95% t-interval).

    Attributes:
        gap: mean over prompts of the estimated per-prompt gap.
        gap_ci: its interval ``(low, high)`` over prompts.
        exploitability: ``[k]`` each member's mean estimated exploitability (the worst-opponents
            term of its seat).
        kl_ref: ``[k]`` each member's mean Monte-Carlo ``KL(pi_i || pi_ref)``.
        per_prompt: ``"prompt_index"``, ``"gap"`` ``[C]``, ``"exploitability"`` ``[k, C]`` and
            ``"best_response"`` ``[k, C]`` (the best responder's value against seat ``i``'s others).
        n: support samples per prompt of the member estimates; ``m``: fresh samples per prompt.
    """

    gap: float
    gap_ci: tuple[float, float]
    exploitability: np.ndarray
    kl_ref: np.ndarray
    n: int
    m: int
    per_prompt: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}population_duality_gap`` and its ``_low`` and ``_high`` bounds."""
        return {
            f"{prefix}population_duality_gap": self.gap,
            f"{prefix}population_duality_gap_low": self.gap_ci[0],
            f"{prefix}population_duality_gap_high": self.gap_ci[1],
        }


@torch.no_grad()
def estimate_population_gap(
    population: list[Any],
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
) -> PopulationGapEstimate:
    """Estimate the multiplayer duality gap of ``k >= 2`` token policies, one per seat.

    The gap is that of :func:`nlhf_envs.solvers.multiplayer_duality_gap` (Wu et al., "Multiplayer
    Nash Preference Optimization", arXiv 2509.23102, 2025, read term by term from the two-player
    duality gap): per prompt ``x``,

        DG_x = 1/k sum_i [ B_i(x) - 1/2 + Expl_beta(pi_i)(x) ],
        B_i(x) = beta log E_{y ~ pi_ref} exp(gbar_i(y) / beta) + beta/(k-1) sum_{j != i} KL(pi_j || pi_ref),

    with ``gbar_i = 1/(k-1) sum_{j != i} g_{pi_j}`` the win rate against seat ``i``'s others.
    ``Expl_beta(pi_i)(x)`` and ``KL(pi_i || pi_ref)`` are :func:`estimate_nash_metrics`' per-prompt
    estimates (every member with the same ``seed``, so on the same prompts); ``B_i`` is estimated
    the same way with one set of ``m`` fresh ``pi_ref`` answers per prompt and ``m`` fresh answers of
    every member, ``g_{pi_j}(y)`` the mean judge preference of ``y`` over ``pi_j``'s answers. The mean
    over prompts comes with a 95% t-interval over prompts. The log of a Monte-Carlo mean
    under-estimates, so small ``m`` biases the gap down, as it does the exploitability.

    Args:
        population: the seats' policies (engine signature); the same object may fill several seats
            (it is then sampled and measured once).
        env_or_id: a token-duel env (two-seat or n-seat), id (``nlhf/MultiTokenDuel-v0`` too) or
            world name.
        split: prompt split.
        num_prompts: prompts drawn without replacement from the split (all of them when fewer).
        n: ``pi_ref`` support samples per prompt of :func:`estimate_nash_metrics` (its
            ``kl_to_nash``, not used by the gap).
        m: fresh samples per prompt of ``pi_ref`` and of every member.
        seed: seed of the prompt choice and of every sample.
        payer: ``"judge"`` or ``"ground_truth"``.
        beta: KL strength (default: the env's).
        reference: ``pi_ref`` (default: the world's shipped reference policy).
        device: where generation runs (default: the first member's parameters' device, else CPU).

    Returns:
        A :class:`PopulationGapEstimate`.

    Raises:
        ValueError: for fewer than two policies, non-positive sample sizes or an unknown payer.
    """
    from nlhf_envs.text.multiplayer import resolve_multi_id

    env_or_id = resolve_multi_id(env_or_id)
    members = list(population)
    k = len(members)
    if k < 2:
        raise ValueError(f"population must hold at least 2 policies (one per seat); got {k}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    unique: dict[int, int] = {}  # id(policy) -> row of the distinct policies
    distinct: list[Any] = []
    for p in members:
        if id(p) not in unique:
            unique[id(p)] = len(distinct)
            distinct.append(p)
    rows = [unique[id(p)] for p in members]
    kw = {"split": split, "num_prompts": num_prompts, "n": n, "m": m, "payer": payer}
    kw.update(beta=beta, reference=reference, device=device)
    ests = [estimate_nash_metrics(p, env_or_id, seed=seed, **kw) for p in distinct]
    chosen = ests[0].per_prompt["prompt_index"]
    expl = np.stack([ests[r].per_prompt["exploitability"] for r in rows])  # [k, C]
    kls = np.stack([ests[r].per_prompt["kl_ref"] for r in rows])  # [k, C]

    s, world, judge, beta, ref, device = _judged_setting(
        env_or_id, payer, beta, reference, device, distinct[0]
    )
    texts = [world.prompts.texts[i] for i in chosen]
    C, L = len(texts), s.max_new_tokens
    p_ids, p_mask = world.tokenizer.encode_prompts(texts, world.prompt_len, device=device)
    ids, mask = p_ids.repeat_interleave(m, 0), p_mask.repeat_interleave(m, 0)
    # a stream of its own, apart from the member estimates' (seeded with ``seed`` itself)
    state = np.random.SeedSequence([int(seed), 1]).generate_state(1)[0]
    gen = torch.Generator(device).manual_seed(int(state))
    y_ref = generate(ref, ids, mask, L, generator=gen)
    g = np.empty((len(distinct), C, m))  # g_{pi_j}(y) at the fresh pi_ref answers
    for r, policy in enumerate(distinct):
        y_pol = generate(policy, ids, mask, L, generator=gen)
        for c in range(C):
            sl = slice(c * m, (c + 1) * m)
            g[r, c] = preference_matrix(
                judge,
                world,
                p_ids[c : c + 1].cpu(),
                p_mask[c : c + 1].cpu(),
                (y_ref.tokens[sl].cpu(), y_ref.mask[sl].cpu()),
                (y_pol.tokens[sl].cpu(), y_pol.mask[sl].cpu()),
            ).mean(axis=1)
    g_seats = g[rows]  # [k, C, m]
    g_sum, kl_sum = g_seats.sum(axis=0), kls.sum(axis=0)
    best = np.empty((k, C))
    for i in range(k):
        g_others = (g_sum - g_seats[i]) / (k - 1)
        lse = beta * (np.logaddexp.reduce(g_others / beta, axis=1) - np.log(m))
        best[i] = lse + beta * (kl_sum - kls[i]) / (k - 1)
    gap = (best - 0.5 + expl).mean(axis=0)  # [C]
    return PopulationGapEstimate(
        gap=float(gap.mean()),
        gap_ci=_interval(gap),
        exploitability=expl.mean(axis=1),
        kl_ref=kls.mean(axis=1),
        n=n,
        m=m,
        per_prompt={
            "prompt_index": chosen,
            "gap": gap,
            "exploitability": expl,
            "best_response": best,
        },
    )
