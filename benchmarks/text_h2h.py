"""Token-level head to head under the one protocol (issue 23, items 6 and 7).

Contestants: Nash-MP in its three designs, (A) target networks (``variant: target``), (B)
extragradient (``variant: extragradient``) and (C) the EMA anchor and opponent (``variant: ema``),
against Online IPO, Nash-MD and MNPO (the zoo's default population: its last 3 iterates). Worlds: the 256-prompt enumerable worlds ``nlhf/TinyTokenDuel-v1``
(``plain``) and ``nlhf/TinyTokenDuel-Cyclic-v1`` (``cyclic``), at the game's ``beta`` (0.1) or
``--beta``. Every contestant shares the low-variance setting :data:`COMMON` (judge probabilities,
batch 256).

The protocol (``docs/nash-metrics.md``): agents train on the 160 ``train`` prompts; tuning scores
the 32 ``validation`` prompts; results are reported on the ``train`` prompts (optimisation) and on
the 64 ``heldout`` prompts no agent, tuner or shipped model saw (generalisation), side by side.

Sub-commands:

* ``tune``: one ``nlhf-zoo tune`` study (:func:`agents.zoo.tune.tune`: Optuna TPE, median pruner on
  the evaluation curve, SQLite storage) per (world, beta, contestant), every contestant with the
  same number of trials and the same budget; the objective is exact exploitability on the
  validation prompts at the budget. Writes ``text_h2h_tuned.json`` (best settings, objective,
  the zoo snippet with its provenance) and keeps the studies in ``text_h2h_studies.db``.
* ``run``: the tuned settings over ``--seeds`` seeds. Common random numbers: agents with the same
  seed and batch size train on the same prompts at the same step
  (:meth:`agents.text.common.TextAgent.prompt_generator`), so differences between contestants are
  paired by seed. Exact per-prompt exploitability of the last iterate on ``train`` and
  ``heldout`` at ``--points`` budgets. Writes ``text_h2h_runs.json``.
* ``report``: ``text_h2h.md``: means with 95% bootstrap intervals over seeds, and paired
  differences against Online IPO (bootstrap over seeds of the per-seed differences).

Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_h2h.py tune --world plain --trials 8
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_h2h.py run --world plain --seeds 10
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_h2h.py report
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import agents
from nlhf_envs.solvers import regularized_nash
from nlhf_envs.text.exact import exact_game, sequence_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules of this script
from text_nash_core import per_prompt, update_json  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WORLDS = {"plain": "nlhf/TinyTokenDuel-v1", "cyclic": "nlhf/TinyTokenDuel-Cyclic-v1"}
#: the low-variance setting every contestant shares
COMMON: dict[str, Any] = {"mode": "probability", "batch_size": 256, "eval_every": 0}
#: contestant -> (agent, fixed settings)
CONTESTANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "nash_mp_A": ("nash_mp", {"variant": "target", "inner_steps": 8}),
    "nash_mp_B": ("nash_mp", {"variant": "extragradient", "inner_steps": 1}),
    "nash_mp_C": ("nash_mp", {"variant": "ema", "inner_steps": 1}),
    "online_ipo": ("online_ipo", {}),
    "nash_md": ("nash_md", {}),
    "mnpo": ("mnpo", {}),
}
#: the report splits: the prompts trained on, and prompts never seen
SPLITS = ("train", "heldout")
#: the reference contestant of the paired differences
BASELINE = "online_ipo"


def setting_key(world: str, beta: float | None) -> str:
    """``plain``, ``cyclic_beta0.03``: the (world, beta) name in the result files."""
    return world if beta is None else f"{world}_beta{beta:g}"


def env_kwargs(beta: float | None) -> dict[str, Any]:
    """The env arguments of a setting (the game's own ``beta`` unless ``--beta``)."""
    return {} if beta is None else {"beta": beta}


# ------------------------------------------------------------------------------------------- tune
def cmd_tune(args: argparse.Namespace) -> None:
    from agents.zoo.tune import tune

    torch.set_num_threads(1)
    results = Path(args.results)
    key = setting_key(args.world, args.beta)
    names = args.contestants.split(",") if args.contestants else list(CONTESTANTS)
    for name in names:
        agent, fixed = CONTESTANTS[name]
        params = {**COMMON, **fixed, "env_kwargs": env_kwargs(args.beta)}
        t0 = time.perf_counter()
        res = tune(
            agent,
            WORLDS[args.world],
            n_trials=args.trials,
            budget=args.budget,
            n_evaluations=args.evaluations,
            seed=0,
            storage=results / "text_h2h_studies.db",
            study_name=f"{name}:{key}:{args.budget}q",
            params=params,
            validation_split="validation",
        )
        rec = {
            "contestant": name,
            "agent": agent,
            "fixed": fixed,
            "search": res.best_params,
            "best": {k: v for k, v in res.entry.items() if k not in ("num_queries", "env_kwargs")},
            "objective": res.best_value,
            "trials": res.n_complete + res.n_pruned,
            "complete": res.n_complete,
            "pruned": res.n_pruned,
            "budget": args.budget,
            "yaml": res.yaml,
            "seconds": time.perf_counter() - t0,
            "date": _dt.date.today().isoformat(),
        }
        update_json(
            results / "text_h2h_tuned.json",
            lambda d, name=name, rec=rec: d.setdefault(key, {}).update({name: rec}),
        )
        print(
            f"{key} {name}: best {res.best_params} validation exploitability "
            f"{res.best_value:.4f} ({rec['trials']} trials, {rec['seconds']:.0f} s)",
            flush=True,
        )


# -------------------------------------------------------------------------------------------- run
class Scorer:
    """Exact games of one setting on the report splits, and per-prompt exploitability."""

    def __init__(self, env_id: str, kwargs: dict[str, Any]) -> None:
        probe = agents.make("online_ipo", env_id, seed=0, env_kwargs=kwargs, **COMMON)
        self.env, self.reference, self.beta = probe.env, probe.reference, probe.beta
        self.games = {}
        for split in SPLITS:
            game = exact_game(self.env, split, beta=self.beta, reference=self.reference)
            self.games[split] = (game, regularized_nash(game))
        self.ref = {
            s: self.exploitability(g.pi_ref, s).tolist() for s, (g, _) in self.games.items()
        }

    def exploitability(self, pi: np.ndarray, split: str) -> np.ndarray:
        """Per-prompt ``max_pi' P_beta(pi' > pi) - 1/2`` (``docs/nash-metrics.md``)."""
        game, star = self.games[split]
        return per_prompt(game, np.clip(pi, 1e-300, None), star)[0]

    def score(self, model: Any) -> dict[str, list[float]]:
        model.eval()
        try:
            with torch.no_grad():
                return {
                    s: self.exploitability(
                        np.asarray(sequence_policy(model, self.env, s), np.float64), s
                    ).tolist()
                    for s in SPLITS
                }
        finally:
            model.train()


def tuned_settings(results: Path, key: str, name: str, budget: int) -> dict[str, Any]:
    """The fixed and tuned settings of contestant ``name`` in setting ``key``, tuned at ``budget``
    (settings tuned at another budget are refused: the objective is exploitability at the budget)."""
    path = results / "text_h2h_tuned.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if name not in data.get(key, {}):
        raise SystemExit(f"{path.name}: no tuned settings of {name} for {key}; run `tune` first")
    rec = data[key][name]
    if rec["budget"] != budget:
        raise SystemExit(
            f"{path.name}: {name} for {key} was tuned at {rec['budget']:,} queries, not {budget:,}; "
            f"run with --budget {rec['budget']} or tune again at this budget"
        )
    return dict(rec["best"])


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    results = Path(args.results)
    key = setting_key(args.world, args.beta)
    kwargs = env_kwargs(args.beta)
    scorer = Scorer(WORLDS[args.world], kwargs)
    points = sorted({int(p) for p in args.points.split(",")} | {args.budget})
    names = args.contestants.split(",") if args.contestants else list(CONTESTANTS)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in names:
            agent_name, _ = CONTESTANTS[name]
            settings = tuned_settings(results, key, name, args.budget)
            t0 = time.perf_counter()
            ag = agents.make(
                agent_name, WORLDS[args.world], seed=seed, env_kwargs=kwargs,
                **{**COMMON, **settings},
            )  # fmt: skip
            curve = []
            for p in points:
                ag.learn(num_queries=p - ag.queries_used)
                scores = {
                    k: [round(v, 8) for v in vals] for k, vals in scorer.score(ag.model).items()
                }
                curve.append({"queries": int(ag.queries_used), **scores})
            rec = {
                "contestant": name,
                "seed": seed,
                "settings": settings,
                "budget": args.budget,
                "curve": curve,
                "seconds": time.perf_counter() - t0,
            }

            def store(d: dict[str, Any], rec: dict[str, Any] = rec) -> None:
                entry = d.setdefault(key, {"ref": scorer.ref, "runs": []})
                same = (rec["contestant"], rec["seed"], rec["budget"])
                entry["runs"] = [
                    x for x in entry["runs"] if (x["contestant"], x["seed"], x["budget"]) != same
                ] + [rec]

            update_json(results / "text_h2h_runs.json", store)
            last = curve[-1]
            print(
                f"{key} seed {seed} {name}: train {np.mean(last['train']):.4f}, heldout "
                f"{np.mean(last['heldout']):.4f} at {last['queries']} queries "
                f"[{rec['seconds']:.0f} s]",
                flush=True,
            )


# ----------------------------------------------------------------------------------------- report
def bootstrap_ci(values: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` (resampling its entries)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(len(values), size=(n, len(values)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def per_seed(runs: list[dict[str, Any]], name: str, split: str, queries: int) -> dict[int, float]:
    """Mean exploitability over prompts of contestant ``name`` at ``queries``, per seed."""
    out = {}
    for r in runs:
        if r["contestant"] != name:
            continue
        for row in r["curve"]:
            if row["queries"] == queries or (
                row is r["curve"][-1] and queries == r["budget"] and row["queries"] <= queries
            ):
                out[r["seed"]] = float(np.mean(row[split]))
    return out


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _searched(rec: dict[str, Any]) -> dict[str, Any]:
    """The settings the search chose (config keys), without the ones every contestant shares."""
    best = rec.get("best", {})
    keys = set(rec.get("search", {}))
    if "eta_over_beta" in keys:  # the search draws eta / beta; the config holds eta
        keys = (keys - {"eta_over_beta"}) | {"eta"}
    out = {k: best[k] for k in best if k in keys}
    variant = rec.get("fixed", {}).get("variant")
    return {"variant": variant, **out} if variant else out


def report_setting(key: str, data: dict[str, Any], tuned: dict[str, Any]) -> str:
    runs = data["runs"]
    budget = max(r["budget"] for r in runs)
    names = [n for n in CONTESTANTS if any(r["contestant"] == n for r in runs)]
    lines = [
        f"### `{key}`: {WORLDS[key.split('_')[0]]}, {budget:,} queries",
        "",
        f"pi_ref: trained prompts {np.mean(data['ref']['train']):.4f}, unseen prompts "
        f"{np.mean(data['ref']['heldout']):.4f}.",
        "",
        "| contestant | tuned settings (validation exploitability) | seeds | trained prompts | "
        "unseen prompts | unseen - trained | unseen, minus Online IPO (paired) |",
        "|---|---|---:|---|---|---:|---|",
    ]
    base = per_seed(runs, BASELINE, "heldout", budget)
    for name in names:
        cells = {s: per_seed(runs, name, s, budget) for s in SPLITS}
        seeds = sorted(cells["heldout"])
        tr = np.array([cells["train"][s] for s in seeds])
        ho = np.array([cells["heldout"][s] for s in seeds])
        lo_t, hi_t = bootstrap_ci(tr)
        lo_h, hi_h = bootstrap_ci(ho)
        shared = [s for s in seeds if s in base]
        if name == BASELINE or not shared:
            diff = "-"
        else:
            d = np.array([cells["heldout"][s] - base[s] for s in shared])
            lo, hi = bootstrap_ci(d)
            diff = f"{d.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"
        t = tuned.get(name, {})
        best = ", ".join(f"{k} {_short(v)}" for k, v in _searched(t).items())
        obj = f" ({t['objective']:.4f}, {t['trials']} trials)" if t else ""
        lines.append(
            f"| {name} | {best}{obj} | {len(seeds)} | {tr.mean():.4f} [{lo_t:.4f}, {hi_t:.4f}] | "
            f"{ho.mean():.4f} [{lo_h:.4f}, {hi_h:.4f}] | {(ho - tr).mean():+.4f} | {diff} |"
        )
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> None:
    results = Path(args.results)
    path = results / "text_h2h_runs.json"
    if not path.is_file():
        raise SystemExit(f"{path.name} does not exist: run `run` first")
    runs = json.loads(path.read_text())
    tuned_path = results / "text_h2h_tuned.json"
    tuned = json.loads(tuned_path.read_text()) if tuned_path.is_file() else {}
    parts = [
        "# Token head to head under the one protocol (`benchmarks/text_h2h.py`)",
        "",
        "Exact exploitability of the last iterate, mean over seeds with a 95% bootstrap interval "
        "over seeds, on the prompts trained on and on unseen (held-out) prompts; the last column is "
        "the paired difference to Online IPO on unseen prompts (same seeds: the same prompts at "
        "every step). Settings tuned with `nlhf-zoo tune` on the validation prompts, the same "
        "number of trials and budget for every contestant.",
    ]
    for key in sorted(runs):
        # snippet markers: the docs include each setting's table from this file (no copy to drift)
        mark = key.replace(".", "")  # section names: letters, digits, - and _
        table = report_setting(key, runs[key], tuned.get(key, {}))
        parts += ["", f"<!-- --8<-- [start:{mark}] -->", table, f"<!-- --8<-- [end:{mark}] -->"]
    text = "\n".join(parts) + "\n"
    (results / "text_h2h.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(RESULTS), help="results folder")
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("tune", "run"):
        s = sub.add_parser(cmd)
        s.add_argument("--world", choices=list(WORLDS), required=True)
        s.add_argument("--beta", type=float, default=None, help="the game's beta (default 0.1)")
        s.add_argument("--contestants", default="", help="comma-separated (default: all)")
        s.add_argument("--budget", type=int, default=24_576, help="queries per run")
        if cmd == "tune":
            s.add_argument("--trials", type=int, default=8, help="finished trials per contestant")
            s.add_argument("--evaluations", type=int, default=4, help="pruning points per trial")
        else:
            s.add_argument("--seeds", type=int, default=10)
            s.add_argument("--first-seed", type=int, default=1, help="seed 0 is tuning's")
            s.add_argument("--points", default="8192", help="earlier budgets on the curve")
    sub.add_parser("report")
    args = p.parse_args(argv)
    {"tune": cmd_tune, "run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
