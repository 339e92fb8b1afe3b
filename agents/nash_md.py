"""Nash Mirror Descent (Nash-MD): Munos et al., "Nash Learning from Human Feedback" (ICML 2024,
arXiv 2312.00886), §6 (``equations.md`` §4).

    pi^mu_t  ∝ pi_t^(1 - eta_t beta) pi_ref^(eta_t beta)          (geometric mixture)
    pi_{t+1} ∝ pi^mu_t exp(eta_t g_{pi^mu_t})                     (mirror-descent step)

Schedules:

* ``"harmonic"`` (default, the theory schedule): ``eta_t = 2 / (beta (t + 2))``; the last iterate
  converges to ``pi*_beta`` as ``O(1/T)`` in KL (Munos et al., Thm. 1);
* ``"constant"``: ``eta_t = eta``. The fixed point then solves ``beta (log pi - log pi_ref) =
  g_{pi^mu} + c`` instead of ``g_pi + c``: it is biased and the iterates stall at a positive
  distance from ``pi*_beta`` (shown in ``tests/agents/test_baselines.py``).

Modes: ``exact`` (1 query per iteration, the win rates of the mixture), ``sampled``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.base import Agent
from agents.config import AgentConfig, ConfigError
from agents.registry import register_agent
from agents.updates import harmonic_step, nash_md_mixture, nash_md_step, softmax
from nlhf_envs.game import PreferenceGame

__all__ = ["NashMDConfig", "NashMD"]


@dataclass
class NashMDConfig(AgentConfig):
    """Nash-MD hyper-parameters (plus :class:`~agents.config.AgentConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default) or ``"sampled"``.
        schedule: ``"harmonic"`` (``eta_t = 2 / (beta (t + 2))``, default) or ``"constant"``.
        eta: ``"constant"``: the step (``None`` = ``1 / (2 beta)``); ``"harmonic"``: the
            numerator, ``eta_t = eta / (t + 2)`` (``None`` = ``2 / beta``, the theory schedule).
            ``eta_t beta <= 1`` is required (the mixture exponent ``1 - eta_t beta`` is >= 0).
    """

    schedule: str = "harmonic"
    eta: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule not in ("harmonic", "constant"):
            raise ConfigError(f"schedule: expected 'harmonic' or 'constant'; got {self.schedule!r}")
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for the default); got {self.eta}")


@register_agent("nash_md")
class NashMD(Agent):
    """Nash Mirror Descent (see the module docstring)."""

    config_cls = NashMDConfig
    config: NashMDConfig

    def _setup(self) -> None:
        first = self.step_size(0)
        if first * self.beta > 1.0 + 1e-12:
            raise ConfigError(
                f"eta: Nash-MD needs eta_t * beta <= 1 (the mixture exponent 1 - eta_t beta "
                f"must be >= 0); got eta_0 = {first:g} with beta = {self.beta:g}"
            )

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the step this agent uses when the config leaves it unset:
        the harmonic schedule's numerator ``eta = 2 / beta`` (``eta_t = eta / (t + 2)``)."""
        return "eta", 2.0 / game.beta

    def step_size(self, t: int) -> float:
        """``eta_t`` of the configured schedule at iteration ``t`` (0-based)."""
        cfg = self.config
        if cfg.schedule == "harmonic":
            scale = self.default_step(self.game)[1] if cfg.eta is None else cfg.eta
            return harmonic_step(t, scale)
        return 0.5 / self.beta if cfg.eta is None else cfg.eta

    def _iteration(self) -> dict[str, float]:
        eta = self.step_size(self.num_iterations)
        l_mu = nash_md_mixture(self.log_pi, self.l_ref, eta, self.beta)
        self.log_pi = nash_md_step(l_mu, self.win_rates(softmax(l_mu)), eta)
        return {"train/eta": eta}
