"""Sampling and unbiased win-rate estimation from Bernoulli preference outcomes.

Used by the ``sampled`` and ``pg`` modes. Every function takes the generator it draws from; the
queries go through :meth:`nlhf_envs.game.PreferenceGame.sample`, which counts them. The outcomes
have exactly the distribution of the matrix environment's ``"outcome"`` reward for the same pair
of responses, so an agent that played the env for its samples would see the same data.
"""

from __future__ import annotations

import numpy as np

from nlhf_envs.game import PreferenceGame

__all__ = ["sample_actions", "estimate_win_rates"]


def sample_actions(pi: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw ``y_i ~ pi(. | x_i)`` for each context ``x_i`` by inverse-CDF sampling.

    Args:
        pi: ``(C, K)`` policy.
        contexts: ``(n,)`` integer contexts.
        rng: the generator.

    Returns:
        ``(n,)`` int64 responses.
    """
    cdf = np.cumsum(pi, axis=1)
    u = rng.random(contexts.shape[0]) * cdf[contexts, -1]
    y = (u[:, None] >= cdf[contexts]).sum(axis=1)
    return np.minimum(y, pi.shape[1] - 1).astype(np.int64)


def estimate_win_rates(
    game: PreferenceGame,
    pi_opp: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    *,
    stratified: bool = True,
) -> np.ndarray:
    """Unbiased estimate of ``g_{pi_opp}(y|x) = E_{y'~pi_opp} P(y > y'|x)`` from ``B`` queries.

    Design: ``x_i ~ rho``; ``y_i`` uniform on the ``K`` responses (i.i.d., or a stratified sweep
    ``y_i = (s + i) mod K`` with a uniform random offset ``s``); ``y'_i ~ pi_opp(.|x_i)``;
    ``o_i ~ Bernoulli(P(y_i > y'_i | x_i))``. The centred Horvitz-Thompson estimator

        g_hat(y|x) = 1/2 + (1/B) sum_i 1[x_i = x, y_i = y] (o_i - 1/2) / (rho(x) / K)

    is unbiased for every ``(x, y)`` with ``rho(x) > 0`` (for both designs ``P(y_i = y) = 1/K``,
    and the outcomes do not depend on the offset); unvisited pairs read ``1/2``. Centring at
    ``1/2`` (the value of ``P(y > y)``) only lowers the variance.

    Returns:
        ``(C, K)`` estimate.
    """
    C, K = game.shape
    B = int(batch_size)
    x = game.sample_contexts(B, rng)
    if stratified:
        y = (rng.integers(K) + np.arange(B)) % K
    else:
        y = rng.integers(K, size=B)
    y_opp = sample_actions(pi_opp, x, rng)
    o = game.sample(y, y_opp, rng, contexts=x if C > 1 else None)
    acc = np.zeros((C, K))
    np.add.at(acc, (x, y), o.astype(np.float64) - 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(game.rho > 0, K / (B * game.rho), 0.0)
    return 0.5 + acc * scale[:, None]
