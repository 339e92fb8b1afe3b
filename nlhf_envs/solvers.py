"""Exact solvers and metrics for (contextual) preference games. Pure numpy/scipy: no torch.

Every function takes a :class:`~nlhf_envs.game.PreferenceGame` and policies of shape ``(K,)`` or
``(C, K)``; context-dependent quantities are averaged with ``rho``. Formulas follow ``equations.md``
§1-2 (Munos et al. 2024; Tiapkin et al. 2025):

* regularised Nash ``pi*_beta(y|x) ∝ pi_ref(y|x) exp(g_{pi*}(y|x) / beta)``;
* exploitability ``Expl_beta(pi) = beta E_x log sum_y pi_ref exp(g_pi / beta) + beta KL(pi||pi_ref) - 1/2``;
* duality gap ``= 2 Expl_beta``, and the multiplayer duality gap of a population of ``n`` policies
  (Wu et al. 2025), which is ``2 Expl_beta(pi)`` when every seat plays ``pi``;
* span semi-norm ``max_x [max_y d - min_y d]``, ``d = log pi - log pi*_beta``;
* unregularised Nash by linear programming, unregularised exploitability ``max_y g_pi(y) - 1/2``.

These functions never count preference queries: they are oracles for tests and metrics.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import numpy as np
from scipy.linalg import solve
from scipy.optimize import linprog
from scipy.special import logsumexp, rel_entr

from nlhf_envs.errors import SolverError
from nlhf_envs.game import ArrayLike, PreferenceGame

__all__ = [
    "regularized_nash",
    "cached_nash",
    "NASH_VERIFY_TOL",
    "DENSE_MAX_K",
    "exploitability",
    "duality_gap",
    "multiplayer_duality_gap",
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


Residual = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Direction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _damped_newton(
    residual: Residual, direction: Direction, l: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Newton loop both solver paths share: per context, a step from ``direction(F, pi,
    merit, active)``, an Armijo backtracking line search on ``||F||^2`` and a stop once every
    context has ``max |F| <= tol`` or no context makes progress (the rounding floor).

    Returns ``(l, F, pi)``.
    """
    C = l.shape[0]
    F, pi = residual(l)
    merit = (F**2).sum(axis=1)
    for _ in range(max_iter):
        active = np.abs(F).max(axis=1) > tol
        if not active.any():
            break
        step = direction(F, pi, merit, active)
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


def _newton(
    A: np.ndarray, l_ref: np.ndarray, beta: float, l: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped Newton on ``F(l) = beta (l - l_ref) - A softmax(l)`` from ``l``; returns ``(l, F, pi)``."""
    K = l.shape[1]

    def residual(l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pi = _softmax_rows(l)
        return beta * (l - l_ref) - np.matmul(A, pi[..., None])[..., 0], pi

    eye = np.eye(K)

    def direction(
        F: np.ndarray, pi: np.ndarray, merit: np.ndarray, active: np.ndarray
    ) -> np.ndarray:
        # J = beta I - A (diag(pi) - pi pi^T), built without forming the covariance matrix
        J = beta * eye - A * pi[:, None, :] + (A @ pi[..., None]) * pi[:, None, :]
        step = np.zeros_like(F)
        for c in np.flatnonzero(active):  # LAPACK per context: faster than numpy's batched solve
            step[c] = -solve(J[c], F[c], overwrite_a=True, check_finite=False)
        return step

    return _damped_newton(residual, direction, l, tol, max_iter)


#: ``regularized_nash(method="auto")`` uses the dense LU path up to this many responses and the
#: matrix-free Newton-Krylov path above it (when ``beta K >= 1``; see regularized_nash).
DENSE_MAX_K = 256
#: in ``"auto"`` mode, a Krylov solve that cannot be verified (very small beta, where CG on the
#: squared system meets the rounding floor) is redone densely up to this many responses.
DENSE_FALLBACK_MAX_K = 4096


def _matvec(P: np.ndarray, v: np.ndarray, ctx: np.ndarray | None) -> np.ndarray:
    """``(P_x v_x)_x`` for the contexts ``ctx`` of ``P`` (all when ``None``), through BLAS.

    ``P[ctx]`` would copy K x K matrices; the selected contexts are multiplied one by one instead.
    """
    if ctx is None:
        if P.shape[0] == 1:
            return (P[0] @ v[0])[None]
        return np.matmul(P, v[..., None])[..., 0]
    return np.stack([P[c] @ v[i] for i, c in enumerate(ctx)])


def _krylov_step(
    P: np.ndarray,
    ctx: np.ndarray | None,
    pi: np.ndarray,
    beta: float,
    r: np.ndarray,
    rtol: np.ndarray,
    max_cg: int,
) -> np.ndarray:
    """Inexact solve of ``J s = r``, ``J = beta I - A D``, ``D = diag(pi) - pi pi^T``, matrix-free.

    With ``q = sqrt(pi)`` (a unit vector), ``D = B B^T`` for ``B = diag(q) (I - q q^T)``, and
    ``S = B^T A B`` is antisymmetric. For ``w = B^T s`` the system reads ``(beta I - S) w = B^T r``;
    since ``(beta I - S)(beta I + S) = beta^2 I + S^T S`` (symmetric positive definite, eigenvalues
    ``>= beta^2``), ``w = (beta I + S) z`` with ``(beta^2 I + S^T S) z = B^T r`` solved by conjugate
    gradients, and then ``s = (r + A B w) / beta``. Only products of ``P`` with vectors are formed:
    ``B v`` sums to zero, so ``A B v = P B v`` (the ``- sum / 2`` term is kept for rounding).
    CG stops per context when its residual is below ``rtol * ||B^T r||``; the caller's line search
    and verification do not trust this step blindly.
    """
    q = np.sqrt(pi)

    def apply_B(v: np.ndarray) -> np.ndarray:
        return q * (v - q * (q * v).sum(axis=1, keepdims=True))

    def apply_Bt(u: np.ndarray) -> np.ndarray:
        qu = q * u
        return qu - q * (pi * u).sum(axis=1, keepdims=True)  # (I - q q^T)(q * u)

    def apply_AB(v: np.ndarray) -> np.ndarray:
        x = apply_B(v)
        return _matvec(P, x, ctx) - 0.5 * x.sum(axis=1, keepdims=True)

    def apply_S(v: np.ndarray) -> np.ndarray:
        return apply_Bt(apply_AB(v))

    b = apply_Bt(r)
    z = np.zeros_like(b)
    res = b.copy()
    d = res.copy()
    rr = (res * res).sum(axis=1)
    target = (rtol**2) * rr
    beta2 = beta * beta
    for _ in range(max_cg):
        live = rr > target
        if not live.any():
            break
        Sd = apply_S(d)
        Md = beta2 * d - apply_S(Sd)  # (beta^2 I - S^2) d = (beta^2 I + S^T S) d
        dMd = (d * Md).sum(axis=1)
        alpha = np.where(live & (dMd > 0), rr / np.where(dMd > 0, dMd, 1.0), 0.0)
        z += alpha[:, None] * d
        res -= alpha[:, None] * Md
        rr_new = (res * res).sum(axis=1)
        gamma = np.where(live, rr_new / np.where(rr > 0, rr, 1.0), 0.0)
        d = np.where(live[:, None], res + gamma[:, None] * d, d)
        rr = np.where(live, rr_new, rr)
    w = beta * z + apply_S(z)
    return (r + apply_AB(w)) / beta


def _newton_krylov(
    P: np.ndarray,
    ctx: np.ndarray | None,
    l_ref: np.ndarray,
    beta: float,
    l: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_newton` without the Jacobian: the same residual, line search and stopping rule.

    ``A = P - 1/2`` is never formed: ``A pi = P pi - sum(pi) / 2``. The Newton direction comes from
    :func:`_krylov_step` with the forcing term ``min(0.1, max |F|)`` (inexact Newton, superlinear
    near the root); ``ctx`` selects contexts of ``P`` without copying them.
    """
    K = l.shape[1]

    def residual(l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pi = _softmax_rows(l)
        Api = _matvec(P, pi, ctx) - 0.5 * pi.sum(axis=1, keepdims=True)
        return beta * (l - l_ref) - Api, pi

    max_cg = min(max(4 * K, 50), 500)

    def direction(
        F: np.ndarray, pi: np.ndarray, merit: np.ndarray, active: np.ndarray
    ) -> np.ndarray:
        rtol = np.minimum(0.1, np.sqrt(merit))
        step = _krylov_step(P, ctx, pi, beta, -F, rtol, max_cg)
        step[~active] = 0.0
        return step

    return _damped_newton(residual, direction, l, tol, max_iter)


def _residual_span(F: np.ndarray) -> np.ndarray:
    """Per-context span ``max_y F - min_y F``: an upper bound on the exploitability (see below)."""
    return F.max(axis=1) - F.min(axis=1)


def _solve_nash(game: PreferenceGame, krylov: bool, tol: float, max_iter: int) -> np.ndarray:
    """``(C, K)`` verified ``pi*_beta`` by the dense or Krylov Newton path (see regularized_nash)."""
    beta = game.beta
    l_ref = np.log(game.pi_ref)
    if krylov:
        P = game.P

        def solve(idx, b, start):  # matrix-free: only P itself, no K x K temporary
            return _newton_krylov(
                P, idx, l_ref if idx is None else l_ref[idx], b, start, tol, max_iter
            )

    else:
        A = game.P - 0.5

        def solve(idx, b, start):
            return _newton(
                A if idx is None else A[idx],
                l_ref if idx is None else l_ref[idx],
                b,
                start,
                tol,
                max_iter,
            )

    l, F, pi = solve(None, beta, l_ref.copy())
    failed = ~(_residual_span(F) <= NASH_VERIFY_TOL)  # also catches NaN
    if failed.any():
        # continuation in beta for the contexts the direct solve did not verify
        idx = np.flatnonzero(failed)
        ref_c = l_ref[idx]
        steps = max(1, int(np.ceil(2 * np.log10(max(1.0, 1.0 / beta)))))
        betas = np.geomspace(max(1.0, beta), beta, steps + 1)
        lc, Fc, pic = solve(idx, float(betas[0]), ref_c.copy())
        for prev, b in zip(betas[:-1], betas[1:], strict=True):
            start = ref_c + (lc - ref_c) * (prev / b)
            lc, Fc, pic = solve(idx, float(b), start)
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
    return pi


def regularized_nash(
    game: PreferenceGame,
    *,
    tol: float = 1e-14,
    max_iter: int = 100,
    use_cache: bool = True,
    method: str = "auto",
) -> np.ndarray:
    """The beta-regularised Nash equilibrium ``pi*_beta`` of ``game`` (unique and symmetric).

    With ``A = P - 1/2`` (antisymmetric; ``P pi = 1/2 + A pi`` on the simplex), ``pi*_beta`` is
    ``softmax(l*)`` for the unique root of ``F(l) = beta (l - l_ref) - A softmax(l)``: at the root,
    ``pi ∝ pi_ref exp(A pi / beta) ∝ pi_ref exp(g_pi / beta)``, the fixed point of ``equations.md`` §1.
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

    Above :data:`DENSE_MAX_K` responses (and ``beta K >= 1``) the Newton step is matrix-free (inexact Newton-Krylov,
    Dembo, Eisenstat & Steihaug 1982; Kelley, "Iterative Methods for Linear and Nonlinear
    Equations", 1995): :func:`_krylov_step` solves ``J s = -F`` by conjugate gradients on a
    symmetric positive definite form of ``J``, with Jacobian-vector products that cost one product
    with ``P`` each, so a step is O(K^2) instead of O(K^3) and needs no K x K array besides ``P``
    (K = 10,000 fits where the dense path would hold three). The line search, stopping rule,
    continuation and verification are the same; CG on the squared system loses accuracy for very
    small ``beta``, where an unverified Krylov answer is redone densely when ``K <=``
    :data:`DENSE_FALLBACK_MAX_K` (else :class:`SolverError`).

    Args:
        game: the game.
        tol: stop when ``max |F(l)| <= tol`` in every context.
        max_iter: maximal number of Newton steps (per value of beta on the continuation path).
        use_cache: reuse (and store) the solution in the solver's cache: a weak map from game
            objects to their solution, keyed by the game's arrays (immutable) and ``beta``, so a
            changed ``beta`` is solved again and the game object carries no solver state.
        method: ``"dense"`` (Newton with an LU solve of the K x K Jacobian, O(K^3) per step),
            ``"krylov"`` (matrix-free Newton-Krylov: Jacobian-vector products and conjugate
            gradients, O(K^2) per product, no K x K array besides ``P``) or ``"auto"``: Krylov
            when ``K >`` :data:`DENSE_MAX_K` and ``beta K >= 1`` (CG needs more products as beta
            shrinks; below that the LU path was faster in our measurements) or ``K >``
            :data:`DENSE_FALLBACK_MAX_K`, else dense. Both verify the same bound.

    Returns:
        ``(K,)`` for a non-contextual game, else ``(C, K)``.

    Raises:
        SolverError: naming beta, when the solution cannot be verified (it is never returned then).
    """
    if method not in ("auto", "dense", "krylov"):
        raise ValueError(f"method must be 'auto', 'dense' or 'krylov'; got {method!r}")
    key = _nash_key(game)
    cached = _NASH_CACHE.get(game) if use_cache else None
    if cached is not None and cached[0] == key:
        return game.squeeze(cached[1]).copy()
    K = game.num_actions
    if method == "auto" and K > DENSE_MAX_K and (game.beta * K >= 1.0 or K > DENSE_FALLBACK_MAX_K):
        try:
            pi = _solve_nash(game, True, tol, max_iter)
        except SolverError:
            if K > DENSE_FALLBACK_MAX_K:
                raise
            pi = _solve_nash(game, False, tol, max_iter)  # tiny beta: LU copes with cond(J)
    else:
        pi = _solve_nash(game, method == "krylov", tol, max_iter)
    if use_cache:
        _NASH_CACHE[game] = (key, pi.copy())
    return game.squeeze(pi)


#: game -> (key, solution): the solver's memo (weak: it never keeps a game alive)
_NASH_CACHE: weakref.WeakKeyDictionary[PreferenceGame, tuple[tuple, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def _nash_key(game: PreferenceGame) -> tuple:
    """What the solution depends on: the (read-only) arrays' identities and ``beta``."""
    return (id(game.P), id(game.pi_ref), id(game.rho), float(game.beta))


def cached_nash(game: PreferenceGame) -> np.ndarray | None:
    """The cached solution of ``game`` (``(C, K)``), or ``None`` when it is not cached."""
    cached = _NASH_CACHE.get(game)
    return None if cached is None or cached[0] != _nash_key(game) else cached[1].copy()


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

    Closed form (``equations.md`` §2):
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


def multiplayer_duality_gap(game: PreferenceGame, population: Sequence[ArrayLike]) -> float:
    """Duality gap of a population ``(pi_1, ..., pi_n)`` in the beta-regularised n-player game.

    In the n-player preference game of Wu et al. ("Multiplayer Nash Preference Optimization",
    arXiv 2509.23102, 2025; the game of :mod:`nlhf_envs.multiplayer`) seat ``i`` is paid its
    mean regularised preference against the others,

        J(pi_i, pi_{-i}) = 1/(n-1) sum_{j != i} P_beta(pi_i > pi_j),
        P_beta(pi > pi') = P(pi > pi') - beta KL(pi || pi_ref) + beta KL(pi' || pi_ref).

    Wu et al. measure distance from equilibrium by a multiplayer duality gap. We use the reading
    that extends the two-player duality gap term by term (this definition is ours, written from the
    two-player one, not transcribed from the paper): for a policy ``pi``,
    ``max_{pi'} J(pi', (pi, ..., pi)) - min_{pi_2..pi_n} J(pi, (pi_2, ..., pi_n))``, what a best
    responder gains against a population of ``pi`` plus what ``pi`` loses against the worst
    population. For a population we take seat ``i``'s gap with the actual others in place of the
    copies of ``pi`` and average over the seats:

        DG(pi_1..pi_n) = 1/n sum_i [ max_{pi'} J(pi', pi_{-i}) - min_{pi'_{-i}} J(pi_i, pi'_{-i}) ].

    Both terms are closed-form (``equations.md`` §2): with ``gbar_i = 1/(n-1) sum_{j != i} g_{pi_j}``
    the win rates against the others' mixture,

        max_{pi'} J(pi', pi_{-i}) = beta E_x log sum_y pi_ref exp(gbar_i / beta)
                                    + beta/(n-1) sum_{j != i} E_x KL(pi_j || pi_ref),
        min_{pi'_{-i}} J(pi_i, pi'_{-i}) = 1/2 - Expl_beta(pi_i)

    (the worst opponents each minimise the same two-player term). Hence ``DG >= 0``;
    ``DG = 2 Expl_beta(pi)`` when every seat plays ``pi`` (Wu et al.'s gap, for every ``n``),
    ``DG = Expl_beta(pi_1) + Expl_beta(pi_2)`` for ``n = 2`` (the two-player duality gap
    ``max_{pi'} P_beta(pi' > pi_2) - min_{pi'} P_beta(pi_1 > pi')`` of the profile), and
    ``DG = 0`` iff every seat plays ``pi*_beta`` (the properties any such gap must have; the tests
    check each).

    Args:
        game: the game (``beta``, ``pi_ref``, ``rho`` as in :func:`exploitability`).
        population: ``n >= 2`` policies, each of shape ``(K,)`` or ``(C, K)`` (a ``(n, K)`` or
            ``(n, C, K)`` array is read as ``n`` policies).

    Returns:
        The gap (a float ``>= 0`` up to rounding).

    Raises:
        ValueError: for fewer than two policies or a policy that is not a distribution.
    """
    pols = [_policy(game, pi) for pi in population]
    n = len(pols)
    if n < 2:
        raise ValueError(f"population must hold at least 2 policies (one per seat); got {n}")
    beta = game.beta
    g = np.stack([game.win_rates_all(pi) for pi in pols])  # (n, C, K)
    kls = np.stack([kl(pi, game.pi_ref) for pi in pols])  # (n, C)
    g_sum, kl_sum = g.sum(axis=0), kls.sum(axis=0)
    total = 0.0
    for i in range(n):
        g_others = (g_sum - g[i]) / (n - 1)
        best = beta * logsumexp(g_others / beta, b=game.pi_ref, axis=1)
        best = best + beta * (kl_sum - kls[i]) / (n - 1)
        worst = 0.5 - exploitability(game, pols[i])
        total += float(game.rho @ best) - worst
    return total / n


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
