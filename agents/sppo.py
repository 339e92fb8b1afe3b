"""Self-Play Preference Optimization (SPPO): Wu et al., "Self-Play Preference Optimization for
Language Model Alignment" (arXiv 2405.00675); ``equations.md`` §4.

Tabular form of the SPPO update (the population solution of its square loss):

    pi_{t+1} ∝ pi_t exp(eta g_{pi_t}),

multiplicative weights in self-play with no ``pi_ref`` anchor. It targets the *unregularised* Nash
equilibrium through its *average* iterate; its last iterate does not converge to ``pi*_beta`` (and
cycles on intransitive games). The agent therefore also tracks the average policy
``bar pi_T = (1/T) sum_{t<T} pi_t`` and logs ``policy/avg_unreg_exploitability``
(``E_x max_y g_{bar pi}(y|x) - 1/2``).

Modes: ``exact`` (1 query per iteration), ``sampled``. Default ``eta = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import Agent
from agents.config import AgentConfig, ConfigError
from agents.registry import register_agent
from agents.updates import softmax, sppo_step
from nlhf_envs.game import PreferenceGame

__all__ = ["SPPOConfig", "SPPO"]


@dataclass
class SPPOConfig(AgentConfig):
    """SPPO hyper-parameters (plus :class:`~agents.config.AgentConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default) or ``"sampled"``.
        eta: multiplicative-weights step (default 1.0).
    """

    eta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta > 0:
            raise ConfigError(f"eta: must be > 0; got {self.eta}")


@register_agent("sppo")
class SPPO(Agent):
    """SPPO (see the module docstring)."""

    config_cls = SPPOConfig
    config: SPPOConfig
    state_attrs = ("log_pi", "avg_pi")

    def _setup(self) -> None:
        self.avg_pi = np.zeros(self.game.shape)

    def average_policy(self) -> np.ndarray:
        """The average ``bar pi`` of the iterates so far, ``(K,)`` or ``(C, K)``."""
        avg = self.avg_pi if self.num_iterations else softmax(self.log_pi)
        return self.game.squeeze(avg / avg.sum(axis=1, keepdims=True)).copy()

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the step this agent uses when the config leaves it unset:
        ``eta = 1`` (the config's default)."""
        return "eta", 1.0

    def _iteration(self) -> dict[str, float]:
        pi = softmax(self.log_pi)
        t = self.num_iterations
        self.avg_pi = (t * self.avg_pi + pi) / (t + 1)
        self.log_pi = sppo_step(self.log_pi, self.win_rates(pi), self.config.eta)
        avg = self.game.as_policy(self.average_policy())
        g_avg = self.game.win_rates_all(avg)
        return {"policy/avg_unreg_exploitability": float(self.game.rho @ g_avg.max(axis=1) - 0.5)}
