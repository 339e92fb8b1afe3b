"""Stochastic policy-gradient inner loops on tabular softmax policies (the ``pg`` modes).

The policy is ``pi_theta = softmax(theta)`` per context, ``theta`` of shape ``(C, K)``. Every step
draws ``x ~ rho``, ``y ~ pi_theta(.|x)``, ``y' ~ pi_opp(.|x)`` and one Bernoulli outcome per pair
through :meth:`PreferenceGame.sample` (one counted query each).
"""

from __future__ import annotations

import numpy as np

from agents.estimators import sample_actions
from agents.updates import (
    TailAverage,
    log_normalize,
    nash_mp_pg_advantage,
    softmax,
    softmax_score_gradient,
)
from nlhf_envs.game import PreferenceGame

__all__ = ["nash_mp_pg_half_step", "default_nash_mp_pg_lr", "rloo"]


def rloo(weights: np.ndarray) -> np.ndarray:
    """Subtract the leave-one-out mean: ``w_i - mean_{j != i} w_j`` (an unbiased baseline)."""
    n = weights.shape[0]
    if n < 2:
        return weights
    return (weights - weights.mean()) * (n / (n - 1))


def default_nash_mp_pg_lr(num_actions: int, beta: float, eta: float) -> float:
    """Default step of the Nash-MP inner loop: ``K / (2 beta (1 + 1/eta))``.

    The half-step objective is ``beta (1 + 1/eta)``-strongly concave in ``pi`` (KL geometry); in the
    softmax logits its curvature is about ``beta (1 + 1/eta) pi(y) ~ beta (1 + 1/eta) / K``, so this
    step is half the inverse curvature at a near-uniform policy.
    """
    return num_actions / (2.0 * beta * (1.0 + 1.0 / eta))


def nash_mp_pg_half_step(
    game: PreferenceGame,
    theta0: np.ndarray,
    l_anchor: np.ndarray,
    l_ref: np.ndarray,
    pi_opp: np.ndarray,
    *,
    eta: float,
    steps: int,
    batch_size: int,
    lr: float,
    average: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """Approximate one Nash-MP prox step by ``steps`` stochastic policy-gradient steps.

    Ascends ``E_y~pi_theta [A(y) grad log pi_theta(y)]`` with the advantage of
    :func:`agents.updates.nash_mp_pg_advantage` (Tiapkin et al. 2025, approximate Nash-MP;
    ``equations.md`` §3), a leave-one-out baseline, from ``theta0`` (design (A): both half-steps
    restart from ``theta_k``).

    Args:
        game: the game (queries are counted on it).
        theta0: ``(C, K)`` initial logits (``log pi_k``).
        l_anchor: ``(C, K)`` log-probabilities of the prox centre ``pi_k``.
        l_ref: ``(C, K)`` log-probabilities of ``pi_ref``.
        pi_opp: ``(C, K)`` opponent policy (``pi_k`` or ``pi_{k+1/2}``).
        eta: Nash-MP step.
        steps: ``M``.
        batch_size: pairs (queries) per step.
        lr: gradient step on the logits.
        average: return the average of the normalised logits over the last ``steps // 2`` steps.
        rng: the generator.

    Returns:
        ``(C, K)`` normalised log-probabilities of the approximate solution.
    """
    beta = game.beta
    contextual = game.num_contexts > 1
    theta = log_normalize(np.array(theta0, dtype=np.float64))
    tail = TailAverage(steps, theta)
    for m in range(steps):
        pi = softmax(theta)
        x = game.sample_contexts(batch_size, rng)
        y = sample_actions(pi, x, rng)
        y_opp = sample_actions(pi_opp, x, rng)
        o = game.sample(y, y_opp, rng, contexts=x if contextual else None).astype(np.float64)
        log_pi_y = theta[x, y]
        adv = nash_mp_pg_advantage(o, log_pi_y - l_ref[x, y], log_pi_y - l_anchor[x, y], beta, eta)
        theta = log_normalize(theta + lr * softmax_score_gradient(rloo(adv), y, x, pi))
        if average:
            tail.add(m, theta)
    return tail.result() if average else theta
