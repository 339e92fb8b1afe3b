"""Nash-MP studies of ``benchmarks/text_nash.py``: the sub-commands ``prox`` (prox fidelity of the
neural half-step at the zoo entry), ``floor`` (prox fidelity and test exploitability along training)
and ``designs`` (the designs (A), (B), (C) at the same budgets and seeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from text_nash_core import (
    COMMON,
    DEFAULT_RESULTS,
    PROTOCOLS,
    describe,
    fmt_ci,
    make_judge,
    raw_cells,
    read_result,
    run,
    summarise,
    tag,
)

import agents


def cmd_prox(args: argparse.Namespace, results: Path = DEFAULT_RESULTS) -> None:
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
    results.mkdir(parents=True, exist_ok=True)
    (results / "text_nash_prox.md").write_text("\n".join(lines) + "\n")


def cmd_floor(args: argparse.Namespace, results: Path = DEFAULT_RESULTS) -> None:
    """Why a neural Nash-MP flattens: its prox fidelity (``prox_fidelity`` on the test prompts, on a
    copy of the agent, so training is unaffected) and exact test exploitability along training with
    the tuned setting; writes ``results/text_nash_floor_{tag}.json`` and ``.md``."""
    import copy

    from agents.text.nash_mp import prox_fidelity

    judge = make_judge(args)
    name_tag = tag(args.world, args.protocol, args.beta)
    tuned = read_result(results, f"tune_{name_tag}")["best"]
    cfg = {**tuned["nash_mp"]["config"], **json.loads(args.config)}
    rows = []
    for s in range(args.seeds):
        agent = agents.make(
            "nash_mp", judge.env_id, seed=100 + s, env_kwargs=judge.env_kwargs, **{**COMMON, **cfg}
        )
        for q in [int(p) for p in args.points.split(",")]:
            if q > agent.queries_used:
                agent.learn(num_queries=q - agent.queries_used)
            e, _ = judge.metrics(judge.policy(agent.model, "test"), "test")
            f = prox_fidelity(copy.deepcopy(agent), "heldout")
            rows.append({"seed": 100 + s, "queries": agent.queries_used, "test_expl": float(e.mean()),
                         "correlation": f.correlation, "kl_neural_to_exact": f.kl_neural_to_exact,
                         "kl_step_exact": f.kl_step_exact, "kl_step_neural": f.kl_step_neural})  # fmt: skip
            print(rows[-1], flush=True)
    (results / f"text_nash_floor_{name_tag}.json").write_text(
        json.dumps({"tag": name_tag, "config": cfg, "beta": judge.beta, "rows": rows}, indent=1)
    )
    what = describe({"world": args.world, "protocol": args.protocol, "beta": judge.beta}, name_tag)
    lines = [f"# Nash-MP's half-step along training ({name_tag}: {what})", "",
             f"Setting `{cfg}`; written by `python benchmarks/text_nash.py floor`. Prox "
             "fidelity of one neural half-step from the current iterate against the exact prox "
             "step, on the 8 test prompts (`agents.text.nash_mp.prox_fidelity`, on a copy).", "",
             "| seed | queries | test exploitability | correlation | KL(exact \\|\\| neural half-step) "
             "| exact step size KL(exact \\|\\| pi_k) | neural step size |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['queries']} | {r['test_expl']:.4f} | {r['correlation']:.3f} | "
            f"{r['kl_neural_to_exact']:.5f} | {r['kl_step_exact']:.5f} | {r['kl_step_neural']:.5f} |"
        )
    (results / f"text_nash_floor_{name_tag}.md").write_text("\n".join(lines) + "\n")


#: Nash-MP's three neural designs (``agents.text.nash_mp``): (A) target networks, (B) extragradient,
#: (C) EMA anchor and opponent
DESIGNS: dict[str, dict[str, Any]] = {
    "A_target": {"variant": "target"},
    "B_extragradient": {"variant": "extragradient", "inner_steps": 1},
    "C_ema": {"variant": "ema", "inner_steps": 1},
}


def cmd_designs(args: argparse.Namespace, results: Path = DEFAULT_RESULTS) -> None:
    """Nash-MP's designs (A), (B), (C) side by side at the same budgets and seeds (issue 23, item
    5): exact test exploitability (last iterate) per evaluation point, mean over (seed, prompt)
    cells with a 95% bootstrap interval, for every learning rate of ``--lrs``; ``--baseline`` adds
    agents at their shared setting for scale. Writes ``results/text_nash_designs_{tag}.json``/``.md``.
    """
    judge = make_judge(args)
    name_tag = tag(args.world, args.protocol, args.beta)
    points = [int(p) for p in args.points.split(",")]
    shared = json.loads(args.config)
    lrs = [float(x) for x in args.lrs.split(",")]
    runs: list[tuple[str, str, dict[str, Any]]] = []
    for label in args.designs.split(","):
        if label not in DESIGNS:
            raise SystemExit(f"--designs: unknown design {label!r}; expected {sorted(DESIGNS)}")
        runs += [(label, "nash_mp", {**shared, **DESIGNS[label], "lr": lr}) for lr in lrs]
    for name in filter(None, args.baseline.split(",")):
        runs += [(name, name, {"lr": lr}) for lr in lrs]
    rng = np.random.default_rng(0)
    ref = judge.metrics(judge.games["test"][1].pi_ref, "test")
    rows = []
    for label, name, cfg in runs:
        rs = [run(judge, name, cfg, 100 + s, args.budget, points) for s in range(args.seeds)]
        raw = raw_cells(rs)
        summary = summarise(raw, rng)
        rows.append({"label": label, "agent": name, "raw": raw, "summary": summary})
        last = summary["curve"][-1]
        print(f"{label} {cfg}: q={last['queries']} expl={last['expl']:.4f} "
              f"{last['expl_ci']} {summary['seconds_per_run']:.0f}s/run", flush=True)  # fmt: skip
    out = {"world": args.world, "protocol": args.protocol, "train_split": PROTOCOLS[args.protocol],
           "beta": judge.beta, "budget": args.budget, "seeds": args.seeds, "common": COMMON,
           "pi_ref": {"expl": float(ref[0].mean()), "kl": float(ref[1].mean())},
           "rows": rows}  # fmt: skip
    (results / f"text_nash_designs_{name_tag}.json").write_text(json.dumps(out))
    lines = [f"# Nash-MP designs (A), (B), (C) ({name_tag}: {describe(out, name_tag)})", "",
             f"Written by `python benchmarks/text_nash.py designs {' '.join(args.argv)}`. Exact "
             f"exploitability (last iterate) on the 8 test prompts, mean over {args.seeds} seeds x "
             f"8 prompts [95% bootstrap interval]; shared setting {COMMON} plus {shared}; pi_ref: "
             f"{out['pi_ref']['expl']:.4f}. Seeds 100.. (the same for every row).", "",
             "| design | agent | lr | queries | test exploitability | KL(pi* \\|\\| pi) | s/run |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        s = r["summary"]
        for c in s["curve"][1:]:
            lines.append(
                f"| {r['label']} | {r['agent']} | {s['config']['lr']:g} | {c['queries']} | "
                f"{fmt_ci(c['expl'], c['expl_ci'])} | {c['kl']:.4f} | {s['seconds_per_run']:.0f} |"
            )
    (results / f"text_nash_designs_{name_tag}.md").write_text("\n".join(lines) + "\n")
