"""Meta-game statistics of a tournament as pure functions: Wilson intervals, cycles, Nash averaging,
Bradley-Terry ratings."""

from __future__ import annotations

import math

import numpy as np

from nlhf_envs.game import PreferenceGame
from nlhf_envs.solvers import nash_lp


class IntransitivityWarning(UserWarning):
    """The meta-game has a preference cycle: Elo/Bradley-Terry ratings are misleading."""


# ---------------------------------------------------------------------------------- statistics
def wilson_interval(wins: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``wins / n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def has_cycle(M: np.ndarray, margin: float = 0.0) -> bool:
    """Whether the majority relation ``M[i, j] > 1/2 + margin`` contains a directed cycle.

    A directed graph has a cycle iff one of its strongly connected components holds more than one
    node (no self-loops: ``M[i, i] = 1/2``); the components come from
    :func:`scipy.sparse.csgraph.connected_components`.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    beats = np.asarray(M) > 0.5 + margin
    np.fill_diagonal(beats, False)
    _, labels = connected_components(csr_matrix(beats), directed=True, connection="strong")
    return bool(np.bincount(labels).max(initial=0) > 1)


def nash_averaging(M: np.ndarray, *, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-entropy Nash equilibrium of the symmetric meta-game and Nash-averaged scores.

    Balduzzi et al. (2018), §3: with the antisymmetric payoff ``A = M - 1/2`` (``M`` a win-rate
    matrix, ``M + M^T = 1``), a mixture ``p`` is a Nash equilibrium iff ``(A p)_i <= 0`` for every
    ``i``; among them the maximum-entropy one is unique. Its scores ``(A p)_i`` rate every
    participant against the Nash mixture of the population.

    Solved as the convex program ``max H(p)`` s.t. ``A p <= 0``, ``p`` in the simplex (SLSQP from a
    linear-programming solution, :func:`nlhf_envs.solvers.nash_lp`), then support entries below ``tol`` are zeroed.

    Args:
        M: ``(n, n)`` win-rate matrix; it is antisymmetrised as ``(M - M^T) / 2``.
        tol: entries of ``p`` below this are set to zero.

    Returns:
        ``(p, scores)``, both of shape ``(n,)``.

    Raises:
        ValueError: if ``M`` is not a finite square matrix.
    """
    from scipy.optimize import minimize

    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"M must be a non-empty square matrix; got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("M must be finite")
    A = 0.5 * (M - M.T)
    n = A.shape[0]
    if n == 1:
        return np.ones(1), np.zeros(1)
    # one Nash equilibrium by LP (nlhf_envs.solvers.nash_lp on the meta-game) to start from
    try:
        meta = PreferenceGame(A + 0.5, np.full(n, 1.0 / n), beta=1.0, name="meta-game")
        p0 = np.asarray(nash_lp(meta), dtype=np.float64)
    except (ValueError, RuntimeError):  # not a valid game after rounding, or the LP failed
        p0 = np.full(n, 1.0 / n)
    p0 = 0.999 * p0 / p0.sum() + 0.001 / n

    def neg_entropy(p: np.ndarray) -> float:
        q = np.clip(p, 1e-300, None)
        return float(np.sum(q * np.log(q)))

    def grad(p: np.ndarray) -> np.ndarray:
        return np.log(np.clip(p, 1e-300, None)) + 1.0

    out = minimize(
        neg_entropy,
        p0,
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[
            {"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones(n)},
            {"type": "ineq", "fun": lambda p: -(A @ p), "jac": lambda p: -A},
        ],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    p = np.clip(out.x, 0.0, None)
    p[p < tol] = 0.0
    p /= p.sum()
    return p, A @ p


def bradley_terry_ratings(
    wins: np.ndarray, games: np.ndarray, *, iters: int = 2000, prior: float = 0.5
) -> np.ndarray:
    """Elo-scale Bradley-Terry ratings (mean 1500) fitted by minorisation-maximisation.

    ``wins[i, j]`` duels won by ``i`` against ``j`` out of ``games[i, j]``. A small symmetric prior
    (``prior`` virtual wins each way per pair) keeps ratings finite when someone never loses.
    Elo scale: ``P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400))``.
    """
    W = np.asarray(wins, dtype=np.float64) + prior * (np.asarray(games) > 0)
    N = np.asarray(games, dtype=np.float64) + 2 * prior * (np.asarray(games) > 0)
    np.fill_diagonal(W, 0.0)
    np.fill_diagonal(N, 0.0)
    n = W.shape[0]
    s = np.ones(n)
    total_wins = W.sum(axis=1)
    for _ in range(iters):
        denom = (N / (s[:, None] + s[None, :])).sum(axis=1)
        new = total_wins / np.maximum(denom, 1e-300)
        new /= np.exp(np.mean(np.log(np.maximum(new, 1e-300))))
        if np.max(np.abs(np.log(np.maximum(new, 1e-300)) - np.log(s))) < 1e-12:
            s = new
            break
        s = new
    return 1500.0 + 400.0 * np.log10(np.maximum(s, 1e-300))
