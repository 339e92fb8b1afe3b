"""Approximate Nash Mirror Prox on the token duel: Tiapkin et al., "Accelerating Nash Learning from
Human Feedback via Mirror Prox" (arXiv 2505.19731); ``equations.md`` §3, design (A).

Each iteration takes two proximal half-steps, both centred on ``pi_k``:

    pi_{k+1/2} = argmax_pi P(pi > pi_k)       - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)
    pi_{k+1}   = argmax_pi P(pi > pi_{k+1/2}) - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)

Design (A), target networks (default, ``variant="target"``):

1. freeze ``pi_k`` (a copy of ``theta_k``) and back up ``theta_k``;
2. phase 1: a fresh Adam, then ``M = inner_steps`` policy-gradient steps on
   :func:`~agents.text.losses.nash_mp_pg_loss` with ``y ~ pi_theta``, ``y' ~ pi_k``, anchor ``pi_k``;
   freeze the result as ``pi_{k+1/2}``;
3. restore ``theta_k``; phase 2: a fresh Adam, ``M`` steps with ``y' ~ pi_{k+1/2}``, anchor ``pi_k``;
   the result is ``pi_{k+1}``.

Each half-step solves its own entropy-regularised bandit, so its optimiser starts afresh
(``optimizer_state="reset"``, default): carrying Adam's moments from the previous phase
(``optimizer_state="carry"``, the earlier default: restore the Adam state of ``theta_k``)
makes the half-step follow the previous phase's gradient noise instead of the prox step
(``equations.md`` §7, "prox fidelity"; :func:`prox_fidelity` measures it on an enumerable world).

One iteration costs ``2 M batch_size`` preference queries. The paper does not publish its inner-loop
budget; ``M = 8`` is this library's default (the zoo entries say what they use).

Design (B), extragradient (``variant="extragradient"``, requires ``M = 1``): one "extrapolate" step
from ``theta_k`` against ``pi_k`` gives ``pi_{k+1/2}``; ``theta_k`` and the Adam state are restored and
one "update" step against ``pi_{k+1/2}`` gives ``theta_{k+1}``. Both gradients are taken at
``theta = theta_k``, where the anchor term ``log(pi_theta/pi_k)`` is identically zero, so no ``pi_k``
network is kept (the ``(beta/eta)`` term drops out exactly).

Design (C), the practical Nash-MP (``variant="ema"``, requires ``M = 1``): one policy-gradient step
per query batch, no half-step and nothing thrown away. The paper's practical recipe for language
models (Tiapkin et al. 2025, the section on fine-tuning language models) replaces the prox steps by
policy gradients and keeps an exponential moving average of the parameters for stability, without
saying in a form we could check which policy the average stands for. This library's reading: the
EMA network ``pi_bar`` (parameters ``theta_bar``) is both the prox centre (``pi_k`` in the half-step
objective above) and the opponent, as the parameter-EMA opponent of Munos et al.'s Nash-EMA
("Nash Learning from Human Feedback", ICML 2024, §7). Every iteration:

1. ``x ~ rho``, ``y ~ pi_theta``, ``y' ~ pi_bar``, one query per pair;
2. one optimiser step on :func:`~agents.text.losses.nash_mp_pg_loss` with anchor ``pi_bar``, i.e. the
   half-step objective ``P(pi > pi_bar) - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_bar)``;
3. ``theta_bar <- (1 - ema_rate) theta_bar + ema_rate theta`` (``ema_rate`` is ``kappa``).

One optimiser serves the whole run (there are no half-steps to reset it for; ``optimizer_state``
does not apply). At a rest point ``theta_bar = theta``, the anchor term vanishes and the expected
gradient is zero exactly at the beta-regularised Nash equilibrium ``pi ∝ pi_ref exp(g_pi/beta)``:
the anchor shapes the path, not the fixed point. :mod:`agents.nash_mp_ema` is the exact-gradient
tabular analogue whose fixed point the tests compare with the exact regularised Nash. The policy
the agent plays and is evaluated on is ``pi_theta`` (``agent.model``); ``agent.ema_model`` is
``pi_bar``. Checkpoints hold ``theta_bar`` too (``ema/*``), so a resumed run is exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from agents.config import ConfigError
from agents.registry import register_agent
from agents.text.common import Duel, TextAgent, TextAgentConfig, frozen_copy
from agents.text.losses import LossTerms, nash_mp_pg_loss
from nlhf_envs.errors import CheckpointError

__all__ = ["TextNashMPConfig", "TextNashMP", "ProxFidelity", "exact_prox_step", "prox_fidelity"]


@dataclass
class TextNashMPConfig(TextAgentConfig):
    """Token-level Nash-MP hyper-parameters (plus :class:`TextAgentConfig`'s).

    Attributes:
        eta: prox step ``eta`` (``None``: ``2 beta``, the step of the paper's theorem).
        inner_steps: ``M``, policy-gradient steps per half-step (``batch_size`` queries each).
        variant: ``"target"`` (design (A), default), ``"extragradient"`` (design (B), ``M = 1``) or
            ``"ema"`` (design (C), ``M = 1``: one step per batch against the EMA network).
        ema_rate: ``kappa`` in ``(0, 1]``, the EMA rate of design (C) per iteration (the average
            spans about ``1 / kappa`` iterations); unused by the other designs.
        optimizer_state: ``"reset"`` (default): a fresh Adam per half-step, so the inner loop
            computes the prox step; ``"carry"``: restore ``theta_k``'s Adam state before each phase
            (the default of earlier versions).
    """

    eta: float | None = None
    inner_steps: int = 8
    variant: str = "target"
    optimizer_state: str = "reset"
    ema_rate: float = 0.1

    VARIANTS: ClassVar[tuple[str, ...]] = ("target", "extragradient", "ema")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for 2 beta); got {self.eta}")
        if self.inner_steps < 1:
            raise ConfigError(f"inner_steps: must be an integer >= 1; got {self.inner_steps}")
        if self.variant not in self.VARIANTS:
            raise ConfigError(
                f"variant: expected one of {', '.join(map(repr, self.VARIANTS))}; "
                f"got {self.variant!r}"
            )
        if not 0.0 < self.ema_rate <= 1.0:
            raise ConfigError(f"ema_rate: must lie in (0, 1]; got {self.ema_rate}")
        if self.optimizer_state not in ("reset", "carry"):
            raise ConfigError(
                f"optimizer_state: expected 'reset' or 'carry'; got {self.optimizer_state!r}"
            )
        if self.variant == "extragradient" and self.inner_steps != 1:
            raise ConfigError(
                f"inner_steps: the extragradient variant takes one step per half-step; got "
                f"{self.inner_steps} (set inner_steps: 1 or variant: target)"
            )
        if self.variant == "ema" and self.inner_steps != 1:
            raise ConfigError(
                f"inner_steps: the ema variant takes one step per query batch; got "
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

    def iteration_queries(self) -> int:
        """Preference queries of one iteration: ``2 inner_steps batch_size`` (two half-steps of
        designs (A)/(B)) or ``batch_size`` (design (C))."""
        cfg = self.config
        if cfg.variant == "ema":
            return cfg.batch_size
        return 2 * cfg.inner_steps * cfg.batch_size

    def _setup(self) -> None:
        #: design (C): ``pi_bar``, the EMA of ``pi_theta``'s parameters (``None`` otherwise)
        self.ema_model: torch.nn.Module | None = None
        if self.config.variant == "ema":
            self.ema_model = frozen_copy(self.model)

    def _ema_iteration(self) -> None:
        """Design (C): one step against ``pi_bar`` (anchor and opponent), then the EMA update."""
        bar = self.ema_model
        duel = self.duel(opponent=bar)
        self.optimise_duel(duel, lambda d: self._loss(d, anchor=bar))
        with torch.no_grad():
            for p_bar, p in zip(bar.parameters(), self.model.parameters(), strict=True):
                if p_bar is not p:  # LoRA: the frozen base is shared, only the adapter moves
                    p_bar.lerp_(p, self.config.ema_rate)

    def _loss(self, duel: Duel, anchor: Any) -> LossTerms:
        """The half-step's policy-gradient loss of a batch of pairs (anchor ``pi_k``, or at
        ``theta = theta_k`` with ``anchor=None``), and the statistics to record."""
        log_pi = self.log_probs(self.model, duel)
        with torch.no_grad():
            log_ref = self.log_probs(self.reference, duel)
            # at theta = theta_k (the extragradient variant) log(pi_theta / pi_k) is exactly zero
            log_anchor = log_pi.detach() if anchor is None else self.log_probs(anchor, duel)
        out = nash_mp_pg_loss(
            log_pi, log_ref, log_anchor, duel.y.mask, duel.outcome, beta=self.beta, eta=self.eta
        )
        return LossTerms(out.loss, {**out.terms, **self.policy_terms(duel, log_pi, log_ref)})

    def checkpoint_arrays(self, include_history: bool = True) -> dict[str, np.ndarray]:
        """The text-agent checkpoint arrays, plus ``ema/*`` (``theta_bar``) for design (C)."""
        arrays = super().checkpoint_arrays(include_history)
        if self.ema_model is not None:  # with LoRA the adapter's (the base is pi_ref's)
            for key, val in self.backend.policy_state(self.ema_model).items():
                arrays[f"ema/{key}"] = val.detach().cpu().numpy()
        return arrays

    @classmethod
    def from_checkpoint(
        cls,
        p: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        game: Any = None,
        tensorboard_log: Any = None,
    ) -> TextNashMP:
        """Rebuild the agent (see :func:`agents.text.checkpoint.load_text_agent`), ``theta_bar`` too.

        Raises:
            CheckpointError: naming ``p`` when a design-(C) checkpoint lacks or garbles ``ema/*``.
        """
        agent = super().from_checkpoint(p, meta, arrays, game=game, tensorboard_log=tensorboard_log)
        if agent.ema_model is not None:
            state = {k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                     if k.startswith("ema/")}  # fmt: skip
            if agent.backend.kind == "lora":  # older checkpoints also hold the shared base
                state = {k: v for k, v in state.items() if "lora_" in k}
            try:
                agent.backend.load_policy_state(agent.ema_model, state)
            except (RuntimeError, KeyError, ValueError) as err:
                raise CheckpointError(f"{p!r}: cannot rebuild the EMA network: {err}") from None
        return agent

    def _policy_backup(self) -> dict[str, torch.Tensor]:
        """A copy of ``theta`` (every weight; with LoRA the adapter's: the base never moves)."""
        return {k: v.detach().clone() for k, v in self.backend.policy_state(self.model).items()}

    def _fresh_optimizer(self) -> None:
        self.optimizer = self.new_optimizer(self.model, self.current_lr())

    def _half_step(self, opponent: Any, anchor: Any) -> None:
        """``M`` policy-gradient steps on the half-step's objective against ``opponent``."""
        cfg = self.config
        if cfg.optimizer_state == "reset":
            self._fresh_optimizer()
        for _ in range(cfg.inner_steps):
            duel = self.duel(opponent)
            self.optimise_duel(duel, lambda d: self._loss(d, anchor))

    def _iteration(self) -> None:
        if self.config.variant == "ema":
            self._ema_iteration()
            return
        # 1. targets: pi_k is theta_k, frozen; back up theta_k (and the optimiser state: "carry")
        pi_k = frozen_copy(self.model)
        theta_k = self._policy_backup()
        carry = self.config.optimizer_state == "carry"
        opt_k = copy.deepcopy(self.optimizer.state_dict()) if carry else None
        anchor = pi_k if self.config.variant == "target" else None
        # 2. phase 1: pi_{k+1/2} from M steps against pi_k
        self._half_step(opponent=pi_k, anchor=anchor)
        pi_half = frozen_copy(self.model)
        # 3. phase 2: restore theta_k (and, "carry", the Adam state), M steps against pi_{k+1/2}
        self.backend.load_policy_state(self.model, theta_k)
        if opt_k is not None:
            self.optimizer.load_state_dict(opt_k)
        self._half_step(opponent=pi_half, anchor=anchor)


# ---------------------------------------------------------------------------------- prox fidelity


def exact_prox_step(
    log_pi_k: np.ndarray, log_ref: np.ndarray, payoff: np.ndarray, *, beta: float, eta: float
) -> np.ndarray:
    """The exact Nash-MP half-step on log-probabilities (``equations.md`` §3, closed form).

    ``l_half = (l_k + eta l_ref + (eta/beta) g) / (1 + eta)``, normalised per context, with
    ``g[c, i] = sum_j P[c, i, j] pi_k[c, j]`` (Tiapkin et al. 2025, the prox step of Nash-MP).

    Args:
        log_pi_k: ``(C, N)`` log-probabilities of ``pi_k`` over the enumerated answers.
        log_ref: ``(C, N)`` log-probabilities of ``pi_ref``.
        payoff: ``(C, N, N)`` preference matrices ``P[c, y, y']``.
        beta: regularisation ``beta``.
        eta: prox step ``eta``.

    Returns:
        ``(C, N)`` normalised log-probabilities of ``pi_{k+1/2}``.
    """
    g = np.matmul(payoff, np.exp(log_pi_k)[..., None])[..., 0]
    raw = (log_pi_k + eta * log_ref + (eta / beta) * g) / (1.0 + eta)
    m = raw.max(-1, keepdims=True)
    return raw - (m + np.log(np.exp(raw - m).sum(-1, keepdims=True)))


@dataclass
class ProxFidelity:
    """How well one neural half-step matches the exact prox step (``equations.md`` §7).

    Attributes:
        correlation: correlation over ``(x, y)``, weighted by ``pi_k(y|x)``, between the neural
            change ``log pi_half - log pi_k`` and the exact one (centred per prompt).
        kl_neural_to_exact: ``E_x KL(pi_half^exact || pi_half^neural)`` (nats).
        kl_step_exact: ``E_x KL(pi_half^exact || pi_k)``: the size of the exact step, for scale.
        kl_step_neural: ``E_x KL(pi_half^neural || pi_k)``.
    """

    correlation: float
    kl_neural_to_exact: float
    kl_step_exact: float
    kl_step_neural: float


def _kl(log_p: np.ndarray, log_q: np.ndarray) -> float:
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())


def prox_fidelity(agent: TextNashMP, split: str = "heldout") -> ProxFidelity:
    """Run one neural half-step of ``agent`` from its current ``pi_k`` and compare it with the exact
    prox step on the prompts of ``split`` (an enumerable world; ``equations.md`` §7).

    The half-step is the agent's own phase 1 (its ``inner_steps``, ``batch_size``, ``mode`` and
    optimiser handling; it trains on the env's prompt split and counts its queries). Afterwards the
    agent's parameters and optimiser are restored, so the agent is unchanged except for
    ``queries_used`` and its generator.

    Args:
        agent: a token-level Nash-MP agent on an enumerable world.
        split: the prompts compared (``"heldout"`` default, ``"train"``, ``"all"``).

    Returns:
        The :class:`ProxFidelity` figures.
    """
    from nlhf_envs.text.exact import exact_game, sequence_policy

    game = exact_game(
        agent.env, split, payer=agent.config.payer, beta=agent.beta, reference=agent.reference
    )
    payoff = np.asarray(game.P, dtype=np.float64)
    log_ref = np.log(np.asarray(game.pi_ref, dtype=np.float64))
    theta_k = agent._policy_backup()
    opt_k = agent.optimizer
    opt_state = copy.deepcopy(agent.optimizer.state_dict())
    agent.model.eval()
    with torch.no_grad():
        log_k = np.log(np.asarray(sequence_policy(agent.model, agent.env, split), np.float64))
    agent.model.train()
    pi_k = frozen_copy(agent.model)
    try:
        agent._half_step(opponent=pi_k, anchor=pi_k)
        agent.model.eval()
        with torch.no_grad():
            log_half = np.log(
                np.asarray(sequence_policy(agent.model, agent.env, split), np.float64)
            )
    finally:
        agent.backend.load_policy_state(agent.model, theta_k)
        agent.optimizer = opt_k
        agent.optimizer.load_state_dict(opt_state)
        agent.model.train()
    exact = exact_prox_step(log_k, log_ref, payoff, beta=agent.beta, eta=agent.eta)
    w = np.exp(log_k)
    d_n, d_e = log_half - log_k, exact - log_k
    d_n = d_n - (w * d_n).sum(-1, keepdims=True)
    d_e = d_e - (w * d_e).sum(-1, keepdims=True)
    cov = (w * d_n * d_e).sum()
    corr = cov / np.sqrt((w * d_n**2).sum() * (w * d_e**2).sum())
    return ProxFidelity(
        correlation=float(corr),
        kl_neural_to_exact=_kl(exact, log_half),
        kl_step_exact=_kl(exact, log_k),
        kl_step_neural=_kl(log_half, log_k),
    )
