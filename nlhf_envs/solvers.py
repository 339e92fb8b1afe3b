"""Exact solvers and metrics for (contextual) preference games. Pure numpy/scipy: no torch.

Every function takes a :class:`~nlhf_envs.game.PreferenceGame` and policies of shape ``(K,)`` or
``(C, K)``; context-dependent quantities are averaged with ``rho``. Formulas follow ``algorithms.md``
§1-2 (Munos et al. 2024; Tiapkin et al. 2025):

* regularised Nash ``pi*_beta(y|x) ∝ pi_ref(y|x) exp(g_{pi*}(y|x) / beta)``;
* exploitability ``Expl_beta(pi) = beta E_x log sum_y pi_ref exp(g_pi / beta) + beta KL(pi||pi_ref) - 1/2``;
* duality gap ``= 2 Expl_beta``;
* span semi-norm ``max_x [max_y d - min_y d]``, ``d = log pi - log pi*_beta``;
* unregularised Nash by linear programming, unregularised exploitability ``max_y g_pi(y) - 1/2``.

These functions never count preference queries: they are oracles for tests and metrics.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve
from scipy.optimize import linprog
from scipy.special import logsumexp, rel_entr

from nlhf_envs.errors import SolverError
from nlhf_envs.game import ArrayLike, PreferenceGame

__all__ = [
    "regularized_nash",
    "NASH_VERIFY_TOL",
    "exploitability",
    "duality_gap",
    "kl_to_nash",
    "span_to_nash",
    "best_response",
    "nash_lp",
    "unregularized_exploitability",
    "entropy",
    "kl",
]


def _policy(game: PreferenceGame, pi: ArrayLike) -> np.ndarray:
    arr = game.as_policy(pi)
    if not np.all(np.isfinite(arr)) or arr.min() < 0:
        raise ValueError("pi must be a finite, non-negative probability vector")
    sums = arr.sum(axis=1)
    if np.max(np.abs(sums - 1.0)) > 1e-6:
        raise ValueError(f"pi must sum to 1 in every context; got sums {sums}")
    return arr


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


#: a returned ``pi*_beta`` is verified to have exploitability at most this (see regularized_nash).
NASH_VERIFY_TOL = 1e-10


def _newton(
    A: np.ndarray, l_ref: np.ndarray, beta: float, l: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped Newton on ``F(l) = beta (l - l_ref) - A softmax(l)`` from ``l``; returns ``(l, F, pi)``."""
    C, K = l.shape

    def residual(l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pi = _softmax_rows(l)
        return beta * (l - l_ref) - np.einsum("cij,cj->ci", A, pi), pi

    F, pi = residual(l)
    merit = (F**2).sum(axis=1)
    eye = np.eye(K)
    for _ in range(max_iter):
        active = np.abs(F).max(axis=1) > tol
        if not active.any():
            break
        # J = beta I - A (diag(pi) - pi pi^T), built without forming the covariance matrix
        J = beta * eye - A * pi[:, None, :] + (A @ pi[..., None]) * pi[:, None, :]
        step = np.zeros_like(F)
        for c in np.flatnonzero(active):  # LAPACK per context: faster than numpy's batched solve
            step[c] = -solve(J[c], F[c], overwrite_a=True, check_finite=False)
        t = np.ones(C)
        for _ in range(40):
            l_new = l + t[:, None] * step
            F_new, pi_new = residual(l_new)
            merit_new = (F_new**2).sum(axis=1)
            # Armijo: the directional derivative of ||F||^2 along the Newton step is -2 ||F||^2
            bad = active & (merit_new > (1.0 - 1e-4 * t) * merit)
            if not bad.any():
                break
            t = np.where(bad, 0.5 * t, t)
        progressed = active & (merit_new < merit)
        if not progressed.any():
            break  # the rounding floor is reached
        keep = progressed[:, None]
        l = np.where(keep, l_new, l)
        F = np.where(keep, F_new, F)
        pi = np.where(keep, pi_new, pi)
        merit = np.where(progressed, merit_new, merit)
    return l, F, pi


def _residual_span(F: np.ndarray) -> np.ndarray:
    """Per-context span ``max_y F - min_y F``: an upper bound on the exploitability (see below)."""
    return F.max(axis=1) - F.min(axis=1)


def regularized_nash(
    game: PreferenceGame, *, tol: float = 1e-14, max_iter: int = 100, use_cache: bool = True
) -> np.ndarray:
    """The beta-regularised Nash equilibrium ``pi*_beta`` of ``game`` (unique and symmetric).

    With ``A = P - 1/2`` (antisymmetric; ``P pi = 1/2 + A pi`` on the simplex), ``pi*_beta`` is
    ``softmax(l*)`` for the unique root of ``F(l) = beta (l - l_ref) - A softmax(l)``: at the root,
    ``pi ∝ pi_ref exp(A pi / beta) ∝ pi_ref exp(g_pi / beta)``, the fixed point of ``algorithms.md`` §1.
    The Jacobian ``J = beta I - A (diag(pi) - pi pi^T)`` has eigenvalues ``beta + i s`` (``A`` times a
    PSD matrix is similar to an antisymmetric one), so it is never singular, and the Newton direction
    ``-J^{-1} F`` is a descent direction of ``||F||^2``: damped Newton with Armijo backtracking
    converges, and quadratically near the root. Contexts are solved together (batched).

    For small ``beta`` the root lies far from ``l_ref`` (``l* - l_ref = A pi* / beta``) and the
    backtracking stalls on the rounding floor of ``||F||^2`` long before it; the solver then
    follows a continuation in beta: it solves for ``beta_0 = 1 > beta_1 > ... > beta`` (factor
    ``sqrt(10)`` per step), warm-starting each from the previous root rescaled to the new beta
    (``l_ref + (l - l_ref) beta_prev / beta_next``, exact when ``pi*`` does not move).

    Verification: ``pi = softmax(l)`` is the exact regularised best response to itself under the
    perturbed win rates ``g_pi + F(l)``, so ``Expl_beta(pi) <= max_x span_y F(l)(y|x)``. The answer
    is returned only when this bound is at most :data:`NASH_VERIFY_TOL` (``1e-10``) in every
    context: e.g. uniform ``K = 10`` and skew-Gaussian ``K = 100`` games down to ``beta = 1e-6``,
    and K up to 2000 at ``beta = 1e-3``.

    Args:
        game: the game.
        tol: stop when ``max |F(l)| <= tol`` in every context.
        max_iter: maximal number of Newton steps (per value of beta on the continuation path).
        use_cache: reuse (and store) the solution cached on the game object.

    Returns:
        ``(K,)`` for a non-contextual game, else ``(C, K)``.

    Raises:
        SolverError: naming beta, when the solution cannot be verified (it is never returned then).
    """
    if use_cache and "nash" in game._cache:
        return game.squeeze(game._cache["nash"]).copy()
    beta = game.beta
    l_ref = np.log(game.pi_ref)
    A = game.P - 0.5
    l, F, pi = _newton(A, l_ref, beta, l_ref.copy(), tol, max_iter)
    failed = ~(_residual_span(F) <= NASH_VERIFY_TOL)  # also catches NaN
    if failed.any():
        # continuation in beta for the contexts the direct solve did not verify
        idx = np.flatnonzero(failed)
        A_c, ref_c = A[idx], l_ref[idx]
        steps = max(1, int(np.ceil(2 * np.log10(max(1.0, 1.0 / beta)))))
        betas = np.geomspace(max(1.0, beta), beta, steps + 1)
        lc, Fc, pic = _newton(A_c, ref_c, float(betas[0]), ref_c.copy(), tol, max_iter)
        for prev, b in zip(betas[:-1], betas[1:], strict=True):
            start = ref_c + (lc - ref_c) * (prev / b)
            lc, Fc, pic = _newton(A_c, ref_c, float(b), start, tol, max_iter)
        F = F.copy()
        pi = pi.copy()
        F[idx], pi[idx] = Fc, pic
        bound = _residual_span(F)
        if not np.all(bound <= NASH_VERIFY_TOL):
            worst = int(np.nanargmax(np.where(np.isfinite(bound), bound, np.inf)))
            raise SolverError(
                f"regularized_nash did not converge for beta={beta:g} on {game.name or 'the game'} "
                f"(K={game.shape[1]}): residual bound on the exploitability {bound[worst]:.3g} "
                f"> {NASH_VERIFY_TOL:g} in context {worst} after {max_iter} Newton steps per "
                "continuation stage; use a larger beta"
            )
    if use_cache:
        game._cache["nash"] = pi.copy()
    return game.squeeze(pi)


def _nash_all(game: PreferenceGame, nash: ArrayLike | None) -> np.ndarray:
    if nash is None:
        nash = regularized_nash(game)
    return game.as_policy(nash)


def kl(p: ArrayLike, q: ArrayLike) -> np.ndarray:
    """Row-wise ``KL(p || q)`` (``inf`` where ``q = 0 < p``)."""
    return rel_entr(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)).sum(axis=-1)


def entropy(game: PreferenceGame, pi: ArrayLike) -> float:
    """Shannon entropy (nats) of ``pi``, averaged over contexts with ``rho``."""
    arr = _policy(game, pi)
    ent = -rel_entr(arr, np.ones_like(arr)).sum(axis=1)
    return float(game.rho @ ent)


def exploitability(game: PreferenceGame, pi: ArrayLike) -> float:
    """Regularised exploitability ``max_pi' P_beta(pi' > pi) - 1/2`` (>= 0, zero iff pi = pi*_beta).

    Closed form (``algorithms.md`` §2):
    ``beta E_x log sum_y pi_ref(y|x) exp(g_pi(y|x)/beta) + beta E_x KL(pi||pi_ref) - 1/2``.
    """
    arr = _policy(game, pi)
    g = game.win_rates_all(arr)
    beta = game.beta
    lse = beta * logsumexp(g / beta, b=game.pi_ref, axis=1)
    per_ctx = lse + beta * kl(arr, game.pi_ref) - 0.5
    return float(game.rho @ per_ctx)


def duality_gap(game: PreferenceGame, pi: ArrayLike) -> float:
    """``max_pi' P_beta(pi' > pi) - min_pi' P_beta(pi > pi')``, which equals ``2 Expl_beta(pi)``."""
    return 2.0 * exploitability(game, pi)


def kl_to_nash(game: PreferenceGame, pi: ArrayLike, nash: ArrayLike | None = None) -> float:
    """``E_x KL(pi*_beta || pi)``, the quantity Nash-MP's theorem bounds (Tiapkin et al. 2025, Thm 1)."""
    star = _nash_all(game, nash)
    return float(game.rho @ kl(star, _policy(game, pi)))


def span_to_nash(game: PreferenceGame, pi: ArrayLike, nash: ArrayLike | None = None) -> float:
    """Span semi-norm ``max_x [max_y d(y|x) - min_y d(y|x)]`` of ``d = log pi - log pi*_beta``."""
    star = _nash_all(game, nash)
    arr = _policy(game, pi)
    with np.errstate(divide="ignore"):
        d = np.log(arr) - np.log(star)
    return float(np.max(d.max(axis=1) - d.min(axis=1)))


def best_response(game: PreferenceGame, pi: ArrayLike) -> np.ndarray:
    """Best response to ``pi`` in the regularised game: ``pi_ref exp(g_pi / beta)``, normalised."""
    arr = _policy(game, pi)
    logits = np.log(game.pi_ref) + game.win_rates_all(arr) / game.beta
    return game.squeeze(_softmax_rows(logits))


def nash_lp(game: PreferenceGame) -> np.ndarray:
    """An unregularised symmetric Nash equilibrium by linear programming, per context.

    Solves ``min_{pi, v} v`` subject to ``(P - 1/2) pi <= v 1``, ``pi`` in the simplex; the value is
    0 for a symmetric constant-sum game and any solution is a Nash equilibrium (not necessarily the
    maximum-entropy one when several exist).
    """
    C, K = game.shape
    out = np.empty((C, K))
    c = np.zeros(K + 1)
    c[-1] = 1.0
    A_eq = np.ones((1, K + 1))
    A_eq[0, -1] = 0.0
    bounds = [(0.0, None)] * K + [(None, None)]
    for x in range(C):
        A_ub = np.hstack([game.P[x] - 0.5, -np.ones((K, 1))])
        res = linprog(c, A_ub=A_ub, b_ub=np.zeros(K), A_eq=A_eq, b_eq=[1.0], bounds=bounds)
        if res.status != 0:
            raise RuntimeError(f"linear program failed in context {x}: {res.message}")
        pi = np.clip(res.x[:K], 0.0, None)
        out[x] = pi / pi.sum()
    return game.squeeze(out)


def unregularized_exploitability(game: PreferenceGame, pi: ArrayLike) -> float:
    """``E_x max_y g_pi(y|x) - 1/2``: how much a best response beats ``pi`` without regularisation."""
    arr = _policy(game, pi)
    g = game.win_rates_all(arr)
    return float(game.rho @ g.max(axis=1) - 0.5)
