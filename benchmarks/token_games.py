"""The token games measured: intransitivity, judge quality off pi_ref, over-optimisation, estimator error.

``python benchmarks/token_games.py`` (about 20 minutes on one CPU core) writes
``benchmarks/results/token_games.md``, ``token_games.json`` and ``judge_overoptimisation.png``.
``--only shares,estimator`` runs only the named sections (of ``shares``, ``judges``, ``curves``,
``estimator``, ``timing``): each section that runs replaces its part of ``token_games.json``, the other
sections keep what the file had, and ``token_games.md`` is rendered from the merged file.

1. **Cyclic share** (:func:`nlhf_envs.intransitivity.cyclic_share`) of every registered token game on
   held-out prompts, under its judge and under the ground truth, with two named weightings of the
   answers: ``uniform`` (every answer weighs the same) and ``pi_ref`` (answers weighted by
   ``pi_ref(y | x)``). On the enumerable worlds both are exact: all answers, with equal weights or
   with the exact ``pi_ref`` of the prompt as weights. Elsewhere (``--share-prompts`` prompts) they
   are sampled: ``--share-samples`` answers per prompt from ``World.random_answer`` (uniformly random
   length and words) or from ``pi_ref``, with equal weights. On the enumerable worlds the two samplers
   are run too, as a check of the sampled columns.
2. **Judge quality per pair source** on held-out prompts (:func:`nlhf_envs.text.train.evaluate_sources`):
   the shipped metrics of every latest judge (``assets/<world>/metrics.json``) and the same evaluation
   of the v0 judge of ``nlhf/TokenDuel-v0``, run here.
3. **Over-optimisation**: judge win rate and ground-truth win rate against ``pi_ref`` of a policy trained
   against each judge by REINFORCE without a KL penalty (``--curve-lr``, ``--curve-steps``), as its KL to
   ``pi_ref`` grows (:func:`nlhf_envs.text.train.overoptimisation_curve`, run here for every judge).
4. **Estimator error**: :func:`nlhf_envs.text.estimate.estimate_nash_metrics` against the exact values of
   :func:`nlhf_envs.text.exact.exact_game` on the tiny worlds, for ``pi_ref`` and two drifted policies,
   ``n`` in ``--ns`` (``m = 2 n``), 16 prompts, ``--seeds`` runs each. Every run's absolute error (the
   exact value taken on the same prompts) is kept; per (env, policy, n) the report gives the mean and
   the largest error over the runs, how many runs are within :data:`WITHIN` of the exact
   exploitability, and how many runs' 95% intervals cover the exact mean over all prompts.
5. **Timing** of building (uncached) and solving the exact tiny game (also written to
   ``token_games_timing.md``; ``--timing-only`` is ``--only timing``).
6. **Random tokens** (``random_tokens``, issue 32): every judge of a world whose policies may emit
   any word (the full-size worlds: their answer alphabet is the whole vocabulary of words) against
   the annotators on ``--random-pairs`` pairs of uniformly random answers (``World.random_answer``:
   a uniformly random length of 0 to ``max_new_tokens - 1`` words, each uniform over the whole
   vocabulary of words) to held-out prompts: agreement with the population majority where
   ``|P* - 1/2| > 0.1`` and where ``P* != 1/2``, with 95% Wilson intervals. The tiny worlds' judges
   are measured on their answer alphabet, the only tokens their policies can emit (the other
   tokens' logits are masked in every policy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
#: the sections, in the order they run and are reported
SECTIONS: tuple[str, ...] = ("shares", "judges", "curves", "estimator", "timing", "random_tokens")
#: the answer weightings of the cyclic share
WEIGHTINGS: tuple[str, ...] = ("uniform", "pi_ref")
PAYERS: tuple[str, ...] = ("judge", "ground_truth")
#: the enumerable token games of the estimator study
ESTIMATOR_ENV_IDS: tuple[str, ...] = ("nlhf/TinyTokenDuel-v0", "nlhf/TinyTokenDuel-Cyclic-v0")
#: an exploitability estimate counts as accurate when within this of the exact value
WITHIN = 0.005
#: held-out prompts of the estimator runs
ESTIMATOR_PROMPTS = 16


def enumerable(env: TokenDuelEnv) -> bool:
    """Whether the env's answers can be enumerated (an exact game exists)."""
    try:
        exact.enumerate_answers(env)
    except ValueError:
        return False
    return True


def sampled_shares(
    env: TokenDuelEnv, prompt_indices: Sequence[int], samples: int, seed: int
) -> dict[str, dict[str, float]]:
    """Mean cyclic share over prompts of ``samples`` sampled answers per prompt, equal weights.

    ``uniform``: answers of :meth:`~nlhf_envs.text.world.World.random_answer` (a uniformly random
    length in ``[0, max_new_tokens - 1]`` words, uniformly random words, then ``<eos>``); ``pi_ref``:
    answers of the world's reference policy.

    Returns:
        ``{weighting: {payer: share}}`` (a prompt whose sampled answers are all tied, where the share
        is undefined, is left out of the mean).
    """
    w = env.world
    ref = load_reference_policy(world=w)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    out: dict[str, dict[str, list[float]]] = {
        k: {payer: [] for payer in PAYERS} for k in WEIGHTINGS
    }
    for i in prompt_indices:
        p_ids, p_mask = w.tokenizer.encode_prompts([w.prompts.texts[i]], w.prompt_len)
        g = generate(
            ref,
            p_ids.expand(samples, -1),
            p_mask.expand(samples, -1),
            w.max_new_tokens,
            generator=gen,
        )
        uniform = w.tokenizer.encode_answers(
            [w.random_answer(rng) for _ in range(samples)], w.max_new_tokens, add_eos=True
        )
        for weighting, answers in (("pi_ref", (g.tokens, g.mask)), ("uniform", uniform)):
            for payer, judge in (("judge", env.judge), ("ground_truth", env.truth)):
                P = exact.preference_matrix(judge, w, p_ids, p_mask, answers)
                out[weighting][payer].append(float(cyclic_share(P)))
    return {k: {p: float(np.nanmean(v)) for p, v in d.items()} for k, d in out.items()}


def share_of(env: TokenDuelEnv, samples: int, prompts: int, seed: int) -> dict[str, Any]:
    """Mean cyclic share on held-out prompts under the judge and the ground truth, both weightings.

    Returns:
        ``{"method": "exact" | "sampled", "prompts": C, "answers": ..., "uniform": {payer: share},
        "pi_ref": {payer: share}}``; on the enumerable worlds also ``"sampled"``: the same shares
        from ``samples`` sampled answers per held-out prompt (:func:`sampled_shares`).
    """
    w = env.world
    if enumerable(env):
        out: dict[str, Any] = {"method": "exact", "answers": len(exact.enumerate_answers(env))}
        out["uniform"], out["pi_ref"] = {}, {}
        for payer in PAYERS:
            game = exact.exact_game(env, "heldout", payer=payer)
            out["uniform"][payer] = float(np.mean(cyclic_share(game.P)))
            out["pi_ref"][payer] = float(np.mean(cyclic_share(game.P, game.pi_ref)))
        out["prompts"] = int(game.P.shape[0])
        out["sampled"] = {
            "answers": samples,
            **sampled_shares(env, w.prompts.heldout_indices, samples, seed),
        }
        return out
    rng = np.random.default_rng(seed)
    idx = rng.choice(w.prompts.heldout_indices, size=prompts, replace=False)
    return {
        "method": "sampled",
        "answers": samples,
        "prompts": prompts,
        **sampled_shares(env, idx, samples, seed),
    }


def per_context(game, pi: np.ndarray, star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-prompt exploitability and KL(pi* || pi)."""
    from scipy.special import logsumexp

    g = np.einsum("cij,cj->ci", game.P, pi)
    b = game.beta
    expl = b * logsumexp(g / b, b=game.pi_ref, axis=1) + b * kl(pi, game.pi_ref) - 0.5
    return expl, kl(star, pi)


def estimator_study(
    ns: Sequence[int], seeds: int, env_ids: Sequence[str] = ESTIMATOR_ENV_IDS
) -> list[dict[str, Any]]:
    """Estimated against exact Nash metrics, every run kept (see the module docstring, item 4).

    Returns:
        One row per (env, policy, n): the exact values, the per-run lists ``abs_err_exploitability``,
        ``abs_err_kl_to_nash``, ``covers_exploitability``, ``covers_kl_to_nash`` (one entry per seed)
        and their summaries (``mean_``/``max_abs_err_*``, ``within_exploitability``: runs within
        :data:`WITHIN`, ``covered_*``: runs whose interval covers, ``runs``).
    """
    from scipy.special import logsumexp

    rows: list[dict[str, Any]] = []
    for env_id in env_ids:
        env = TokenDuelEnv(**TEXT_ENV_IDS[env_id])
        ref = load_reference_policy(world=env.world)
        game = exact.exact_game(env, "all")
        star = regularized_nash(game)
        policies = {"pi_ref": ref}
        for a in (1.0, 2.0):
            policies[f"drifted a={a:g}"] = drifted_policies(ref, env.world, 1, 5, (a, a))[0]
        all_idx = env.world.prompts.indices("all")
        for name, pol in policies.items():
            pi = exact.sequence_policy(pol, env, "all")
            # exact per-prompt exploitability and KL(pi* || pi)
            g = np.einsum("cij,cj->ci", game.P, pi)
            b = game.beta
            expl_x = b * logsumexp(g / b, b=game.pi_ref, axis=1) + b * kl(pi, game.pi_ref) - 0.5
            kl_x = kl(star, pi)
            for n in ns:
                err_e, err_k, cov_e, cov_k = [], [], [], []
                for seed in range(seeds):
                    est = estimate_nash_metrics(
                        pol,
                        env,
                        split="all",
                        num_prompts=ESTIMATOR_PROMPTS,
                        n=n,
                        m=2 * n,
                        seed=seed,
                    )
                    rows_of = np.searchsorted(all_idx, est.per_prompt["prompt_index"])
                    err_e.append(float(abs(est.exploitability - expl_x[rows_of].mean())))
                    err_k.append(float(abs(est.kl_to_nash - kl_x[rows_of].mean())))
                    lo, hi = est.exploitability_ci
                    cov_e.append(bool(lo <= expl_x.mean() <= hi))
                    lo, hi = est.kl_to_nash_ci
                    cov_k.append(bool(lo <= kl_x.mean() <= hi))
                rows.append(
                    {
                        "env": env_id,
                        "policy": name,
                        "n": n,
                        "runs": seeds,
                        "exact_exploitability": float(expl_x.mean()),
                        "exact_kl_to_nash": float(kl_x.mean()),
                        "abs_err_exploitability": err_e,
                        "abs_err_kl_to_nash": err_k,
                        "covers_exploitability": cov_e,
                        "covers_kl_to_nash": cov_k,
                        "mean_abs_err_exploitability": float(np.mean(err_e)),
                        "max_abs_err_exploitability": float(np.max(err_e)),
                        "within_exploitability": int(np.sum(np.array(err_e) <= WITHIN)),
                        "mean_abs_err_kl_to_nash": float(np.mean(err_k)),
                        "max_abs_err_kl_to_nash": float(np.max(err_k)),
                        "covered_exploitability": int(np.sum(cov_e)),
                        "covered_kl_to_nash": int(np.sum(cov_k)),
                    }
                )
                r = rows[-1]
                print(
                    f"{env_id} {name} n={n}: expl. err mean {r['mean_abs_err_exploitability']:.4f} "
                    f"max {r['max_abs_err_exploitability']:.4f} within {r['within_exploitability']}"
                    f"/{seeds}; KL err mean {r['mean_abs_err_kl_to_nash']:.3f} "
                    f"max {r['max_abs_err_kl_to_nash']:.3f}",
                    flush=True,
                )
    return rows


def by_n(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The estimator runs pooled over envs and policies, per ``n``."""
    out = []
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]
        e = np.concatenate([r["abs_err_exploitability"] for r in sel])
        k = np.concatenate([r["abs_err_kl_to_nash"] for r in sel])
        out.append(
            {
                "n": n,
                "runs": int(e.size),
                "within_exploitability": int(np.sum(e <= WITHIN)),
                "mean_abs_err_exploitability": float(e.mean()),
                "max_abs_err_exploitability": float(e.max()),
                "covered_exploitability": int(sum(r["covered_exploitability"] for r in sel)),
                "mean_abs_err_kl_to_nash": float(k.mean()),
                "max_abs_err_kl_to_nash": float(k.max()),
                "covered_kl_to_nash": int(sum(r["covered_kl_to_nash"] for r in sel)),
            }
        )
    return out


def timing(repeats: int = 3) -> dict[str, float]:
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
    return {
        "prompts": int(game.P.shape[0]),
        "answers": int(game.P.shape[1]),
        "build_s": float(np.median(build)),
        "solve_s": float(np.median(solve)),
        "repeats": repeats,
    }


def timing_table(t: dict[str, float]) -> str:
    """The timing section as a markdown table."""
    return (
        "| what | build | solve |\n| --- | --- | --- |\n"
        f"| exact tiny game ({t['prompts']} prompts x {t['answers']} answers) | build (uncached) "
        f"{t['build_s']:.2f} s | solve {t['solve_s']:.3f} s |\n"
    )


def parse_sections(text: str) -> list[str]:
    """The sections of ``--only`` (a comma list), in :data:`SECTIONS` order.

    Raises:
        ValueError: for an unknown or empty section name.
    """
    names = [t.strip() for t in text.split(",")]
    bad = [t for t in names if t not in SECTIONS]
    if bad:
        raise ValueError(f"unknown section(s) {bad}; expected some of {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in names]


def machine() -> str:
    """The machine a section ran on, in words."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"{torch.get_num_threads()} torch thread(s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=list(SECTIONS),
        help=f"comma list of sections to run (of {', '.join(SECTIONS)}; default all); the "
        "results file keeps the other sections' previous content",
    )
    parser.add_argument(
        "--env-ids",
        type=lambda t: [s.strip() for s in t.split(",")],
        default=None,
        help="comma list of token ids to measure in shares and estimator (default: every "
        "registered id for shares, the tiny v0 ids for estimator)",
    )
    parser.add_argument("--share-samples", type=int, default=48)
    parser.add_argument("--share-prompts", type=int, default=32)
    parser.add_argument("--eval-pairs", type=int, default=4000)
    parser.add_argument("--random-pairs", type=int, default=20_000)
    parser.add_argument("--ns", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--curve-steps", type=int, default=200)
    parser.add_argument("--curve-lr", type=float, default=3.0e-4)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--timing-only", action="store_true", help="the same as --only timing")
    argv_ = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv_)
    sections = ["timing"] if args.timing_only else args.only
    unknown = [e for e in args.env_ids or () if e not in TEXT_ENV_IDS]
    if unknown:
        parser.error(f"unknown token id(s) {unknown}; expected some of {', '.join(TEXT_ENV_IDS)}")
    torch.set_num_threads(1)
    path = args.out / "token_games.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("section_runs", {})
    for section in sections:
        t0 = time.perf_counter()
        if section == "shares":
            results["shares"] = {}
            for env_id in args.env_ids or TEXT_ENV_IDS:
                env = TokenDuelEnv(**TEXT_ENV_IDS[env_id])
                results["shares"][env_id] = share_of(env, args.share_samples, args.share_prompts, 0)
                print(env_id, results["shares"][env_id], flush=True)
        elif section == "judges":
            results["judges"] = judges(args.eval_pairs)
        elif section == "curves":
            results["curves"] = curves(args.curve_steps, args.curve_lr)
        elif section == "estimator":
            ids = list(args.env_ids or ESTIMATOR_ENV_IDS)
            ids = [e for e in ids if enumerable(TokenDuelEnv(**TEXT_ENV_IDS[e]))]
            results["estimator"] = estimator_study(args.ns, args.seeds, ids)
            results["estimator_by_n"] = by_n(results["estimator"])
        elif section == "random_tokens":
            results["random_tokens"] = random_tokens(args.random_pairs)
        else:
            results["timing"] = timing()
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out / "token_games_timing.md", timing_table(results["timing"]))
        results["section_runs"][section] = {
            "seconds": time.perf_counter() - t0,
            "machine": machine(),
            "command": shlex.join(["python", "benchmarks/token_games.py", *argv_]),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        json.dump(results, f, indent=2)
    text = report(results)
    atomic_write_text(args.out / "token_games.md", text)
    if "curves" in sections:
        plot_curves(results["curves"], args.out / "judge_overoptimisation.png")
    print(text)
    return 0


JUDGE_WORLDS: tuple[str, ...] = ("default", "default-cyclic", "tiny", "tiny-cyclic")


def judges(eval_pairs: int) -> dict[str, dict[str, float]]:
    """Section 2: the v0 judge evaluated here, the latest judges' shipped metrics."""
    v0 = TokenDuelEnv(world="default", judge_version="v0")
    out = {
        "default (v0)": evaluate_sources(
            v0.judge, v0.world, load_reference_policy(world="default"), eval_pairs, seed=9
        )
    }
    for world in JUDGE_WORLDS:
        shipped = json.loads((ASSETS / world / "metrics.json").read_text())
        out[world] = shipped["metrics"]
    return out


#: the judges of section 6: (name, world, judge version)
RANDOM_TOKEN_JUDGES: tuple[tuple[str, str, str], ...] = (
    ("default (v0)", "default", "v0"),
    ("default", "default", "latest"),
    ("default-cyclic", "default-cyclic", "latest"),
    ("tiny-wide", "tiny-wide", "latest"),
    ("tiny-wide-cyclic", "tiny-wide-cyclic", "latest"),
)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z**2 / n
    mid = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return float(mid - half), float(mid + half)


def random_token_agreement(world: str, version: str, pairs: int, seed: int = 0) -> dict[str, Any]:
    """Section 6 for one judge: agreement with the annotators' majority on ``pairs`` pairs of
    uniformly random answers to held-out prompts (see the module docstring)."""
    from nlhf_envs.text.train import judge_probs, sample_pairs

    env = TokenDuelEnv(world=world, judge_version=version)
    w = env.world
    data = sample_pairs(
        pairs, np.random.default_rng(seed), w, load_reference_policy(world=w), [], "heldout",
        seed + 1, source_pairs=[("random", "random")],
    )  # fmt: skip
    p = judge_probs(env.judge, data["batch"])
    q = w.population_prob(data["fa"], data["fb"])
    agree = (p > 0.5) == (q > 0.5)
    confident, decided = np.abs(q - 0.5) > 0.1, q != 0.5
    out: dict[str, Any] = {"pairs": int(pairs), "words": len(w.answer_token_ids) - 1}
    for name, sel in (("confident", confident), ("decided", decided)):
        k, n = int(agree[sel].sum()), int(sel.sum())
        out[name] = {"agreement": k / n if n else float("nan"), "ci": wilson(k, n), "pairs": n}
    return out


def random_tokens(pairs: int) -> dict[str, Any]:
    """Section 6: every judge of :data:`RANDOM_TOKEN_JUDGES`."""
    out = {}
    for name, world, version in RANDOM_TOKEN_JUDGES:
        out[name] = random_token_agreement(world, version, pairs)
        print("random tokens", name, out[name], flush=True)
    return out


def random_tokens_section(r: dict[str, Any]) -> list[str]:
    """The random-token agreement table."""
    lines = [
        "## Judges on uniformly random answers (agreement with the population majority)",
        "",
        "Answers of `World.random_answer` (a uniformly random length of 0 to `max_new_tokens - 1` "
        "words, each uniform over the world's answer words: the whole vocabulary of words on the "
        "full-size worlds, the six answer words on the tiny ones, the only tokens their policies "
        "can emit), held-out prompts; 95% Wilson intervals.",
        "",
        "<!-- --8<-- [start:random_tokens] -->",
        "| judge | answer words | pairs | where abs(P* - 1/2) > 0.1 | where P* != 1/2 |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name, row in r.items():
        cells = [
            f"{row[k]['agreement']:.3f} [{row[k]['ci'][0]:.3f}, {row[k]['ci'][1]:.3f}] "
            f"({row[k]['pairs']:,} pairs)"
            for k in ("confident", "decided")
        ]
        lines.append(f"| {name} | {row['words']} | {row['pairs']:,} | {cells[0]} | {cells[1]} |")
    return lines + ["<!-- --8<-- [end:random_tokens] -->", ""]


def curves(steps: int, lr: float) -> dict[str, list[dict[str, float]]]:
    """Section 3: the over-optimisation curve of every judge."""
    out = {}
    envs = [("default (v0)", TokenDuelEnv(world="default", judge_version="v0"))]
    envs += [(w, TokenDuelEnv(world=w, judge_version="latest")) for w in JUDGE_WORLDS]
    for name, env in envs:
        ref = load_reference_policy(world=env.world)
        out[name] = overoptimisation_curve(env.judge, ref, env.world, steps, 8, 10, lr=lr)
        print("curve", name, out[name][-1], flush=True)
    return out


def _runs_line(r: dict[str, Any]) -> str:
    runs = r.get("section_runs", {})
    groups: dict[tuple[str, str], list[str]] = {}
    earlier = []
    for s in SECTIONS:
        if s in r and s in runs:
            key = (runs[s]["command"], runs[s]["machine"])
            groups.setdefault(key, []).append(f"{s} {runs[s]['seconds'] / 60:.1f} min")
        elif s in r:
            earlier.append(s)
    parts = [f"`{cmd}` ({mach}; {', '.join(times)})" for (cmd, mach), times in groups.items()]
    if earlier:
        total = f", {r['seconds'] / 60:.0f} min in all" if "seconds" in r else ""
        parts.append(
            f"{', '.join(earlier)}: an earlier full run of `python benchmarks/token_games.py` "
            f"(2-core x86-64 Intel Xeon, one torch thread{total})"
        )
    return "Made by " + "; ".join(parts) + "."


def report(r: dict[str, Any]) -> str:
    """``token_games.md`` from the (merged) results; sections absent from ``r`` are left out."""
    lines = ["# Token games: intransitivity, judges, estimator", "", _runs_line(r), ""]
    if "shares" in r:
        lines += shares_section(r["shares"])
    if "judges" in r:
        lines += judges_section(r["judges"])
    if "estimator" in r:
        lines += estimator_section(r["estimator"], r.get("estimator_by_n") or by_n(r["estimator"]))
    if "random_tokens" in r:
        lines += random_tokens_section(r["random_tokens"])
    if "timing" in r:
        lines += ["## Exact tiny game: build and solve", "", timing_table(r["timing"]).rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def shares_section(shares: dict[str, Any]) -> list[str]:
    """The cyclic-share table, its weightings explained, and the sampling check."""
    lines = [
        "## Cyclic share of P - 1/2 on held-out prompts",
        "",
        "| env id | judge, uniform | ground truth, uniform | judge, pi_ref | ground truth, pi_ref "
        "| over |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for env_id, s in shares.items():
        over = (
            f"all {s['answers']} answers x {s['prompts']} prompts (exact)"
            if s["method"] == "exact"
            else f"{s['answers']} sampled answers x {s['prompts']} prompts"
        )
        cells = [f"{s[k][p]:.3f}" for k in WEIGHTINGS for p in PAYERS]
        lines.append(f"| `{env_id}` | " + " | ".join(cells) + f" | {over} |")
    lines += [
        "",
        "*uniform*: every answer weighs the same (exact worlds: all answers, equal weights; the others: "
        "answers of `World.random_answer`, a uniformly random length of 0 to `max_new_tokens - 1` "
        "words and uniformly random words, equal weights). *pi_ref*: answers weighted by "
        "`pi_ref(y | x)` (exact worlds: all answers, weights the exact `pi_ref` of the prompt; the "
        "others: answers sampled from `pi_ref`, equal weights). The share is the mean over prompts.",
        "",
    ]
    checks = {e: s["sampled"] for e, s in shares.items() if "sampled" in s}
    if checks:
        lines += [
            "Sampling check on the exact worlds: the same shares from sampled answers per held-out "
            "prompt, equal weights (`random_answer` never gives the cut answers of "
            "`max_new_tokens` words, so its column is not the exact uniform one):",
            "",
            "| env id | judge, random_answer | ground truth, random_answer | judge, pi_ref samples "
            "| ground truth, pi_ref samples | answers per prompt |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for env_id, c in checks.items():
            cells = [f"{c[k][p]:.3f}" for k in WEIGHTINGS for p in PAYERS]
            lines.append(f"| `{env_id}` | " + " | ".join(cells) + f" | {c['answers']} |")
        lines.append("")
    return lines


def judges_section(judges_: dict[str, Any]) -> list[str]:
    """The judge-agreement table."""
    lines = [
        "## Judge agreement with the population majority where |P* - 1/2| > 0.1 (held-out prompts)",
        "",
        "| judge | ref vs ref | random vs random | ref vs random | drifted (KL >= 2) | min / mean KL "
        "of the drifted policies |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in judges_.items():
        cells = [
            f"{m[f'judge/{s}/agreement_confident']:.3f} (Brier {m[f'judge/{s}/brier']:.3f}, "
            f"ECE {m[f'judge/{s}/ece']:.3f})"
            for s in ("ref_vs_ref", "random_vs_random", "ref_vs_random", "drifted")
        ]
        kls = f"{m['judge/drifted/min_kl']:.1f} / {m['judge/drifted/mean_kl']:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {kls} |")
    return lines + [""]


def estimator_section(
    rows: Sequence[dict[str, Any]], pooled: Sequence[dict[str, Any]]
) -> list[str]:
    """The estimator tables: pooled per ``n``, then per (env, policy, n)."""
    runs = rows[0]["runs"] if rows else 0
    lines = [
        f"## Estimated vs exact Nash metrics (tiny worlds; {ESTIMATOR_PROMPTS} prompts, m = 2n, "
        f"{runs} runs (seeds) per row)",
        "",
        "Absolute error of each run's estimate against the exact value on the same prompts: mean and "
        f'largest over the runs, and the runs within {WITHIN} of the exact exploitability; "CI '
        'covers": runs whose 95% interval covers the exact mean over all prompts.',
        "",
        "All envs and policies pooled:",
        "",
        f"| n | runs | expl.: within {WITHIN} | mean abs. error | max abs. error | CI covers | "
        "KL(pi*\\|\\|pi): mean abs. error | max abs. error | CI covers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in pooled:
        lines.append(
            f"| {p['n']} | {p['runs']} | {p['within_exploitability']} / {p['runs']} | "
            f"{p['mean_abs_err_exploitability']:.4f} | {p['max_abs_err_exploitability']:.4f} | "
            f"{p['covered_exploitability']} / {p['runs']} | {p['mean_abs_err_kl_to_nash']:.3f} | "
            f"{p['max_abs_err_kl_to_nash']:.3f} | {p['covered_kl_to_nash']} / {p['runs']} |"
        )
    lines += [
        "",
        "| env | policy | n | exact expl. | mean abs. error | max abs. error | within "
        f"{WITHIN} | CI covers | exact KL(pi*\\|\\|pi) | mean abs. error | max abs. error | "
        "CI covers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        k = row["runs"]
        lines.append(
            f"| {row['env'].split('/')[1]} | {row['policy']} | {row['n']} | "
            f"{row['exact_exploitability']:.4f} | {row['mean_abs_err_exploitability']:.4f} | "
            f"{row['max_abs_err_exploitability']:.4f} | {row['within_exploitability']} / {k} | "
            f"{row['covered_exploitability']} / {k} | {row['exact_kl_to_nash']:.3f} | "
            f"{row['mean_abs_err_kl_to_nash']:.3f} | {row['max_abs_err_kl_to_nash']:.3f} | "
            f"{row['covered_kl_to_nash']} / {k} |"
        )
    return lines + [""]


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
