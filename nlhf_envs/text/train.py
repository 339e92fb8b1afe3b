"""Rebuild the shipped reference policy and judge of a world: ``python -m nlhf_envs.text.train --world W``.

Pipeline (every random draw comes from ``--seed`` through explicit generators):

1. Reference policy (one per *language*; worlds that share a language share it): ``--demos`` answers
   of the world's demonstrator to training prompts, and a
   :class:`~nlhf_envs.text.models.TinyCausalLM` trained on them by maximum likelihood. With an existing
   shipped reference and no ``--retrain-reference``, it is loaded instead.
2. Judge data: pairs of answers to training prompts, each answer drawn from one of :data:`SOURCES`:
   the demonstrator, ``pi_ref``, ``pi_ref`` at temperatures 1.5-3, perturbed demonstrations, uniformly
   random answer words, and *drifted* policies (``pi_ref`` with a fixed random logit bias per policy,
   which moves it several nats of sequence KL away); every pair is labelled with ``--votes`` votes of
   annotators drawn at random from the world's population.
3. Judge: a :class:`~nlhf_envs.text.models.PreferenceNet` trained by binary cross-entropy on the votes.
4. Refresh (``--refresh-rounds``, as in iterated RLHF): a policy is trained against the current judge
   by REINFORCE (:func:`optimise_against`), its answers are paired with answers of every source,
   labelled by the annotators and added to the data, and the judge is trained further on all of it.
5. Evaluation on *held-out* prompts against ``P*``, per pair source (:func:`evaluate_sources`):
   ``ref_vs_ref``, ``random_vs_random``, ``ref_vs_random`` and ``drifted`` (answers of held-out drifted
   and judge-optimised policies at sequence KL >= 2 nats from ``pi_ref``, against ``pi_ref`` and each
   other): agreement with the population majority where ``|P* - 1/2| > 0.1``, Brier score, ECE.
6. Over-optimisation curve (:func:`overoptimisation_curve`): a fresh policy trained against the final
   judge; at checkpoints its sequence KL to ``pi_ref`` and its win rate against ``pi_ref`` under the
   judge and under the ground truth.

Checkpoints are written atomically to ``--out`` (default: ``assets/<world>/`` of the package, the
reference to ``assets/<language>/``) with the settings and metrics in their metadata; the metrics also go
to ``metrics.json`` there.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nlhf_envs.atomic import atomic_open
from nlhf_envs.text.engine import generate, token_log_probs
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.judging import PairBatch, content_mask
from nlhf_envs.text.models import (
    ASSETS,
    Judge,
    JudgeConfig,
    LMConfig,
    PreferenceNet,
    TinyCausalLM,
    load_reference_policy,
    reference_path,
    save_checkpoint,
)
from nlhf_envs.text.world import WORLD_NAMES, World, get_world

#: Where the answers of judge-training pairs come from (the refresh adds ``"optimised"``).
SOURCES: tuple[str, ...] = (
    "demonstrator",
    "reference",
    "reference_hot",
    "perturbed",
    "random",
    "drifted",
)
SOURCE_WEIGHTS: tuple[float, ...] = (0.15, 0.25, 0.15, 0.15, 0.15, 0.15)
#: Evaluation pair sources (:func:`evaluate_sources`).
EVAL_SOURCES: tuple[str, ...] = ("ref_vs_ref", "random_vs_random", "ref_vs_random", "drifted")


@dataclass
class TrainConfig:
    """Settings of the reproduce command (defaults: the shipped checkpoints of the default world;
    :data:`WORLD_DEFAULTS` overrides some per world)."""

    world: str = "default"
    seed: int = 0
    retrain_reference: bool = False
    demos: int = 60_000
    lm_steps: int = 2_000
    lm_batch: int = 64
    lm_lr: float = 3.0e-3
    lm_d_model: int = 64
    judge_pairs: int = 160_000
    judge_steps: int = 3_000
    judge_batch: int = 256
    judge_lr: float = 2.0e-3
    votes: int = 4
    drift_policies: int = 16
    refresh_rounds: int = 2
    refresh_policy_steps: int = 150
    refresh_pairs: int = 40_000
    refresh_judge_steps: int = 1_500
    optimise_lr: float = 2.0e-3
    eval_pairs: int = 4_000
    curve_steps: int = 240
    curve_points: int = 8
    threads: int = 1


#: Per-world overrides of :class:`TrainConfig` defaults (the tiny worlds need far less data).
WORLD_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "demos": 20_000,
        "lm_steps": 1_500,
        "lm_d_model": 32,
        "judge_pairs": 60_000,
        "judge_steps": 2_000,
        "refresh_pairs": 20_000,
        "refresh_judge_steps": 1_000,
        "refresh_policy_steps": 120,
        "curve_steps": 160,
    },
}
WORLD_DEFAULTS["tiny-cyclic"] = WORLD_DEFAULTS["tiny"]
WORLD_DEFAULTS["tiny-wide"] = WORLD_DEFAULTS["tiny"]
WORLD_DEFAULTS["tiny-wide-cyclic"] = WORLD_DEFAULTS["tiny"]


def config_for(world: str, **overrides: Any) -> TrainConfig:
    """:class:`TrainConfig` for ``world`` with its :data:`WORLD_DEFAULTS` and ``overrides``."""
    return replace(TrainConfig(world=world), **{**WORLD_DEFAULTS.get(world, {}), **overrides})


def _cosine(step: int, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _init_module(cls: type, config: Any, seed: int) -> torch.nn.Module:
    # Initialise from a seeded fork of the global generator, leaving the caller's state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


# ---------------------------------------------------------------------------------- reference policy


def demonstrations(
    n: int, rng: np.random.Generator, split: str = "train", world: str | World | None = None
) -> dict[str, torch.Tensor]:
    """``n`` demonstrations: prompt ids/mask ``[n, prompt_len]``, answer ids/mask ``[n, N]`` with
    ``<eos>``."""
    w = get_world(world)
    tok = w.tokenizer
    prompts = w.prompts.sample(n, rng, split)
    answers = [w.demonstrate(p, rng) for p in prompts]
    p_ids, p_mask = tok.encode_prompts(prompts, w.prompt_len)
    a_ids, a_mask = tok.encode_answers(answers, w.max_new_tokens, add_eos=True)
    return {"prompt_ids": p_ids, "prompt_mask": p_mask, "answer_ids": a_ids, "answer_mask": a_mask}


def lm_config(world: World, d_model: int = 64) -> LMConfig:
    """The reference LM's shape for ``world`` (its vocabulary and suppressed tokens)."""
    return LMConfig(
        vocab_size=world.vocab_size,
        d_model=d_model,
        d_ff=4 * d_model,
        max_len=max(64, world.prompt_len + world.max_new_tokens),
        suppress_tokens=world.suppressed_token_ids,
    )


def train_reference(cfg: TrainConfig) -> tuple[TinyCausalLM, dict[str, float]]:
    """Train ``pi_ref`` on demonstrations; returns the model and its metrics."""
    w = get_world(cfg.world)
    rng = np.random.default_rng(cfg.seed)
    data = demonstrations(cfg.demos, rng, world=w)
    held = demonstrations(2_000, np.random.default_rng(cfg.seed + 1), split="heldout", world=w)
    model = _init_module(TinyCausalLM, lm_config(w, cfg.lm_d_model), cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lm_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, cfg.lm_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.lm_steps):
        idx = torch.randint(cfg.demos, (cfg.lm_batch,), generator=gen)
        batch = {k: v[idx] for k, v in data.items()}
        lp = token_log_probs(model, **batch)
        loss = -lp.sum() / batch["answer_mask"].sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        lp = token_log_probs(model, **held)
        nll = float(-lp.sum() / held["answer_mask"].sum())
    return model, {
        "reference/heldout_nll_per_token": nll,
        "reference/train_loss_last": float(loss.detach()),
    }


# ---------------------------------------------------------------------------------- answer sources


class DriftedPolicy:
    """``pi_ref`` with a fixed logit bias ``b`` on every token (a policy, see
    :class:`~nlhf_envs.text.engine.Policy`): a stand-in for a policy that wandered off ``pi_ref``."""

    def __init__(self, reference: TinyCausalLM, bias: torch.Tensor) -> None:
        self.reference, self.bias = reference, bias

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
    ) -> tuple[torch.Tensor, Any]:
        logits, cache = self.reference(input_ids, attention_mask, past_key_values)
        return logits + self.bias, cache


def drifted_policies(
    reference: TinyCausalLM, world: World, n: int, seed: int, scale: tuple[float, float]
) -> list[DriftedPolicy]:
    """``n`` drifted policies: bias ``a z`` on answer tokens, ``z ~ N(0, 1)``, ``a ~ U(scale)``."""
    gen = torch.Generator().manual_seed(seed)
    answer = torch.zeros(world.vocab_size, dtype=torch.bool)
    answer[list(world.answer_token_ids)] = True
    out = []
    for _ in range(n):
        a = scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=gen))
        z = torch.randn(world.vocab_size, generator=gen) * a
        out.append(DriftedPolicy(reference, torch.where(answer, z, torch.zeros_like(z))))
    return out


def _generate_rows(
    policy: Any,
    p_ids: torch.Tensor,
    p_mask: torch.Tensor,
    rows: list[int],
    width: int,
    gen: torch.Generator,
    out: tuple[torch.Tensor, torch.Tensor],
    temperature: float = 1.0,
) -> None:
    index = torch.tensor(rows, dtype=torch.long)
    for chunk in index.split(2048):
        g = generate(
            policy, p_ids[chunk], p_mask[chunk], width, generator=gen, temperature=temperature
        )
        out[0][chunk], out[1][chunk] = g.tokens, g.mask


def sample_answers(
    world: World,
    prompts: list[str],
    p_ids: torch.Tensor,
    p_mask: torch.Tensor,
    sources: list[str],
    rng: np.random.Generator,
    gen: torch.Generator,
    reference: TinyCausalLM,
    drifted: list[Any],
    optimised: list[Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One answer per prompt from the named source of each row: ``(ids, mask)`` ``[n, N]``."""
    n, width = len(prompts), world.max_new_tokens
    ids = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    texts: dict[int, str] = {}
    by_policy: dict[tuple[int, float], list[int]] = {}
    policies: dict[int, Any] = {0: reference}
    for i, s in enumerate(sources):
        if s == "demonstrator":
            texts[i] = world.demonstrate(prompts[i], rng)
        elif s == "perturbed":
            texts[i] = world.perturb(world.demonstrate(prompts[i], rng), rng)
        elif s == "random":
            texts[i] = world.random_answer(rng)
        elif s == "reference":
            by_policy.setdefault((0, 1.0), []).append(i)
        elif s == "reference_hot":
            by_policy.setdefault((0, float(rng.choice([1.5, 2.0, 3.0]))), []).append(i)
        elif s in ("drifted", "optimised"):
            pool = drifted if s == "drifted" else optimised
            if not pool:
                raise ValueError(f"source {s!r} needs at least one policy")
            k = int(rng.integers(len(pool)))
            key = id(pool[k])
            policies[key] = pool[k]
            by_policy.setdefault((key, 1.0), []).append(i)
        else:
            raise ValueError(f"unknown answer source {s!r}")
    if texts:
        rows = sorted(texts)
        t_ids, t_mask = world.tokenizer.encode_answers([texts[i] for i in rows], width)
        ids[rows], mask[rows] = t_ids, t_mask
    for (key, temperature), rows in by_policy.items():
        _generate_rows(policies[key], p_ids, p_mask, rows, width, gen, (ids, mask), temperature)
    return ids, mask


def sample_pairs(
    n: int,
    rng: np.random.Generator,
    world: World,
    reference: TinyCausalLM,
    drifted: list[Any],
    split: str,
    seed: int,
    source_pairs: list[tuple[str, str]] | None = None,
    optimised: list[Any] | None = None,
) -> dict[str, Any]:
    """``n`` answer pairs to prompts of ``split`` with ground-truth features.

    Each side's source is drawn from :data:`SOURCE_WEIGHTS`, or each pair's ``(source_a, source_b)``
    from ``source_pairs`` uniformly.
    """
    tok = world.tokenizer
    prompts = world.prompts.sample(n, rng, split)
    p_ids, p_mask = tok.encode_prompts(prompts, world.prompt_len)
    if source_pairs is None:
        draw = rng.choice(len(SOURCES), size=(n, 2), p=SOURCE_WEIGHTS)
        sides = [[SOURCES[k] for k in draw[:, j]] for j in range(2)]
    else:
        pick = rng.integers(len(source_pairs), size=n)
        sides = [[source_pairs[k][j] for k in pick] for j in range(2)]
    gen = torch.Generator().manual_seed(seed)
    answers = [
        sample_answers(world, prompts, p_ids, p_mask, s, rng, gen, reference, drifted, optimised)
        for s in sides
    ]
    batch = PairBatch(
        p_ids,
        content_mask(p_ids, p_mask, cut_at_eos=False),
        answers[0][0],
        content_mask(*answers[0], cut_at_eos=True),
        answers[1][0],
        content_mask(*answers[1], cut_at_eos=True),
    )
    fa, fb = ground_truth(world).features(batch)
    return {"batch": batch, "fa": fa, "fb": fb, "sources": sides}


def _index(batch: PairBatch, idx: torch.Tensor) -> PairBatch:
    return PairBatch(*(getattr(batch, f)[idx] for f in PairBatch.__dataclass_fields__))


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    names = PairBatch.__dataclass_fields__
    batch = PairBatch(*(torch.cat([getattr(p["batch"], f) for p in parts]) for f in names))
    return {
        "batch": batch,
        "fa": np.concatenate([p["fa"] for p in parts]),
        "fb": np.concatenate([p["fb"] for p in parts]),
        "sources": [sum((p["sources"][j] for p in parts), []) for j in range(2)],
    }


# ---------------------------------------------------------------------------------- judge


def fit_judge(
    net: PreferenceNet,
    data: dict[str, Any],
    target: torch.Tensor,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> float:
    """``steps`` AdamW steps of binary cross-entropy on vote fractions; returns the last loss."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, steps))
    gen = torch.Generator().manual_seed(seed)
    n = len(target)
    net.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(n, (batch_size,), generator=gen)
        loss = F.binary_cross_entropy_with_logits(net(_index(data["batch"], idx)), target[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    net.eval()
    return float(loss.detach())


def optimise_against(
    judge: Judge,
    reference: TinyCausalLM,
    world: World,
    steps: int,
    seed: int,
    lr: float = 2.0e-3,
    batch_size: int = 64,
    snapshots: int = 4,
    callback: Any = None,
) -> list[TinyCausalLM]:
    """REINFORCE on the judge's win probability against ``pi_ref`` (no KL penalty): a policy that
    exploits the judge. Returns ``snapshots`` frozen copies taken evenly over training.

    Each step: prompts of the training split, ``y ~ pi_theta``, ``y' ~ pi_ref``, reward ``r =
    P_judge(y > y' | x)``, loss ``-mean((r - mean r) log pi_theta(y | x))``. ``callback(step, policy)``
    is called before the first step and after every step.
    """
    policy = copy.deepcopy(reference).train()
    for p in policy.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok = world.tokenizer
    every = max(1, steps // max(1, snapshots))
    out: list[TinyCausalLM] = []
    if callback is not None:
        callback(0, policy)
    for step in range(1, steps + 1):
        prompts = world.prompts.sample(batch_size, rng, "train")
        p_ids, p_mask = tok.encode_prompts(prompts, world.prompt_len)
        y = generate(policy, p_ids, p_mask, world.max_new_tokens, generator=gen)
        y_ref = generate(reference, p_ids, p_mask, world.max_new_tokens, generator=gen)
        with torch.no_grad():
            r = judge.prob(
                p_ids, y.tokens, y_ref.tokens, prompt_mask=p_mask, mask_a=y.mask, mask_b=y_ref.mask
            )
        lp = token_log_probs(policy, p_ids, p_mask, y.tokens, y.mask).sum(-1)
        loss = -((r - r.mean()) * lp).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        if callback is not None:
            callback(step, policy)
        if step % every == 0 and len(out) < snapshots:
            out.append(copy.deepcopy(policy).eval().requires_grad_(False))
    return out


# ---------------------------------------------------------------------------------- evaluation


def judge_metrics(
    judge_prob: np.ndarray, true_prob: np.ndarray, margin: float = 0.1, bins: int = 10
) -> dict[str, float]:
    """Agreement and calibration of judge probabilities against ``P*``.

    Returns:
        ``judge/agreement_confident``: fraction of pairs with ``|P* - 1/2| > margin`` where the judge
        picks the population majority; ``judge/agreement_all``: the same over pairs with ``P* != 1/2``;
        ``judge/brier``: ``E (p - o)^2`` for a vote ``o ~ Bernoulli(P*)``, i.e.
        ``E[p^2 - 2 p P* + P*]``; ``judge/brier_floor``: the Brier score of ``P*`` itself;
        ``judge/mse_to_true``: ``E (p - P*)^2``; ``judge/ece``: ``sum_b (n_b / n) |mean p - mean P*|``
        over ``bins`` equal-width bins of ``p``; ``judge/confident_fraction``.
    """
    p, q = np.asarray(judge_prob, np.float64), np.asarray(true_prob, np.float64)
    confident = np.abs(q - 0.5) > margin
    decided = q != 0.5
    agree = (p > 0.5) == (q > 0.5)
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(
        abs(p[which == b].mean() - q[which == b].mean()) * (which == b).mean()
        for b in range(bins)
        if (which == b).any()
    )
    nan = float("nan")
    return {
        "judge/agreement_confident": float(agree[confident].mean()) if confident.any() else nan,
        "judge/agreement_all": float(agree[decided].mean()) if decided.any() else nan,
        "judge/confident_fraction": float(confident.mean()),
        "judge/brier": float(np.mean(p**2 - 2 * p * q + q)),
        "judge/brier_floor": float(np.mean(q - q**2)),
        "judge/mse_to_true": float(np.mean((p - q) ** 2)),
        "judge/ece": float(ece),
    }


def judge_probs(judge: Judge, batch: PairBatch) -> np.ndarray:
    """The judge's ``P(a > b | x)`` of every pair of ``batch`` (chunks of 4,096 pairs, no
    gradient)."""
    return _judge_probs(judge, batch)


def _judge_probs(judge: Judge, batch: PairBatch) -> np.ndarray:
    with torch.no_grad():
        return torch.cat(
            [
                torch.sigmoid(judge.net(_index(batch, i)))
                for i in torch.arange(len(batch)).split(4096)
            ]
        ).numpy()


def sequence_kl(policy: Any, reference: Any, world: World, n: int = 512, seed: int = 0) -> float:
    """Monte-Carlo sequence ``KL(policy || reference)`` over held-out prompts (nats)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    prompts = world.prompts.sample(n, rng, "heldout")
    p_ids, p_mask = world.tokenizer.encode_prompts(prompts, world.prompt_len)
    with torch.no_grad():
        y = generate(policy, p_ids, p_mask, world.max_new_tokens, generator=gen)
        lr = token_log_probs(reference, p_ids, p_mask, y.tokens, y.mask)
    return float(((y.log_probs - lr) * y.mask.float()).sum(-1).mean())


def evaluation_policies(
    reference: TinyCausalLM, judge: Judge, world: World, seed: int, kl_floor: float = 2.0
) -> tuple[list[Any], list[float]]:
    """Held-out drifted policies at sequence KL >= ``kl_floor`` from ``pi_ref``: logit-bias policies
    (seeds disjoint from training) and a policy optimised against ``judge``. Returns them and their
    KLs."""
    candidates: list[Any] = drifted_policies(reference, world, 12, seed + 1000, (1.5, 4.0))
    candidates += optimise_against(judge, reference, world, steps=80, seed=seed + 2000, snapshots=2)
    kept, kls = [], []
    for i, pol in enumerate(candidates):
        kl = sequence_kl(pol, reference, world, n=256, seed=seed + i)
        if kl >= kl_floor:
            kept.append(pol)
            kls.append(kl)
    return kept, kls


def evaluate_sources(
    judge: Judge,
    world: World,
    reference: TinyCausalLM,
    n_pairs: int,
    seed: int,
    drifted: list[Any] | None = None,
) -> dict[str, float]:
    """:func:`judge_metrics` per evaluation source (:data:`EVAL_SOURCES`) on held-out prompts,
    as ``judge/<source>/<metric>``; ``drifted`` defaults to :func:`evaluation_policies`."""
    if drifted is None:
        drifted, kls = evaluation_policies(reference, judge, world, seed)
    else:
        kls = [sequence_kl(p, reference, world, n=256, seed=seed) for p in drifted]
    if not drifted:
        raise RuntimeError("no held-out drifted policy reached the KL floor")
    pairs = {
        "ref_vs_ref": [("reference", "reference")],
        "random_vs_random": [("random", "random")],
        "ref_vs_random": [("reference", "random"), ("random", "reference")],
        "drifted": [("drifted", "reference"), ("reference", "drifted"), ("drifted", "drifted")],
    }
    out: dict[str, float] = {}
    for k, (name, source_pairs) in enumerate(pairs.items()):
        data = sample_pairs(
            n_pairs,
            np.random.default_rng(seed + 10 + k),
            world,
            reference,
            drifted,
            "heldout",
            seed + 20 + k,
            source_pairs=source_pairs,
        )
        m = judge_metrics(
            _judge_probs(judge, data["batch"]), world.population_prob(data["fa"], data["fb"])
        )
        out.update({k2.replace("judge/", f"judge/{name}/"): v for k2, v in m.items()})
    out["judge/drifted/min_kl"] = float(min(kls))
    out["judge/drifted/mean_kl"] = float(np.mean(kls))
    out["judge/drifted/policies"] = float(len(kls))
    return out


def overoptimisation_curve(
    judge: Judge,
    reference: TinyCausalLM,
    world: World,
    steps: int,
    points: int,
    seed: int,
    lr: float = 2.0e-3,
) -> list[dict[str, float]]:
    """Train a policy against ``judge`` (:func:`optimise_against`) and record, at ``points + 1``
    evenly spaced steps, its sequence KL to ``pi_ref`` and its win rates against ``pi_ref`` under the
    judge and the ground truth (held-out prompts)."""
    truth = ground_truth(world)
    every = max(1, steps // points)
    rows: list[dict[str, float]] = []
    rng = np.random.default_rng(seed + 1)
    prompts = world.prompts.sample(512, rng, "heldout")
    p_ids, p_mask = world.tokenizer.encode_prompts(prompts, world.prompt_len)

    def record(step: int, policy: TinyCausalLM) -> None:
        if step % every:
            return
        policy.eval()
        gen = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            y = generate(policy, p_ids, p_mask, world.max_new_tokens, generator=gen)
            y_ref = generate(reference, p_ids, p_mask, world.max_new_tokens, generator=gen)
            kw = {"prompt_mask": p_mask, "mask_a": y.mask, "mask_b": y_ref.mask}
            pj = judge.prob(p_ids, y.tokens, y_ref.tokens, **kw)
            pt = truth.prob(p_ids, y.tokens, y_ref.tokens, **kw)
        policy.train()
        rows.append(
            {
                "step": float(step),
                "kl_ref": sequence_kl(policy, reference, world, n=512, seed=seed + 3),
                "win_rate_judge": float(pj.mean()),
                "win_rate_true": float(pt.mean()),
            }
        )

    optimise_against(judge, reference, world, steps, seed, lr=lr, snapshots=0, callback=record)
    return rows


def evaluate_judge(judge: Judge, pairs: dict[str, Any], world: World) -> dict[str, float]:
    """:func:`judge_metrics` on held-out pairs of the training mix, overall and for
    reference-vs-reference pairs."""
    p = _judge_probs(judge, pairs["batch"])
    q = world.population_prob(pairs["fa"], pairs["fb"])
    out = judge_metrics(p, q)
    both_ref = np.array(
        [a == b == "reference" for a, b in zip(*pairs["sources"], strict=True)], dtype=bool
    )
    sub = judge_metrics(p[both_ref], q[both_ref])
    out.update({k.replace("judge/", "judge/ref_vs_ref_"): v for k, v in sub.items()})
    out["judge/eval_pairs"] = float(len(p))
    return out


# ---------------------------------------------------------------------------------- the pipeline


def train_judge(
    cfg: TrainConfig, reference: TinyCausalLM, log: Any = print
) -> tuple[Judge, dict[str, Any]]:
    """Train the judge (initial data, then ``refresh_rounds`` refreshes); returns it and its metrics."""
    w = get_world(cfg.world)
    rng = np.random.default_rng(cfg.seed + 2)
    drifted = drifted_policies(reference, w, cfg.drift_policies, cfg.seed + 8, (0.5, 3.0))
    data = sample_pairs(cfg.judge_pairs, rng, w, reference, drifted, "train", cfg.seed + 3)
    votes = w.sample_votes(data["fa"], data["fb"], cfg.votes, rng)
    target = torch.as_tensor(votes.mean(1), dtype=torch.float32)
    net = _init_module(PreferenceNet, JudgeConfig(vocab_size=w.vocab_size), cfg.seed + 4)
    loss = fit_judge(
        net, data, target, cfg.judge_steps, cfg.judge_lr, cfg.judge_batch, cfg.seed + 5
    )
    judge = Judge(net, w.tokenizer)
    log(f"judge: initial fit, loss {loss:.4f}")
    metrics: dict[str, Any] = {}
    everyone = [*SOURCES]
    for r in range(cfg.refresh_rounds):
        optimised = optimise_against(
            judge, reference, w, cfg.refresh_policy_steps, cfg.seed + 100 + r, lr=cfg.optimise_lr
        )
        kl = sequence_kl(optimised[-1], reference, w, n=256, seed=cfg.seed + r)
        pairs = [("optimised", s) for s in everyone] + [(s, "optimised") for s in everyone]
        pairs.append(("optimised", "optimised"))
        new = sample_pairs(
            cfg.refresh_pairs,
            rng,
            w,
            reference,
            drifted,
            "train",
            cfg.seed + 200 + r,
            source_pairs=pairs,
            optimised=optimised,
        )
        new_votes = w.sample_votes(new["fa"], new["fb"], cfg.votes, rng)
        data = _concat([data, new])
        target = torch.cat([target, torch.as_tensor(new_votes.mean(1), dtype=torch.float32)])
        loss = fit_judge(
            net,
            data,
            target,
            cfg.refresh_judge_steps,
            cfg.judge_lr / 2,
            cfg.judge_batch,
            cfg.seed + 300 + r,
        )
        metrics[f"refresh/{r}/policy_kl"] = kl
        log(
            f"judge: refresh {r + 1}/{cfg.refresh_rounds}, optimised policy KL {kl:.2f}, loss {loss:.4f}"
        )
    metrics["judge/train_loss_last"] = loss
    metrics["judge/train_pairs"] = float(len(target))
    return judge, metrics


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="default", choices=WORLD_NAMES)
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the package's)")
    parser.add_argument(
        "--retrain-reference",
        action="store_true",
        help="train the reference policy even when the language's shipped one exists",
    )
    for f in fields(TrainConfig):
        if f.name in ("world", "retrain_reference"):
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None)
    args = parser.parse_args(argv)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if f.name not in ("world", "retrain_reference") and getattr(args, f.name) is not None
    }
    cfg = config_for(args.world, retrain_reference=args.retrain_reference, **overrides)
    torch.set_num_threads(cfg.threads)
    w = get_world(cfg.world)
    judge_dir = args.out or ASSETS / w.name
    ref_file = (args.out / "reference.pt") if args.out else reference_path(w)
    judge_dir.mkdir(parents=True, exist_ok=True)
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    settings = asdict(cfg)
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    if cfg.retrain_reference or not ref_file.is_file():
        reference, metrics = train_reference(cfg)
        save_checkpoint(
            ref_file, "reference_lm", reference, {"settings": settings}, tokenizer=w.tokenizer
        )
        print(f"reference policy: {metrics} ({time.perf_counter() - t0:.0f} s)")
    else:
        reference = load_reference_policy(ref_file, world=w)
        print(f"reference policy: loaded {ref_file.name} of language {w.language.name!r}")
    t1 = time.perf_counter()
    judge, judge_train = train_judge(cfg, reference)
    t2 = time.perf_counter()
    metrics.update(judge_train)
    heldout = sample_pairs(
        cfg.eval_pairs,
        np.random.default_rng(cfg.seed + 6),
        w,
        reference,
        drifted_policies(reference, w, cfg.drift_policies, cfg.seed + 8, (0.5, 3.0)),
        "heldout",
        cfg.seed + 7,
    )
    metrics.update(evaluate_judge(judge, heldout, w))
    metrics.update(evaluate_sources(judge, w, reference, cfg.eval_pairs, cfg.seed + 9))
    curve = overoptimisation_curve(
        judge, reference, w, cfg.curve_steps, cfg.curve_points, cfg.seed + 10
    )
    t3 = time.perf_counter()
    save_checkpoint(
        judge_dir / "judge.pt",
        "judge",
        judge.net,
        {"settings": settings, "metrics": metrics},
        tokenizer=w.tokenizer,
    )
    _write_json(
        judge_dir / "metrics.json",
        {"settings": settings, "metrics": metrics, "overoptimisation": curve},
    )
    for key, value in sorted(metrics.items()):
        print(f"{key:45s} {value:.4f}")
    for row in curve:
        print("curve", {k: round(v, 3) for k, v in row.items()})
    print(f"time: reference {t1 - t0:.0f} s, judge {t2 - t1:.0f} s, evaluation {t3 - t2:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
