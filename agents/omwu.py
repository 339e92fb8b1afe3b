"""Regularised optimistic multiplicative weights (OMWU); ``equations.md`` §4.

Optimistic mirror descent (Rakhlin and Sridharan 2013; Daskalakis and Panageas 2019, last-iterate
convergence of OMWU) on the beta-regularised game:

    l_{t+1} = (1 - lam beta) l_t + lam beta l_ref + lam (2 g_{pi_t} - g_{pi_{t-1}}),

with ``g_{pi_{-1}} = g_{pi_0}``. One query per iteration: the previous win rates are reused.
Modes: ``exact``, ``sampled`` (the previous estimate is reused).
Default step ``lam = 1 / (2 (beta + L))``, ``L = max |P - 1/2|`` (as EGPO's).

Step range: ``0 < lam < 2 / beta``. The update multiplies the logits by ``(1 - lam beta)`` every
iteration and adds bounded terms (``lam beta l_ref`` and at most ``3 lam / 2`` of payoff), so with
``|1 - lam beta| < 1`` the logits stay bounded, but ``lam beta >= 2`` makes ``|1 - lam beta| >= 1``: the logits grow geometrically with alternating
sign until ``exp`` overflows and the policy becomes ``nan`` (``lam = 1e6`` with ``beta = 0.1``
overflows within ~60 iterations). Such a step is refused when the agent is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import Agent
from agents.config import AgentConfig, ConfigError, check_regularized_step
from agents.registry import register_agent
from agents.updates import omwu_step, payoff_lipschitz, softmax
from nlhf_envs.game import PreferenceGame

__all__ = ["OMWUConfig", "OMWU"]


@dataclass
class OMWUConfig(AgentConfig):
    """OMWU hyper-parameters (plus :class:`~agents.config.AgentConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default) or ``"sampled"``.
        lam: payoff step; ``None`` = ``1 / (2 (beta + L))``.
    """

    lam: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam is not None and not self.lam > 0:
            raise ConfigError(f"lam: must be > 0 (or None for the default); got {self.lam}")


@register_agent("omwu")
class OMWU(Agent):
    """Regularised optimistic MWU (see the module docstring)."""

    config_cls = OMWUConfig
    config: OMWUConfig
    state_attrs = ("log_pi", "g_prev")

    def _setup(self) -> None:
        self.g_prev: np.ndarray | None = None
        default = self.default_step(self.game)[1]
        check_regularized_step("OMWU", "lam", self.config.lam, self.game.beta, default)

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the step this agent uses when the config leaves it unset:
        ``lam = 1 / (2 (beta + L))``, ``L = max |P - 1/2|``."""
        return "lam", 1.0 / (2.0 * (game.beta + payoff_lipschitz(game.P)))

    @property
    def lam(self) -> float:
        """The step in use."""
        return self.config.lam or self.default_step(self.game)[1]

    def _iteration(self) -> dict[str, float]:
        g = self.win_rates(softmax(self.log_pi))
        g_prev = g if self.g_prev is None else self.g_prev
        self.log_pi = omwu_step(self.log_pi, self.l_ref, g, g_prev, self.lam, self.beta)
        self.g_prev = g
        return {}
