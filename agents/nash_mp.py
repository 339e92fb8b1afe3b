"""Nash Mirror Prox (Nash-MP): Tiapkin et al., "Accelerating Nash Learning from Human Feedback via
Mirror Prox" (arXiv 2505.19731, 2025; v2 "Proximal Point Nash Learning from Human Feedback").

Each iteration makes two prox steps centred on ``pi_k`` (``equations.md`` §3):

    pi_{k+1/2} = argmax_pi P(pi > pi_k)       - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)
    pi_{k+1}   = argmax_pi P(pi > pi_{k+1/2}) - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)

Guarantee (beta <= 1/2, eta <= 2 beta): ``KL(pi*_beta||pi_k) <= (1 + eta)^(-k) KL(pi*_beta||pi_0)``,
i.e. with ``eta = 2 beta`` the KL shrinks as ``(1 + 2 beta)^(-N/2)`` in ``N`` exact queries,
whatever ``K``.

Modes:

* ``exact``: both steps in closed form (:func:`agents.updates.nash_mp_prox_step`) on the exact win
  rates; 2 queries per iteration.
* ``sampled``: the same closed form on unbiased win-rate estimates; ``2 batch_size`` queries per
  iteration.
* ``pg``: each half-step is solved approximately by ``inner_steps`` stochastic policy-gradient steps
  of a softmax policy on sampled outcomes (the paper's approximate Nash-MP; design (A) of
  ``equations.md`` §3: phase 1 starts from ``theta_k`` against ``pi_k`` and gives ``pi_{k+1/2}``,
  phase 2 restarts from ``theta_k`` against ``pi_{k+1/2}``); ``2 inner_steps pg_batch_size`` queries
  per iteration. The paper's inner budget is not public: the defaults here (``inner_steps = 20``,
  ``pg_batch_size = 32``, Polyak averaging over the second half) are ours. The EMA-anchor variant
  (design (C)) is a neural-network device and is not part of the tabular agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import Agent
from agents.config import ConfigError, PGConfig
from agents.pg import default_nash_mp_pg_lr, nash_mp_pg_half_step
from agents.registry import register_agent
from agents.updates import nash_mp_prox_step, softmax
from nlhf_envs.game import PreferenceGame

__all__ = ["NashMPConfig", "NashMP"]


@dataclass
class NashMPConfig(PGConfig):
    """Nash-MP hyper-parameters (plus :class:`~agents.config.PGConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default), ``"sampled"`` or ``"pg"``.
        eta: prox step ``eta > 0`` (dimensionless); ``None`` means the theory step ``2 beta``.
            The linear rate ``(1 + eta)^(-k)`` is guaranteed for ``eta <= 2 beta``, ``beta <= 1/2``.
        batch_size: ``sampled``: queries per win-rate estimate (default 256).
        inner_steps: ``pg``: policy-gradient steps per half-step (default 20).
        pg_batch_size: ``pg``: queries per policy-gradient step (default 32).
        pg_lr: ``pg``: logit step; ``None`` = ``K / (2 beta (1 + 1/eta))``.
        pg_average: ``pg``: Polyak-average the second half of the inner iterates (default True).
    """

    eta: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for 2 beta); got {self.eta}")


@register_agent("nash_mp")
class NashMP(Agent):
    """Nash Mirror Prox (see the module docstring)."""

    config_cls = NashMPConfig
    config: NashMPConfig

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the step this agent uses when the config leaves it unset:
        ``eta = 2 beta``."""
        return "eta", 2.0 * game.beta

    @property
    def eta(self) -> float:
        """The prox step in use (``2 beta`` unless configured)."""
        return self.default_step(self.game)[1] if self.config.eta is None else self.config.eta

    def _iteration(self) -> dict[str, float]:
        if self.config.mode == "pg":
            return self._pg_iteration()
        eta, beta = self.eta, self.beta
        l_k = self.log_pi
        # half-step: best (regularised, proximal) answer to pi_k
        l_half = nash_mp_prox_step(l_k, self.l_ref, self.win_rates(softmax(l_k)), eta, beta)
        # full step: same centre pi_k, opponent pi_{k+1/2}
        self.log_pi = nash_mp_prox_step(l_k, self.l_ref, self.win_rates(softmax(l_half)), eta, beta)
        return {}

    def _pg_iteration(self) -> dict[str, float]:
        cfg, eta = self.config, self.eta
        lr = cfg.pg_lr or default_nash_mp_pg_lr(self.game.num_actions, self.beta, eta)
        l_k = self.log_pi
        kwargs = dict(
            eta=eta,
            steps=cfg.inner_steps,
            batch_size=cfg.pg_batch_size,
            lr=lr,
            average=cfg.pg_average,
            rng=self.rng,
        )
        # phase 1: from theta_k against pi_k -> pi_{k+1/2}
        l_half = nash_mp_pg_half_step(self.game, l_k, l_k, self.l_ref, softmax(l_k), **kwargs)
        # phase 2: restart from theta_k against pi_{k+1/2} -> pi_{k+1}
        self.log_pi = nash_mp_pg_half_step(
            self.game, l_k, l_k, self.l_ref, softmax(l_half), **kwargs
        )
        return {}


def theory_kl_bound(kl0: float, eta: float, iterations: np.ndarray) -> np.ndarray:
    """Nash-MP's guarantee ``KL(pi*||pi_k) <= (1 + eta)^(-k) KL(pi*||pi_0)`` (eta <= 2 beta)."""
    return kl0 * (1.0 + eta) ** (-np.asarray(iterations, dtype=np.float64))
