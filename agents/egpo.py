"""Extragradient Preference Optimization (EGPO): Zhou et al., "Extragradient Preference
Optimization (EGPO): Beyond Last-Iterate Convergence for Nash Learning from Human Feedback"
(arXiv 2503.08942); ``equations.md`` §4.

Extragradient with the explicit KL term, on log-probabilities:

    l_{t+1/2} = (1 - lam beta) l_t + lam beta l_ref + lam g_{pi_t}          (extrapolate)
    l_{t+1}   = (1 - lam beta) l_t + lam beta l_ref + lam g_{pi_{t+1/2}}    (update from l_t)

Modes: ``exact`` (2 queries per iteration), ``sampled`` (``2 batch_size``).
Default step ``lam = 1 / (2 (beta + L))``, ``L = max |P - 1/2|``: the usual extragradient step
``<= 1/Lip`` with a safety factor 2 (``beta + L`` bounds the Lipschitz constant of the operator
``l -> beta (l - l_ref) - g_{softmax(l)}`` near the simplex's interior).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.base import Agent
from agents.config import AgentConfig, ConfigError, check_regularized_step
from agents.registry import register_agent
from agents.updates import payoff_lipschitz, regularized_explicit_step, softmax
from nlhf_envs.game import PreferenceGame

__all__ = ["EGPOConfig", "EGPO"]


@dataclass
class EGPOConfig(AgentConfig):
    """EGPO hyper-parameters (plus :class:`~agents.config.AgentConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default) or ``"sampled"``.
        lam: payoff step; ``None`` = ``1 / (2 (beta + L))``.
    """

    lam: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam is not None and not self.lam > 0:
            raise ConfigError(f"lam: must be > 0 (or None for the default); got {self.lam}")


@register_agent("egpo")
class EGPO(Agent):
    """EGPO (see the module docstring)."""

    config_cls = EGPOConfig
    config: EGPOConfig

    def _setup(self) -> None:
        default = self.default_step(self.game)[1]
        check_regularized_step("EGPO", "lam", self.config.lam, self.game.beta, default)

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
        lam, beta, l_t = self.lam, self.beta, self.log_pi
        l_half = regularized_explicit_step(l_t, self.l_ref, self.win_rates(softmax(l_t)), lam, beta)
        g_half = self.win_rates(softmax(l_half))
        self.log_pi = regularized_explicit_step(l_t, self.l_ref, g_half, lam, beta)
        return {}
