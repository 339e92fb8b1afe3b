"""Iterative Nash Policy Optimization (INPO): Zhang et al., "Iterative Nash Policy Optimization:
Aligning LLMs with General Preferences via No-Regret Learning" (ICLR 2025, arXiv 2407.00617);
``equations.md`` §4.

Each iteration minimises, over ``pi_theta``, the loss on pairs ``y, y' ~ pi_t`` ranked by one
preference query (winner ``y_w``, loser ``y_l``):

    loss = (h(y_w, y_l) - eta/2)^2,
    h = log pi_theta(y_w)/pi_theta(y_l) - eta beta log pi_ref(y_w)/pi_ref(y_l)
        - (1 - eta beta) log pi_t(y_w)/pi_t(y_l),

whose population minimiser is ``l_{t+1} = (1 - eta beta) l_t + eta beta l_ref + eta g_{pi_t}`` (the
online mirror-descent step; no win-rate estimation is needed in the loss). Modes:

* ``exact``: the minimiser in closed form (:func:`agents.updates.regularized_explicit_step`,
  equal to Online IPO's exact update); 1 query per iteration;
* ``sampled``: the same step on unbiased win-rate estimates (``batch_size`` queries);
* ``pg``: ``inner_steps`` SGD steps on the loss above (``pg_batch_size`` pairs each), from
  ``theta = log pi_t``.

Default ``eta`` is the same linearised-stability step as Online IPO's,
``beta / (beta^2 + L^2)``; the paper's theory (no-regret with ``eta ~ 1/sqrt(T)``) is for the
average iterate.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.base import Agent
from agents.config import ConfigError, PGConfig
from agents.registry import register_agent
from agents.updates import (
    default_explicit_step,
    inpo_pg_fit,
    regularized_explicit_step,
    softmax,
)
from nlhf_envs.game import PreferenceGame

__all__ = ["INPOConfig", "INPO"]


@dataclass
class INPOConfig(PGConfig):
    """INPO hyper-parameters (plus :class:`~agents.config.PGConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default), ``"sampled"`` or ``"pg"``.
        eta: INPO's step; ``None`` = ``beta / (beta^2 + L^2)``, ``L = max |P - 1/2|``.
        inner_steps: ``pg``: SGD steps on the INPO loss per iteration (default 20).
        pg_batch_size: ``pg``: pairs (queries) per SGD step (default 32).
        pg_lr: ``pg``: SGD step on the logits; ``None`` = ``1 / (8 max pi_t)``.
        pg_average: ``pg``: Polyak-average the second half of the inner iterates (default True).
    """

    eta: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for the default); got {self.eta}")


@register_agent("inpo")
class INPO(Agent):
    """INPO (see the module docstring)."""

    config_cls = INPOConfig
    config: INPOConfig

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the step this agent uses when the config leaves it unset:
        ``eta = beta / (beta^2 + L^2)`` (:func:`~agents.updates.default_explicit_step`)."""
        return "eta", default_explicit_step(game.P, game.beta)

    @property
    def eta(self) -> float:
        """The step in use."""
        return self.config.eta or self.default_step(self.game)[1]

    def _setup(self) -> None:
        if self.eta * self.beta > 1.0:
            raise ConfigError(f"eta: INPO needs eta * beta <= 1; got eta = {self.eta:g}")

    def _iteration(self) -> dict[str, float]:
        if self.config.mode == "pg":
            return self._pg_iteration()
        g = self.win_rates(softmax(self.log_pi))
        self.log_pi = regularized_explicit_step(self.log_pi, self.l_ref, g, self.eta, self.beta)
        return {}

    def _pg_iteration(self) -> dict[str, float]:
        cfg = self.config
        l_t = self.log_pi
        pi_t = softmax(l_t)
        self.log_pi, loss = inpo_pg_fit(
            self.game,
            self.rng,
            pi_t,
            l_t,
            self.l_ref,
            l_t,
            self.eta,
            self.beta,
            inner_steps=cfg.inner_steps,
            batch_size=cfg.pg_batch_size,
            lr=cfg.pg_lr,
            average=cfg.pg_average,
        )
        return {"loss/inpo": loss}
