"""Online IPO: Calandriello et al., "Human Alignment of Large Language Models through Online
Preference Optimisation" (ICML 2024, arXiv 2403.08635); ``equations.md`` §4.

Online IPO is self-play policy gradient on ``P(pi > sg(pi)) - beta KL(pi||pi_ref)``. Its IPO loss on
pairs ``y, y' ~ sg(pi_theta)`` with outcome ``o``,

    loss = (h(y, y') - (o - 1/2) / beta)^2,
    h = log(pi_theta(y)/pi_ref(y)) - log(pi_theta(y')/pi_ref(y')),

has gradient ``-(4/beta)`` times the self-play gradient. Modes:

* ``exact``: the tabular exact form ``l_{t+1} = (1 - lam beta) l_t + lam beta l_ref + lam g_{pi_t}``
  (:func:`agents.updates.regularized_explicit_step`; identical to INPO's exact update); 1 query per
  iteration;
* ``sampled``: the same step on unbiased win-rate estimates (``batch_size`` queries);
* ``pg``: one SGD step per iteration on the IPO loss over ``pg_batch_size`` self-play pairs, on
  softmax logits. In expectation the logit of ``z`` moves by ``(4 pg_lr pi(z) / beta) (g(z) - beta
  log(pi(z)/pi_ref(z)) + c)``, i.e. the exact step with ``lam = 4 pg_lr pi(z) / beta``.

Log-probabilities are of single responses here; at the token level the library sums token
log-probabilities (as TRL does).

Default step ``lam = beta / (beta^2 + L^2)``, ``L = max |P - 1/2|``: our linearised analysis of
the explicit step around ``pi*`` (the Jacobian's eigenvalues are ``-beta + i omega`` with
``|omega| <= L``) gives the contraction factor ``sqrt((1 - lam beta)^2 + lam^2 omega^2)``, which
this ``lam`` minimises for the worst ``omega = L``. Larger steps can diverge on intransitive games
(the "stability limitation"). It equals MMD's default step (MMD with ``lr`` is the explicit step
with ``lam = lr / (1 + lr beta)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agents.base import Agent
from agents.config import AgentConfig, ConfigError, check_regularized_step
from agents.estimators import sample_actions
from agents.registry import register_agent
from agents.updates import (
    default_explicit_step,
    ipo_loss_gradient,
    log_normalize,
    regularized_explicit_step,
    softmax,
)
from nlhf_envs.game import PreferenceGame

__all__ = ["OnlineIPOConfig", "OnlineIPO"]


@dataclass
class OnlineIPOConfig(AgentConfig):
    """Online IPO hyper-parameters (plus :class:`~agents.config.AgentConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default), ``"sampled"`` or ``"pg"``.
        lam: payoff step of the exact/sampled update; ``None`` = ``beta / (beta^2 + L^2)``.
        pg_batch_size: ``pg``: self-play pairs (queries) per SGD step (default 64).
        pg_lr: ``pg``: SGD step on the logits; ``None`` = ``lam beta K / 4`` (the exact step at a
            uniform policy).
    """

    MODES: ClassVar[tuple[str, ...]] = ("exact", "sampled", "pg")

    lam: float | None = None
    pg_batch_size: int = 64
    pg_lr: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("lam", "pg_lr"):
            v = getattr(self, key)
            if v is not None and not v > 0:
                raise ConfigError(f"{key}: must be > 0 (or None for the default); got {v}")
        if self.pg_batch_size < 1:
            raise ConfigError(f"pg_batch_size: must be an integer >= 1; got {self.pg_batch_size}")


@register_agent("online_ipo")
class OnlineIPO(Agent):
    """Online IPO (see the module docstring)."""

    config_cls = OnlineIPOConfig
    config: OnlineIPOConfig

    def _setup(self) -> None:
        default = self.default_step(self.game)[1]
        check_regularized_step("Online IPO", "lam", self.config.lam, self.game.beta, default)

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the step this agent uses when the config leaves it unset:
        ``lam = beta / (beta^2 + L^2)`` (:func:`~agents.updates.default_explicit_step`)."""
        return "lam", default_explicit_step(game.P, game.beta)

    @property
    def lam(self) -> float:
        """The payoff step in use."""
        return self.config.lam or self.default_step(self.game)[1]

    def _iteration(self) -> dict[str, float]:
        if self.config.mode == "pg":
            return self._pg_iteration()
        g = self.win_rates(softmax(self.log_pi))
        self.log_pi = regularized_explicit_step(self.log_pi, self.l_ref, g, self.lam, self.beta)
        return {}

    def _pg_iteration(self) -> dict[str, float]:
        game, cfg = self.game, self.config
        n, C, K = cfg.pg_batch_size, game.num_contexts, game.num_actions
        lr = cfg.pg_lr or self.lam * self.beta * K / 4.0
        pi = softmax(self.log_pi)  # sg(pi_theta): both responses from the current policy
        x = game.sample_contexts(n, self.rng)
        y = sample_actions(pi, x, self.rng)
        y2 = sample_actions(pi, x, self.rng)
        o = game.sample(y, y2, self.rng, contexts=x if C > 1 else None).astype(np.float64)
        l = self.log_pi
        loss, dh = ipo_loss_gradient(
            l[x, y] - l[x, y2], self.l_ref[x, y] - self.l_ref[x, y2], o, self.beta
        )
        grad = np.zeros((C, K))
        np.add.at(grad, (x, y), dh)
        np.add.at(grad, (x, y2), -dh)
        self.log_pi = log_normalize(l - lr * grad / n)
        return {"loss/ipo": loss}
