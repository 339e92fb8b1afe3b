"""Online IPO on the token duel: Calandriello et al., "Human Alignment of Large Language Models
through Online Preference Optimisation" (ICML 2024, arXiv 2403.08635); ``equations.md`` §4.

Every iteration is one gradient step on self-play pairs from the current policy:

    x ~ rho,  y, y' ~ sg(pi_theta)(.|x),  o ~ Bernoulli(P(y > y'|x))
    loss = (h(y, y') - (o - 1/2) / beta)^2,
    h = log(pi_theta(y)/pi_ref(y)) - log(pi_theta(y')/pi_ref(y'))

(:func:`~agents.text.losses.ipo_loss`); ``batch_size`` preference queries per iteration.

Per step the work is TRL's Online DPO's: one generate call of the ``2 B`` answers (``y`` and ``y'``
come from the same policy), one forward of the ``2 B`` sequences through ``pi_theta`` (with
gradients) and one through ``pi_ref`` (under ``torch.no_grad()``), one judge call of ``B`` pairs.

Sequence log-probs are **summed** over tokens by default (``log pi(y|x)``, as TRL does and as the
IPO derivation requires: the loss's fixed point is the regularised game's only with true sequence
log-probabilities). ``average_log_probs: true`` length-averages them instead (a common heuristic
against length drift; it changes the objective).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agents.config import ConfigError
from agents.registry import register_agent
from agents.text.common import Duel, TextAgent, TextAgentConfig
from agents.text.losses import LossTerms, ipo_loss

__all__ = ["TextOnlineIPOConfig", "TextOnlineIPO"]


@dataclass
class TextOnlineIPOConfig(TextAgentConfig):
    """Token-level Online IPO hyper-parameters (plus :class:`TextAgentConfig`'s).

    Attributes:
        average_log_probs: length-average the sequence log-probs (default ``False``: summed).
        lam: the tabular agent's payoff step; it has no token-level meaning (the step is ``lr``)
            and must stay ``None`` (it exists so the zoo's shared ``default`` entry validates).
    """

    average_log_probs: bool = False
    lam: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam is not None:
            raise ConfigError(
                f"lam: the token-level Online IPO has no payoff step (got {self.lam}); set lr"
            )


@register_agent("online_ipo", kind="text")
class TextOnlineIPO(TextAgent):
    """Online IPO on the token duel (see the module docstring)."""

    config_cls = TextOnlineIPOConfig
    config: TextOnlineIPOConfig

    def _iteration(self) -> None:
        # self-play pairs y, y' ~ sg(pi_theta), sampled in one batch of 2 B and judged once;
        # for Hugging Face models the prompts' forward pass of generation is the scoring pass's
        memo = self.prompt_pass_memo()
        policy = self.model if memo is None else memo
        try:
            duel = self.duel(opponent=policy, policy=policy)
            if memo is not None:
                memo.armed = False
            self.optimise_duel(duel, lambda d: self._loss(d, policy))
        finally:
            if memo is not None:
                memo.clear()

    def _loss(self, duel: Duel, policy: Any = None) -> LossTerms:
        """The IPO loss of a batch of pairs, and the statistics to record (``policy``: ``pi_theta``
        or its :class:`~agents.text.backend.PromptPassMemo`)."""
        # one forward of the 2 B sequences (y and y') for pi_theta, one for pi_ref
        log_pi_y, log_pi_y2 = self.pair_log_probs(self.model if policy is None else policy, duel)
        with torch.no_grad():
            log_ref_y, log_ref_y2 = self.pair_log_probs(self.reference, duel)
        out = ipo_loss(
            log_pi_y, log_ref_y, duel.y.mask, log_pi_y2, log_ref_y2, duel.y2.mask, duel.outcome,
            beta=self.beta, average_log_probs=self.config.average_log_probs,
        )  # fmt: skip
        return LossTerms(out.loss, {**out.terms, **self.policy_terms(duel, log_pi_y, log_ref_y)})
