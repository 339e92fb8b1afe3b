"""Evaluation of the token-level agents: win rates against ``pi_ref`` and Nash metrics.

The functions here take a :class:`~agents.text.common.TextAgent` and never change what it does
next (their generators are seeded from the agent's seed and ``num_iterations``; no queries are
counted); the agent's ``evaluate``, ``nash_metrics``, ``exact_game`` and ``enumerable`` methods
call them. The metric names are those of :mod:`agents.text.common`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from nlhf_envs.progress import Progress, ProgressEvent, reporter
from nlhf_envs.text.engine import token_log_probs

__all__ = [
    "ESTIMATE_BUDGET_BATCHES",
    "MIN_SUPPORT",
    "estimate_sizes",
    "evaluate",
    "exact_game_and_nash",
    "enumerable",
    "nash_metrics",
]

#: On ``nlhf/HFTokenDuel-v0`` under ``nash_eval: auto``, one Nash estimate (one prompt split)
#: samples about as many answers as this many training batches do (``2 batch_size`` answers each):
#: see :func:`estimate_sizes`.
ESTIMATE_BUDGET_BATCHES = 8

#: The smallest support ``n`` the budget of :func:`estimate_sizes` leaves an estimate.
MIN_SUPPORT = 8


@torch.no_grad()
def evaluate(
    agent: Any,
    num_prompts: int | None = None,
    split: str = "heldout",
    *,
    chunk: int,
    progress: Progress = None,
) -> dict[str, float]:
    """Win rates of ``agent``'s ``pi_theta`` against ``pi_ref`` under the judge and the ground truth
    (:meth:`agents.text.common.TextAgent.evaluate`).

    Uses its own generator (seeded from the agent's seed and ``num_iterations``), so evaluating
    never changes what ``learn`` does next; no queries are counted.

    Args:
        agent: a :class:`~agents.text.common.TextAgent`.
        num_prompts: prompts (one answer pair each); default ``config.eval_prompts``. They are
            evaluated in chunks of ``chunk`` prompts, so memory does not grow with it.
        split: prompt split, ``"heldout"`` (default), ``"train"`` or ``"all"``.
        chunk: prompts per batch (the agent passes :data:`agents.text.common.EVAL_CHUNK`).
        progress: ``None`` (silent), ``True`` (bars on stderr) or a callable receiving
            :class:`~nlhf_envs.progress.ProgressEvent` objects: task ``"evaluate"`` (unit
            ``"prompts"``, one event per chunk), then the Nash estimates' own events (tasks
            ``"nash estimate (heldout)"`` and ``"nash estimate (train)"``).

    Returns:
        ``{"eval/win_rate_ref_judge", "eval/win_rate_ref_true", "eval/kl_ref"}`` and the Nash
        metrics of the agent's ``nash_metrics`` (unless ``nash_eval`` is ``"off"``).
    """
    n = num_prompts or agent.config.eval_prompts
    gen = torch.Generator(agent.device).manual_seed(
        int(np.random.SeedSequence([agent.seed, 7, agent.num_iterations]).generate_state(1)[0])
    )
    parts = []  # (prompts, judge, truth, kl) per chunk: memory stays bounded for any n
    bar = reporter(progress, "evaluate", n, "prompts")
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        _, ids, mask = agent.engine.sample_prompts(m, gen, split=split)
        y = agent.engine.generate(agent.model, ids, mask, gen)
        y_ref = agent.engine.generate(agent.reference, ids, mask, gen)
        kw = {"prompt_mask": mask, "mask_a": y.mask, "mask_b": y_ref.mask}
        p_judge = agent.engine.judge.prob(ids, y.tokens, y_ref.tokens, **kw)
        p_true = (
            agent.truth.prob(ids, y.tokens, y_ref.tokens, **kw)
            if agent.truth is not None
            else torch.full((m,), float("nan"))
        )
        lr = token_log_probs(agent.reference, ids, mask, y.tokens, y.mask)
        kl = ((y.log_probs - lr) * y.mask.float()).sum(-1).mean()
        parts.append((m, float(p_judge.float().mean()), float(p_true.float().mean()), float(kl)))
        bar.advance(m)
    bar.close()
    if len(parts) > 1:
        parts = [(n, *(sum(p[0] * p[k] for p in parts) / n for k in (1, 2, 3)))]
    out = {
        "eval/win_rate_ref_judge": parts[0][1],
        "eval/win_rate_ref_true": parts[0][2],
        "eval/kl_ref": parts[0][3],
    }
    if agent.truth is None:  # a Hugging Face game without a ground truth
        del out["eval/win_rate_ref_true"]
    if agent.config.nash_eval != "off":
        out.update(agent.nash_metrics(progress=progress))
    return out


def estimate_sizes(agent: Any, split: str) -> tuple[int, int, int]:
    """``(num_prompts, n, m)`` of ``agent``'s Nash estimate on the prompts of ``split``.

    The config gives them: ``nash_eval_prompts`` prompts, a support of ``n = nash_eval_samples``
    answers of ``pi_ref`` and ``m = 2 n`` fresh answers of each side, so ``C (n + 2 m) = 5 C n``
    sampled answers for ``C`` prompts. On ``nlhf/HFTokenDuel-v0`` (real models) with ``nash_eval:
    auto`` the estimate is held to a budget derived from the cost of a training step: it samples
    at most about as many answers as :data:`ESTIMATE_BUDGET_BATCHES` training batches generate
    (``2 batch_size`` answers each), so ``n = min(nash_eval_samples, max(MIN_SUPPORT,
    ESTIMATE_BUDGET_BATCHES 2 batch_size / (5 C)))`` with ``C`` the prompts the split holds, at
    most ``nash_eval_prompts``. ``nash_eval: estimate`` uses the config's sizes as they are.
    """
    cfg = agent.config
    C, n = int(cfg.nash_eval_prompts), int(cfg.nash_eval_samples)
    if cfg.nash_eval == "auto" and agent.backend.kind != "native":
        pool = getattr(agent.env, "prompts", {}).get(split) or ()
        prompts = max(1, min(C, len(pool)))
        fit = ESTIMATE_BUDGET_BATCHES * 2 * int(cfg.batch_size) // (5 * prompts)
        n = min(n, max(MIN_SUPPORT, fit))
    return C, n, 2 * n


def trained_split(agent: Any) -> str:
    """The prompt split ``agent`` trains on: its env's ``prompt_split`` (``"train"`` by default)."""
    return str(getattr(agent.env, "prompt_split", "train"))


def exact_game_and_nash(agent: Any, split: str = "heldout") -> tuple[Any, Any]:
    """The exact regularised game of ``agent``'s paying judge on the prompts of ``split`` and its
    equilibrium ``(game, pi*)`` (built once per agent and split and kept on it; needs an enumerable
    world, see :mod:`nlhf_envs.text.exact`)."""
    if split not in agent._exact:
        from nlhf_envs.solvers import regularized_nash
        from nlhf_envs.text.exact import exact_game

        game = exact_game(
            agent.env,
            split,
            payer=agent.config.payer,
            beta=agent.beta,
            reference=agent.reference,
        )
        agent._exact[split] = (game, regularized_nash(game))
    return agent._exact[split]


def enumerable(agent: Any) -> bool:
    """Whether the answers of ``agent``'s env can be enumerated (exact Nash metrics)."""
    from nlhf_envs.text.exact import MAX_ANSWERS

    if agent.world is None:
        return False
    words = len(agent.world.answer_token_ids) - 1
    count = sum(words**k for k in range(agent.engine.max_new_tokens + 1))
    return count <= MAX_ANSWERS


@torch.no_grad()
def nash_metrics(
    agent: Any, exact: bool | None = None, progress: Progress = None
) -> dict[str, float]:
    """Nash metrics of ``agent``'s ``pi_theta`` on the two report splits of the protocol:
    ``eval/exploitability`` and ``eval/kl_to_nash`` on the held-out prompts (generalisation: no
    training, tuning or shipped model saw them), ``eval/exploitability_trained`` and
    ``eval/kl_to_nash_trained`` on the prompts it trains on (optimisation; the env's
    ``prompt_split``).

    Args:
        agent: a :class:`~agents.text.common.TextAgent` (its ``enumerable`` and ``exact_game``
            methods are used).
        exact: ``True``: exact (enumerable worlds); ``False``: estimated with
            ``nash_eval_prompts`` prompts and ``nash_eval_samples`` samples per split
            (:func:`estimate_sizes`; the held-out estimate also gives
            ``eval/exploitability_low``/``_high``); ``None``: from ``config.nash_eval``
            (``"auto"``: exact when the world is enumerable).
        progress: reports of the estimates (:mod:`nlhf_envs.progress`; ``None``: silent).
    """
    mode = agent.config.nash_eval
    if exact is None:
        exact = mode == "exact" or (mode in ("auto", "off") and agent.enumerable())
    agent.model.eval()
    out: dict[str, float] = {}
    try:
        for split, suffix in (("heldout", ""), (trained_split(agent), "_trained")):
            if exact:
                from nlhf_envs.text.exact import exact_metrics

                game, star = agent.exact_game(split)
                m = exact_metrics(agent.model, game, agent.env, split, nash=star)
                out[f"eval/exploitability{suffix}"] = m["exploitability"]
                out[f"eval/kl_to_nash{suffix}"] = m["kl_to_nash"]
                continue
            prompts, n, m = estimate_sizes(agent, split)
            seed = int(
                np.random.SeedSequence([agent.seed, 9, agent.num_iterations]).generate_state(1)[0]
            )
            from nlhf_envs.text.estimate import estimate_nash_metrics

            native = agent.backend.kind == "native"  # else the env estimates with its own parts
            est = estimate_nash_metrics(
                agent.model,
                agent.env,
                split=split,
                num_prompts=prompts,
                n=n,
                m=m,
                seed=seed,
                payer=agent.config.payer,
                beta=agent.beta,
                reference=agent.reference if native else None,
                device=agent.device,
                progress=_labelled(progress, f"nash estimate ({split})"),
            )
            got = est.as_dict("eval/")
            got.pop("eval/kl_ref")
            if suffix:
                got = {
                    f"eval/{k}_trained": got[f"eval/{k}"] for k in ("exploitability", "kl_to_nash")
                }
            out.update(got)
        return out
    finally:
        agent.model.train()


def _labelled(progress: Progress, task: str) -> Progress:
    """``progress`` with its events renamed ``task`` (a bar is kept as it is)."""
    if not callable(progress) or isinstance(progress, bool):
        return progress

    def relay(event: ProgressEvent) -> Any:
        return progress(dataclasses.replace(event, task=task))

    return relay
