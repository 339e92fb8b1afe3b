"""Approximate Nash Mirror Prox on the token duel: Tiapkin et al., "Accelerating Nash Learning from
Human Feedback via Mirror Prox" (arXiv 2505.19731); ``algorithms.md`` §3, design (A).

Each iteration takes two proximal half-steps, both centred on ``pi_k``:

    pi_{k+1/2} = argmax_pi P(pi > pi_k)       - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)
    pi_{k+1}   = argmax_pi P(pi > pi_{k+1/2}) - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)

Design (A), target networks (default, ``variant="target"``):

1. freeze ``pi_k`` (a copy of ``theta_k``) and back up ``theta_k`` and the Adam state;
2. phase 1: ``M = inner_steps`` policy-gradient steps on :func:`~agents.text.losses.nash_mp_pg_loss`
   with ``y ~ pi_theta``, ``y' ~ pi_k``, anchor ``pi_k``; freeze the result as ``pi_{k+1/2}``;
3. restore ``theta_k`` and the Adam state; phase 2: ``M`` steps with ``y' ~ pi_{k+1/2}``, anchor
   ``pi_k``; the result is ``pi_{k+1}``.

One iteration costs ``2 M batch_size`` preference queries. The paper does not publish its inner-loop
budget; ``M = 4`` is this library's default (the zoo entry for the token duel says what it uses).

Design (B), extragradient (``variant="extragradient"``, requires ``M = 1``): one "extrapolate" step
from ``theta_k`` against ``pi_k`` gives ``pi_{k+1/2}``; ``theta_k`` and the Adam state are restored and
one "update" step against ``pi_{k+1/2}`` gives ``theta_{k+1}``. Both gradients are taken at
``theta = theta_k``, where the anchor term ``log(pi_theta/pi_k)`` is identically zero, so no ``pi_k``
network is kept (the ``(beta/eta)`` term drops out exactly).

The EMA anchor of design (C) is not implemented.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from agents.config import ConfigError
from agents.registry import register_agent
from agents.text.common import TextAgent, TextAgentConfig, frozen_copy
from agents.text.losses import nash_mp_pg_loss

__all__ = ["TextNashMPConfig", "TextNashMP"]


@dataclass
class TextNashMPConfig(TextAgentConfig):
    """Token-level Nash-MP hyper-parameters (plus :class:`TextAgentConfig`'s).

    Attributes:
        eta: prox step ``eta`` (``None``: ``2 beta``, the step of the paper's theorem).
        inner_steps: ``M``, policy-gradient steps per half-step (``batch_size`` queries each).
        variant: ``"target"`` (design (A), default) or ``"extragradient"`` (design (B), ``M = 1``).
    """

    eta: float | None = None
    inner_steps: int = 4
    variant: str = "target"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for 2 beta); got {self.eta}")
        if self.inner_steps < 1:
            raise ConfigError(f"inner_steps: must be an integer >= 1; got {self.inner_steps}")
        if self.variant not in ("target", "extragradient"):
            raise ConfigError(
                f"variant: expected 'target' or 'extragradient'; got {self.variant!r}"
            )
        if self.variant == "extragradient" and self.inner_steps != 1:
            raise ConfigError(
                f"inner_steps: the extragradient variant takes one step per half-step; got "
                f"{self.inner_steps} (set inner_steps: 1 or variant: target)"
            )


@register_agent("nash_mp", kind="text")
class TextNashMP(TextAgent):
    """Approximate Nash-MP on the token duel (see the module docstring)."""

    config_cls = TextNashMPConfig
    config: TextNashMPConfig

    @property
    def eta(self) -> float:
        """The prox step ``eta`` (``2 beta`` unless configured)."""
        cfg = self.config
        return 2.0 * self.beta if cfg.eta is None else cfg.eta

    def _half_step(self, opponent, anchor) -> None:
        """``M`` policy-gradient steps on the half-step's objective against ``opponent``."""
        cfg = self.config
        for _ in range(cfg.inner_steps):
            duel = self.duel(opponent)
            log_pi = self.log_probs(self.policy, duel)
            log_ref = self.log_probs(self.reference, duel).detach()
            # at theta = theta_k (the extragradient variant) log(pi_theta / pi_k) is exactly zero
            log_anchor = log_pi.detach() if anchor is None else self.log_probs(anchor, duel)
            out = nash_mp_pg_loss(
                log_pi, log_ref, log_anchor.detach(), duel.y.mask, duel.outcome,
                beta=self.beta, eta=self.eta,
            )  # fmt: skip
            self.optimise(out.loss)
            self.note(out.terms)
            self.note_policy(duel, log_pi, log_ref)

    def _iteration(self) -> None:
        # 1. targets: pi_k is theta_k, frozen; back up theta_k and the optimiser state
        pi_k = frozen_copy(self.policy)
        theta_k = copy.deepcopy(self.policy.state_dict())
        opt_k = copy.deepcopy(self.optimizer.state_dict())
        anchor = pi_k if self.config.variant == "target" else None
        # 2. phase 1: pi_{k+1/2} from M steps against pi_k
        self._half_step(opponent=pi_k, anchor=anchor)
        pi_half = frozen_copy(self.policy)
        # 3. phase 2: restore theta_k (parameters and Adam state), M steps against pi_{k+1/2}
        self.policy.load_state_dict(theta_k)
        self.optimizer.load_state_dict(opt_k)
        self._half_step(opponent=pi_half, anchor=anchor)
