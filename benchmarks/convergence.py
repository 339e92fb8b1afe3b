"""Convergence study: preference queries each agent needs to reach the regularised Nash equilibrium.

For every game (families uniform, skew-Gaussian, cyclic; sizes ``K``; strengths ``beta``; seeds) and
every agent, at its theory/default step and at the best step of a small grid, it measures

* ``exact`` mode: queries until ``KL(pi*_beta || pi) < 1e-6`` (``--kl-threshold``);
* ``sampled`` and ``pg`` modes: queries until the running mean of the last 5 iterates'
  exploitability is ``< 1e-2`` (``--expl-threshold``).

Every run starts from the same random policy (softmax of standard-normal logits, ``init="random"``,
seeded), so even the cyclic games, whose Nash is uniform, start away from it. A run that does not
reach the threshold within the query cap is reported as ``>cap``. Outputs (``--out``, default
``benchmarks/results``): ``convergence.md`` (tables), ``convergence.json`` (raw numbers) and
``convergence_kl.png`` / ``convergence_sampled.png`` (curves, log scale, Nash-MP's theoretical bound
drawn).

Run ``nlhf-zoo convergence`` or ``python benchmarks/convergence.py`` (about 10 minutes on 2 CPU cores) or ``--quick`` for a
smoke run. :func:`main` takes ``argv`` so that a command-line tool can wire it as a subcommand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import agents
from agents.updates import softmax
from nlhf_envs import make_game, solvers
from nlhf_envs.game import PreferenceGame

__all__ = ["main", "build_parser", "step_grid", "run_one"]

FAMILIES = {"uniform": "uniform", "skew-gaussian": "skew_gaussian", "cyclic": "cyclic"}
EXACT_AGENTS = ["nash_mp", "nash_md", "online_ipo", "inpo", "mmd", "egpo", "omwu", "sppo", "mnpo"]
PG_AGENTS = ["nash_mp", "online_ipo", "inpo", "mnpo"]


def theory_queries(beta: float, reduction: float = 1e6) -> float:
    """Nash-MP at ``eta = 2 beta``: ``2 ln(reduction) / ln(1 + 2 beta)`` exact queries."""
    return 2.0 * math.log(reduction) / math.log(1.0 + 2.0 * beta)


def default_step(name: str, game: PreferenceGame) -> tuple[str, float]:
    """``(config key, value)`` of each agent's theory/default step (owned by the agent class)."""
    return agents.registry.get_agent_class(name).default_step(game)


def step_grid(name: str, game: PreferenceGame, mode: str) -> list[dict[str, Any]]:
    """The configs tried for ``name``: the theory/default step first, then the grid around it."""
    key, base = default_step(name, game)
    beta = game.beta
    if mode == "pg":
        return [{}] + [{"pg_lr": None, "_pg_lr_scale": s} for s in (0.5, 2.0)]
    if name == "nash_md":
        # harmonic numerators <= 2/beta keep eta_0 beta <= 1; constant steps show the bias
        grid = [{"schedule": "harmonic", "eta": base * s} for s in (0.25, 0.5)]
        grid += [{"schedule": "constant", "eta": c / beta} for c in (0.05, 0.5)]
        return [{"schedule": "harmonic"}] + grid
    mults = (0.5, 2.0, 4.0)
    grid = []
    for m in mults:
        value = base * m
        if name in ("inpo", "mnpo") and value * beta > 1.0:
            continue
        grid.append({key: value})
    return [{key: base}] + grid


@dataclass
class RunResult:
    """One run: the queries to the threshold (``None`` if not reached) and its curve."""

    agent: str
    config: dict[str, Any]
    queries: int | None
    curve_q: list[int] = field(default_factory=list)
    curve_v: list[float] = field(default_factory=list)


def _resolve_pg(name: str, game: PreferenceGame, cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(cfg)
    scale = cfg.pop("_pg_lr_scale", None)
    if scale is None:
        cfg.pop("pg_lr", None)
        return cfg
    probe = agents.make(name, game, seed=0, mode="pg")
    K = game.num_actions
    if name == "nash_mp":
        base = K / (2.0 * game.beta * (1.0 + 1.0 / probe.eta))
    elif name == "online_ipo":
        base = probe.lam * game.beta * K / 4.0
    else:  # inpo, mnpo: 1 / (8 max pi), about K / 8 near uniform
        base = K / 8.0
    cfg["pg_lr"] = base * scale
    return cfg


def run_one(
    name: str,
    game: PreferenceGame,
    mode: str,
    cfg: dict[str, Any],
    *,
    seed: int,
    max_queries: int,
    threshold: float,
    batch_size: int,
    keep_curve: bool = False,
) -> RunResult:
    """Run one agent until its metric crosses ``threshold`` or ``max_queries`` queries are used."""
    star = np.log(game.as_policy(solvers.regularized_nash(game)))
    pi_star = np.exp(star)
    extra: dict[str, Any] = {"mode": mode, "init": "random", "log_every": 0}
    if mode == "sampled":
        extra["batch_size"] = batch_size
    if mode == "pg":
        cfg = _resolve_pg(name, game, cfg)
    agent = agents.make(name, game, seed=seed, **cfg, **extra)
    result = RunResult(name, {k: v for k, v in cfg.items()}, None)
    window: list[float] = []
    if keep_curve:  # the starting point, for the bound KL_0 (1 + eta)^(-k)
        result.curve_q.append(0)
        if mode == "exact":
            result.curve_v.append(float(game.rho @ (pi_star * (star - agent.log_pi)).sum(axis=1)))
        else:
            result.curve_v.append(solvers.exploitability(game, softmax(agent.log_pi)))

    def callback(a: agents.Agent) -> bool:
        if mode == "exact":
            value = float(game.rho @ (pi_star * (star - a.log_pi)).sum(axis=1))
            hit = value < threshold
        else:
            value = solvers.exploitability(game, softmax(a.log_pi))
            window.append(value)
            del window[:-5]
            hit = len(window) == 5 and float(np.mean(window)) < threshold
        if keep_curve:
            result.curve_q.append(a.queries_used)
            result.curve_v.append(value)
        if hit:
            result.queries = a.queries_used
            return False
        return True

    agent.learn(num_queries=max_queries, callback=callback)
    return result


def _fmt(q: float | None, cap: int) -> str:
    if q is None:
        return f">{cap}"
    return f"{int(round(q))}"


def _median(values: list[int | None]) -> int | None:
    """Median over seeds; ``None`` (not reached) counts as +infinity."""
    arr = sorted(math.inf if v is None else v for v in values)
    mid = (
        arr[len(arr) // 2] if len(arr) % 2 else 0.5 * (arr[len(arr) // 2 - 1] + arr[len(arr) // 2])
    )
    return None if math.isinf(mid) else int(round(mid))


def _cfg_label(cfg: dict[str, Any]) -> str:
    parts = []
    for k, v in cfg.items():
        if k.startswith("_"):
            continue
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts) or "default"


def build_parser() -> argparse.ArgumentParser:
    """The argparse options of the study (reusable by a ``nlhf-zoo convergence`` subcommand)."""
    p = argparse.ArgumentParser(
        prog="nlhf-zoo convergence",
        description="Queries-to-threshold convergence study of the agents.",
    )
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--sizes", nargs="+", type=int, default=[10, 100, 1000])
    p.add_argument("--betas", nargs="+", type=float, default=[0.01, 0.1])
    p.add_argument("--seeds", type=int, default=2, help="seeds per game (K <= 100)")
    p.add_argument("--agents", nargs="+", default=EXACT_AGENTS, choices=EXACT_AGENTS)
    p.add_argument("--kl-threshold", type=float, default=1e-6)
    p.add_argument("--expl-threshold", type=float, default=1e-2)
    p.add_argument("--max-queries", type=int, default=20_000, help="exact-mode cap, K <= 100")
    p.add_argument("--max-queries-large", type=int, default=3_000, help="exact-mode cap, K > 100")
    p.add_argument("--stochastic-sizes", nargs="+", type=int, default=[10, 100])
    p.add_argument("--max-stochastic-queries", type=int, default=300_000)
    p.add_argument(
        "--samples-per-action", type=int, default=25, help="sampled mode: batch_size = this * K"
    )
    p.add_argument("--no-stochastic", action="store_true", help="skip the sampled and pg modes")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"))
    p.add_argument("--quick", action="store_true", help="a small smoke grid (K=10, 1 seed)")
    p.add_argument("--no-plots", action="store_true")
    return p


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _game(family: str, K: int, beta: float, seed: int) -> PreferenceGame:
    kw: dict[str, Any] = {"num_actions": K, "beta": beta}
    if FAMILIES[family] != "cyclic":
        kw["seed"] = seed
    return make_game(FAMILIES[family], **kw)


def study(args: argparse.Namespace) -> dict[str, Any]:
    """Run the grid; returns the raw results (JSON-serialisable)."""
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    t0 = time.perf_counter()
    # ---- exact mode
    for family in args.families:
        for K in args.sizes:
            large = K > 100
            seeds = 1 if large else args.seeds
            cap = args.max_queries_large if large else args.max_queries
            for beta in args.betas:
                for seed in range(seeds):
                    game = _game(family, K, beta, seed)
                    for name in args.agents:
                        # K > 100: the theory step only (plus Nash-MP's grid), to bound the cost
                        grid = step_grid(name, game, "exact")
                        if (large and name != "nash_mp") or name == "sppo":
                            grid = grid[:1]  # SPPO does not target pi*_beta: no tuning
                        for i, cfg in enumerate(grid):
                            keep = family == args.families[0] and seed == 0 and i == 0
                            res = run_one(
                                name, game, "exact", cfg, seed=seed, max_queries=cap,
                                threshold=args.kl_threshold, batch_size=0, keep_curve=keep,
                            )  # fmt: skip
                            rows.append(
                                {"mode": "exact", "family": family, "K": K, "beta": beta,
                                 "seed": seed, "agent": name, "theory": i == 0,
                                 "config": _cfg_label(cfg), "queries": res.queries, "cap": cap}
                            )  # fmt: skip
                            if keep:
                                curves[f"exact|{K}|{beta}|{name}"] = [res.curve_q, res.curve_v]
                _progress(f"exact {family} K={K} beta={beta}: {time.perf_counter() - t0:.0f}s")
    # ---- sampled and pg modes
    if not args.no_stochastic:
        for family in args.families:
            for K in args.stochastic_sizes:
                for beta in args.betas:
                    for seed in range(args.seeds):
                        game = _game(family, K, beta, seed)
                        B = args.samples_per_action * K
                        for mode, names in (("sampled", args.agents), ("pg", PG_AGENTS)):
                            for name in names:
                                if name not in args.agents:
                                    continue
                                for i, cfg in enumerate(step_grid(name, game, mode)):
                                    keep = family == args.families[0] and seed == 0 and i == 0
                                    res = run_one(
                                        name, game, mode, cfg, seed=seed,
                                        max_queries=args.max_stochastic_queries,
                                        threshold=args.expl_threshold, batch_size=B,
                                        keep_curve=keep,
                                    )  # fmt: skip
                                    rows.append(
                                        {"mode": mode, "family": family, "K": K, "beta": beta,
                                         "seed": seed, "agent": name, "theory": i == 0,
                                         "config": _cfg_label(cfg), "queries": res.queries,
                                         "cap": args.max_stochastic_queries}
                                    )  # fmt: skip
                                    if keep:
                                        curves[f"{mode}|{K}|{beta}|{name}"] = [
                                            res.curve_q,
                                            res.curve_v,
                                        ]
                    _progress(f"stochastic {family} K={K}: {time.perf_counter() - t0:.0f}s")
    return {"rows": rows, "curves": curves, "seconds": time.perf_counter() - t0}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (mode, family, K, beta, agent): median queries at the theory step and at the best step."""
    groups: dict[tuple, dict[str, list]] = {}
    for r in rows:
        key = (r["mode"], r["family"], r["K"], r["beta"], r["agent"])
        groups.setdefault(key, {}).setdefault(r["config"], []).append(r)
    out = []
    for key, by_cfg in groups.items():
        theory_cfg = next(c for c, rs in by_cfg.items() if rs[0]["theory"])
        med = {c: _median([r["queries"] for r in rs]) for c, rs in by_cfg.items()}
        best_cfg = min(med, key=lambda c: math.inf if med[c] is None else med[c])
        cap = by_cfg[theory_cfg][0]["cap"]
        out.append(
            {"mode": key[0], "family": key[1], "K": key[2], "beta": key[3], "agent": key[4],
             "theory_cfg": theory_cfg, "theory": med[theory_cfg], "best_cfg": best_cfg,
             "best": med[best_cfg], "cap": cap, "seeds": len(by_cfg[theory_cfg])}
        )  # fmt: skip
    return out


def markdown(summary: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    """The study's tables as markdown."""
    lines = [
        "# Convergence study",
        "",
        "Generated by `python benchmarks/convergence.py` "
        f"({seconds:.0f} s). Median over seeds of the preference queries to reach the threshold, "
        "at the agent's theory/default step and at the best step of its grid (`>N`: not reached "
        "within the cap N for the median seed). Random initial policy (softmax of standard-normal "
        "logits).",
        "",
    ]
    for mode, title in (
        ("exact", f"Exact mode: queries to KL(pi*||pi) < {args.kl_threshold:g}"),
        ("sampled", f"Sampled mode: queries to exploitability < {args.expl_threshold:g}"),
        ("pg", f"PG mode: queries to exploitability < {args.expl_threshold:g}"),
    ):
        rows = [s for s in summary if s["mode"] == mode]
        if not rows:
            continue
        names = [n for n in EXACT_AGENTS if any(s["agent"] == n for s in rows)]
        lines += [f"## {title}", ""]
        if mode == "exact":
            lines.append(
                "Theory (Nash-MP, eta = 2 beta): 2 ln(1e6)/ln(1 + 2 beta) = "
                + ", ".join(f"{theory_queries(b):.0f} (beta={b:g})" for b in args.betas)
                + " queries for a 1e6-fold KL reduction, whatever K. K > 100: one seed, theory "
                "step only for the baselines (Nash-MP also on its grid)."
            )
        else:
            lines.append(
                f"batch_size = {args.samples_per_action} K queries per win-rate estimate "
                "(sampled); pg: the agents' default inner loops, pg_lr grid x{0.5, 1, 2}. Threshold "
                "on the running mean of the last 5 iterates. K = 1000 is left out: an unbiased "
                "estimate of a 1000-action win-rate vector needs ~25k queries, so these modes "
                "only make sense on small K."
            )
        lines += [
            "",
            "| family | K | beta | " + " | ".join(names) + " |",
            "| --- | --- | --- | " + " | ".join("---" for _ in names) + " |",
        ]
        settings = sorted({(s["family"], s["K"], s["beta"]) for s in rows})
        for fam, K, beta in settings:
            cells = []
            for n in names:
                s = next(
                    (
                        x
                        for x in rows
                        if (x["family"], x["K"], x["beta"], x["agent"]) == (fam, K, beta, n)
                    ),
                    None,
                )
                if s is None:
                    cells.append("")
                    continue
                th, best = _fmt(s["theory"], s["cap"]), _fmt(s["best"], s["cap"])
                cells.append(th if s["best_cfg"] == s["theory_cfg"] else f"{th} / **{best}**")
            lines.append(f"| {fam} | {K} | {beta:g} | " + " | ".join(cells) + " |")
        lines += ["", "Cells: theory step / **best grid step** (when different).", ""]
        lines += ["Best grid steps:", ""]
        for fam, K, beta in settings:
            best = [
                f"{s['agent']}: {s['best_cfg']}"
                for s in rows
                if (s["family"], s["K"], s["beta"]) == (fam, K, beta)
                and s["best_cfg"] != s["theory_cfg"]
            ]
            if best:
                lines.append(f"- {fam} K={K} beta={beta:g}: " + "; ".join(best))
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], args: argparse.Namespace, out: str) -> list[str]:
    """KL (exact) and exploitability (sampled/pg) vs queries, log scale, with Nash-MP's bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves = results["curves"]
    exact_keys = sorted(
        {tuple(k.split("|")[1:3]) for k in curves if k.startswith("exact|")},
        key=lambda kb: (float(kb[1]), int(kb[0])),
    )
    if exact_keys:
        betas = sorted({b for _, b in exact_keys}, key=float)
        sizes = sorted({k for k, _ in exact_keys}, key=int)
        fig, axes = plt.subplots(
            len(betas), len(sizes), figsize=(4.0 * len(sizes), 3.2 * len(betas)), squeeze=False
        )
        for (K, beta), ax in (
            (kb, axes[betas.index(kb[1]), sizes.index(kb[0])]) for kb in exact_keys
        ):
            b = float(beta)
            xmax = 3.0 * theory_queries(b)
            for name in EXACT_AGENTS:
                c = curves.get(f"exact|{K}|{beta}|{name}")
                if c and c[0]:
                    color = f"C{EXACT_AGENTS.index(name)}"
                    ax.plot(c[0], c[1], label=name, color=color, lw=2.2 if name == "nash_mp" else 1)
            c = curves.get(f"exact|{K}|{beta}|nash_mp")
            if c and c[0]:
                kl0 = c[1][0]  # KL(pi* || pi_0), recorded at 0 queries
                q = np.arange(0, xmax + 2, 2)
                ax.plot(q, kl0 * (1 + 2 * b) ** (-q / 2), "k--", lw=1, label="Nash-MP bound")
            ax.set_yscale("log")
            ax.set_ylim(1e-8, 1e2)
            ax.set_xlim(0, xmax)
            ax.axhline(args.kl_threshold, color="grey", lw=0.5)
            ax.set_title(f"{args.families[0]} K={K} beta={beta}", fontsize=9)
            ax.set_xlabel("preference queries (exact)")
            ax.set_ylabel("KL(pi* || pi)")
        axes[0, -1].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out, "convergence_kl.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    st_keys = sorted(
        {tuple(k.split("|")[1:3]) for k in curves if not k.startswith("exact|")}, key=str
    )
    if st_keys:
        fig, axes = plt.subplots(1, len(st_keys), figsize=(4.2 * len(st_keys), 3.6))
        axes = np.atleast_1d(axes)
        for ax, (K, beta) in zip(axes, st_keys):
            for key, c in curves.items():
                mode, k2, b2, name = key.split("|")
                if mode != "exact" and (k2, b2) == (K, beta) and c[0]:
                    ax.plot(c[0], c[1], label=f"{name} ({mode})", lw=1.0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.axhline(args.expl_threshold, color="grey", lw=0.5)
            ax.set_title(f"{args.families[0]} K={K} beta={beta}")
            ax.set_xlabel("preference queries")
        axes[0].set_ylabel("exploitability")
        axes[-1].legend(fontsize=6)
        fig.tight_layout()
        path = os.path.join(out, "convergence_sampled.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the study; write the markdown table, the raw JSON and the plots. Returns 0."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.sizes, args.stochastic_sizes, args.seeds = [10], [10], 1
        args.max_stochastic_queries = min(args.max_stochastic_queries, 100_000)
    os.makedirs(args.out, exist_ok=True)
    results = study(args)
    summary = summarise(results["rows"])
    md = markdown(summary, args, results["seconds"])
    with open(os.path.join(args.out, "convergence.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(args.out, "convergence.json"), "w") as fh:
        json.dump({"args": vars(args), "summary": summary, "rows": results["rows"]}, fh, indent=1)
    if not args.no_plots:
        plot(results, args, args.out)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
