"""Multiplayer Nash Preference Optimization (MNPO): Wu et al., "Multiplayer Nash Preference
Optimization" (arXiv 2509.23102, 2025); ``equations.md`` §4 (INPO, of which it is the n-player form).

MNPO casts alignment as an ``n``-player game: the policy competes against a population of
opponents (in the paper's time-dependent form, its own last ``H = n - 1`` iterates
``pi_t, ..., pi_{t-H+1}`` with weights ``lambda_0, ..., lambda_{H-1}``, non-negative and summing to
one) while being regularised toward ``pi_ref``. Each iteration minimises, over ``pi_theta``, the
squared loss of the authors' code on pairs ``y, y'`` from the population mixture
``mu_t = sum_j lambda_j pi_{t-j}``, ranked by one preference query (winner ``y_w``, loser ``y_l``):

    loss = (h(y_w, y_l) - eta/2)^2,
    h = log pi_theta(y_w)/pi_theta(y_l) - eta beta log pi_ref(y_w)/pi_ref(y_l)
        - (1 - eta beta) sum_j lambda_j log pi_{t-j}(y_w)/pi_{t-j}(y_l).

Its population minimiser (the least-squares fit of ``f(y) - f(y')`` to ``eta (P(y > y') - 1/2)``
under ``mu_t x mu_t`` is ``f = eta g_{mu_t}``, as for INPO) is the multiplicative-weights step
against the population,

    l_{t+1} = (1 - eta beta) sum_j lambda_j l_{t-j} + eta beta l_ref + eta sum_j lambda_j g_{pi_{t-j}},

(:func:`mnpo_step`; ``g`` is linear, so the last term is ``eta g_{mu_t}``, one win-rate evaluation).
With ``H = 1`` this is INPO's step exactly (Zhang et al. 2025), and its fixed points, whatever the
weights, solve ``pi ∝ pi_ref exp(g_pi / beta)``: the beta-regularised Nash equilibrium.

Modes (as :mod:`agents.inpo`):

* ``exact``: the minimiser in closed form; 1 query per iteration (``g_{mu_t}``);
* ``sampled``: the same step on an unbiased estimate of ``g_{mu_t}`` (``batch_size`` queries);
* ``pg``: ``inner_steps`` SGD steps on the loss above (``pg_batch_size`` pairs from ``mu_t``
  each), from ``theta = log pi_t``.

Before ``H`` iterates exist the missing ones are the initial policy ``pi_0`` (the population starts
as ``H`` copies of it). Default ``eta`` is INPO's, ``beta / (beta^2 + L^2)``.

Metrics: those of :mod:`agents.base`, plus ``game/population_duality_gap`` (the multiplayer duality
gap of the population, :func:`nlhf_envs.solvers.multiplayer_duality_gap`) and, in ``pg`` mode,
``loss/mnpo``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import Agent
from agents.config import ConfigError, PGConfig, check_population_weights
from agents.registry import register_agent
from agents.updates import (  # noqa: F401 (token_default_eta: re-exported)
    TOKEN_ETA_CAP,
    default_explicit_step,
    inpo_pg_fit,
    regularized_explicit_step,
    softmax,
    token_default_eta,
)
from nlhf_envs import solvers
from nlhf_envs.game import PreferenceGame

__all__ = ["MNPOConfig", "MNPO", "mnpo_step", "token_default_eta", "linearised_rate"]


def linearised_rate(eta: float, beta: float, weights: np.ndarray, omega: float) -> float:
    """Spectral radius of the exact MNPO step linearised at ``pi*`` on a mode of rotation
    ``omega``: the largest root modulus of ``x^H = z sum_j lambda_j x^(H-1-j)`` with ``z = 1 - eta
    beta + i eta omega`` (the error ``e`` of the log-policy follows ``e_{t+1} = z sum_j lambda_j
    e_{t-j}``). Below 1 the mode contracts; at or above 1 it does not (the step cycles).

    Args:
        eta: the step.
        beta: the regularisation.
        weights: ``lambda_0..lambda_{H-1}``, newest first.
        omega: the rotation (an eigenvalue of the linearised payoff is ``i omega``).
    """
    w = np.asarray(weights, dtype=np.float64)
    z = 1.0 - eta * beta + 1j * eta * omega
    coeffs = np.concatenate([[1.0 + 0j], -z * w])
    return float(np.abs(np.roots(coeffs)).max())


def mnpo_step(
    history_logs: np.ndarray,
    weights: np.ndarray,
    l_ref: np.ndarray,
    g_population: np.ndarray,
    eta: float,
    beta: float,
) -> np.ndarray:
    """MNPO's step against a weighted population of past iterates (Wu et al. 2025, TD-MNPO):

        l_{t+1} = (1 - eta beta) sum_j lambda_j l_{t-j} + eta beta l_ref + eta g_{mu_t},

    normalised, with ``history_logs[j] = l_{t-j}`` (shape ``(H, C, K)``), ``weights[j] = lambda_j``
    and ``g_population = g_{mu_t} = sum_j lambda_j g_{pi_{t-j}}``. For ``H = 1`` it is
    :func:`agents.updates.regularized_explicit_step` (INPO's step), bit for bit.
    """
    if history_logs.ndim != 3 or history_logs.shape[0] != len(weights):
        raise ValueError(
            f"history_logs must have shape (H, C, K) with H = len(weights) = {len(weights)}; "
            f"got {history_logs.shape}"
        )
    anchor = np.tensordot(weights, history_logs, axes=1) if len(weights) > 1 else history_logs[0]
    return regularized_explicit_step(anchor, l_ref, g_population, eta, beta)


@dataclass
class MNPOConfig(PGConfig):
    """MNPO hyper-parameters (plus :class:`~agents.config.PGConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default), ``"sampled"`` or ``"pg"``.
        eta: the step; ``None`` = INPO's ``beta / (beta^2 + L^2)``, ``L = max |P - 1/2|``.
        history: ``H = n - 1``, how many of the latest iterates form the population (1 = INPO).
        weights: ``lambda_0..lambda_{H-1}`` (newest first), non-negative, summing to 1;
            ``None`` = uniform ``1/H``.
        inner_steps, pg_batch_size, pg_lr, pg_average: ``pg`` mode, as for INPO
            (``pg_lr = None``: ``1 / (8 max mu_t)``).
    """

    eta: float | None = None
    history: int = 3
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for the default); got {self.eta}")
        if self.history < 1:
            raise ConfigError(f"history: must be an integer >= 1; got {self.history}")
        if self.weights is not None:
            check_population_weights(self.weights, self.history)

    @property
    def population_weights(self) -> np.ndarray:
        """``lambda`` as an array (uniform when ``weights`` is ``None``)."""
        if self.weights is None:
            return np.full(self.history, 1.0 / self.history)
        return check_population_weights(self.weights, self.history)


@register_agent("mnpo")
class MNPO(Agent):
    """MNPO (see the module docstring).

    Attributes:
        past: ``(H - 1, C, K)`` log-policies of the previous iterates, ``past[0] = log pi_{t-1}``.
    """

    config_cls = MNPOConfig
    config: MNPOConfig
    state_attrs = ("log_pi", "past")

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the default step: INPO's ``eta = beta / (beta^2 + L^2)``."""
        return "eta", default_explicit_step(game.P, game.beta)

    @property
    def eta(self) -> float:
        """The step in use."""
        return self.config.eta or self.default_step(self.game)[1]

    @property
    def past(self) -> np.ndarray:
        """The previous iterates' log-policies, newest first (see the class docstring)."""
        return self._past

    @past.setter
    def past(self, value: np.ndarray) -> None:
        want = (self.config.history - 1, *self.game.shape)
        if np.shape(value) != want:
            raise ValueError(f"past must have shape {want}; got {np.shape(value)}")
        self._past = np.array(value, dtype=np.float64)

    def _setup(self) -> None:
        if self.eta * self.beta > 1.0:
            raise ValueError(f"eta: MNPO needs eta * beta <= 1; got eta = {self.eta:g}")
        self.weights = self.config.population_weights
        self.past = np.repeat(self.log_pi[None], self.config.history - 1, axis=0)

    def population(self) -> np.ndarray:
        """``(H, C, K)`` log-policies ``l_t, l_{t-1}, ..., l_{t-H+1}`` of the population."""
        return np.concatenate([self.log_pi[None], self._past], axis=0)

    def metrics(self) -> dict[str, float]:
        """The shared metrics plus ``game/population_duality_gap``: the multiplayer duality gap
        (:func:`nlhf_envs.solvers.multiplayer_duality_gap`) of the population
        ``pi_t, ..., pi_{t-H+1}`` (for ``H = 1`` the two-seat population ``(pi_t, pi_t)``, whose
        gap is ``2 Expl_beta(pi_t)``). No queries are counted."""
        row = super().metrics()
        pols = list(softmax(self.population()))
        if len(pols) == 1:
            pols = pols * 2
        row["game/population_duality_gap"] = solvers.multiplayer_duality_gap(self.game, pols)
        return row

    def _mixture(self, logs: np.ndarray) -> np.ndarray:
        """``mu_t = sum_j lambda_j pi_{t-j}`` (``pi_t`` itself, unchanged, when ``H = 1``)."""
        if len(self.weights) == 1:
            return softmax(logs[0])
        return np.tensordot(self.weights, softmax(logs), axes=1)

    def _iteration(self) -> dict[str, float]:
        logs = self.population()
        if self.config.mode == "pg":
            new, extra = self._pg_iteration(logs)
        else:
            g = self.win_rates(self._mixture(logs))
            new, extra = mnpo_step(logs, self.weights, self.l_ref, g, self.eta, self.beta), {}
        self._past = logs[:-1].copy()
        self.log_pi = new
        return extra

    def _pg_iteration(self, logs: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        cfg = self.config
        mu = self._mixture(logs)
        # the loss is linear in the history log-ratios: sum_j lambda_j (l_j(yw) - l_j(yl))
        anchor = np.tensordot(self.weights, logs, axes=1) if len(self.weights) > 1 else logs[0]
        theta, loss = inpo_pg_fit(
            self.game,
            self.rng,
            mu,
            logs[0],
            self.l_ref,
            anchor,
            self.eta,
            self.beta,
            inner_steps=cfg.inner_steps,
            batch_size=cfg.pg_batch_size,
            lr=cfg.pg_lr,
            average=cfg.pg_average,
        )
        return theta, {"loss/mnpo": loss}
