"""Token-level agents measured on Nash metrics in the 32-prompt exact tiny worlds (issue 11).

**Superseded for comparisons by** ``benchmarks/text_h2h.py`` (issue 23: the one protocol of
``docs/nash-metrics.md`` on the 256-prompt worlds, tuning with ``nlhf-zoo tune``). This script keeps
the studies published before it (and their regeneration); under the one protocol its ``nash``
protocol's "test" figures measure optimisation (the agents trained on those prompts), and its
``tune`` grids are hand-rolled. The 32-prompt worlds have no validation split: the grids score the
24 train prompts.

Worlds: ``nlhf/TinyTokenDuel-v0`` (plain) and ``nlhf/TinyTokenDuel-Cyclic-v0`` (intransitive),
``--beta`` to change the game's KL strength (an env argument). At fixed query budgets the script
computes, exactly over the 259 enumerated answers (``equations.md`` §7):

* validation metrics on the 24 "train" prompts of the world (used for tuning only);
* test metrics on the 8 "heldout" prompts (disjoint from the tuning prompts; reported):
  exploitability ``max_pi' P_beta(pi' > pi) - 1/2`` and ``KL(pi*_beta || pi)`` per prompt, of the last
  iterate, and of the average iterate (the uniform mixture of the sequence policies at the
  evaluation points of the second half of the budget).

Two protocols (``--protocol``):

* ``nash`` (default): the agents train on all 32 prompts (``prompt_split="all"``): the NLHF game is
  defined over the prompt distribution, so this measures convergence to *its* Nash equilibrium;
  validation and test prompts are both in the training distribution and disjoint from each other.
  Results: ``text_nash_{world}.json`` (``text_nash_{world}_beta{beta}.json`` with ``--beta``).
* ``heldout``: the agents train on the 24 train prompts only, so the test prompts are unseen: this
  measures how well the learned step generalises to new prompts (``text_nash_heldout_{world}.json``).

Sub-commands:

* ``tune``: every (agent, setting) of a grid (learning rates x seeds, plus eta for Nash-MP and the
  mixture schedule for Nash-MD, the population size ``--histories`` for the token ``mnpo``; PPO's
  ``learning_rate`` for ``sb3_ppo_selfplay``), scored by
  validation exploitability at the budget (mean over seeds); ``--merge`` adds to an earlier tuning
  file (coarse-to-fine searches); ``--extra`` adds settings to every point of the grid (e.g.
  ``{"optimizer": "sgd"}``) and ``--suffix`` keeps such a search in its own file;
* ``h2h``: the chosen settings over ``--seeds`` seeds, curves on the test prompts, the tabular exact
  Nash-MP (``agents.make("nash_mp", exact_game(...), mode="exact")``) as the ceiling (iteration ``k``
  of the tabular agent is plotted at the queries of ``k`` neural Nash-MP iterations), and 95% intervals
  by a paired bootstrap over (prompt, seed) cells. ``--suffix`` writes another file (a longer budget);
  a variant of an agent runs under ``--label`` in a file that ``--start-from`` fills with the runs of
  the main file, so the variant is paired with them without changing that file.

* ``full``: the full-size worlds (``--env nlhf/TokenDuel-v0``), estimated Nash metrics at the
  budgets of ``--points``; ``--device cuda`` for the larger budgets on a GPU machine;
* ``report``: ``benchmarks/results/text_nash.md`` and the curves from the JSON results;
* ``prox``: prox fidelity of Nash-MP's neural half-step at the zoo entry (``text_nash_prox.md``);
* ``floor``: prox fidelity and test exploitability along training (``text_nash_floor_{tag}``);
* ``designs``: Nash-MP's designs (A) target networks, (B) extragradient and (C) EMA anchor and
  opponent at the same budgets and seeds (``text_nash_designs_{tag}``).

Every sub-command takes ``--results DIR`` (default ``benchmarks/results``); run it from the
repository root with the repository on ``PYTHONPATH`` (``PYTHONPATH=. python benchmarks/...``).

This file parses the arguments and runs ``tune``, ``h2h`` and ``full``; the shared runners and
statistics are in ``text_nash_core.py``, ``report`` in ``text_nash_report.py`` and the Nash-MP
studies ``prox``, ``floor`` and ``designs`` in ``text_nash_studies.py`` (sibling modules, imported
from this script's folder).

Results go to ``benchmarks/results/text_nash*.json``/``.md``. Example (small CPU run)::

    OMP_NUM_THREADS=1 python benchmarks/text_nash.py tune --world plain --budget 12288 \\
        --lrs 1e-4,3e-4,1e-3 --seeds 2
    OMP_NUM_THREADS=1 python benchmarks/text_nash.py h2h --world plain --budget 49152 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import agents

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules of this script
# every name this script defined before its split stays importable from it (F401: re-exported)
from text_nash_core import (  # noqa: E402, F401
    COMMON,
    PROTOCOLS,
    WORLDS,
    Judge,
    bootstrap,
    ceiling,
    grid,
    make_judge,
    paired,
    paired_diff,
    per_prompt,
    raw_cells,
    read_result,
    run,
    same_budget,
    summarise,
    tag,
)
from text_nash_report import _full_lines, cmd_report  # noqa: E402, F401
from text_nash_studies import DESIGNS, cmd_designs, cmd_floor, cmd_prox  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def cmd_tune(args: argparse.Namespace) -> None:
    judge = make_judge(args)
    lrs = [float(x) for x in args.lrs.split(",")]
    path = RESULTS / f"text_nash_tune_{tag(args.world, args.protocol, args.beta)}{args.suffix}.json"
    extra = json.loads(args.extra)
    results, ran = [], []
    if args.merge and path.exists():
        old = json.loads(path.read_text())
        if (old["budget"], old["seeds"]) != (args.budget, args.seeds):
            raise SystemExit(
                f"--merge: {path.name} has budget {old['budget']}, {old['seeds']} seeds"
            )
        results, ran = old["results"], old.get("commands", [])
    for name in args.agents.split(","):
        etas = tuple(float(x) for x in args.etas.split(","))
        histories = tuple(int(x) for x in args.histories.split(","))
        for cfg in grid(name, lrs, judge.beta, etas, tuple(args.mixtures.split(",")), histories):
            cfg = {**cfg, **extra}
            if any(r["agent"] == name and r["config"] == cfg for r in results):
                continue
            res = [run(judge, name, cfg, s, args.budget, []) for s in range(args.seeds)]
            score = float(np.mean([np.mean(r["curve"][-1]["val_expl"]) for r in res]))
            results.append({"agent": name, "config": cfg, "val_expl": score, "runs": res})
            print(f"{name} {cfg} val_expl={score:.4f}", flush=True)
    best = {}
    for r in results:
        if r["agent"] not in best or r["val_expl"] < best[r["agent"]]["val_expl"]:
            best[r["agent"]] = {"config": r["config"], "val_expl": r["val_expl"]}
    ran.append(
        {"agents": args.agents, "lrs": lrs, "etas_over_beta": args.etas, "mixtures": args.mixtures,
         "extra": extra, "histories": args.histories}
    )  # fmt: skip
    out = {"world": args.world, "protocol": args.protocol, "beta": judge.beta,
           "budget": args.budget, "seeds": args.seeds, "commands": ran,
           "best": best, "results": results}  # fmt: skip
    path.write_text(json.dumps(out))
    print(json.dumps(best, indent=1))


def cmd_h2h(args: argparse.Namespace) -> None:
    judge = make_judge(args)
    base_tag = tag(args.world, args.protocol, args.beta)
    name_tag = base_tag + args.suffix
    tuned_tag = args.tuned or base_tag
    tuned = read_result(RESULTS, f"tune_{tuned_tag}")["best"]
    overrides = json.loads(args.configs)
    points = [int(p) for p in args.points.split(",")]
    path = RESULTS / f"text_nash_{name_tag}.json"
    raws: dict[str, dict[str, Any]] = {}
    if args.merge and path.exists():
        # agents added later may run a smaller budget or fewer seeds (then they are not paired)
        raws = json.loads(path.read_text())["raw"]
    if args.start_from:
        # a variant's own file that also holds the runs of another (pairs without changing it)
        raws = {**read_result(RESULTS, args.start_from)["raw"],
                **raws}  # fmt: skip
    names = args.agents.split(",")
    if args.label and len(names) != 1:
        raise SystemExit("--label names the results of one agent: give one --agents")
    for name in names:
        cfg = overrides.get(name, tuned[name]["config"] if name in tuned else {})
        rs = [run(judge, name, cfg, 100 + s, args.budget, points) for s in range(args.seeds)]
        raws[args.label or name] = raw_cells(rs)
        print(name, cfg, f"{sum(r['seconds'] for r in rs):.0f}s", flush=True)
    rng = np.random.default_rng(0)
    summary = {name: summarise(raw, rng) for name, raw in raws.items()}
    mp_cfg = raws.get("nash_mp", {}).get("config") or tuned.get("nash_mp", {}).get("config", {})
    eta = mp_cfg.get("eta") or 2 * judge.beta
    per_iter = 2 * mp_cfg.get("inner_steps", 8) * COMMON["batch_size"]
    ref = judge.metrics(judge.games["test"][1].pi_ref, "test")
    budget = max(r["queries"][-1] for r in raws.values())
    pairs = paired(raws, rng)
    if args.label:
        # a labelled run is also paired with every other agent of the file (its minus theirs)
        pairs.update(paired(raws, rng, first=args.label))
    out = {
        "world": args.world, "protocol": args.protocol, "train_split": PROTOCOLS[args.protocol],
        "beta": judge.beta, "budget": budget, "tuned_from": tuned_tag,
        "pi_ref": {"expl": float(ref[0].mean()), "kl": float(ref[1].mean())},
        "agents": summary, "paired_expl_diff": pairs,
        "ceiling": {"queries_per_iteration": per_iter, "eta": eta,
                    "curve": ceiling(judge, budget // per_iter, eta)},
        "raw": raws,
    }  # fmt: skip
    path.write_text(json.dumps(out))
    for name, s in summary.items():
        c = s["curve"][-1]
        print(f"{name}: q={c['queries']} expl={c['expl']:.4f} {c['expl_ci']} kl={c['kl']:.4f}")
    for k, v in out["paired_expl_diff"].items():
        print(k, v["last"][-1], v["average"])


def cmd_full(args: argparse.Namespace) -> None:
    """Full-size worlds: estimated Nash metrics (``equations.md`` §7, :meth:`TextAgent.nash_metrics`
    with ``exact=False``) at the query budgets of ``--points`` (``0``: ``pi_ref``, before training);
    ``--device cuda`` on a GPU machine.

    Each agent runs the setting chosen by ``tune`` on the tiny world ``--tuned`` (the full-size worlds
    are too slow to tune on a CPU), overridden per agent by ``--configs``."""
    points = sorted(int(p) for p in args.points.split(","))
    tuned = {}
    if args.tuned:
        tuned = read_result(RESULTS, f"tune_{args.tuned}")["best"]
    overrides = json.loads(args.configs)
    path = RESULTS / f"text_nash_full_{args.env.split('/')[-1]}.json"
    rows: list[dict[str, Any]] = []
    if args.merge and path.exists():
        rows = json.loads(path.read_text())["rows"]
    configs: dict[str, Any] = {}
    for name in args.agents.split(","):
        cfg = overrides.get(name, tuned[name]["config"] if name in tuned else {})
        configs[name] = cfg
        for seed in range(args.seeds):
            agent = agents.make(
                name, args.env, seed=100 + seed, device=args.device, nash_eval="estimate",
                env_kwargs={"prompt_split": PROTOCOLS[args.protocol]},
                nash_eval_prompts=args.prompts, nash_eval_samples=args.samples,
                **{**COMMON, **cfg},
            )  # fmt: skip
            start = time.perf_counter()
            for q in points:
                if q > agent.queries_used:
                    agent.learn(num_queries=q - agent.queries_used)
                m = agent.nash_metrics(exact=False)
                rows.append({"agent": name, "config": cfg, "seed": 100 + seed,
                             "queries": agent.queries_used,
                             "seconds": time.perf_counter() - start, **m})  # fmt: skip
                print(rows[-1], flush=True)
                # written after every row: a long run stopped early keeps what it measured
                out = {"env": args.env, "device": args.device, "protocol": args.protocol,
                       "tuned_from": args.tuned, "common": COMMON, "points": points,
                       "prompts": args.prompts, "samples": args.samples,
                       "rows": rows}  # fmt: skip
                path.write_text(json.dumps(out, indent=1))


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
        p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="nash",
                       help="nash: train on all prompts; heldout: train on the train prompts")  # fmt: skip
        p.add_argument("--beta", type=float, default=None, help="the game's beta (env argument)")
        p.add_argument("--merge", action="store_true", help="add to the existing result file")
    t.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3,1e-2")
    t.add_argument("--extra", default="{}", help="JSON added to every setting of the grid")
    t.add_argument("--suffix", default="", help="appended to the tuning file's tag")
    t.add_argument("--etas", default="1,2,4", help="Nash-MP eta / beta values")
    t.add_argument("--mixtures", default="1/16,1/8,1/4,harmonic", help="Nash-MD mixtures")
    t.add_argument("--histories", default="2", help="MNPO population sizes (history)")
    h.add_argument("--points", default="4096,8192,12288,16384,24576,32768,40960,49152")
    h.add_argument("--tuned", default=None, help="tuning file tag (default: this run's tag)")
    h.add_argument("--suffix", default="", help="appended to the result's tag (e.g. _long)")
    h.add_argument("--label", default=None, help="store one agent's runs under this name")
    h.add_argument(
        "--start-from",
        default=None,
        help="tag of a head-to-head file whose runs this file also holds",
    )
    h.add_argument("--configs", default="{}", help="JSON {agent: config} overriding the tuned ones")
    f = sub.add_parser("full")
    f.add_argument("--env", default="nlhf/TokenDuel-v0")
    f.add_argument("--agents", default="nash_mp,online_ipo,nash_md")
    f.add_argument("--seeds", type=int, default=2)
    f.add_argument("--points", default="0,12288,49152")
    f.add_argument(
        "--tuned", default="plain", help="tuning file tag of the settings ('' : defaults)"
    )
    f.add_argument("--configs", default="{}", help="JSON {agent: config} overriding the tuned ones")
    f.add_argument("--merge", action="store_true", help="add to the existing result file")
    f.add_argument("--device", default="cpu")
    f.add_argument("--protocol", choices=sorted(PROTOCOLS), default="nash")
    f.add_argument("--prompts", type=int, default=16, help="held-out prompts of the estimate")
    f.add_argument(
        "--samples", type=int, default=32, help="pi_ref samples per prompt (n >= 32 for KL)"
    )
    sub.add_parser("report")
    x = sub.add_parser("prox", help="prox fidelity of Nash-MP's half-step (tiny world)")
    x.add_argument("--seeds", type=int, default=3)
    x.add_argument("--config", default="{}", help="JSON of agent config overrides")
    fl = sub.add_parser("floor", help="Nash-MP's prox fidelity along training (tuned setting)")
    fl.add_argument("--world", choices=sorted(WORLDS), default="plain")
    fl.add_argument("--protocol", choices=sorted(PROTOCOLS), default="nash")
    fl.add_argument("--beta", type=float, default=None)
    fl.add_argument("--seeds", type=int, default=2)
    fl.add_argument("--points", default="0,8192,24576,40960")
    fl.add_argument("--config", default="{}", help="JSON of agent config overrides")
    d = sub.add_parser("designs", help="Nash-MP designs (A), (B), (C) at equal budgets")
    d.add_argument("--world", choices=sorted(WORLDS), default="plain")
    d.add_argument("--protocol", choices=sorted(PROTOCOLS), default="nash")
    d.add_argument("--beta", type=float, default=None)
    d.add_argument("--budget", type=int, default=12288)
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--points", default="4096,8192,12288")
    d.add_argument("--designs", default=",".join(DESIGNS))
    d.add_argument("--lrs", default="3e-4", help="learning rates (each design runs every one)")
    d.add_argument("--baseline", default="", help="agents added at the same lrs (online_ipo,...)")
    d.add_argument("--config", default="{}", help="JSON of overrides shared by the designs")
    for p in sub.choices.values():
        p.add_argument(
            "--results", default=None, help="folder of the result files (default: results/)"
        )
    raw_argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    args.argv = raw_argv[1:]
    if args.results is not None:
        global RESULTS
        RESULTS = Path(args.results)
        RESULTS.mkdir(parents=True, exist_ok=True)
    commands = {"tune": cmd_tune, "h2h": cmd_h2h, "full": cmd_full}
    if args.cmd in commands:
        commands[args.cmd](args)
    else:  # the modules of the other sub-commands write to the folder they are given
        others = {
            "report": cmd_report,
            "prox": cmd_prox,
            "floor": cmd_floor,
            "designs": cmd_designs,
        }
        others[args.cmd](args, RESULTS)


if __name__ == "__main__":
    main()


__all__ = ["per_prompt", "run", "grid", "bootstrap", "ceiling", "cmd_designs", "main"]
