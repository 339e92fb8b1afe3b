"""Rebuild the shipped reference policy and judge: ``python -m nlhf_envs.text.train``.

Pipeline (every random draw comes from ``--seed`` through explicit generators):

1. Demonstrations: ``--demos`` answers of :func:`nlhf_envs.text.world.demonstrate` to training prompts.
2. Reference policy: a :class:`~nlhf_envs.text.models.TinyCausalLM` trained by maximum likelihood on
   them (``--lm-steps`` AdamW steps).
3. Judge data: pairs of answers to training prompts, each answer drawn from one of four policies
   (demonstrator, the reference policy just trained, perturbed demonstrations, uniformly random words),
   each pair labelled with ``--votes`` votes of annotators drawn at random from the population.
4. Judge: a :class:`~nlhf_envs.text.models.PreferenceNet` trained by binary cross-entropy on the votes.
5. Evaluation on pairs over *held-out* prompts against ``P*``: agreement with the population majority
   (all pairs and pairs with ``|P* - 1/2| > 0.1``), Brier score against annotator votes, mean squared
   error to ``P*``, and expected calibration error (10 bins) against ``P*``.

Checkpoints are written atomically to ``--out`` (default: the package's ``assets`` folder) with the
settings and metrics in their metadata; the metrics also go to ``metrics.json`` there.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nlhf_envs.atomic import atomic_open
from nlhf_envs.text import world
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
    save_checkpoint,
)

SOURCES: tuple[str, ...] = ("demonstrator", "reference", "perturbed", "random")
SOURCE_WEIGHTS: tuple[float, ...] = (0.3, 0.35, 0.25, 0.1)


@dataclass
class TrainConfig:
    """Settings of the reproduce command (defaults: the shipped checkpoints)."""

    seed: int = 0
    demos: int = 60_000
    lm_steps: int = 2_000
    lm_batch: int = 64
    lm_lr: float = 3.0e-3
    judge_pairs: int = 160_000
    judge_steps: int = 3_000
    judge_batch: int = 256
    judge_lr: float = 2.0e-3
    votes: int = 4
    eval_pairs: int = 20_000
    threads: int = 1


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
    n: int, rng: np.random.Generator, split: str = "train"
) -> dict[str, torch.Tensor]:
    """``n`` demonstrations: prompt ids/mask ``[n, PROMPT_LEN]``, answer ids/mask ``[n, N]`` with ``<eos>``."""
    tok = world.default_tokenizer()
    prompts = world.PROMPTS.sample(n, rng, split)
    answers = [world.demonstrate(p, rng) for p in prompts]
    p_ids, p_mask = tok.encode_prompts(prompts, world.PROMPT_LEN)
    a_ids, a_mask = tok.encode_answers(answers, world.MAX_NEW_TOKENS, add_eos=True)
    return {"prompt_ids": p_ids, "prompt_mask": p_mask, "answer_ids": a_ids, "answer_mask": a_mask}


def train_reference(cfg: TrainConfig) -> tuple[TinyCausalLM, dict[str, float]]:
    """Train ``pi_ref`` on demonstrations; returns the model and its metrics."""
    rng = np.random.default_rng(cfg.seed)
    data = demonstrations(cfg.demos, rng)
    held = demonstrations(2_000, np.random.default_rng(cfg.seed + 1), split="heldout")
    model = _init_module(TinyCausalLM, LMConfig(), cfg.seed)
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


# ---------------------------------------------------------------------------------- judge data


def sample_pairs(
    n: int, rng: np.random.Generator, reference: TinyCausalLM, split: str, seed: int
) -> dict[str, Any]:
    """``n`` answer pairs to prompts of ``split``, each answer from one of :data:`SOURCES`."""
    tok = world.default_tokenizer()
    prompts = world.PROMPTS.sample(n, rng, split)
    p_ids, p_mask = tok.encode_prompts(prompts, world.PROMPT_LEN)
    sources = rng.choice(len(SOURCES), size=(n, 2), p=SOURCE_WEIGHTS)
    width = world.MAX_NEW_TOKENS
    answers = torch.full((2, n, width), 0, dtype=torch.long)
    masks = torch.zeros((2, n, width), dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    for side in range(2):
        texts: list[str | None] = [None] * n
        for i in range(n):
            s = SOURCES[sources[i, side]]
            if s == "demonstrator":
                texts[i] = world.demonstrate(prompts[i], rng)
            elif s == "perturbed":
                texts[i] = world.perturb(world.demonstrate(prompts[i], rng), rng)
            elif s == "random":
                texts[i] = world.random_answer(rng)
        rows = [i for i in range(n) if texts[i] is not None]
        ids, m = tok.encode_answers([texts[i] for i in rows], width)
        answers[side, rows], masks[side, rows] = ids, m
        ref_rows = torch.tensor([i for i in range(n) if texts[i] is None], dtype=torch.long)
        for chunk in ref_rows.split(2048):
            g = generate(reference, p_ids[chunk], p_mask[chunk], width, generator=gen)
            answers[side, chunk], masks[side, chunk] = g.tokens, g.mask
    batch = PairBatch(
        p_ids,
        content_mask(p_ids, p_mask, cut_at_eos=False),
        answers[0],
        content_mask(answers[0], masks[0], cut_at_eos=True),
        answers[1],
        content_mask(answers[1], masks[1], cut_at_eos=True),
    )
    fa, fb = ground_truth().features(batch)
    return {"batch": batch, "fa": fa, "fb": fb, "sources": sources}


def _index(batch: PairBatch, idx: torch.Tensor) -> PairBatch:
    return PairBatch(*(getattr(batch, f)[idx] for f in PairBatch.__dataclass_fields__))


def train_judge(
    cfg: TrainConfig, reference: TinyCausalLM
) -> tuple[Judge, dict[str, Any], dict[str, Any]]:
    """Train the judge on annotator votes; returns the judge, the held-out pairs and train metrics."""
    rng = np.random.default_rng(cfg.seed + 2)
    data = sample_pairs(cfg.judge_pairs, rng, reference, "train", cfg.seed + 3)
    votes = world.sample_votes(data["fa"], data["fb"], cfg.votes, rng)
    target = torch.as_tensor(votes.mean(1), dtype=torch.float32)
    net = _init_module(PreferenceNet, JudgeConfig(), cfg.seed + 4)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.judge_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, cfg.judge_steps))
    gen = torch.Generator().manual_seed(cfg.seed + 5)
    net.train()
    for _ in range(cfg.judge_steps):
        idx = torch.randint(cfg.judge_pairs, (cfg.judge_batch,), generator=gen)
        loss = F.binary_cross_entropy_with_logits(net(_index(data["batch"], idx)), target[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    judge = Judge(net.eval())
    heldout = sample_pairs(
        cfg.eval_pairs, np.random.default_rng(cfg.seed + 6), reference, "heldout", cfg.seed + 7
    )
    return judge, heldout, {"judge/train_loss_last": float(loss.detach())}


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
    return {
        "judge/agreement_confident": float(agree[confident].mean()),
        "judge/agreement_all": float(agree[decided].mean()),
        "judge/confident_fraction": float(confident.mean()),
        "judge/brier": float(np.mean(p**2 - 2 * p * q + q)),
        "judge/brier_floor": float(np.mean(q - q**2)),
        "judge/mse_to_true": float(np.mean((p - q) ** 2)),
        "judge/ece": float(ece),
    }


def evaluate_judge(judge: Judge, pairs: dict[str, Any]) -> dict[str, float]:
    """:func:`judge_metrics` on held-out pairs, overall and for reference-vs-reference pairs."""
    with torch.no_grad():
        p = torch.cat(
            [
                torch.sigmoid(judge.net(_index(pairs["batch"], i)))
                for i in torch.arange(len(pairs["batch"])).split(4096)
            ]
        ).numpy()
    q = world.population_prob(pairs["fa"], pairs["fb"])
    out = judge_metrics(p, q)
    ref = SOURCES.index("reference")
    both_ref = (pairs["sources"] == ref).all(1)
    sub = judge_metrics(p[both_ref], q[both_ref])
    out.update({k.replace("judge/", "judge/ref_vs_ref_"): v for k, v in sub.items()})
    out["judge/eval_pairs"] = float(len(p))
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS, help="folder for the checkpoints")
    for field, value in asdict(defaults).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    torch.set_num_threads(cfg.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reference, metrics = train_reference(cfg)
    t1 = time.perf_counter()
    print(f"reference policy: {metrics} ({t1 - t0:.0f} s)")
    judge, heldout, judge_train = train_judge(cfg, reference)
    t2 = time.perf_counter()
    metrics.update(judge_train)
    metrics.update(evaluate_judge(judge, heldout))
    settings = asdict(cfg)
    save_checkpoint(args.out / "reference.pt", "reference_lm", reference, {"settings": settings})
    save_checkpoint(
        args.out / "judge.pt", "judge", judge.net, {"settings": settings, "metrics": metrics}
    )
    _write_json(args.out / "metrics.json", {"settings": settings, "metrics": metrics})
    for key, value in sorted(metrics.items()):
        print(f"{key:45s} {value:.4f}")
    print(f"time: reference {t1 - t0:.0f} s, judge {t2 - t1:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
