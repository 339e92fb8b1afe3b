"""Pure tabular update rules and losses, named after the papers' quantities.

All functions act on log-policies ``l = log pi`` of shape ``(C, K)`` (one row per context), take
win-rate vectors ``g = P @ pi_opp`` of the same shape (exact or estimated), return new arrays and
never touch global state. Each docstring gives the equation it implements; the maths is collected in
``equations.md`` (§3 Nash-MP, §4 baselines). ``log_normalize`` is applied after each line, as the
closed forms are stated up to a per-context constant.
"""

from __future__ import annotations

import numpy as np

from agents.estimators import sample_actions
from nlhf_envs.game import PreferenceGame

__all__ = [
    "log_normalize",
    "softmax",
    "nash_mp_prox_step",
    "mmd_step",
    "nash_md_mixture",
    "nash_md_step",
    "regularized_explicit_step",
    "omwu_step",
    "sppo_step",
    "nash_mp_pg_advantage",
    "softmax_score_gradient",
    "ipo_loss_gradient",
    "inpo_loss_gradient",
    "inpo_pg_fit",
    "TOKEN_ETA_CAP",
    "token_default_eta",
]


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def log_normalize(l: np.ndarray) -> np.ndarray:
    """``l - logsumexp(l)`` along the last axis (so that ``exp(l)`` sums to one).

    A plain-numpy logsumexp (max-shifted), much cheaper per call than SciPy's for small arrays.
    """
    m = l.max(axis=-1, keepdims=True)
    return l - (m + np.log(np.exp(l - m).sum(axis=-1, keepdims=True)))


def softmax(l: np.ndarray) -> np.ndarray:
    """``exp(l) / sum exp(l)`` along the last axis, computed stably."""
    z = np.exp(l - l.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def nash_mp_prox_step(
    l_center: np.ndarray, l_ref: np.ndarray, g: np.ndarray, eta: float, beta: float
) -> np.ndarray:
    """One Nash Mirror Prox step in closed form (Tiapkin et al. 2025, §3; ``equations.md`` §3).

    ``argmax_pi P(pi > pi_opp) - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)`` is

        l_new = (l_k + eta l_ref + (eta / beta) g_{pi_opp}) / (1 + eta),   normalised,

    with ``l_center = l_k = log pi_k`` the prox centre and ``g = g_{pi_opp}``. Nash-MP applies it
    twice per iteration with the same centre: ``pi_opp = pi_k`` gives ``pi_{k+1/2}``, then
    ``pi_opp = pi_{k+1/2}`` gives ``pi_{k+1}``.
    """
    _check_same_shape(l_center=l_center, l_ref=l_ref, g=g)
    return log_normalize((l_center + eta * l_ref + (eta / beta) * g) / (1.0 + eta))


def mmd_step(l: np.ndarray, l_ref: np.ndarray, g: np.ndarray, lr: float, beta: float) -> np.ndarray:
    """Magnetic Mirror Descent (Sokota et al. 2023, Eq. (MMD) with negative-entropy mirror map).

        pi_{t+1} ∝ (pi_t exp(lr g_t) pi_ref^(lr beta))^(1 / (1 + lr beta)),

    i.e. ``l_{t+1} = (l_t + lr g_t + lr beta l_ref) / (1 + lr beta)``. With ``lr = eta / beta``
    this is exactly :func:`nash_mp_prox_step` (``equations.md`` §4).
    """
    _check_same_shape(l=l, l_ref=l_ref, g=g)
    return log_normalize((l + lr * g + lr * beta * l_ref) / (1.0 + lr * beta))


def nash_md_mixture(l: np.ndarray, l_ref: np.ndarray, eta: float, beta: float) -> np.ndarray:
    """Nash-MD's geometric mixture (Munos et al. 2024, §6, Eq. for ``pi^mu_t``).

    pi^mu_t ∝ pi_t^(1 - eta beta) pi_ref^(eta beta).
    """
    _check_same_shape(l=l, l_ref=l_ref)
    return log_normalize((1.0 - eta * beta) * l + eta * beta * l_ref)


def nash_md_step(l_mu: np.ndarray, g_mu: np.ndarray, eta: float) -> np.ndarray:
    """Nash-MD's mirror-descent step (Munos et al. 2024, §6).

    pi_{t+1} ∝ pi^mu_t exp(eta g_{pi^mu_t}).
    """
    _check_same_shape(l_mu=l_mu, g_mu=g_mu)
    return log_normalize(l_mu + eta * g_mu)


def regularized_explicit_step(
    l: np.ndarray, l_ref: np.ndarray, g: np.ndarray, lam: float, beta: float
) -> np.ndarray:
    """Explicit regularised step shared by Online IPO, INPO and EGPO (``equations.md`` §4).

        l_{t+1} = (1 - lam beta) l_t + lam beta l_ref + lam g_t,   normalised.

    Online IPO's exact tabular update (Calandriello et al. 2024, self-play gradient of
    ``P(pi > sg(pi)) - beta KL(pi||pi_ref)`` in the mirror geometry) and the population minimiser of
    INPO's loss (Zhang et al. 2025, Eq. (loss) with ``eta = lam``) are both this map; EGPO (Zhou et
    al. 2025) applies it twice per iteration (extrapolate, then update from ``l_t``).
    """
    _check_same_shape(l=l, l_ref=l_ref, g=g)
    return log_normalize((1.0 - lam * beta) * l + lam * beta * l_ref + lam * g)


def omwu_step(
    l: np.ndarray,
    l_ref: np.ndarray,
    g: np.ndarray,
    g_prev: np.ndarray,
    lam: float,
    beta: float,
) -> np.ndarray:
    """Regularised optimistic multiplicative weights (``equations.md`` §4).

    l_{t+1} = (1 - lam beta) l_t + lam beta l_ref + lam (2 g_t - g_{t-1}).
    """
    _check_same_shape(l=l, l_ref=l_ref, g=g, g_prev=g_prev)
    return log_normalize((1.0 - lam * beta) * l + lam * beta * l_ref + lam * (2.0 * g - g_prev))


def sppo_step(l: np.ndarray, g: np.ndarray, eta: float) -> np.ndarray:
    """SPPO's multiplicative-weights step (Wu et al. 2024, Eq. (SPPO update), no ``pi_ref`` anchor).

    pi_{t+1} ∝ pi_t exp(eta g_{pi_t}).
    """
    _check_same_shape(l=l, g=g)
    return log_normalize(l + eta * g)


# ---------------------------------------------------------------- stochastic (pg-mode) pieces
def nash_mp_pg_advantage(
    outcome: np.ndarray,
    log_ratio_ref: np.ndarray,
    log_ratio_anchor: np.ndarray,
    beta: float,
    eta: float,
) -> np.ndarray:
    """Per-sample advantage of approximate Nash-MP's policy gradient (``equations.md`` §3).

        A(y) = (o - 1/2) - beta log(pi_theta(y)/pi_ref(y)) - (beta/eta) log(pi_theta(y)/pi_k(y)),

    log-ratios detached. ``E_y~pi_theta[A(y) grad log pi_theta(y)]`` is the exact gradient of the
    half-step objective ``P(pi_theta > pi_opp) - beta KL(pi_theta||pi_ref) - (beta/eta)
    KL(pi_theta||pi_k)`` (the constant terms of the KL gradients have zero mean under the score).
    """
    _check_same_shape(o=outcome, ref=log_ratio_ref, anchor=log_ratio_anchor)
    return (outcome - 0.5) - beta * log_ratio_ref - (beta / eta) * log_ratio_anchor


def softmax_score_gradient(
    weights: np.ndarray, actions: np.ndarray, rows: np.ndarray, pi: np.ndarray
) -> np.ndarray:
    """Mean of ``w_i grad_theta log pi_theta(y_i | x_i)`` for a tabular softmax policy.

    ``grad_theta log softmax(theta)(y) = e_y - pi`` in the row of context ``x``.

    Args:
        weights: ``(n,)`` per-sample weights (advantages).
        actions: ``(n,)`` sampled responses ``y_i``.
        rows: ``(n,)`` contexts ``x_i``.
        pi: ``(C, K)`` current policy ``pi_theta``.

    Returns:
        ``(C, K)`` gradient estimate.
    """
    _check_same_shape(weights=weights, actions=actions, rows=rows)
    n = weights.shape[0]
    grad = np.zeros_like(pi)
    np.add.at(grad, (rows, actions), weights)
    w_ctx = np.bincount(rows, weights=weights, minlength=pi.shape[0])
    grad -= w_ctx[:, None] * pi
    return grad / n


def ipo_loss_gradient(
    theta_diff: np.ndarray, ref_diff: np.ndarray, outcome: np.ndarray, beta: float
) -> tuple[float, np.ndarray]:
    """Online IPO loss and its derivative in ``h`` (Calandriello et al. 2024, Eq. (IPO-MD/online)).

        loss = mean_i (h_i - (o_i - 1/2) / beta)^2,
        h_i  = log(pi_theta(y_i)/pi_ref(y_i)) - log(pi_theta(y'_i)/pi_ref(y'_i)),

    with ``theta_diff = log pi_theta(y) - log pi_theta(y')`` and ``ref_diff`` the same for
    ``pi_ref``.
    Returns the loss and ``d loss_i / d h_i`` (``(n,)``; the chain rule to the tabular logits is
    ``e_y - e_y'``).
    """
    _check_same_shape(theta_diff=theta_diff, ref_diff=ref_diff, outcome=outcome)
    resid = theta_diff - ref_diff - (outcome - 0.5) / beta
    return float(np.mean(resid**2)), 2.0 * resid


def inpo_loss_gradient(
    theta_diff: np.ndarray,
    ref_diff: np.ndarray,
    anchor_diff: np.ndarray,
    eta: float,
    beta: float,
) -> tuple[float, np.ndarray]:
    """INPO's loss and its derivative in ``h`` (Zhang et al. 2025, INPO loss; ``equations.md`` §4).

        loss = mean_i (h(y_w, y_l) - eta/2)^2,
        h = log pi_theta(y_w)/pi_theta(y_l) - eta beta log pi_ref(y_w)/pi_ref(y_l)
            - (1 - eta beta) log pi_t(y_w)/pi_t(y_l),

    where each ``*_diff`` is the winner-minus-loser log-probability difference.
    """
    _check_same_shape(theta_diff=theta_diff, ref_diff=ref_diff, anchor_diff=anchor_diff)
    h = theta_diff - eta * beta * ref_diff - (1.0 - eta * beta) * anchor_diff
    resid = h - eta / 2.0
    return float(np.mean(resid**2)), 2.0 * resid


def payoff_lipschitz(P: np.ndarray) -> float:
    """``L = max |P - 1/2|``: the l1 -> l-inf Lipschitz constant of ``pi -> P pi`` (simplex).

    The default steps of the explicit methods are set from it (MMD ``beta / L^2``, OMWU and EGPO
    ``1 / (2 L)``-type steps, Online IPO :func:`default_explicit_step`).
    """
    return float(np.max(np.abs(np.asarray(P) - 0.5)))


def default_explicit_step(P: np.ndarray, beta: float) -> float:
    """``beta / (beta^2 + L^2)`` with ``L = max |P - 1/2|``: the step of the regularised explicit
    update (Online IPO's ``lam`` and INPO's default), stable for the ``beta``-strongly monotone game."""
    L = payoff_lipschitz(P)
    return beta / (beta**2 + L**2)


def harmonic_step(t: int, numerator: float) -> float:
    """``numerator / (t + 2)`` at iteration ``t`` (0-based): Nash-MD's harmonic schedule.

    Munos et al. (2024), Theorem 1: ``eta_t = 2 / (beta (t + 2))`` (``numerator = 2 / beta``); the
    token-level agent's mixture coefficient ``c_t = eta_t beta`` uses ``numerator = eta beta``.
    """
    return numerator / (int(t) + 2)


class TailAverage:
    """Polyak average of the second half of an inner loop's ``steps`` iterates (log-policies).

    The policy-gradient inner loops (Nash-MP's half-steps, INPO's) average the normalised iterates
    of steps ``steps - max(steps // 2, 1)`` onwards and return their normalised mean.
    """

    def __init__(self, steps: int, like: np.ndarray) -> None:
        self.start = steps - max(steps // 2, 1)
        self.total = np.zeros_like(like)
        self.count = 0

    def add(self, step: int, theta: np.ndarray) -> None:
        """Add iterate ``theta`` of inner step ``step`` (0-based) if it lies in the averaged tail."""
        if step >= self.start:
            self.total += theta
            self.count += 1

    def result(self) -> np.ndarray:
        """The normalised mean of the averaged iterates."""
        return log_normalize(self.total / self.count)


def inpo_pg_fit(
    game: PreferenceGame,
    rng: np.random.Generator,
    sampler: np.ndarray,
    theta: np.ndarray,
    l_ref: np.ndarray,
    anchor: np.ndarray,
    eta: float,
    beta: float,
    *,
    inner_steps: int,
    batch_size: int,
    lr: float | None,
    average: bool,
) -> tuple[np.ndarray, float]:
    """SGD on INPO's loss (:func:`inpo_loss_gradient`) from the tabular logits ``theta``.

    Each of ``inner_steps`` steps draws ``batch_size`` contexts, two answers of each from the
    policy ``sampler`` and one preference query each (Zhang et al. 2025, INPO loss; Wu et al.
    2025, MNPO's form with ``anchor`` the weighted history of log-policies and ``sampler`` their
    mixture), and moves ``theta`` by ``lr`` (``None``: ``1 / (8 max sampler)``) times the mean
    gradient, ``e_{y_w} - e_{y_l}`` per pair by the chain rule, then normalises. Returns ``(theta, last loss)``, ``theta`` the
    :class:`TailAverage` of the iterates when ``average``. Draws only from ``rng``.
    """
    C, K, n = game.num_contexts, game.num_actions, batch_size
    lr = lr or 1.0 / (8.0 * sampler.max())
    theta = theta.copy()
    tail, loss = TailAverage(inner_steps, theta), 0.0
    for m in range(inner_steps):
        x = game.sample_contexts(n, rng)
        y = sample_actions(sampler, x, rng)
        y2 = sample_actions(sampler, x, rng)
        o = game.sample(y, y2, rng, contexts=x if C > 1 else None).astype(bool)
        yw, yl = np.where(o, y, y2), np.where(o, y2, y)
        loss, dh = inpo_loss_gradient(
            theta[x, yw] - theta[x, yl],
            l_ref[x, yw] - l_ref[x, yl],
            anchor[x, yw] - anchor[x, yl],
            eta,
            beta,
        )
        grad = np.zeros((C, K))
        np.add.at(grad, (x, yw), dh)
        np.add.at(grad, (x, yl), -dh)
        theta = log_normalize(theta - lr * grad / n)
        if average:
            tail.add(m, theta)
    return (tail.result() if average else theta), loss


#: the largest default step of the token-level MNPO: ``eta beta = 1/3`` (the authors' released
#: ratio) at ``beta = 0.1``, the token games' ``beta`` (:func:`token_default_eta`)
TOKEN_ETA_CAP = 10.0 / 3.0


def token_default_eta(beta: float) -> float:
    """The token-level MNPO's default step: ``eta = min(1 / (3 beta), 10/3)``.

    The authors' released configs mix the reference and the population with ``ratio = eta beta =
    1/3``; for ``beta < 0.1`` that step is capped at its value at ``beta = 0.1``. Why: the exact
    dynamics of the MNPO step (its loss's population minimiser, :func:`agents.mnpo.mnpo_step`) linearised at
    ``pi*`` rotate each mode by ``z = 1 - eta beta + i eta omega`` (``|omega| <= L = max |P - 1/2|``,
    the game's rotation; :func:`linearised_rate`), which contracts only while ``eta`` stays below
    about ``2 beta / (beta^2 + omega^2)``: with ``eta beta`` fixed, ``eta = 1 / (3 beta)`` grows as
    beta falls and the step cycles. On the 256-prompt token worlds at ``beta = 0.03`` the ratio 1/3
    cycles (the cyclic world, history 1 and 3) and the capped step converges; both converge at
    ``beta = 0.1`` (``tests/agents/test_mnpo_default_step.py``). The cap keeps the step stable
    for rotations ``|omega| < sqrt(0.6 beta - beta^2)`` (history 1), not for every game: on
    rock-paper-scissors at ``beta = 0.03`` (``omega = 0.29``) it cycles; a game-aware stable step
    is the tabular agent's default (INPO's ``beta / (beta^2 + L^2)``).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    return min(1.0 / (3.0 * beta), TOKEN_ETA_CAP)
