"""Design (C) of approximate Nash-MP on tabular softmax policies: the exact-gradient analogue of the
token agent's ``variant="ema"`` (:mod:`agents.text.nash_mp`), for checking its fixed point.

Nash-MP's prox step (Tiapkin et al., "Accelerating Nash Learning from Human Feedback via Mirror
Prox", arXiv 2505.19731, the two-step update of Nash-MP) maximises, over ``pi``,

    P(pi > pi_opp) - beta KL(pi || pi_ref) - (beta / eta) KL(pi || pi_k)

with the prox centre ``pi_k`` and opponent ``pi_k`` (first half-step) or ``pi_{k+1/2}`` (second).
The paper's practical variant for language models replaces the prox steps by policy-gradient steps
and keeps an exponential moving average (EMA) of the parameters for stability; which policy the
average stands for is not published in a form we could check. Design (C) is this library's reading,
with the EMA policy ``pi_bar = softmax(theta_bar)`` standing for *both* the prox centre and the
opponent (as Munos et al., "Nash Learning from Human Feedback", ICML 2024, §7, use a parameter EMA
as the opponent of Nash-EMA). One iteration is one policy-gradient step on the half-step objective
against ``pi_bar`` followed by the EMA update:

    A(y|x)    = g_bar(y|x) - 1/2 - beta log(pi_theta/pi_ref)(y|x) - (beta/eta) log(pi_theta/pi_bar)(y|x)
    theta    <- theta + lr * E_{y ~ pi_theta}[A(y|x) grad_theta log pi_theta(y|x)]
    theta_bar <- (1 - kappa) theta_bar + kappa theta

with ``g_bar = P pi_bar`` (the win rates against the opponent). For softmax logits the expected
policy gradient is ``pi (A - E_pi A)`` per context (:func:`ema_policy_gradient`). There is no
half-step: the extrapolation of mirror prox is dropped, and the moving anchor plays the role of
``pi_k`` (a slowly moving prox centre).

Fixed point. At a rest point ``theta_bar = theta``, so the anchor term vanishes and ``pi (A - E_pi A)
= 0`` says ``g_pi - beta log(pi/pi_ref)`` is constant over the support: ``pi ∝ pi_ref exp(g_pi /
beta)``, the beta-regularised Nash equilibrium ``pi*_beta`` (the only one). The anchor changes the
path, never the fixed point; ``tests/agents/test_nash_mp_ema.py`` checks that the iteration reaches
:func:`nlhf_envs.solvers.regularized_nash` on small games.
"""

from __future__ import annotations

import numpy as np

from agents.updates import log_normalize, softmax
from nlhf_envs.game import PreferenceGame

__all__ = ["ema_advantage", "ema_policy_gradient", "nash_mp_ema_step", "run_nash_mp_ema"]


def ema_advantage(
    log_pi: np.ndarray,
    log_ref: np.ndarray,
    log_bar: np.ndarray,
    g_bar: np.ndarray,
    *,
    beta: float,
    eta: float,
) -> np.ndarray:
    """``A = g_bar - 1/2 - beta log(pi/pi_ref) - (beta/eta) log(pi/pi_bar)``, shape ``(C, K)``.

    The expected advantage of the token loss :func:`agents.text.losses.nash_mp_pg_loss` with
    opponent and anchor ``pi_bar`` (``o - 1/2`` averages to ``g_bar - 1/2``).

    Args:
        log_pi: ``(C, K)`` log-probabilities of ``pi_theta``.
        log_ref: ``(C, K)`` log-probabilities of ``pi_ref``.
        log_bar: ``(C, K)`` log-probabilities of the EMA policy ``pi_bar``.
        g_bar: ``(C, K)`` win rates ``P(y > pi_bar | x)``.
        beta: regularisation ``beta > 0``.
        eta: prox step ``eta > 0``.
    """
    if not (beta > 0 and eta > 0):
        raise ValueError(f"beta and eta must be > 0; got beta={beta}, eta={eta}")
    return g_bar - 0.5 - beta * (log_pi - log_ref) - (beta / eta) * (log_pi - log_bar)


def ema_policy_gradient(log_pi: np.ndarray, advantage: np.ndarray) -> np.ndarray:
    """Expected policy gradient ``E_{y~pi}[A(y) grad log pi(y)] = pi (A - E_pi A)`` on softmax
    logits, per context; shape ``(C, K)``."""
    pi = np.exp(log_pi)
    return pi * (advantage - (pi * advantage).sum(-1, keepdims=True))


def nash_mp_ema_step(
    game: PreferenceGame,
    theta: np.ndarray,
    theta_bar: np.ndarray,
    *,
    eta: float,
    lr: float,
    kappa: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One design-(C) iteration with the exact expected gradient (see the module docstring).

    Args:
        game: the preference game (its ``P``, ``pi_ref`` and ``beta``; no query is counted).
        theta: ``(C, K)`` logits of ``pi_theta``.
        theta_bar: ``(C, K)`` logits of the EMA policy ``pi_bar``.
        eta: prox step ``eta > 0`` (the anchor's weight is ``beta / eta``).
        lr: gradient step on the logits (``> 0``).
        kappa: EMA rate in ``(0, 1]``.

    Returns:
        ``(theta, theta_bar)`` after the step, logits normalised per context.
    """
    if not lr > 0 or not 0 < kappa <= 1:
        raise ValueError(f"lr must be > 0 and kappa in (0, 1]; got lr={lr}, kappa={kappa}")
    log_pi, log_bar = log_normalize(theta), log_normalize(theta_bar)
    g_bar = game.win_rates_all(softmax(log_bar))
    log_ref = np.log(np.asarray(game.pi_ref, dtype=np.float64))
    adv = ema_advantage(log_pi, log_ref, log_bar, g_bar, beta=game.beta, eta=eta)
    new = log_normalize(log_pi + lr * ema_policy_gradient(log_pi, adv))
    return new, log_normalize((1.0 - kappa) * log_bar + kappa * new)


def run_nash_mp_ema(
    game: PreferenceGame, iterations: int, *, eta: float, lr: float, kappa: float
) -> np.ndarray:
    """``iterations`` design-(C) steps from ``theta = theta_bar = log pi_ref``; returns ``pi_theta``
    as a ``(C, K)`` probability table."""
    theta = np.log(np.asarray(game.pi_ref, dtype=np.float64)).reshape(game.shape)
    theta_bar = theta.copy()
    for _ in range(int(iterations)):
        theta, theta_bar = nash_mp_ema_step(game, theta, theta_bar, eta=eta, lr=lr, kappa=kappa)
    return softmax(theta)
