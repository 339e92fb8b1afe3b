"""The token games measured: intransitivity, judge quality off pi_ref, over-optimisation, estimator error.

``python benchmarks/token_games.py`` (about 10 minutes on one CPU core) writes
``benchmarks/results/token_games.md``, ``token_games.json`` and ``judge_overoptimisation.png``:

1. **Cyclic share** (:func:`nlhf_envs.intransitivity.cyclic_share`) of every registered token game on
   held-out prompts, under its judge and under the ground truth: over all enumerated answers on the
   tiny worlds (exact game), over ``--share-samples`` answers of ``pi_ref`` per prompt elsewhere.
2. **Judge quality per pair source** on held-out prompts (:func:`nlhf_envs.text.train.evaluate_sources`):
   the shipped metrics of every latest judge (``assets/<world>/metrics.json``) and the same evaluation
   of the v0 judge of ``nlhf/TokenDuel-v0``, run here.
3. **Over-optimisation**: judge win rate and ground-truth win rate against ``pi_ref`` of a policy trained
   against each judge by REINFORCE without a KL penalty (``--curve-lr``, ``--curve-steps``), as its KL to
   ``pi_ref`` grows (:func:`nlhf_envs.text.train.overoptimisation_curve`, run here for every judge).
4. **Estimator error**: :func:`nlhf_envs.text.estimate.estimate_nash_metrics` against the exact values of
   :func:`nlhf_envs.text.exact.exact_game` on the tiny worlds, for ``pi_ref`` and two drifted policies,
   ``n`` in ``--ns`` (``m = 2 n``), 16 prompts, 3 seeds: mean absolute error (the exact value taken on the
   same prompts) and how often the 95% interval covers the exact mean over all prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import nlhf_envs  # noqa: F401
from nlhf_envs.atomic import atomic_open, atomic_write_text
from nlhf_envs.intransitivity import cyclic_share
from nlhf_envs.registration import TEXT_ENV_IDS
from nlhf_envs.solvers import kl, regularized_nash
from nlhf_envs.text import exact
from nlhf_envs.text.engine import generate
from nlhf_envs.text.env import TokenDuelEnv
from nlhf_envs.text.estimate import estimate_nash_metrics
from nlhf_envs.text.models import ASSETS, load_reference_policy
from nlhf_envs.text.train import (
    drifted_policies,
    evaluate_sources,
    overoptimisation_curve,
)

OUT = Path(__file__).resolve().parent / "results"


def share_of(env: TokenDuelEnv, samples: int, prompts: int, seed: int) -> dict[str, float]:
    """Mean cyclic share on held-out prompts under the judge and the ground truth."""
    w = env.world
    if env.world.suppressed_token_ids:
        return {
            payer: float(np.mean(cyclic_share(exact.exact_game(env, "heldout", payer=payer).P)))
            for payer in ("judge", "ground_truth")
        }
    ref = load_reference_policy(world=w)
    rng = np.random.default_rng(seed)
    idx = rng.choice(w.prompts.heldout_indices, size=prompts, replace=False)
    out: dict[str, list[float]] = {"judge": [], "ground_truth": []}
    gen = torch.Generator().manual_seed(seed)
    for i in idx:
        p_ids, p_mask = w.tokenizer.encode_prompts([w.prompts.texts[i]], w.prompt_len)
        g = generate(
            ref,
            p_ids.expand(samples, -1),
            p_mask.expand(samples, -1),
            w.max_new_tokens,
            generator=gen,
        )
        for payer, judge in (("judge", env.judge), ("ground_truth", env.truth)):
            P = exact.preference_matrix(judge, w, p_ids, p_mask, (g.tokens, g.mask))
            out[payer].append(float(cyclic_share(P)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def per_context(game, pi: np.ndarray, star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-prompt exploitability and KL(pi* || pi)."""
    from scipy.special import logsumexp

    g = np.einsum("cij,cj->ci", game.P, pi)
    b = game.beta
    expl = b * logsumexp(g / b, b=game.pi_ref, axis=1) + b * kl(pi, game.pi_ref) - 0.5
    return expl, kl(star, pi)


def estimator_study(ns: list[int], seeds: int) -> list[dict[str, float | str | int]]:
    rows: list[dict[str, float | str | int]] = []
    for env_id in ("nlhf/TinyTokenDuel-v0", "nlhf/TinyTokenDuel-Cyclic-v0"):
        env = TokenDuelEnv(**TEXT_ENV_IDS[env_id])
        ref = load_reference_policy(world=env.world)
        game = exact.exact_game(env, "all")
        star = regularized_nash(game)
        policies = {"pi_ref": ref}
        for a in (1.0, 2.0):
            policies[f"drifted a={a:g}"] = drifted_policies(ref, env.world, 1, 5, (a, a))[0]
        for name, pol in policies.items():
            pi = exact.sequence_policy(pol, env, "all")
            expl_x, kl_x = per_context(game, pi, star)
            all_idx = env.world.prompts.indices("all")
            for n in ns:
                err_e, err_k, cov_e, cov_k = [], [], [], []
                for seed in range(seeds):
                    est = estimate_nash_metrics(
                        pol, env, split="all", num_prompts=16, n=n, m=2 * n, seed=seed
                    )
                    rows_of = np.searchsorted(all_idx, est.per_prompt["prompt_index"])
                    err_e.append(abs(est.exploitability - expl_x[rows_of].mean()))
                    err_k.append(abs(est.kl_to_nash - kl_x[rows_of].mean()))
                    lo, hi = est.exploitability_ci
                    cov_e.append(lo <= expl_x.mean() <= hi)
                    lo, hi = est.kl_to_nash_ci
                    cov_k.append(lo <= kl_x.mean() <= hi)
                rows.append(
                    {
                        "env": env_id,
                        "policy": name,
                        "n": n,
                        "exact_exploitability": float(expl_x.mean()),
                        "abs_err_exploitability": float(np.mean(err_e)),
                        "exact_kl_to_nash": float(kl_x.mean()),
                        "abs_err_kl_to_nash": float(np.mean(err_k)),
                        "coverage_exploitability": float(np.mean(cov_e)),
                        "coverage_kl_to_nash": float(np.mean(cov_k)),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def timing(repeats: int = 3) -> str:
    """Wall time of building (uncached) and solving the exact tiny game, median of ``repeats``."""
    env = TokenDuelEnv(**TEXT_ENV_IDS["nlhf/TinyTokenDuel-v0"])
    build, solve = [], []
    for _ in range(repeats):
        exact._GAME_CACHE.clear()
        t0 = time.perf_counter()
        game = exact.exact_game(env, "heldout")
        t1 = time.perf_counter()
        regularized_nash(game, use_cache=False)
        build.append(t1 - t0)
        solve.append(time.perf_counter() - t1)
    return (
        "| exact tiny game (8 prompts x 259 answers) | build (uncached) "
        f"{np.median(build):.2f} s | solve {np.median(solve):.3f} s |\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share-samples", type=int, default=48)
    parser.add_argument("--share-prompts", type=int, default=32)
    parser.add_argument("--eval-pairs", type=int, default=4000)
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--curve-steps", type=int, default=200)
    parser.add_argument("--curve-lr", type=float, default=3.0e-4)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="only time the exact game (token_games_timing.md)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.timing_only:
        text = "| what | build | solve |\n| --- | --- | --- |\n" + timing()
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "token_games_timing.md", text)
        print(text)
        return 0
    t0 = time.perf_counter()
    results: dict[str, object] = {"shares": {}, "judges": {}, "curves": {}}
    for env_id, kwargs in TEXT_ENV_IDS.items():
        env = TokenDuelEnv(**kwargs)
        results["shares"][env_id] = share_of(env, args.share_samples, args.share_prompts, 0)
        print(env_id, results["shares"][env_id], flush=True)
    v0 = TokenDuelEnv(world="default", judge_version="v0")
    results["judges"]["default (v0)"] = evaluate_sources(
        v0.judge, v0.world, load_reference_policy(world="default"), args.eval_pairs, seed=9
    )
    for world in ("default", "default-cyclic", "tiny", "tiny-cyclic"):
        shipped = json.loads((ASSETS / world / "metrics.json").read_text())
        results["judges"][world] = shipped["metrics"]
    for name, env in (("default (v0)", v0),) + tuple(
        (w, TokenDuelEnv(world=w, judge_version="latest"))
        for w in ("default", "default-cyclic", "tiny", "tiny-cyclic")
    ):
        ref = load_reference_policy(world=env.world)
        results["curves"][name] = overoptimisation_curve(
            env.judge, ref, env.world, args.curve_steps, 8, 10, lr=args.curve_lr
        )
        print("curve", name, results["curves"][name][-1], flush=True)
    print("judges done", flush=True)
    results["estimator"] = estimator_study(args.ns, args.seeds)
    results["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_open(args.out / "token_games.json", "w") as f:
        json.dump(results, f, indent=2)
    atomic_write_text(args.out / "token_games.md", report(results))
    plot_curves(results["curves"], args.out / "judge_overoptimisation.png")
    print(report(results))
    return 0


def report(r: dict) -> str:
    lines = ["# Token games: intransitivity, judges, estimator", ""]
    lines += [
        "Made by `python benchmarks/token_games.py` (2-core x86-64 Intel Xeon, one torch thread, "
        f"{r['seconds'] / 60:.0f} min).",
        "",
        "## Cyclic share of P - 1/2 on held-out prompts",
        "",
        "| env id | judge | ground truth | over |",
        "| --- | --- | --- | --- |",
    ]
    for env_id, s in r["shares"].items():
        over = "all 259 answers" if "Tiny" in env_id else "48 pi_ref answers x 32 prompts"
        lines.append(f"| `{env_id}` | {s['judge']:.3f} | {s['ground_truth']:.3f} | {over} |")
    lines += [
        "",
        "## Judge agreement with the population majority where |P* - 1/2| > 0.1 (held-out prompts)",
        "",
        "| judge | ref vs ref | random vs random | ref vs random | drifted (KL >= 2) | min / mean KL "
        "of the drifted policies |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in r["judges"].items():
        cells = [
            f"{m[f'judge/{s}/agreement_confident']:.3f} (Brier {m[f'judge/{s}/brier']:.3f}, "
            f"ECE {m[f'judge/{s}/ece']:.3f})"
            for s in ("ref_vs_ref", "random_vs_random", "ref_vs_random", "drifted")
        ]
        kls = f"{m['judge/drifted/min_kl']:.1f} / {m['judge/drifted/mean_kl']:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {kls} |")
    lines += [
        "",
        "## Estimated vs exact Nash metrics (tiny worlds; 16 prompts, m = 2n, 3 seeds)",
        "",
        "| env | policy | n | exact expl. | abs. error | CI covers | exact KL(pi*\\|\\|pi) | abs. "
        "error | CI covers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["estimator"]:
        lines.append(
            f"| {row['env'].split('/')[1]} | {row['policy']} | {row['n']} | "
            f"{row['exact_exploitability']:.4f} | {row['abs_err_exploitability']:.4f} | "
            f"{row['coverage_exploitability']:.2f} | {row['exact_kl_to_nash']:.3f} | "
            f"{row['abs_err_kl_to_nash']:.3f} | {row['coverage_kl_to_nash']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.2), sharey=True)
    for ax, (name, rows) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        kl_ref = [row["kl_ref"] for row in rows]
        ax.plot(kl_ref, [row["win_rate_judge"] for row in rows], "o-", label="judge")
        ax.plot(kl_ref, [row["win_rate_true"] for row in rows], "s--", label="ground truth")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("KL(pi || pi_ref), nats")
    np.atleast_1d(axes)[0].set_ylabel("win rate vs pi_ref")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(
        "A policy optimised against each judge: judge vs ground-truth win rate", fontsize=10
    )
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
