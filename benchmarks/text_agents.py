"""Head to head on the token duel: Nash-MP vs Online IPO vs Nash-MD-PG at an equal query budget.

Usage::

    python benchmarks/text_agents.py                     # the full version (~15 min per run on CPU)
    python benchmarks/text_agents.py --num-queries 12288 --seeds 1 2 3 --workers 2   # the README's

Protocol (every method gets the same budget and the same tuning budget):

1. Tuning: each agent is trained from its zoo config (``zoo_configs/<agent>.yml``, entry
   ``nlhf/TokenDuel-v0``) with each learning rate of ``--lrs`` (3 values) on ``--tune-seeds`` for
   ``--num-queries`` preference queries. The learning rate with the highest learned-judge win rate
   against ``pi_ref`` on ``--tune-prompts`` held-out prompts is kept (the judge is the training
   signal; the ground truth is never used for selection). Nothing else is tuned.
2. Training: each agent with its chosen learning rate on every seed of ``--seeds`` (disjoint from the
   tuning seeds), ``--num-queries`` queries each.
3. Head to head: for every seed ``s`` and every pair of {trained agents, ``pi_ref``}, ``--duel-prompts``
   held-out prompts, one answer of each side per prompt (the same prompts for every pair of a seed).
   A pair's win rate is the mean of ``P(y_row > y_col | x)`` under the learned judge and under the
   ground truth ``P*``. The 95% interval is a Student-t interval over the per-seed means (training
   randomness dominates; duels are not independent across the pairs of a seed).

Writes ``benchmarks/results/text_agents.md`` and ``.json``; checkpoints go to ``--log-folder``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
AGENTS = ("nash_mp", "online_ipo", "nash_md")
ENV_ID = "nlhf/TokenDuel-v0"


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (agent, lr, seed) from the zoo config; returns its summary and checkpoint path."""
    import torch

    torch.set_num_threads(job["threads"])
    import agents
    from agents import zoo
    from agents.config import config_to_dict

    params = {"lr": job["lr"], "device": job["device"]}
    entry = zoo.resolve(job["agent"], ENV_ID, params=params)
    config = config_to_dict(entry.config)
    agent = agents.make(
        job["agent"], ENV_ID, seed=job["seed"], env_kwargs=entry.env_kwargs, **config
    )
    start = time.perf_counter()
    agent.learn(num_queries=job["num_queries"])
    seconds = time.perf_counter() - start
    path = Path(job["log_folder"]) / f"{job['agent']}_lr{job['lr']:g}_seed{job['seed']}.npz"
    agent.save(path)
    final = agent.evaluate(num_prompts=job["eval_prompts"])
    return {
        **job,
        **final,
        "seconds": seconds,
        "path": str(path),
        "iterations": agent.num_iterations,
    }


def _run_jobs(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        return [train_one(j) for j in jobs]
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(train_one, jobs))


def head_to_head(
    checkpoints: dict[str, dict[int, str]], seeds: list[int], num_prompts: int, device: str
) -> dict[str, Any]:
    """Win-rate matrices (judge, ground truth) per seed among the trained agents and ``pi_ref``."""
    import torch

    import agents
    from nlhf_envs.text.engine import DuelEngine

    names = [*checkpoints, "pi_ref"]
    engine = DuelEngine(device=device)
    from nlhf_envs.text import ground_truth, load_reference_policy

    truth = ground_truth()
    ref = load_reference_policy(device=device)
    per_seed = {"judge": [], "ground_truth": []}
    for seed in seeds:
        policies = {n: agents.load(checkpoints[n][seed]).model.eval() for n in checkpoints}
        policies["pi_ref"] = ref
        gen = torch.Generator(device).manual_seed(10_000 + seed)
        _, ids, mask = engine.sample_prompts(num_prompts, gen, split="heldout")
        answers = {n: engine.generate(policies[n], ids, mask, gen) for n in names}
        mats = {k: np.full((len(names), len(names)), 0.5) for k in per_seed}
        for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
            kw = {"prompt_mask": mask, "mask_a": answers[a].mask, "mask_b": answers[b].mask}
            for key, judge in (("judge", engine.judge), ("ground_truth", truth)):
                p = float(judge.prob(ids, answers[a].tokens, answers[b].tokens, **kw).mean())
                mats[key][i, j], mats[key][j, i] = p, 1.0 - p
        for key in per_seed:
            per_seed[key].append(mats[key])
    return {"names": names, "per_seed": {k: [m.tolist() for m in v] for k, v in per_seed.items()}}


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over the first axis."""
    from scipy import stats

    n = values.shape[0]
    mean = values.mean(0)
    if n < 2:
        return mean, np.nan * mean, np.nan * mean
    half = stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def _table(names: list[str], mats: np.ndarray) -> list[str]:
    mean, lo, hi = t_interval(mats)
    lines = ["| row beats column | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, a in enumerate(names):
        cells = []
        for j in range(len(names)):
            if i == j:
                cells.append("-")
            else:
                cells.append(f"{mean[i, j]:.3f} [{lo[i, j]:.3f}, {hi[i, j]:.3f}]")
        lines.append(f"| **{a}** | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-queries", type=int, default=None, help="default: the zoo's num_queries")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1.0e-4, 3.0e-4, 1.0e-3])
    ap.add_argument("--tune-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--tune-prompts", type=int, default=512)
    ap.add_argument("--duel-prompts", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--log-folder", default="logs/text_agents")
    ap.add_argument("--out", default=str(RESULTS / "text_agents.md"))
    args = ap.parse_args(argv)
    if set(args.seeds) & set(args.tune_seeds):
        ap.error("--seeds and --tune-seeds must be disjoint")
    from agents import zoo

    budget = {a: args.num_queries or zoo.resolve(a, ENV_ID).num_queries for a in AGENTS}
    if len(set(budget.values())) != 1:
        raise SystemExit(f"the zoo budgets differ ({budget}); pass --num-queries")
    num_queries = next(iter(budget.values()))
    os.makedirs(args.log_folder, exist_ok=True)
    base = {
        "num_queries": num_queries,
        "device": args.device,
        "threads": args.threads,
        "log_folder": args.log_folder,
        "eval_prompts": args.tune_prompts,
    }
    t0 = time.perf_counter()
    tune_jobs = [
        {**base, "agent": a, "lr": lr, "seed": s}
        for a in AGENTS
        for lr in args.lrs
        for s in args.tune_seeds
    ]
    tuning = _run_jobs(tune_jobs, args.workers)
    chosen: dict[str, float] = {}
    for a in AGENTS:
        score = {
            lr: np.mean(
                [r["eval/win_rate_ref_judge"] for r in tuning if r["agent"] == a and r["lr"] == lr]
            )
            for lr in args.lrs
        }
        chosen[a] = max(score, key=score.get)
    final_jobs = [
        {**base, "agent": a, "lr": chosen[a], "seed": s} for a in AGENTS for s in args.seeds
    ]
    final = _run_jobs(final_jobs, args.workers)
    checkpoints = {a: {r["seed"]: r["path"] for r in final if r["agent"] == a} for a in AGENTS}
    h2h = head_to_head(checkpoints, args.seeds, args.duel_prompts, args.device)
    total = time.perf_counter() - t0
    names = h2h["names"]
    judge = np.array(h2h["per_seed"]["judge"])
    true = np.array(h2h["per_seed"]["ground_truth"])
    train_s = {a: np.mean([r["seconds"] for r in final if r["agent"] == a]) for a in AGENTS}
    lines = [
        "# Token duel: head to head at an equal preference-query budget",
        "",
        "Generated by `python benchmarks/text_agents.py "
        + " ".join(
            [
                f"--num-queries {num_queries}",
                "--lrs " + " ".join(f"{x:g}" for x in args.lrs),
                "--tune-seeds " + " ".join(map(str, args.tune_seeds)),
                "--seeds " + " ".join(map(str, args.seeds)),
                f"--duel-prompts {args.duel_prompts} --workers {args.workers}",
                f"--threads {args.threads} --device {args.device}",
            ]
        )
        + "`",
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores shared; "
        f"total {total / 60:.1f} min).",
        "",
        f"- Budget: {num_queries} preference queries per run (learned judge pays), "
        f"{len(args.seeds)} seeds per agent; tuning: {len(args.lrs)} learning rates x "
        f"{len(args.tune_seeds)} seed(s) per agent, chosen by the judge win rate vs pi_ref on "
        f"{args.tune_prompts} held-out prompts.",
        "- Chosen lr: " + ", ".join(f"{a} {chosen[a]:g}" for a in AGENTS) + ".",
        "- Mean training time per run: "
        + ", ".join(f"{a} {train_s[a]:.0f} s" for a in AGENTS)
        + ".",
        f"- Cells: mean over seeds of P(row > column) on {args.duel_prompts} held-out prompts per "
        "seed, [95% Student-t interval over seeds].",
        "",
        "## Under the ground truth P*",
        "",
        *_table(names, true),
        "",
        "## Under the learned judge",
        "",
        *_table(names, judge),
        "",
        "## Tuning (judge win rate vs pi_ref, held-out prompts)",
        "",
        "| agent | " + " | ".join(f"lr {x:g}" for x in args.lrs) + " |",
        "|---" * (len(args.lrs) + 1) + "|",
    ]
    for a in AGENTS:
        row = [
            np.mean(
                [r["eval/win_rate_ref_judge"] for r in tuning if r["agent"] == a and r["lr"] == lr]
            )
            for lr in args.lrs
        ]
        lines.append(f"| {a} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    lines += [
        "",
        "## Final runs vs pi_ref (per-run evaluation, held-out prompts)",
        "",
        "| agent | judge win rate | ground-truth win rate | sequence KL(pi, pi_ref) |",
        "|---|---|---|---|",
    ]
    for a in AGENTS:
        rs = [r for r in final if r["agent"] == a]
        vals = [
            np.array([r[k] for r in rs])
            for k in ("eval/win_rate_ref_judge", "eval/win_rate_ref_true", "eval/kl_ref")
        ]
        lines.append(
            f"| {a} | "
            + " | ".join(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" for v in vals)
            + " |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    summary = {
        "chosen_lr": chosen,
        "tuning": tuning,
        "final": final,
        "head_to_head": h2h,
        "num_queries": num_queries,
        "total_seconds": total,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=float))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
