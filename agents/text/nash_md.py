"""Nash-MD-PG on the token duel: Munos et al., "Nash Learning from Human Feedback" (ICML 2024,
arXiv 2312.00886), §7; ``equations.md`` §4-§5.

Every iteration ``t`` is one policy-gradient step:

    c_t = mixture coefficient of iteration t (schedule below)
    x ~ rho,  y ~ pi_theta(.|x),  y' ~ pi^{c_t}(.|x)  with per-token logits
        (1 - c_t) log_softmax(logits_theta) + c_t log_softmax(logits_ref)
    loss = -(o - 1/2) sum_n log pi_theta(y_n) + beta KLhat(pi_theta || pi_ref)

(:func:`~agents.text.losses.nash_md_pg_loss`, reward-to-go KL estimator). The opponent is generated
by :class:`~nlhf_envs.text.engine.GeometricMixture`, which keeps a KV cache for both models. Both
seats are sampled in one generate call of ``2 B`` rows: ``pi_theta`` runs once per token on all
rows, ``pi_ref`` on the opponent's rows
(:meth:`~nlhf_envs.text.engine.DuelEngine.generate_pair` with ``joint=True``). ``batch_size``
preference queries per iteration.

Mixture-coefficient schedules, indexed by the integer iteration ``t`` (``c_t = eta_t beta`` in the
tabular Nash-MD):

* ``"constant"``: ``c_t = mixture_coef``;
* ``"harmonic"``: ``c_t = min(1, eta beta / (t + 2))`` with ``eta = 2 / beta`` by default, i.e.
  ``c_t = 2 / (t + 2)``: the theory schedule of the tabular agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agents.config import ConfigError
from agents.registry import register_agent
from agents.text.common import Duel, TextAgent, TextAgentConfig
from agents.text.losses import LossTerms, nash_md_pg_loss
from agents.updates import harmonic_step
from nlhf_envs.text.engine import GeometricMixture

__all__ = ["TextNashMDConfig", "TextNashMD"]


@dataclass
class TextNashMDConfig(TextAgentConfig):
    """Token-level Nash-MD-PG hyper-parameters (plus :class:`TextAgentConfig`'s).

    Attributes:
        schedule: ``"constant"`` or ``"harmonic"`` (default; see the module docstring).
        mixture_coef: ``c`` of the constant schedule, in [0, 1].
        eta: the harmonic schedule's numerator (``None``: ``2 / beta``).
    """

    schedule: str = "harmonic"
    mixture_coef: float = 0.125
    eta: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule not in ("constant", "harmonic"):
            raise ConfigError(f"schedule: expected 'constant' or 'harmonic'; got {self.schedule!r}")
        if not 0.0 <= self.mixture_coef <= 1.0:
            raise ConfigError(f"mixture_coef: must lie in [0, 1]; got {self.mixture_coef}")
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for 2 / beta); got {self.eta}")
        if self.generation_backend == "vllm":
            raise ConfigError(
                "generation_backend: Nash-MD's opponent mixes pi_theta's and pi_ref's logits at "
                "every token, which vLLM (one model per request) cannot sample; use transformers"
            )


@register_agent("nash_md", kind="text")
class TextNashMD(TextAgent):
    """Nash-MD-PG on the token duel (see the module docstring)."""

    config_cls = TextNashMDConfig
    config: TextNashMDConfig

    def mixture_coef(self, t: int) -> float:
        """``c_t`` of the configured schedule at iteration ``t`` (a non-negative int)."""
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"iteration must be a non-negative int; got {t!r}")
        cfg = self.config
        if cfg.schedule == "constant":
            return cfg.mixture_coef
        eta = 2.0 / self.beta if cfg.eta is None else cfg.eta
        return min(1.0, harmonic_step(t, eta * self.beta))

    def _iteration(self) -> None:
        c = self.mixture_coef(self.num_iterations)
        # y ~ pi_theta, y' ~ the per-token geometric mixture (KV caches of both models), sampled
        # in one call of 2 B rows that shares pi_theta's forward pass between the seats
        duel = self.duel(opponent=GeometricMixture(self.model, self.reference, c))
        self.optimise_duel(duel, self._loss)
        self.note({"train/mixture_coef": c})

    def _loss(self, duel: Duel) -> LossTerms:
        """The Nash-MD-PG loss of a batch of pairs, and the statistics to record."""
        log_pi = self.log_probs(self.model, duel)
        with torch.no_grad():
            log_ref = self.log_probs(self.reference, duel)
        out = nash_md_pg_loss(log_pi, log_ref, duel.y.mask, duel.outcome, beta=self.beta)
        return LossTerms(out.loss, {**out.terms, **self.policy_terms(duel, log_pi, log_ref)})
