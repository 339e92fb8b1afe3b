"""Token-level agents measured on Nash metrics in the exact tiny worlds (issue 11).

Every agent trains on the train prompts of ``nlhf/TinyTokenDuel-v0`` (plain) or
``nlhf/TinyTokenDuel-Cyclic-v0`` (intransitive). At fixed query budgets the script computes, exactly
over the 259 enumerated answers (``algorithms.md`` §7):

* validation metrics on the 24 train prompts (used for tuning only; ``--split val``);
* test metrics on the 8 held-out prompts (disjoint from the tuning prompts; reported):
  exploitability ``max_pi' P_beta(pi' > pi) - 1/2`` and ``KL(pi*_beta || pi)`` per prompt, of the last
  iterate, and of the average iterate (the uniform mixture of the sequence policies at the
  evaluation points of the second half of the budget).

Sub-commands:

* ``tune``: every (agent, setting) of a grid (learning rates x seeds, plus eta for Nash-MP and the
  mixture schedule for Nash-MD), scored by validation exploitability at the budget (mean over seeds);
* ``h2h``: the chosen settings over ``--seeds`` seeds, curves on the test prompts, the tabular exact
  Nash-MP (``agents.make("nash_mp", exact_game(...), mode="exact")``) as the ceiling (iteration ``k``
  of the tabular agent is plotted at the queries of ``k`` neural Nash-MP iterations), and 95% intervals
  by a paired bootstrap over (prompt, seed) cells.

* ``full``: the full-size worlds (``--env nlhf/TokenDuel-v0``), estimated Nash metrics at the
  budgets of ``--points``; ``--device cuda`` for the larger budgets on a GPU machine;
* ``report``: ``benchmarks/results/text_nash.md`` and the curves from the JSON results.

Results go to ``benchmarks/results/text_nash*.json``/``.md``. Example (small CPU run)::

    OMP_NUM_THREADS=1 python benchmarks/text_nash.py tune --world plain --budget 24576 \\
        --lrs 1e-4,3e-4 --seeds 2
    OMP_NUM_THREADS=1 python benchmarks/text_nash.py h2h --world plain --budget 49152 --seeds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

import agents
from nlhf_envs.solvers import regularized_nash
from nlhf_envs.text.exact import exact_game, sequence_policy

WORLDS = {"plain": "nlhf/TinyTokenDuel-v0", "cyclic": "nlhf/TinyTokenDuel-Cyclic-v0"}
RESULTS = Path(__file__).parent / "results"

#: the low-variance setting every method shares (judge probabilities, batch 256)
COMMON: dict[str, Any] = {"mode": "probability", "batch_size": 256, "eval_every": 0}


def per_prompt(game: Any, pi: np.ndarray, star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-prompt exploitability and ``KL(pi* || pi)`` (``algorithms.md`` §2)."""
    beta = game.beta
    g = np.einsum("cij,cj->ci", game.P, pi)
    kl_ref = (pi * (np.log(pi) - np.log(game.pi_ref))).sum(-1)
    expl = beta * logsumexp(g / beta, b=game.pi_ref, axis=1) + beta * kl_ref - 0.5
    kl_star = (star * (np.log(star) - np.log(pi))).sum(-1)
    return expl, kl_star


class Judge:
    """Exact games of one world on the validation (train) and test (held-out) prompts."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id
        probe = agents.make("online_ipo", env_id, seed=0, **COMMON)
        self.env, self.reference, self.beta = probe.env, probe.reference, probe.beta
        self.games = {}
        for name, split in (("val", "train"), ("test", "heldout")):
            game = exact_game(self.env, split, beta=self.beta, reference=self.reference)
            self.games[name] = (split, game, regularized_nash(game))

    def policy(self, model: Any, which: str) -> np.ndarray:
        split = self.games[which][0]
        model.eval()
        try:
            with torch.no_grad():
                return np.asarray(sequence_policy(model, self.env, split), np.float64)
        finally:
            model.train()

    def metrics(self, pi: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
        _, game, star = self.games[which]
        return per_prompt(game, np.clip(pi, 1e-300, None), star)


def run(
    judge: Judge, name: str, config: dict[str, Any], seed: int, budget: int, points: list[int]
) -> dict[str, Any]:
    """Train one agent, evaluating exactly at each budget in ``points``."""
    agent = agents.make(name, judge.env_id, seed=seed, **{**COMMON, **config})
    rows, tail, start = [], [], time.perf_counter()
    todo = list(points)

    def evaluate() -> None:
        pis = {w: judge.policy(agent.model, w) for w in ("val", "test")}
        row: dict[str, Any] = {"queries": agent.queries_used}
        for w, pi in pis.items():
            e, k = judge.metrics(pi, w)
            row[f"{w}_expl"], row[f"{w}_kl"] = e.tolist(), k.tolist()
        rows.append(row)
        if agent.queries_used >= budget / 2:
            tail.append(pis["test"])

    evaluate()

    def callback(_: Any) -> bool:
        while todo and agent.queries_used >= todo[0]:
            todo.pop(0)
            evaluate()
        return True

    learn_budget = budget
    agent.learn(num_queries=learn_budget, callback=callback)
    if rows[-1]["queries"] != agent.queries_used:
        evaluate()
    avg = np.mean(tail, axis=0) if tail else judge.policy(agent.model, "test")
    e, k = judge.metrics(avg, "test")
    return {
        "agent": name,
        "config": config,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "curve": rows,
        "average_test_expl": e.tolist(),
        "average_test_kl": k.tolist(),
    }


def grid(
    name: str,
    lrs: list[float],
    beta: float,
    etas: tuple[float, ...] = (1.0, 2.0, 4.0),
    mixtures: tuple[str, ...] = ("1/16", "1/8", "1/4", "harmonic"),
) -> list[dict[str, Any]]:
    """The tuning grid of ``name`` (issue 11, item 3): ``lrs`` for every agent, ``eta`` in
    ``etas x beta`` for Nash-MP, the mixture coefficients and/or the harmonic schedule for Nash-MD."""
    if name == "nash_mp":
        return [
            {"lr": lr, "eta": m * beta, "inner_steps": 8} for lr, m in itertools.product(lrs, etas)
        ]
    if name == "nash_md":
        mix = []
        for m in mixtures:
            if m == "harmonic":
                mix.append({"schedule": "harmonic"})
            else:
                num, den = m.split("/")
                mix.append({"schedule": "constant", "mixture_coef": int(num) / int(den)})
        return [{"lr": lr, **m} for lr, m in itertools.product(lrs, mix)]
    return [{"lr": lr} for lr in lrs]


def bootstrap(cells: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """95% interval of the mean of a ``(seeds, prompts)`` array, resampling seeds and prompts."""
    s, p = cells.shape
    means = np.empty(n)
    for b in range(n):
        i = rng.integers(0, s, s)
        j = rng.integers(0, p, p)
        means[b] = cells[np.ix_(i, j)].mean()
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def paired_diff(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95% paired-bootstrap interval of ``mean(a - b)`` over the same (seed, prompt) cells."""
    return bootstrap(a - b, rng)


def ceiling(judge: Judge, iterations: int, eta: float) -> list[dict[str, float]]:
    """Tabular exact Nash-MP on the test game: exploitability and KL per iteration."""
    _, game, star = judge.games["test"]
    agent = agents.make("nash_mp", game, mode="exact", seed=0, eta=eta)
    out = []
    for k in range(iterations + 1):
        e, kl = per_prompt(game, np.atleast_2d(agent.policy_table()), star)
        out.append({"iteration": k, "test_expl": float(e.mean()), "test_kl": float(kl.mean())})
        agent.learn(num_iterations=1)
    return out


def cmd_tune(args: argparse.Namespace) -> None:
    judge = Judge(WORLDS[args.world])
    lrs = [float(x) for x in args.lrs.split(",")]
    results = []
    for name in args.agents.split(","):
        etas = tuple(float(x) for x in args.etas.split(","))
        for cfg in grid(name, lrs, judge.beta, etas, tuple(args.mixtures.split(","))):
            res = [run(judge, name, cfg, s, args.budget, []) for s in range(args.seeds)]
            score = float(np.mean([np.mean(r["curve"][-1]["val_expl"]) for r in res]))
            results.append({"agent": name, "config": cfg, "val_expl": score, "runs": res})
            print(f"{name} {cfg} val_expl={score:.4f}", flush=True)
    best = {}
    for r in results:
        if r["agent"] not in best or r["val_expl"] < best[r["agent"]]["val_expl"]:
            best[r["agent"]] = {"config": r["config"], "val_expl": r["val_expl"]}
    out = {"world": args.world, "budget": args.budget, "seeds": args.seeds, "lrs": lrs,
           "etas_over_beta": args.etas, "mixtures": args.mixtures,
           "best": best, "results": results}  # fmt: skip
    path = RESULTS / f"text_nash_tune_{args.world}.json"
    path.write_text(json.dumps(out))
    print(json.dumps(best, indent=1))


def cmd_h2h(args: argparse.Namespace) -> None:
    judge = Judge(WORLDS[args.world])
    tuned = json.loads((RESULTS / f"text_nash_tune_{args.world}.json").read_text())["best"]
    points = [int(p) for p in args.points.split(",")]
    rng = np.random.default_rng(0)
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in args.agents.split(","):
        cfg = tuned[name]["config"] if name in tuned else {}
        runs[name] = [
            run(judge, name, cfg, 100 + s, args.budget, points) for s in range(args.seeds)
        ]
        print(name, cfg, f"{sum(r['seconds'] for r in runs[name]):.0f}s", flush=True)
    summary: dict[str, Any] = {}
    final: dict[str, np.ndarray] = {}
    for name, rs in runs.items():
        curves = []
        for i, row in enumerate(rs[0]["curve"]):
            cells_e = np.array([r["curve"][i]["test_expl"] for r in rs])
            cells_k = np.array([r["curve"][i]["test_kl"] for r in rs])
            curves.append({
                "queries": row["queries"],
                "expl": float(cells_e.mean()), "expl_ci": bootstrap(cells_e, rng),
                "kl": float(cells_k.mean()), "kl_ci": bootstrap(cells_k, rng),
            })  # fmt: skip
        final[name] = np.array([r["curve"][-1]["test_expl"] for r in rs])
        avg_e = np.array([r["average_test_expl"] for r in rs])
        avg_k = np.array([r["average_test_kl"] for r in rs])
        summary[name] = {
            "config": rs[0]["config"], "curve": curves,
            "average_expl": float(avg_e.mean()), "average_expl_ci": bootstrap(avg_e, rng),
            "average_kl": float(avg_k.mean()), "average_kl_ci": bootstrap(avg_k, rng),
        }  # fmt: skip
    pairs = {}
    if "nash_mp" in final:
        for name in final:
            if name != "nash_mp" and final[name].shape == final["nash_mp"].shape:
                pairs[f"nash_mp - {name}"] = paired_diff(final["nash_mp"], final[name], rng)
    eta = tuned.get("nash_mp", {}).get("config", {}).get("eta", 2 * judge.beta)
    per_iter = 2 * 8 * COMMON["batch_size"]
    ref = judge.metrics(judge.games["test"][1].pi_ref, "test")
    out = {
        "world": args.world, "beta": judge.beta, "budget": args.budget, "seeds": args.seeds,
        "pi_ref": {"expl": float(ref[0].mean()), "kl": float(ref[1].mean())},
        "agents": summary, "paired_final_expl_diff": pairs,
        "ceiling": {"queries_per_iteration": per_iter, "eta": eta,
                    "curve": ceiling(judge, args.budget // per_iter, eta)},
    }  # fmt: skip
    (RESULTS / f"text_nash_{args.world}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "agents"}, indent=1)[:3000])
    for name, s in summary.items():
        c = s["curve"][-1]
        print(f"{name}: q={c['queries']} expl={c['expl']:.4f} {c['expl_ci']} kl={c['kl']:.4f}")


def cmd_full(args: argparse.Namespace) -> None:
    """Full-size worlds: estimated Nash metrics (``algorithms.md`` §7, :meth:`TextAgent.nash_metrics`
    with ``exact=False``) at the query budgets of ``--points``; ``--device cuda`` on a GPU machine."""
    points = [int(p) for p in args.points.split(",")]
    rows = []
    for name in args.agents.split(","):
        for seed in range(args.seeds):
            agent = agents.make(
                name, args.env, seed=100 + seed, device=args.device, nash_eval="estimate",
                nash_eval_prompts=args.prompts, nash_eval_samples=args.samples,
                **{**COMMON, **json.loads(args.config)},
            )  # fmt: skip
            start = time.perf_counter()
            for q in points:
                agent.learn(num_queries=max(q - agent.queries_used, 1))
                m = agent.nash_metrics(exact=False)
                rows.append({"agent": name, "seed": 100 + seed, "queries": agent.queries_used,
                             "seconds": time.perf_counter() - start, **m})  # fmt: skip
                print(rows[-1], flush=True)
    out = {"env": args.env, "device": args.device, "points": points, "rows": rows}
    (RESULTS / f"text_nash_full_{args.env.split('/')[-1]}.json").write_text(json.dumps(out))


def _fmt(x: float, ci: Any) -> str:
    return f"{x:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown tables (and a plot per world) from the JSON results of ``tune`` and ``h2h``."""
    lines = ["# Token-level agents on exact Nash metrics (tiny worlds)", "",
             "Written by `python benchmarks/text_nash.py report` from the JSON files next to it. "
             "The commands that produced them, and what of the issue's grid was not run, are in "
             "the README's section \"Head to head on Nash metrics\". Test metrics: the 8 held-out "
             "prompts; validation: the 24 train prompts (disjoint).", ""]  # fmt: skip
    for world in WORLDS:
        tpath = RESULTS / f"text_nash_tune_{world}.json"
        hpath = RESULTS / f"text_nash_{world}.json"
        if tpath.exists():
            t = json.loads(tpath.read_text())
            lines += [f"## {world}: tuning ({WORLDS[world]})", "",
                      f"Budget {t['budget']} queries, {t['seeds']} seeds (0..{t['seeds'] - 1}), "
                      f"learning rates {t['lrs']}, Nash-MP eta/beta in {t.get('etas_over_beta')}, "
                      f"Nash-MD mixtures {t.get('mixtures')}; score: mean exploitability on the "
                      "24 train (validation) prompts.", "",
                      "| agent | setting | validation exploitability |", "|---|---|---|"]  # fmt: skip
            for r in t["results"]:
                best = " (chosen)" if t["best"][r["agent"]]["config"] == r["config"] else ""
                lines.append(f"| {r['agent']} | `{r['config']}`{best} | {r['val_expl']:.4f} |")
            lines.append("")
        if not hpath.exists():
            continue
        h = json.loads(hpath.read_text())
        lines += [f"## {world}: head-to-head on the 8 held-out (test) prompts", "",
                  f"beta = {h['beta']}, {h['seeds']} seeds (100..{99 + h['seeds']}), budget "
                  f"{h['budget']} queries; 95% intervals: bootstrap over (seed, prompt) cells. "
                  f"pi_ref: exploitability {h['pi_ref']['expl']:.4f}, KL(pi*||pi_ref) "
                  f"{h['pi_ref']['kl']:.4f}.", "",
                  "| agent | queries | exploitability (last iterate) | KL(pi* \\|\\| pi) |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, s in h["agents"].items():
            for c in s["curve"]:
                lines.append(
                    f"| {name} | {c['queries']} | {_fmt(c['expl'], c['expl_ci'])} | "
                    f"{_fmt(c['kl'], c['kl_ci'])} |"
                )
        lines += ["", "Average iterate (uniform mixture of the evaluated iterates of the second "
                  "half of the budget):", "", "| agent | exploitability | KL(pi* \\|\\| pi) |",
                  "|---|---|---|"]  # fmt: skip
        for name, s in h["agents"].items():
            lines.append(
                f"| {name} | {_fmt(s['average_expl'], s['average_expl_ci'])} | "
                f"{_fmt(s['average_kl'], s['average_kl_ci'])} |"
            )
        lines += ["", "Paired difference of final exploitability (Nash-MP minus other; "
                  "negative: Nash-MP less exploitable):", ""]  # fmt: skip
        for k, ci in h["paired_final_expl_diff"].items():
            lines.append(f"- {k}: 95% interval [{ci[0]:.4f}, {ci[1]:.4f}]")
        ce = h["ceiling"]
        lines += ["", f"Ceiling: tabular exact Nash-MP (eta = {ce['eta']:.3g}) on the test game, "
                  f"iteration k placed at k x {ce['queries_per_iteration']} queries (one neural "
                  "Nash-MP iteration):", "", "| iteration | queries | exploitability | KL |",
                  "|---|---|---|---|"]  # fmt: skip
        for c in ce["curve"]:
            lines.append(
                f"| {c['iteration']} | {c['iteration'] * ce['queries_per_iteration']} | "
                f"{c['test_expl']:.5f} | {c['test_kl']:.5f} |"
            )
        lines.append("")
        _plot(h, world)
        lines += [f"![{world}](text_nash_{world}.png)", ""]
    (RESULTS / "text_nash.md").write_text("\n".join(lines))


def _plot(h: dict[str, Any], world: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("expl", "kl"), strict=True):
        for name, s in h["agents"].items():
            q = [c["queries"] for c in s["curve"]]
            ax.plot(q, [c[key] for c in s["curve"]], marker="o", label=name)
            lo = [c[f"{key}_ci"][0] for c in s["curve"]]
            hi = [c[f"{key}_ci"][1] for c in s["curve"]]
            ax.fill_between(q, lo, hi, alpha=0.2)
        ce = h["ceiling"]
        ax.plot([c["iteration"] * ce["queries_per_iteration"] for c in ce["curve"]],
                [c[f"test_{key}"] for c in ce["curve"]], "k--", label="tabular nash_mp (ceiling)")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("preference queries")
        ax.set_ylabel({"expl": "exploitability (test)", "kl": "KL(pi* || pi) (test)"}[key])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{WORLDS[world]}, last iterate")
    fig.tight_layout()
    fig.savefig(RESULTS / f"text_nash_{world}.png", dpi=90)
    plt.close(fig)


def cmd_prox(args: argparse.Namespace) -> None:
    """Prox fidelity of Nash-MP's neural half-step at the zoo entry of the tiny world, per seed and
    split (``agents.text.nash_mp.prox_fidelity``); writes ``results/text_nash_prox.md``."""
    import dataclasses

    from agents import zoo
    from agents.text.nash_mp import prox_fidelity

    env_id = "nlhf/TinyTokenDuel-v0"
    entry = zoo.resolve("nash_mp", env_id)
    cfg = {**dataclasses.asdict(entry.config), "eval_every": 0, **json.loads(args.config)}
    lines = [
        f"# Nash-MP prox fidelity on {env_id} (zoo entry; overrides {args.config})",
        "",
        "| seed | split | correlation | KL(exact half-step \\|\\| neural) | exact step size | neural step size |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for seed in range(args.seeds):
        for split in ("heldout", "train"):
            f = prox_fidelity(agents.make("nash_mp", env_id, seed=seed, **cfg), split)
            lines.append(
                f"| {seed} | {split} | {f.correlation:.3f} | {f.kl_neural_to_exact:.4f} | "
                f"{f.kl_step_exact:.4f} | {f.kl_step_neural:.4f} |"
            )
            print(lines[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text_nash_prox.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tune")
    h = sub.add_parser("h2h")
    for p in (t, h):
        p.add_argument("--world", choices=sorted(WORLDS), default="plain")
        p.add_argument("--budget", type=int, default=24576)
        p.add_argument("--seeds", type=int, default=2)
        p.add_argument("--agents", default="nash_mp,online_ipo,nash_md")
    t.add_argument("--lrs", default="3e-5,1e-4,3e-4,1e-3,3e-3")
    t.add_argument("--etas", default="1,2,4", help="Nash-MP eta / beta values")
    t.add_argument("--mixtures", default="1/16,1/8,1/4,harmonic", help="Nash-MD mixtures")
    h.add_argument("--points", default="4096,8192,16384,24576,32768,49152")
    f = sub.add_parser("full")
    f.add_argument("--env", default="nlhf/TokenDuel-v0")
    f.add_argument("--agents", default="nash_mp,online_ipo,nash_md")
    f.add_argument("--seeds", type=int, default=2)
    f.add_argument("--points", default="12288,49152")
    f.add_argument("--device", default="cpu")
    f.add_argument("--prompts", type=int, default=16, help="held-out prompts of the estimate")
    f.add_argument("--samples", type=int, default=16, help="pi_ref samples per prompt (n)")
    f.add_argument("--config", default="{}", help="JSON of extra agent config values")
    sub.add_parser("report")
    x = sub.add_parser("prox", help="prox fidelity of Nash-MP's half-step (tiny world)")
    x.add_argument("--seeds", type=int, default=3)
    x.add_argument("--config", default="{}", help="JSON of agent config overrides")
    args = parser.parse_args(argv)
    commands = {"tune": cmd_tune, "h2h": cmd_h2h, "full": cmd_full, "report": cmd_report}
    commands["prox"] = cmd_prox
    commands[args.cmd](args)


if __name__ == "__main__":
    main()


__all__ = ["per_prompt", "run", "grid", "bootstrap", "ceiling", "main"]
