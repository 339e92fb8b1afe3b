"""How intransitive a preference game is: the cyclic share of a Hodge decomposition.

For one context, ``A = P - 1/2`` is antisymmetric (``P + P^T = 1``). Its best least-squares fit by a
score difference ``s_i - s_j`` (the *gradient* part of the Hodge decomposition of the comparison flow
on the complete graph; Jiang et al., "Statistical ranking and combinatorial Hodge theory", 2011) has
``s = A w`` for item weights ``w`` (uniform: ``s`` = the row means of ``A``). The *cyclic share*

    ||A - (s_i - s_j)||_w^2 / ||A||_w^2,   ||M||_w^2 = sum_ij w_i w_j M_ij^2,

is 0 when preferences are an exact score difference and 1 for a pure cycle such as
rock-paper-scissors. Bradley-Terry preferences with sharp (saturated) votes are transitive but not
additive, so they keep a positive share (about 1/3 for a sign of a uniform score difference): the share
measures what a score (reward) model cannot represent, cycles included. Pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cyclic_share"]


def cyclic_share(P: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """Cyclic share of preference matrices ``P`` of shape ``(K, K)`` or ``(C, K, K)``.

    Args:
        P: preference probabilities with ``P + P^T = 1``.
        weights: item weights ``(K,)`` or ``(C, K)`` (normalised here; default uniform).

    Returns:
        A float for one matrix, else ``(C,)`` shares (``nan`` where ``A = 0``).

    Raises:
        ValueError: for a non-square ``P`` or weights of the wrong shape.
    """
    P = np.asarray(P, dtype=np.float64)
    single = P.ndim == 2
    if single:
        P = P[None]
    if P.ndim != 3 or P.shape[1] != P.shape[2]:
        raise ValueError(f"P must have shape (K, K) or (C, K, K); got {P.shape}")
    C, K, _ = P.shape
    A = 0.5 * ((P - 0.5) - np.swapaxes(P - 0.5, 1, 2))
    w = np.full((C, K), 1.0 / K) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = np.broadcast_to(w, (C, K))
    if w.shape != (C, K):
        raise ValueError(f"weights must have shape ({K},) or ({C}, {K}); got {w.shape}")
    w = w / w.sum(axis=1, keepdims=True)
    s = np.matmul(A, w[..., None])[..., 0]
    R = A - (s[:, :, None] - s[:, None, :])
    ww = w[:, :, None] * w[:, None, :]
    total = (ww * A**2).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (ww * R**2).sum(axis=(1, 2)) / total
    return float(share[0]) if single else share
