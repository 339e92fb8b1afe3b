"""Nash Prox: self-play policy gradient (the Online IPO update) inside a proximal-point outer loop.

Tiapkin et al., "Proximal Point Nash Learning from Human Feedback" (arXiv 2505.19731 v2, COLT 2026).
What the paper's public text (its abstract) says: self-play policy gradient, which is equivalent to
Online IPO, converges in the last iterate with high probability, but its dynamics have a possible
stability limitation; embedding the self-play updates in a proximal-point framework gives a
stabilised algorithm with high-probability last-iterate convergence, whose more practical version
is called Nash Prox and is applied to the post-training of language models. The equations below
are this library's reading of that sentence, written from the proximal-point method on the
beta-regularised game (they are not copied from the paper, whose body we could not read).

**Outer loop (proximal point).** From the anchor ``pi_k``, the next anchor is the Nash equilibrium
of the game regularised toward ``pi_k`` as well:

    pi_{k+1} = Nash of  P(pi > pi') - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)
                                    + beta KL(pi'||pi_ref) + (beta/eta) KL(pi'||pi_k).

Both KL terms are one: ``beta KL(pi||pi_ref) + (beta/eta) KL(pi||pi_k) = beta' KL(pi||pi_ref')
+ const`` with ``beta' = beta (1 + 1/eta)`` and ``log pi_ref' = (eta log pi_ref + log pi_k) /
(1 + eta)`` (normalised), so ``pi_{k+1}`` is the ``beta'``-regularised Nash equilibrium of the same
preferences with reference ``pi_ref'`` (:func:`prox_game`, :func:`proximal_point_step`). It is the
implicit form of Nash-MP's prox step: ``l = (l_k + eta l_ref + (eta/beta) g_{pi_{k+1}}) / (1 + eta)``
with the new policy's own win rates.

**Contraction (any eta).** The optimality of ``pi_{k+1}`` in its regularised game and of
``pi* = pi*_beta`` in the beta-regularised game, summed at each other (the preference game is
monotone: ``<g_a, a - b> + <g_b, b - a> = 0``), give

    (1 + eta) KL(pi*||pi_{k+1}) + eta KL(pi_{k+1}||pi*) + KL(pi_{k+1}||pi_k) <= KL(pi*||pi_k),

so ``KL(pi*||pi_{k+1}) <= KL(pi*||pi_k) / (1 + eta)`` for every ``eta > 0``, without a step
condition (Nash-MP's extragradient approximation of the same step needs ``eta <= 2 beta``).
``tests/agents/test_nash_prox.py`` checks it on random games of several families.

**Inner loop (self-play).** The outer step is computed approximately by ``inner_steps`` self-play
steps on the prox game: Online IPO's explicit step with ``beta'`` and ``pi_ref'``,

    l_{t+1} = (1 - lam beta') l_t + lam beta' l_ref' + lam g_{pi_t}
            = (1 - lam beta') l_t + lam beta l_ref + lam (beta/eta) l_k + lam g_{pi_t},

(:func:`agents.updates.regularized_explicit_step`), and the anchor ``pi_k`` is refreshed to the
current policy every ``inner_steps`` iterations. The prox game is ``beta'``-strongly monotone, more
than the original, so larger self-play steps are stable: this is where the stabilisation comes
from (with ``eta -> inf`` the method is Online IPO). Default ``lam``: Online IPO's step on the prox
game, ``beta' / (beta'^2 + L^2)``.

Modes: ``exact`` (1 query per iteration) and ``sampled`` (``batch_size`` queries per win-rate
estimate). The defaults ``eta = 1`` and ``inner_steps = 20`` are ours (the paper's are not in its
public text). The token-level agent is :mod:`agents.text.nash_prox`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agents.base import Agent
from agents.config import AgentConfig, ConfigError, check_regularized_step
from agents.registry import register_agent
from agents.updates import (
    default_explicit_step,
    log_normalize,
    regularized_explicit_step,
    softmax,
)
from nlhf_envs.game import PreferenceGame

__all__ = [
    "NashProxConfig",
    "NashProx",
    "prox_beta",
    "prox_reference",
    "prox_game",
    "proximal_point_step",
]


def prox_beta(beta: float, eta: float) -> float:
    """``beta' = beta (1 + 1/eta)``: the regularisation of the prox game (see the module docstring)."""
    if not (beta > 0 and eta > 0):
        raise ValueError(f"beta and eta must be > 0; got beta={beta}, eta={eta}")
    return beta * (1.0 + 1.0 / eta)


def prox_reference(l_ref: np.ndarray, l_anchor: np.ndarray, eta: float) -> np.ndarray:
    """``log pi_ref' = (eta l_ref + l_k) / (1 + eta)``, normalised: the reference of the prox game
    (the geometric mixture of ``pi_ref`` and the anchor ``pi_k``)."""
    if not eta > 0:
        raise ValueError(f"eta must be > 0; got {eta}")
    return log_normalize((eta * np.asarray(l_ref) + np.asarray(l_anchor)) / (1.0 + eta))


def prox_game(game: PreferenceGame, anchor: np.ndarray, eta: float) -> PreferenceGame:
    """The game whose regularised Nash equilibrium is the proximal-point step from ``anchor``: the
    same preferences and context weights, ``beta' = beta (1 + 1/eta)`` and reference ``pi_ref'``
    (:func:`prox_reference`).

    Args:
        game: the preference game (its ``P``, ``pi_ref``, ``beta``, ``rho``).
        anchor: ``(C, K)`` (or ``(K,)``) anchor policy ``pi_k``, positive.
        eta: prox step ``eta > 0``.
    """
    l_ref = np.log(np.asarray(game.pi_ref, dtype=np.float64))
    l_k = np.log(np.asarray(anchor, dtype=np.float64)).reshape(l_ref.shape)
    ref = softmax(prox_reference(l_ref, l_k, eta))
    return PreferenceGame(
        game.P, ref, prox_beta(game.beta, eta), game.rho, name=f"{game.name}/prox", atol=1e-9
    )


def proximal_point_step(game: PreferenceGame, anchor: np.ndarray, eta: float) -> np.ndarray:
    """One exact proximal-point step: the Nash equilibrium of :func:`prox_game` (solved to the
    solver's verified precision), a ``(C, K)`` table. No query is counted (it reads ``P``)."""
    from nlhf_envs.solvers import regularized_nash

    return np.asarray(regularized_nash(prox_game(game, anchor, eta), use_cache=False)).reshape(
        game.shape
    )


@dataclass
class NashProxConfig(AgentConfig):
    """Nash Prox hyper-parameters (plus :class:`~agents.config.AgentConfig`'s shared fields).

    Attributes:
        mode: ``"exact"`` (default) or ``"sampled"``.
        eta: prox step ``eta > 0`` (the anchor's weight is ``beta / eta``); default 1 (ours).
        inner_steps: ``M``, self-play steps per anchor (the anchor is refreshed every ``M``
            iterations); default 20 (ours).
        lam: self-play step on the prox game; ``None`` = ``beta' / (beta'^2 + L^2)``.
    """

    MODES: ClassVar[tuple[str, ...]] = ("exact", "sampled")

    eta: float = 1.0
    inner_steps: int = 20
    lam: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta > 0:
            raise ConfigError(f"eta: must be > 0; got {self.eta}")
        if isinstance(self.inner_steps, bool) or self.inner_steps < 1:
            raise ConfigError(f"inner_steps: must be an integer >= 1; got {self.inner_steps}")
        if self.lam is not None and not self.lam > 0:
            raise ConfigError(f"lam: must be > 0 (or None for the default); got {self.lam}")


@register_agent("nash_prox")
class NashProx(Agent):
    """Nash Prox (see the module docstring).

    Attributes:
        anchor: ``(C, K)`` log-policy of the current anchor ``pi_k``.
    """

    config_cls = NashProxConfig
    config: NashProxConfig
    state_attrs = ("log_pi", "anchor")

    def _setup(self) -> None:
        check_regularized_step(
            "Nash Prox", "lam", self.config.lam, self.beta_prox, self._default_lam()
        )
        self.anchor = self.log_pi.copy()

    @property
    def anchor(self) -> np.ndarray:
        """The anchor's log-policy (see the class docstring)."""
        return self._anchor

    @anchor.setter
    def anchor(self, value: np.ndarray) -> None:
        if np.shape(value) != self.game.shape:
            raise ValueError(f"anchor must have shape {self.game.shape}; got {np.shape(value)}")
        self._anchor = np.array(value, dtype=np.float64)

    @classmethod
    def default_step(cls, game: PreferenceGame) -> tuple[str, float]:
        """``(config key, value)`` of the prox step's default: ``eta = 1``."""
        return "eta", 1.0

    @property
    def eta(self) -> float:
        """The prox step in use."""
        return self.config.eta

    @property
    def beta_prox(self) -> float:
        """``beta' = beta (1 + 1/eta)``, the regularisation of the inner (prox) game."""
        return prox_beta(self.beta, self.eta)

    def _default_lam(self) -> float:
        return default_explicit_step(self.game.P, self.beta_prox)

    @property
    def lam(self) -> float:
        """The self-play step in use (``beta' / (beta'^2 + L^2)`` unless configured)."""
        return self.config.lam or self._default_lam()

    def _iteration(self) -> dict[str, float]:
        if self.num_iterations % self.config.inner_steps == 0:
            self.anchor = self.log_pi.copy()  # the proximal-point outer step: a new anchor
        l_ref_prox = prox_reference(self.l_ref, self.anchor, self.eta)
        g = self.win_rates(softmax(self.log_pi))
        self.log_pi = regularized_explicit_step(
            self.log_pi, l_ref_prox, g, self.lam, self.beta_prox
        )
        return {}
