"""Multiplayer Nash Preference Optimization on the token duel: Wu et al., "Multiplayer Nash
Preference Optimization" (arXiv 2509.23102, 2025); the tabular form and its maths are in
:mod:`agents.mnpo`.

Each iteration ``t`` freezes the population of the last ``H = history`` iterates
``pi_t, ..., pi_{t-H+1}`` (weights ``lambda_0..lambda_{H-1}``, newest first) and takes
``inner_steps`` gradient steps on the squared loss of the authors' code,

    loss = o (h(y, y') - eta/2)^2 + (1 - o) (h(y, y') + eta/2)^2,
    h(y, y') = log pi_theta(y)/pi_theta(y') - eta beta log pi_ref(y)/pi_ref(y')
               - (1 - eta beta) sum_j lambda_j log pi_{t-j}(y)/pi_{t-j}(y')

(:func:`mnpo_loss`; for an outcome ``o`` in {0, 1} it is ``(h(y_w, y_l) - eta/2)^2`` on the
winner and the loser, as in the paper; a probability ``o``, ``mode="probability"``, is its
expectation), on pairs ``y, y'`` drawn from the population mixture ``mu_t = sum_j lambda_j pi_{t-j}``
(each answer's population member drawn per prompt). The iteration's result is ``pi_{t+1}``; a frozen
copy of it joins the population and the oldest member leaves. Before ``H`` iterates exist, the
missing members are ``pi_0 = pi_ref``. With ``H = 1`` this is INPO (Zhang et al. 2025) on the token
duel. Sequence log-probs are summed over tokens (the loss's fixed point is the regularised game's
only with true sequence log-probabilities).

``eta`` defaults to ``min(1 / (3 beta), 10/3)`` (:func:`agents.updates.token_default_eta`): the
authors' released configs mix the reference and the population with ``ratio = eta beta = 1/3``,
capped at its value at ``beta = 0.1`` so that the exact dynamics converge at smaller ``beta`` too.

Metrics: those of :mod:`agents.text.common`, ``loss/mnpo`` and ``loss/mnpo_margin``, and at every
evaluation (``eval_every``, unless ``nash_eval`` is ``"off"``) ``eval/population_duality_gap``: the
multiplayer duality gap (:mod:`nlhf_envs.text.population`) of the population ``pi_t, ...,
pi_{t-H+1}`` (for ``H = 1`` the two seats ``(pi_t, pi_t)``, whose gap is ``2 Expl_beta(pi_t)``) on
held-out prompts, exact on enumerable worlds and estimated elsewhere (then also
``eval/population_duality_gap_low``/``_high``, a 95% interval over prompts), as
``eval/exploitability``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.config import ConfigError, check_population_weights
from agents.registry import register_agent
from agents.text.common import Duel, TextAgent, TextAgentConfig, frozen_copy
from agents.text.losses import LossTerms, sequence_log_ratio
from agents.updates import token_default_eta
from nlhf_envs.errors import CheckpointError
from nlhf_envs.progress import Progress
from nlhf_envs.text.engine import Generation
from nlhf_envs.text.tokenizer import PAD

__all__ = ["TextMNPOConfig", "TextMNPO", "mnpo_loss", "mixture_generation"]


def mnpo_loss(
    log_pi: tuple[torch.Tensor, torch.Tensor],
    log_ref: tuple[torch.Tensor, torch.Tensor],
    log_population: list[tuple[torch.Tensor, torch.Tensor]],
    weights: list[float] | np.ndarray,
    masks: tuple[torch.Tensor, torch.Tensor],
    outcome: torch.Tensor,
    *,
    eta: float,
    beta: float,
) -> LossTerms:
    """MNPO's squared loss (Wu et al. 2025; see the module docstring for the equation).

    Args:
        log_pi: ``([B, N], [B, N'])`` differentiable token log-probs of ``y`` and ``y'`` under
            ``pi_theta``.
        log_ref: the same under ``pi_ref``.
        log_population: one ``(y, y')`` pair of token log-prob tensors per population member
            ``pi_{t-j}``, newest first.
        weights: ``lambda_j``, one per member (validated: non-negative, summing to 1).
        masks: ``([B, N], [B, N'])`` bool answer masks of ``y`` and ``y'``.
        outcome: ``[B]`` outcomes (or probabilities) that ``y`` is preferred to ``y'``.
        eta: the step ``eta > 0``, with ``eta beta <= 1``.
        beta: the regularisation ``beta > 0``.

    Returns:
        The loss and ``loss/mnpo``, ``loss/mnpo_margin`` (the mean of ``h``).
    """
    w = check_population_weights(weights, len(log_population))
    if not (eta > 0 and beta > 0 and eta * beta <= 1.0):
        raise ValueError(f"need eta > 0, beta > 0 and eta beta <= 1; got eta={eta}, beta={beta}")
    m1, m2 = masks
    if m1.shape[0] != m2.shape[0] or outcome.shape != (m1.shape[0],):
        raise ValueError(
            f"y, y' and outcome must have the same batch size; got {m1.shape[0]}, "
            f"{m2.shape[0]} and {tuple(outcome.shape)}"
        )

    def seq(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # log q(y) - log q(y') (sequence log-probs summed over tokens); the zero tensors make
        # sequence_log_ratio a plain masked sum
        a, b = pair
        return sequence_log_ratio(a, torch.zeros_like(a), m1) - sequence_log_ratio(
            b, torch.zeros_like(b), m2
        )

    ratio_pi = seq(log_pi)
    ratio_ref = seq(log_ref).detach()
    ratio_pop = sum(float(wj) * seq(pair).detach() for wj, pair in zip(w, log_population))
    h = ratio_pi - eta * beta * ratio_ref - (1.0 - eta * beta) * ratio_pop
    o = outcome.to(h.dtype)
    loss = (o * (h - eta / 2.0) ** 2 + (1.0 - o) * (h + eta / 2.0) ** 2).mean()
    return LossTerms(loss, {"loss/mnpo": loss.detach(), "loss/mnpo_margin": h.detach().mean()})


def mixture_generation(parts: list[Generation], component: torch.Tensor) -> Generation:
    """Row ``b`` of ``parts[component[b]]``, all padded to the longest (``<pad>``, mask false)."""
    width = max(g.tokens.shape[1] for g in parts)

    def pad(x: torch.Tensor, value: Any) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    tokens = torch.stack([pad(g.tokens, PAD) for g in parts])
    log_probs = torch.stack([pad(g.log_probs, 0.0) for g in parts])
    mask = torch.stack([pad(g.mask, False) for g in parts])
    lengths = torch.stack([g.lengths for g in parts])
    rows = torch.arange(component.shape[0], device=component.device)
    return Generation(
        tokens[component, rows], log_probs[component, rows], mask[component, rows],
        lengths[component, rows],
    )  # fmt: skip


@dataclass
class TextMNPOConfig(TextAgentConfig):
    """Token-level MNPO hyper-parameters (plus :class:`TextAgentConfig`'s).

    Attributes:
        eta: the step (``None``: ``min(1 / (3 beta), 10/3)``, :func:`agents.updates.token_default_eta`).
        history: ``H``, how many of the latest iterates form the population (1 = INPO).
        weights: ``lambda_0..lambda_{H-1}``, newest first (``None``: uniform).
        inner_steps: gradient steps per iteration (``batch_size`` queries each).
    """

    eta: float | None = None
    history: int = 2
    weights: list[float] | None = None
    inner_steps: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and not self.eta > 0:
            raise ConfigError(f"eta: must be > 0 (or None for the default); got {self.eta}")
        if self.history < 1:
            raise ConfigError(f"history: must be an integer >= 1; got {self.history}")
        if self.inner_steps < 1:
            raise ConfigError(f"inner_steps: must be an integer >= 1; got {self.inner_steps}")
        if self.weights is not None:
            check_population_weights(self.weights, self.history)


@register_agent("mnpo", kind="text")
class TextMNPO(TextAgent):
    """MNPO on the token duel (see the module docstring).

    Attributes:
        population: the frozen members ``pi_t, ..., pi_{t-H+1}`` of the current iteration.
    """

    config_cls = TextMNPOConfig
    config: TextMNPOConfig

    @property
    def eta(self) -> float:
        """The step in use (:func:`agents.updates.token_default_eta` unless configured)."""
        return self.config.eta if self.config.eta is not None else token_default_eta(self.beta)

    def iteration_queries(self) -> int:
        """Preference queries of one iteration: ``inner_steps batch_size``."""
        return int(self.config.inner_steps * self.config.batch_size)

    def _setup(self) -> None:
        if self.eta * self.beta > 1.0:
            raise ConfigError(f"eta: MNPO needs eta * beta <= 1; got eta = {self.eta:g}")
        cfg = self.config
        self.weights = (
            np.full(cfg.history, 1.0 / cfg.history)
            if cfg.weights is None
            else check_population_weights(cfg.weights, cfg.history)
        )
        start = frozen_copy(self.model)  # pi_0 (= pi_ref): every member before H iterates exist
        self.population: list[torch.nn.Module] = [start] * cfg.history

    def members(self) -> list[torch.nn.Module]:
        """The population ``pi_t, ..., pi_{t-H+1}`` as seats (``pi_t`` is ``pi_theta``); for
        ``H = 1``, ``pi_t`` in two seats."""
        members = [self.model, *self.population[1:]]
        return members * 2 if len(members) == 1 else members

    def evaluate(
        self, num_prompts: int | None = None, split: str = "heldout", progress: Progress = None
    ) -> dict[str, float]:
        """:meth:`TextAgent.evaluate` plus :meth:`population_gap` (unless ``nash_eval`` is
        ``"off"``)."""
        out = super().evaluate(num_prompts, split, progress)
        if self.config.nash_eval != "off":
            out.update(self.population_gap())
        return out

    @torch.no_grad()
    def population_gap(self, exact: bool | None = None) -> dict[str, float]:
        """``eval/population_duality_gap`` of :meth:`members` on held-out prompts (no queries counted).

        Args:
            exact: ``True``: exact (enumerable worlds, in the game of :meth:`exact_game`);
                ``False``: estimated with ``nash_eval_prompts`` prompts and ``nash_eval_samples``
                samples (then also ``_low``/``_high``); ``None``: from ``config.nash_eval``, as
                :meth:`nash_metrics`.
        """
        from nlhf_envs.text.estimate import estimate_population_gap
        from nlhf_envs.text.population import exact_population_gap

        mode = self.config.nash_eval
        if exact is None:
            exact = mode == "exact" or (mode in ("auto", "off") and self.enumerable())
        members = self.members()
        self.model.eval()
        try:
            if exact:
                game, _ = self.exact_game()
                gap = exact_population_gap(members, self.env, split="heldout", game=game)
                return {"eval/population_duality_gap": gap}
            n = self.config.nash_eval_samples
            seed = np.random.SeedSequence([self.seed, 10, self.num_iterations]).generate_state(1)
            est = estimate_population_gap(
                members,
                self.env,
                split="heldout",
                num_prompts=self.config.nash_eval_prompts,
                n=n,
                m=2 * n,
                seed=int(seed[0]),
                payer=self.config.payer,
                beta=self.beta,
                reference=self.reference,
            )
            return est.as_dict("eval/")
        finally:
            self.model.train()

    def _sample_pairs(self) -> Duel:
        """``batch_size`` prompts with ``y, y' ~ mu_t`` (independently), judged: counted queries."""
        if len(self.population) == 1:
            member = self.population[0]
            return self.duel(opponent=member, policy=member)
        cfg = self.config
        split = getattr(self.env, "prompt_split", "train")
        _, ids, mask = self.engine.sample_prompts(
            cfg.batch_size, self.prompt_generator(), split=split
        )
        lam = torch.as_tensor(self.weights, dtype=torch.float32, device=self.device)
        comp = torch.multinomial(lam, 2 * cfg.batch_size, replacement=True, generator=self.rng)
        firsts, seconds = [], []
        for member in self.population:  # self-play of each member: one call of 2 B rows
            y, y2 = self.engine.generate_pair(member, member, ids, mask, self.rng, joint=True)
            firsts.append(y)
            seconds.append(y2)
        y = mixture_generation(firsts, comp[: cfg.batch_size])
        y2 = mixture_generation(seconds, comp[cfg.batch_size :])
        pay = self.engine.score(ids, mask, y, y2, self.rng)
        self.queries_used += cfg.batch_size
        self._tokens += int(sum(int(g.lengths.sum()) for g in firsts + seconds))
        outcome = pay.outcome if cfg.mode == "sampled" else pay.prob.float()
        return Duel(ids, mask, y, y2, outcome.to(self.device))

    def _iteration(self) -> None:
        for _ in range(self.config.inner_steps):
            duel = self._sample_pairs()
            self.optimise_duel(duel, self._loss)
        self.population = [frozen_copy(self.model), *self.population[:-1]]

    def _loss(self, duel: Duel) -> LossTerms:
        """MNPO's loss of a batch of pairs, and the statistics to record (one forward of the
        ``2 B`` sequences per model: ``pi_theta``, ``pi_ref``, each population member)."""
        log_pi = self.pair_log_probs(self.model, duel)
        with torch.no_grad():
            log_ref = self.pair_log_probs(self.reference, duel)
            log_pop = [self.pair_log_probs(m, duel) for m in self.population]
        out = mnpo_loss(
            log_pi, log_ref, log_pop, self.weights, (duel.y.mask, duel.y2.mask),
            duel.outcome, eta=self.eta, beta=self.beta,
        )  # fmt: skip
        # policy/* statistics are taken on the answers y, which come from mu_t (pi_t for H = 1)
        return LossTerms(out.loss, {**out.terms, **self.policy_terms(duel, log_pi[0], log_ref[0])})

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_arrays(self, include_history: bool = True) -> dict[str, np.ndarray]:
        """The text-agent checkpoint plus ``population/<j>/<param>`` for every member."""
        arrays = super().checkpoint_arrays(include_history)
        for j, member in enumerate(self.population):  # with LoRA the adapters (shared base)
            for k, v in self.backend.policy_state(member).items():
                arrays[f"population/{j}/{k}"] = v.detach().cpu().numpy()
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
    ) -> TextMNPO:
        """Rebuild the agent and its population (see :func:`agents.text.checkpoint.load_text_agent`).

        Raises:
            CheckpointError: naming ``p`` when a population member is missing or does not fit.
        """
        agent = super().from_checkpoint(p, meta, arrays, game=game, tensorboard_log=tensorboard_log)
        members = []
        for j in range(agent.config.history):
            prefix = f"population/{j}/"
            state = {
                k[len(prefix) :]: torch.from_numpy(np.array(v))
                for k, v in arrays.items()
                if k.startswith(prefix)
            }
            if not state:
                raise CheckpointError(f"{p!r}: missing population member {j} of the MNPO agent")
            bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
            if bad:
                raise CheckpointError(f"{p!r}: population/{j}/{bad[0]} must be finite")
            if agent.backend.kind == "lora":  # older checkpoints also hold the shared base
                state = {k: v for k, v in state.items() if "lora_" in k}
            member = frozen_copy(agent.model)  # pi_theta's structure (LoRA: its shared base)
            try:
                agent.backend.load_policy_state(member, state)
            except (RuntimeError, ValueError) as err:
                raise CheckpointError(f"{p!r}: population member {j} does not fit: {err}") from None
            members.append(member.to(agent.device))
        agent.population = members
        return agent
