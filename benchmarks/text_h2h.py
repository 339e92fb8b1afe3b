"""Token-level head to head with unseen classes, at several budgets (issue 32).

Contestants (:data:`CONTESTANTS`): Nash-MP in the two mirror-prox designs, (A) target networks and
(B) extragradient, and design (C), the EMA reading of the paper's practical recipe (no half-step:
not mirror prox); Nash Prox (self-play on the game regularised toward an anchor refreshed every
``inner_steps`` steps); Online IPO (self-play policy gradient); Nash-MD; MNPO (a population of its
last 3 iterates, uniform weights); and two MNPO ablations at MNPO's tuned settings (history 1, i.e.
INPO, and 3 iterates weighted 0.5, 0.3, 0.2 newest first). Worlds: the 256-prompt enumerable worlds
``nlhf/TinyTokenDuel-v1`` (``plain``) and ``-Cyclic-v1`` (``cyclic``), at the game's ``beta`` (0.1)
or ``--beta``. Every contestant shares the low-variance setting :data:`COMMON` (judge
probabilities, batch 256).

The protocol: the class split of the prompt sets
(:meth:`nlhf_envs.text.prompts.PromptSet.class_split`). Agents train on ``seen_train``, the train
prompts of the classes trained on; tuning scores ``unseen_validation``, prompts of a class never
trained on; results are reported on three splits (:data:`REPORT`): the prompts trained on
(optimisation), ``seen_heldout`` (unseen wording: held-out prompts of classes trained on) and
``unseen_heldout`` (unseen classes: every prompt of classes never trained or tuned on).

Sub-commands:

* ``tune``: one Optuna study per (setting, contestant) at ``--budget`` queries (:func:`tune_one`):
  TPE (``--startup`` random trials first), each trial trains the same settings with two seeds
  (:data:`TUNE_SEEDS`) in lockstep and reports the mean validation exploitability at
  ``--evaluations`` points to a median pruner (which waits for ``--startup`` finished trials and
  never stops a trial at its first point); the study runs until ``--trials`` trials have *finished*
  (pruned trials come on top and are reported; ``--max-trials`` caps the total, and a study stopped
  by it says so). Writes ``text_h2h_tuned.json``.
* ``run``: the tuned settings over ``--seeds`` seeds, scored exactly at every budget of
  ``--points`` (and ``--budget``). Common random numbers: at one seed every contestant trains on
  the same prompts at every step, so differences are paired. Writes ``text_h2h_runs.json``.
* ``report``: ``text_h2h.md`` (tables as snippet sections) and one plot per setting
  (``text_h2h_<setting>.png``): means over seeds with 95% intervals from a two-level bootstrap
  (seeds and prompts resampled, crossed), and paired differences to Online IPO bootstrapped the same
  way on the per-(seed, prompt) differences.

Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_h2h.py tune --world plain
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_h2h.py run --world plain --seeds 5
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_h2h.py report
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass, field
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
#: the prompts the agents train on, and the prompts tuning scores (the class split)
TRAIN_SPLIT = "seen_train"
TUNE_SPLIT = "unseen_validation"
#: report column -> prompt split
REPORT: dict[str, str] = {
    "trained": "seen_train",
    "wording": "seen_heldout",
    "classes": "unseen_heldout",
}
#: the two seeds every tuning trial trains (the runs use seeds 1, 2, ...)
TUNE_SEEDS = (1000, 1001)
#: the reference contestant of the paired differences
BASELINE = "online_ipo"


@dataclass(frozen=True)
class Contestant:
    """One contestant: a registered agent, its fixed settings and its name in the tables.

    Attributes:
        agent: the registered token agent.
        fixed: settings every trial and run shares (on top of :data:`COMMON`).
        label: what it is, in the tables.
        tuned_from: an ablation: ``None`` for a tuned contestant, else the contestant whose tuned
            settings it runs with (its ``fixed`` on top).
    """

    agent: str
    fixed: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    tuned_from: str | None = None


CONTESTANTS: dict[str, Contestant] = {
    "nash_mp_A": Contestant(
        "nash_mp", {"variant": "target", "inner_steps": 8}, "Nash-MP (A): mirror prox, target nets"
    ),
    "nash_mp_B": Contestant(
        "nash_mp",
        {"variant": "extragradient", "inner_steps": 1},
        "Nash-MP (B): mirror prox, extragradient",
    ),  # fmt: skip
    "nash_mp_C": Contestant(
        "nash_mp", {"variant": "ema", "inner_steps": 1}, "Nash-MP (C): EMA reading, not mirror prox"
    ),
    "nash_prox": Contestant("nash_prox", {"anchor": "frozen"}, "Nash Prox (frozen anchor)"),
    "online_ipo": Contestant("online_ipo", {}, "Online IPO (self-play PG)"),
    "nash_md": Contestant("nash_md", {}, "Nash-MD"),
    "mnpo": Contestant("mnpo", {"history": 3}, "MNPO, 3 iterates, uniform"),
    "mnpo_h1": Contestant("mnpo", {"history": 1}, "ablation: MNPO, 1 iterate (INPO)", "mnpo"),
    "mnpo_w": Contestant(
        "mnpo",
        {"history": 3, "weights": [0.5, 0.3, 0.2]},
        "ablation: MNPO, 3 iterates, 0.5/0.3/0.2",
        "mnpo",
    ),  # fmt: skip
}


def setting_key(world: str, beta: float | None) -> str:
    """``plain``, ``cyclic_beta0.03``: the (world, beta) name in the result files."""
    return world if beta is None else f"{world}_beta{beta:g}"


def env_kwargs(beta: float | None) -> dict[str, Any]:
    """The env arguments of a setting: the class split's training prompts and the game's ``beta``
    (the world's own unless ``--beta``)."""
    out: dict[str, Any] = {"prompt_split": TRAIN_SPLIT}
    if beta is not None:
        out["beta"] = beta
    return out


# ------------------------------------------------------------------------------------- scoring
class Scorer:
    """The exact games of one setting on the tuning and report splits; per-prompt exploitability."""

    def __init__(self, env_id: str, beta: float | None) -> None:
        self.env_id, self.kwargs = env_id, env_kwargs(beta)
        probe = agents.make("online_ipo", env_id, seed=0, env_kwargs=self.kwargs, **COMMON)
        self.env, self.reference, self.beta = probe.env, probe.reference, probe.beta
        self.games: dict[str, tuple[Any, np.ndarray]] = {}
        for split in {TUNE_SPLIT, *REPORT.values()}:
            game = exact_game(self.env, split, beta=self.beta, reference=self.reference)
            self.games[split] = (game, regularized_nash(game))
        self.ref = {
            col: self.exploitability(self.games[s][0].pi_ref, s).tolist()
            for col, s in REPORT.items()
        }

    def exploitability(self, pi: np.ndarray, split: str) -> np.ndarray:
        """Per-prompt ``max_pi' P_beta(pi' > pi) - 1/2`` (``docs/nash-metrics.md``)."""
        game, star = self.games[split]
        return per_prompt(game, np.clip(pi, 1e-300, None), star)[0]

    def score(self, model: Any, splits: list[str]) -> dict[str, np.ndarray]:
        """Per-prompt exploitability of ``model`` on each split."""
        model.eval()
        try:
            with torch.no_grad():
                return {
                    s: self.exploitability(
                        np.asarray(sequence_policy(model, self.env, s), np.float64), s
                    )
                    for s in splits
                }
        finally:
            model.train()


def make_agent(name: str, settings: dict[str, Any], seed: int, scorer: Scorer) -> Any:
    """The contestant ``name`` with ``settings`` (tuned ones; its fixed ones go on top)."""
    c = CONTESTANTS[name]
    return agents.make(
        c.agent, scorer.env_id, seed=seed, env_kwargs=scorer.kwargs,
        **{**COMMON, **settings, **c.fixed},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- tune
def search_space(trial: Any, probe: Any) -> dict[str, Any]:
    """The trial's settings: ``nlhf-zoo tune``'s spaces (:func:`agents.zoo.tune.suggest`: ``lr``
    log-uniform in [3e-5, 3e-3]; Nash-MP's ``eta`` in {1, 2, 4} beta and design (C)'s ``ema_rate``;
    Nash-MD's schedule), and for Nash Prox ``eta`` log-uniform in [0.1, 10] and ``inner_steps`` in
    {2, 4, 8, 16, 32}. MNPO's step is its default (its history and weights are fixed)."""
    from agents.zoo.tune import suggest

    out = suggest(trial, probe)
    if probe.name == "nash_prox":
        out["eta"] = trial.suggest_float("eta", 0.1, 10.0, log=True)
        out["inner_steps"] = trial.suggest_categorical("inner_steps", [2, 4, 8, 16, 32])
    return out


def evaluation_points(agent: Any, budget: int, n: int) -> list[int]:
    """``n`` evenly spaced budgets ending at ``budget``, each a whole number of iterations."""
    from agents.api import plan_budget

    per = plan_budget(agent, budget).per_iteration
    whole = budget // per
    return sorted({max(1, round(whole * i / n)) * per for i in range(1, n + 1)})


def tune_one(
    name: str,
    scorer: Scorer,
    *,
    budget: int,
    trials: int,
    startup: int,
    evaluations: int,
    storage: Path | None,
    study_name: str,
    max_trials: int | None = None,
) -> dict[str, Any]:
    """One study (see the module docstring); returns the record of ``text_h2h_tuned.json``."""
    import optuna

    c = CONTESTANTS[name]
    if c.tuned_from is not None:
        raise SystemExit(f"{name} is an ablation of {c.tuned_from}: it is not tuned")
    probe = make_agent(name, {}, 0, scorer)
    points = evaluation_points(probe, budget, evaluations)
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=startup)
    # no pruning before `startup` trials have finished, nor at a trial's first evaluation point
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=1)
    url = None if storage is None else f"sqlite:///{storage.resolve()}"
    study = optuna.create_study(
        study_name=study_name, storage=url, sampler=sampler, pruner=pruner, direction="minimize",
        load_if_exists=True,
    )  # fmt: skip
    done = optuna.trial.TrialState.COMPLETE

    def objective(trial: Any) -> float:
        settings = search_space(trial, probe)
        ags = [make_agent(name, settings, s, scorer) for s in TUNE_SEEDS]
        value, per_seed = float("nan"), []
        for step, target in enumerate(points, start=1):
            per_seed = []
            for ag in ags:
                ag.learn(num_queries=max(0, target - ag.queries_used))
                e = scorer.score(ag.model, [TUNE_SPLIT])[TUNE_SPLIT].mean()
                per_seed.append(float(e) if np.isfinite(e) else 1.0)  # a diverged run: 1.0
            value = float(np.mean(per_seed))
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("settings", settings)
        trial.set_user_attr("per_seed", per_seed)
        return value

    t0, c0 = time.perf_counter(), time.process_time()
    n_done = sum(t.state == done for t in study.get_trials(deepcopy=False))
    cap = max_trials if max_trials is not None else 4 * trials
    left = cap - len(study.get_trials(deepcopy=False))
    if n_done < trials and left > 0:
        study.optimize(
            objective, n_trials=left,
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=(done,))],
        )  # fmt: skip
    all_trials = study.get_trials(deepcopy=False)
    complete = [t for t in all_trials if t.state == done]
    if not complete:
        raise SystemExit(f"study {study_name!r}: no trial finished its budget")
    best = min(complete, key=lambda t: (t.value, t.number))
    settings = dict(best.user_attrs["settings"])
    return {
        "contestant": name,
        "agent": c.agent,
        "fixed": c.fixed,
        "search": dict(best.params),
        "best": settings,
        "objective": float(best.value),
        "objective_per_seed": best.user_attrs["per_seed"],
        "tune_seeds": list(TUNE_SEEDS),
        "finished": len(complete),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in all_trials),
        "cap_reached": len(complete) < trials,
        "random_startup": startup,
        "evaluations": points,
        "budget": budget,
        "study": study_name,
        "trials": [
            {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
            for t in all_trials
        ],
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "date": _dt.date.today().isoformat(),
    }


def cmd_tune(args: argparse.Namespace) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    key = setting_key(args.world, args.beta)
    scorer = Scorer(WORLDS[args.world], args.beta)
    names = args.contestants.split(",") if args.contestants else [
        n for n, c in CONTESTANTS.items() if c.tuned_from is None
    ]  # fmt: skip
    for name in names:
        rec = tune_one(
            name, scorer, budget=args.budget, trials=args.trials, startup=args.startup,
            evaluations=args.evaluations, storage=results / "text_h2h_studies.db",
            study_name=f"{name}:{key}:{args.budget}q:classes", max_trials=args.max_trials,
        )  # fmt: skip
        update_json(
            results / "text_h2h_tuned.json",
            lambda d, rec=rec: d.setdefault(key, {}).update({rec["contestant"]: rec}),
            indent=1,
        )
        print(
            f"{key} {name}: best {rec['search']} validation exploitability {rec['objective']:.4f} "
            f"({rec['finished']} finished + {rec['pruned']} pruned, {rec['seconds']:.0f} s)",
            flush=True,
        )


# ----------------------------------------------------------------------------------------- run
def tuned_settings(results: Path, key: str, name: str, budget: int) -> dict[str, Any]:
    """The tuned settings of contestant ``name`` (of the contestant it ablates) in setting ``key``,
    tuned at ``budget``."""
    path = results / "text_h2h_tuned.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    source = CONTESTANTS[name].tuned_from or name
    if source not in data.get(key, {}):
        raise SystemExit(f"{path.name}: no tuned settings of {source} for {key}; run `tune` first")
    rec = data[key][source]
    if rec["budget"] != budget:
        raise SystemExit(
            f"{path.name}: {source} for {key} was tuned at {rec['budget']:,} queries, not "
            f"{budget:,}; run with --tuned-at {rec['budget']} or tune again at this budget"
        )
    return dict(rec["best"])


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    results = Path(args.results)
    key = setting_key(args.world, args.beta)
    scorer = Scorer(WORLDS[args.world], args.beta)
    points = sorted({int(p) for p in args.points.split(",") if p} | {args.budget})
    names = args.contestants.split(",") if args.contestants else list(CONTESTANTS)
    tuned_at = args.tuned_at or args.budget
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in names:
            settings = tuned_settings(results, key, name, tuned_at)
            t0, c0 = time.perf_counter(), time.process_time()
            ag = make_agent(name, settings, seed, scorer)
            curve = []
            for p in points:
                ag.learn(num_queries=max(0, p - ag.queries_used))
                scores = scorer.score(ag.model, list(REPORT.values()))
                curve.append({
                    "queries": int(ag.queries_used), "target": p,
                    **{col: [round(float(v), 8) for v in scores[s]] for col, s in REPORT.items()},
                })  # fmt: skip
            rec = {
                "contestant": name, "seed": seed, "settings": settings, "tuned_at": tuned_at,
                "budget": args.budget, "curve": curve, "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0,
            }  # fmt: skip

            def store(d: dict[str, Any], rec: dict[str, Any] = rec) -> None:
                entry = d.setdefault(key, {"ref": scorer.ref, "runs": []})
                same = (rec["contestant"], rec["seed"], rec["budget"])
                entry["runs"] = [
                    x for x in entry["runs"] if (x["contestant"], x["seed"], x["budget"]) != same
                ] + [rec]

            update_json(results / "text_h2h_runs.json", store)
            last = curve[-1]
            print(
                f"{key} seed {seed} {name}: "
                + ", ".join(f"{c} {np.mean(last[c]):.4f}" for c in REPORT)
                + f" at {last['queries']} queries [{rec['seconds']:.0f} s]",
                flush=True,
            )


# -------------------------------------------------------------------------------------- report
def two_level_bootstrap(cells: np.ndarray, n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of a ``(seeds, prompts)`` array, resampling seeds and
    prompts independently with replacement (a crossed two-level bootstrap: every resample draws
    seeds and, separately, prompts, and averages the selected cells)."""
    s, p = cells.shape
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(s, np.full(s, 1.0 / s), size=n)
    wp = rng.multinomial(p, np.full(p, 1.0 / p), size=n)
    means = np.einsum("ns,sp,np->n", ws, cells, wp) / (s * p)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def cells_of(runs: list[dict[str, Any]], name: str, col: str, target: int) -> dict[int, list]:
    """Per-seed per-prompt exploitability of ``name`` at the budget ``target``."""
    out = {}
    for r in runs:
        if r["contestant"] != name:
            continue
        for row in r["curve"]:
            # an agent stops at most one iteration short of a budget; a row that ran past it or
            # fell more than 5% short is not at that budget
            ok = target * 0.95 <= row["queries"] <= target
            if row.get("target", row["queries"]) == target and ok:
                out[r["seed"]] = row[col]
    return out


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _searched(rec: dict[str, Any]) -> str:
    best = rec.get("best", {})
    keys = set(rec.get("search", {}))
    if "eta_over_beta" in keys:  # the search draws eta / beta; the config holds eta
        keys = (keys - {"eta_over_beta"}) | {"eta"}
    return ", ".join(f"{k} {_short(best[k])}" for k in sorted(best) if k in keys)


def _fmt(x: float, ci: tuple[float, float], signed: bool = False) -> str:
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"{f.format(x)} [{f.format(ci[0])}, {f.format(ci[1])}]"


def budgets_of(runs: list[dict[str, Any]]) -> list[int]:
    return sorted({row.get("target", row["queries"]) for r in runs for row in r["curve"]})


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """Means, two-level intervals and paired differences to :data:`BASELINE` per contestant,
    column and budget (what the tables and plots show)."""
    runs = data["runs"]
    out: dict[str, Any] = {}
    for name in CONTESTANTS:
        for target in budgets_of(runs):
            for col in REPORT:
                cells = cells_of(runs, name, col, target)
                if not cells:
                    continue
                seeds = sorted(cells)
                a = np.array([cells[s] for s in seeds])
                row = {"mean": float(a.mean()), "ci": two_level_bootstrap(a), "seeds": len(seeds)}
                base = cells_of(runs, BASELINE, col, target)
                shared = [s for s in seeds if s in base]
                if name != BASELINE and shared:
                    d = np.array([cells[s] for s in shared]) - np.array([base[s] for s in shared])
                    row["diff"] = float(d.mean())
                    row["diff_ci"] = two_level_bootstrap(d)
                out[f"{name}|{col}|{target}"] = row
    return out


def report_setting(key: str, data: dict[str, Any], tuned: dict[str, Any]) -> dict[str, str]:
    """The snippet sections of one setting: the table at the largest budget and the budgets
    table."""
    runs = data["runs"]
    budgets = budgets_of(runs)
    final = max(budgets)
    s = summary(data)
    names = [n for n in CONTESTANTS if any(r["contestant"] == n for r in runs)]
    world = WORLDS[key.split("_")[0]]
    ref = {c: float(np.mean(v)) for c, v in data["ref"].items()}
    head = (
        f"### `{key}`: {world}, {final:,} queries\n\npi_ref: trained prompts {ref['trained']:.4f}, "
        f"unseen wording {ref['wording']:.4f}, unseen classes {ref['classes']:.4f}."
    )
    lines = [
        head,
        "",
        "| contestant | tuned settings (validation exploitability; finished + pruned trials) | "
        "seeds | trained prompts | unseen wording | unseen classes | wording, minus Online IPO | "
        "classes, minus Online IPO |",
        "|---|---|---:|---|---|---|---|---|",
    ]
    for name in names:
        c = CONTESTANTS[name]
        t = tuned.get(c.tuned_from or name, {})
        if c.tuned_from:
            what = f"{c.tuned_from}'s settings"
        else:
            what = _searched(t)
            if t:
                short = " (cap reached)" if t.get("cap_reached") else ""
                what += f" ({t['objective']:.4f}; {t['finished']} + {t['pruned']}{short})"
        cell = {col: s.get(f"{name}|{col}|{final}") for col in REPORT}
        if cell["trained"] is None:
            continue

        def diff(col: str, cell: dict = cell) -> str:
            row = cell[col]
            return (
                "-" if row is None or "diff" not in row else _fmt(row["diff"], row["diff_ci"], True)
            )

        lines.append(
            f"| {c.label} | {what} | {cell['trained']['seeds']} | "
            + " | ".join(_fmt(cell[col]["mean"], cell[col]["ci"]) for col in REPORT)
            + f" | {diff('wording')} | {diff('classes')} |"
        )
    table = "\n".join(lines)
    blines = [
        f"### `{key}`: exploitability on unseen classes (and unseen wording) by budget",
        "",
        "| contestant | "
        + " | ".join(f"{b:,} queries: classes (wording)" for b in budgets)
        + " | classes, minus Online IPO: "
        + ", ".join(f"{b:,}" for b in budgets)
        + " |",
        "|---|" + "---|" * (len(budgets) + 1),
    ]
    for name in names:
        parts, diffs = [], []
        for b in budgets:
            cl, wo = s.get(f"{name}|classes|{b}"), s.get(f"{name}|wording|{b}")
            parts.append("-" if cl is None else f"{_fmt(cl['mean'], cl['ci'])} ({wo['mean']:.4f})")
            diffs.append(
                "-" if cl is None or "diff" not in cl else _fmt(cl["diff"], cl["diff_ci"], True)
            )
        blines.append(f"| {CONTESTANTS[name].label} | " + " | ".join(parts) + " | "
                      + "; ".join(diffs) + " |")  # fmt: skip
    blines += ["", "Ranking on unseen classes (mean over seeds, least exploitable first):", ""]
    for b in budgets:
        order = sorted((s[f"{n}|classes|{b}"]["mean"], n) for n in names if f"{n}|classes|{b}" in s)
        blines.append(f"- {b:,} queries: " + " < ".join(f"{n} {m:.4f}" for m, n in order))
    return {key: table, f"{key}_budgets": "\n".join(blines)}


def plot_setting(key: str, data: dict[str, Any], path: Path) -> None:
    """Exploitability against budget, unseen wording and unseen classes side by side, with the
    two-level bootstrap intervals (shaded) and pi_ref (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    s = summary(data)
    budgets = budgets_of(data["runs"])
    names = [n for n in CONTESTANTS if any(r["contestant"] == n for r in data["runs"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, col, title in zip(axes, ("wording", "classes"), ("unseen wording", "unseen classes"),
                              strict=True):  # fmt: skip
        for name in names:
            rows = [(b, s[f"{name}|{col}|{b}"]) for b in budgets if f"{name}|{col}|{b}" in s]
            if not rows:
                continue
            x = [b for b, _ in rows]
            y = [r["mean"] for _, r in rows]
            lo = [r["ci"][0] for _, r in rows]
            hi = [r["ci"][1] for _, r in rows]
            style = "--" if CONTESTANTS[name].tuned_from else "-"
            (line,) = ax.plot(x, y, style, marker="o", ms=3, label=CONTESTANTS[name].label)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ax.axhline(float(np.mean(data["ref"][col])), color="k", ls=":", lw=1, label="pi_ref")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xticks(budgets, [f"{b / 1024:g}k" for b in budgets])
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("preference queries")
        ax.set_title(title)
    fig.suptitle(f"{WORLDS[key.split('_')[0]]} ({key}): exact exploitability of the last iterate")
    axes[0].set_ylabel("exploitability (95% two-level bootstrap intervals)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(args: argparse.Namespace) -> None:
    results = Path(args.results)
    path = results / "text_h2h_runs.json"
    if not path.is_file():
        raise SystemExit(f"{path.name} does not exist: run `run` first")
    runs = json.loads(path.read_text())
    tuned_path = results / "text_h2h_tuned.json"
    tuned = json.loads(tuned_path.read_text()) if tuned_path.is_file() else {}
    parts = [
        "# Token head to head with unseen classes, by budget (`benchmarks/text_h2h.py`)",
        "",
        "Exact exploitability of the last iterate, mean over seeds with a 95% interval from a "
        "two-level bootstrap (seeds and prompts resampled, crossed), on the prompts trained on, on "
        "unseen wording (held-out prompts of the classes trained on) and on unseen classes (every "
        "prompt of the classes never trained or tuned on). Paired differences to Online IPO: the "
        "same two-level bootstrap of the per-(seed, prompt) differences (same seeds: the same "
        "prompts at every step). Settings tuned on prompts of another unseen class with two seeds "
        "per trial, the same number of finished trials for every tuned contestant (TPE after its "
        "random start-up trials); ablations run at the settings of the contestant they ablate.",
    ]
    for key in sorted(runs):
        t = tuned.get(key, {})
        standard = {n: r for n, r in t.items() if not r.get("provenance")}
        if standard:
            rec = next(iter(standard.values()))
            counts = ", ".join(
                f"{n} {r['finished']}{' (cap reached)' if r.get('cap_reached') else ''}"
                for n, r in standard.items()
            )
            parts += ["", f"`{key}`: tuned at {rec['budget']:,} queries with seeds "
                      f"{rec['tune_seeds']} per trial, {rec['random_startup']} random start-up "
                      f"trials then TPE; finished trials: {counts}."]  # fmt: skip
        for name, rec in t.items():  # settings from elsewhere say where they come from
            if rec.get("provenance"):
                parts += ["", f"`{key}`, {name}: {rec['provenance']}"]
        for name, text in report_setting(key, runs[key], t).items():
            mark = name.replace(".", "")  # section names: letters, digits, - and _
            parts += ["", f"<!-- --8<-- [start:{mark}] -->", text, f"<!-- --8<-- [end:{mark}] -->"]
        plot_setting(key, runs[key], results / f"text_h2h_{key.replace('.', '')}.png")
        parts += ["", f"![{key}](text_h2h_{key.replace('.', '')}.png)"]
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
            s.add_argument("--startup", type=int, default=4, help="random trials before TPE")
            s.add_argument("--evaluations", type=int, default=4, help="pruning points per trial")
            s.add_argument("--max-trials", type=int, default=None,
                           help="stop a study after this many trials, finished or not (default: "
                           "4 x --trials); a study stopped short of --trials says so")  # fmt: skip
        else:
            s.add_argument("--seeds", type=int, default=5)
            s.add_argument("--first-seed", type=int, default=1)
            s.add_argument("--points", default="8192,24576", help="earlier budgets on the curve")
            s.add_argument("--tuned-at", type=int, default=None,
                           help="the budget the settings were tuned at (default: --budget)")  # fmt: skip
    sub.add_parser("report")
    args = p.parse_args(argv)
    {"tune": cmd_tune, "run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
