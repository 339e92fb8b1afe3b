"""Nash Prox on the token duel: Tiapkin et al., "Proximal Point Nash Learning from Human Feedback"
(arXiv 2505.19731 v2, COLT 2026); the tabular form, the maths and what the paper's public text says
are in :mod:`agents.nash_prox`.

Self-play policy gradient (the Online IPO update, :mod:`agents.text.online_ipo`) on the game
regularised toward a proximal anchor ``pi_k`` as well as toward ``pi_ref``:

    P(pi > sg(pi)) - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k).

The two KL terms are one, ``beta' KL(pi||pi_ref')`` with ``beta' = beta (1 + 1/eta)`` and
``log pi_ref' = (eta log pi_ref + log pi_k) / (1 + eta)`` (up to a normaliser, which cancels in the
IPO loss), so every iteration is one step of Online IPO's loss with ``beta'`` and ``pi_ref'``:

    x ~ rho,  y, y' ~ sg(pi_theta)(.|x),  o = P(y > y'|x) (sampled or its probability)
    loss = (h(y, y') - (o - 1/2) / beta')^2,
    h = log(pi_theta(y)/pi_ref'(y)) - log(pi_theta(y')/pi_ref'(y')),
    log pi_ref'(y) = sum_n (eta log pi_ref(y_n) + log pi_k(y_n)) / (1 + eta)

(:func:`~agents.text.losses.ipo_loss`; sequence log-probs summed over tokens, ``batch_size``
preference queries per iteration).

The anchor (``anchor``):

* ``"frozen"`` (default): a frozen copy of ``pi_theta`` taken every ``inner_steps`` iterations
  (``M``): the proximal-point outer loop, whose inner problem the ``M`` self-play steps solve
  approximately. This is our reading of the paper's "self-play updates embedded in a proximal point
  framework".
* ``"ema"``: an exponential moving average of ``pi_theta``'s parameters (``theta_k <- (1 -
  ema_rate) theta_k + ema_rate theta`` after every iteration; ``inner_steps`` unused), a slowly
  moving anchor as in design (C) of Nash-MP (:mod:`agents.text.nash_mp`).

Which of the two the paper's practical version ("Nash Prox") uses is not in its public text (the
abstract); both are offered, ``frozen`` is the default. One optimiser serves the whole run (the
prox problems of consecutive anchors differ little). At a rest point ``pi_k = pi_theta`` and the
fixed point of the loss is the beta-regularised Nash equilibrium ``pi ∝ pi_ref exp(g_pi / beta)``:
the anchor changes the path, not the solution. Checkpoints hold the anchor (``anchor/*``), so a
resumed run is exact. ``eta = 1`` and ``inner_steps = 8`` are ours (the paper's are not public).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from agents.config import ConfigError
from agents.registry import register_agent
from agents.text.common import TextAgent, TextAgentConfig, frozen_copy
from agents.text.losses import ipo_loss
from nlhf_envs.errors import CheckpointError

__all__ = ["TextNashProxConfig", "TextNashProx"]


@dataclass
class TextNashProxConfig(TextAgentConfig):
    """Token-level Nash Prox hyper-parameters (plus :class:`TextAgentConfig`'s).

    Attributes:
        eta: prox step ``eta > 0``: the anchor's weight is ``beta / eta`` (default 1, ours).
        inner_steps: ``M``, self-play steps per anchor (``anchor: frozen``; default 8, ours).
        anchor: ``"frozen"`` (a copy of ``pi_theta`` every ``M`` iterations, the proximal-point
            outer loop) or ``"ema"`` (a parameter EMA of ``pi_theta``).
        ema_rate: ``anchor: ema``: the EMA rate per iteration, in ``(0, 1]``.
    """

    ANCHORS: ClassVar[tuple[str, ...]] = ("frozen", "ema")

    eta: float = 1.0
    inner_steps: int = 8
    anchor: str = "frozen"
    ema_rate: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta > 0:
            raise ConfigError(f"eta: must be > 0; got {self.eta}")
        if isinstance(self.inner_steps, bool) or self.inner_steps < 1:
            raise ConfigError(f"inner_steps: must be an integer >= 1; got {self.inner_steps}")
        if self.anchor not in self.ANCHORS:
            raise ConfigError(
                f"anchor: expected one of {', '.join(map(repr, self.ANCHORS))}; got {self.anchor!r}"
            )
        if not 0.0 < self.ema_rate <= 1.0:
            raise ConfigError(f"ema_rate: must lie in (0, 1]; got {self.ema_rate}")


@register_agent("nash_prox", kind="text")
class TextNashProx(TextAgent):
    """Nash Prox on the token duel (see the module docstring).

    Attributes:
        anchor_model: the anchor ``pi_k`` (frozen; see ``anchor`` in the config).
    """

    config_cls = TextNashProxConfig
    config: TextNashProxConfig

    @property
    def eta(self) -> float:
        """The prox step in use."""
        return self.config.eta

    @property
    def beta_prox(self) -> float:
        """``beta' = beta (1 + 1/eta)``: the regularisation of the prox game."""
        return self.beta * (1.0 + 1.0 / self.eta)

    def _setup(self) -> None:
        self.anchor_model: torch.nn.Module = frozen_copy(self.model)

    def _iteration(self) -> None:
        cfg = self.config
        if cfg.anchor == "frozen" and self.num_iterations % cfg.inner_steps == 0:
            self.anchor_model = frozen_copy(self.model)  # the outer step: a new anchor pi_k
        # self-play pairs y, y' ~ sg(pi_theta), judged once
        duel = self.duel(opponent=self.model)
        # each model scores both answers in one batch, each prompt encoded once for the pair
        log_pi_y, log_pi_y2 = self.pair_log_probs(self.model, duel)
        with torch.no_grad():
            ref_y, ref_y2 = self.pair_log_probs(self.reference, duel)
            anc_y, anc_y2 = self.pair_log_probs(self.anchor_model, duel)
        w = self.eta / (1.0 + self.eta)  # log pi_ref' = w log pi_ref + (1 - w) log pi_k per token
        out = ipo_loss(
            log_pi_y, w * ref_y + (1.0 - w) * anc_y, duel.y.mask,
            log_pi_y2, w * ref_y2 + (1.0 - w) * anc_y2, duel.y2.mask,
            duel.outcome, beta=self.beta_prox,
        )  # fmt: skip
        self.optimise(out.loss)
        self.note({
            "loss/nash_prox": out.terms["loss/ipo"],
            "loss/nash_prox_margin": out.terms["loss/ipo_margin"],
        })  # fmt: skip
        self.note_policy(duel, log_pi_y, ref_y)
        if cfg.anchor == "ema":
            with torch.no_grad():
                params = zip(self.anchor_model.parameters(), self.model.parameters(), strict=True)
                for p_anchor, p in params:
                    p_anchor.lerp_(p, cfg.ema_rate)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_arrays(self, include_history: bool = True) -> dict[str, np.ndarray]:
        """The text-agent checkpoint arrays, plus ``anchor/*`` (the anchor's parameters)."""
        arrays = super().checkpoint_arrays(include_history)
        for key, val in self.anchor_model.state_dict().items():
            arrays[f"anchor/{key}"] = val.detach().cpu().numpy()
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
    ) -> TextNashProx:
        """Rebuild the agent and its anchor (see :func:`agents.text.checkpoint.load_text_agent`).

        Raises:
            CheckpointError: naming ``p`` when ``anchor/*`` is missing, not finite or does not fit.
        """
        agent = super().from_checkpoint(p, meta, arrays, game=game, tensorboard_log=tensorboard_log)
        from agents.text.checkpoint import _state  # the arrays under a prefix, as tensors

        state = _state(arrays, "anchor")
        if not state:
            raise CheckpointError(f"{p!r}: missing the anchor (anchor/*) of the Nash Prox agent")
        bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
        if bad:
            raise CheckpointError(f"{p!r}: anchor/{bad[0]} must be finite")
        try:
            agent.anchor_model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"{p!r}: the anchor does not fit: {err}") from None
        return agent
