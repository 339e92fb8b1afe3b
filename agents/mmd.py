"""Magnetic Mirror Descent (MMD): Sokota et al., "A Unified Approach to Reinforcement Learning,
Quantal Response Equilibria, and Two-Player Zero-Sum Games" (ICLR 2023, arXiv 2206.05825).

Applied to the beta-regularised preference game with the magnet ``pi_ref`` (``equations.md`` §4):

    pi_{t+1} ∝ (pi_t exp(lr g_{pi_t}) pi_ref^(lr beta))^(1 / (1 + lr beta)).

One MMD step with ``lr = eta / beta`` is exactly one Nash-MP half-step with step ``eta``; MMD makes
one such step per query, Nash-MP spends its second query on the extrapolated opponent.

Default step: ``lr = beta / L^2`` with ``L = max |P - 1/2|`` (at most 1/2), the step of Sokota et
al.'s linear-convergence theorem (``lr <= alpha / L^2`` with regularisation ``alpha = beta`` and
``L`` the Lipschitz constant of the payoff gradient in the l1/l-inf norms).

Modes: ``exact`` (1 query per iteration), ``sampled`` (``batch_size`` queries per iteration).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.base import Agent
from agents.config import AgentConfig, ConfigError
from agents.registry import register_agent
from agents.updates import mmd_step, payoff_lipschitz, softmax
from nlhf_envs.game import PreferenceGame

__all__ = ["MMDConfig", "MMD"]


@dataclass
class MMDConfig(AgentConfig):
    """MMD hyper-parameters (plus :class:`~agents.config.AgentConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default) or ``"sampled"``.
        lr: payoff step; ``None`` = ``beta / L^2``, ``L = max |P - 1/2|``.
    """

    lr: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr: must be > 0 (or None for beta / L^2); got {self.lr}")


@register_agent("mmd")
class MMD(Agent):
    """Magnetic Mirror Descent with magnet ``pi_ref`` (see the module docstring)."""

    config_cls = MMDConfig
    config: MMDConfig

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the step this agent uses when the config leaves it unset:
        ``lr = beta / L^2``, ``L = max |P - 1/2|`` (``1 / beta`` for a game with ``L = 0``)."""
        L = payoff_lipschitz(game.P)
        return "lr", (game.beta / L**2 if L > 0 else 1.0 / game.beta)

    @property
    def lr(self) -> float:
        """The step in use."""
        if self.config.lr is not None:
            return self.config.lr
        return self.default_step(self.game)[1]

    def _iteration(self) -> dict[str, float]:
        g = self.win_rates(softmax(self.log_pi))
        self.log_pi = mmd_step(self.log_pi, self.l_ref, g, self.lr, self.beta)
        return {}
