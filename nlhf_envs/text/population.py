"""The multiplayer duality gap of a population of token policies: exact or estimated.

A population ``(pi_1, ..., pi_k)`` of token policies, one per seat of the n-player token duel
(:mod:`nlhf_envs.text.multiplayer`), is at the beta-regularised equilibrium when its multiplayer
duality gap (Wu et al., "Multiplayer Nash Preference Optimization", arXiv 2509.23102, 2025; the
reading of :func:`nlhf_envs.solvers.multiplayer_duality_gap`)

    DG(pi_1..pi_k) = 1/k sum_i [ max_{pi'} J(pi', pi_{-i}) - min_{pi'_{-i}} J(pi_i, pi'_{-i}) ]

is zero; ``DG = 2 Expl_beta(pi)`` when every seat plays ``pi``. On an enumerable world the token
game is a contextual matrix game (:func:`nlhf_envs.text.exact.exact_game`) and the gap is computed
exactly from the members' sequence distributions (:func:`exact_population_gap`); elsewhere it is
estimated with a 95% interval over prompts
(:func:`nlhf_envs.text.estimate.estimate_population_gap`). :func:`population_duality_gap` picks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlhf_envs.game import PreferenceGame
from nlhf_envs.solvers import multiplayer_duality_gap
from nlhf_envs.text.estimate import estimate_population_gap
from nlhf_envs.text.exact import MAX_ANSWERS, exact_game, resolve_setting, sequence_policy
from nlhf_envs.text.multiplayer import resolve_multi_id

__all__ = ["enumerable", "exact_population_gap", "population_duality_gap"]

#: the modes of :func:`population_duality_gap`.
GAP_MODES: tuple[str, ...] = ("auto", "exact", "estimate")


def enumerable(env_or_id: Any) -> bool:
    """Whether the answers of the env's world can be enumerated (:data:`~nlhf_envs.text.exact.
    MAX_ANSWERS` at most), so that exact metrics apply."""
    s = resolve_setting(resolve_multi_id(env_or_id))
    words = len(s.world.answer_token_ids) - 1
    return sum(words**k for k in range(s.max_new_tokens + 1)) <= MAX_ANSWERS


def exact_population_gap(
    population: list[Any],
    env_or_id: Any,
    *,
    split: str = "heldout",
    payer: str = "judge",
    beta: float | None = None,
    reference: Any = None,
    game: PreferenceGame | None = None,
) -> float:
    """The exact multiplayer duality gap of token policies on an enumerable world.

    Each member's sequence distribution over the enumerated answers
    (:func:`~nlhf_envs.text.exact.sequence_policy`) enters
    :func:`~nlhf_envs.solvers.multiplayer_duality_gap` in the exact game of ``split``.

    Args:
        population: ``k >= 2`` policies, one per seat (an object filling several seats is read once).
        env_or_id: a token-duel env (two-seat or n-seat), id (n-player ids too) or world name.
        split: prompt split (the game's contexts).
        payer: ``"judge"`` or ``"ground_truth"`` (ignored when ``game`` is given).
        beta: KL strength (default: the env's; ignored when ``game`` is given).
        reference: ``pi_ref`` (default: the world's shipped reference policy).
        game: the exact game of ``split`` when already built (:func:`~nlhf_envs.text.exact.exact_game`).

    Raises:
        ValueError: for fewer than two policies, a world too large to enumerate, or a policy with
            mass outside the enumerated answers.
    """
    env_or_id = resolve_multi_id(env_or_id)
    members = list(population)
    if len(members) < 2:
        raise ValueError(
            f"population must hold at least 2 policies (one per seat); got {len(members)}"
        )
    if game is None:
        game = exact_game(env_or_id, split, payer=payer, beta=beta, reference=reference)
    seen: dict[int, np.ndarray] = {}
    for p in members:
        if id(p) not in seen:
            seen[id(p)] = sequence_policy(p, env_or_id, split)
    return multiplayer_duality_gap(game, [seen[id(p)] for p in members])


def population_duality_gap(
    population: list[Any],
    env_or_id: Any,
    *,
    mode: str = "auto",
    split: str = "heldout",
    payer: str = "judge",
    beta: float | None = None,
    reference: Any = None,
    game: PreferenceGame | None = None,
    num_prompts: int = 64,
    n: int = 64,
    m: int = 128,
    seed: int = 0,
) -> dict[str, float]:
    """The multiplayer duality gap of token policies, exact or estimated.

    Args:
        population: ``k >= 2`` policies, one per seat.
        env_or_id: a token-duel env (two-seat or n-seat), id (n-player ids too) or world name.
        mode: ``"exact"`` (:func:`exact_population_gap`), ``"estimate"``
            (:func:`~nlhf_envs.text.estimate.estimate_population_gap`) or ``"auto"`` (exact when the
            world is :func:`enumerable`).
        split: prompt split.
        payer: ``"judge"`` or ``"ground_truth"``.
        beta: KL strength (default: the env's).
        reference: ``pi_ref`` (default: the world's shipped reference policy).
        game: the exact game, when already built (exact mode).
        num_prompts: prompts of an estimate; ``n``, ``m``, ``seed``: its sample sizes and seed.
        n: support samples per prompt of an estimate.
        m: fresh samples per prompt of an estimate.
        seed: seed of an estimate.

    Returns:
        ``{"population_duality_gap": DG}``, plus ``population_duality_gap_low`` and ``_high`` (the
        95% interval over prompts) when estimated.

    Raises:
        ValueError: for an unknown mode, and as the two functions above.
    """
    if mode not in GAP_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(GAP_MODES)}")
    env_or_id = resolve_multi_id(env_or_id)
    if mode == "exact" or (mode == "auto" and enumerable(env_or_id)):
        gap = exact_population_gap(
            population,
            env_or_id,
            split=split,
            payer=payer,
            beta=beta,
            reference=reference,
            game=game,
        )
        return {"population_duality_gap": gap}
    est = estimate_population_gap(
        population,
        env_or_id,
        split=split,
        num_prompts=num_prompts,
        n=n,
        m=m,
        seed=seed,
        payer=payer,
        beta=beta,
        reference=reference,
    )
    return est.as_dict()
