"""Token-level agents measured on Nash metrics in the exact tiny worlds (issue 11).

Worlds: ``nlhf/TinyTokenDuel-v0`` (plain) and ``nlhf/TinyTokenDuel-Cyclic-v0`` (intransitive),
``--beta`` to change the game's KL strength (an env argument). At fixed query budgets the script
computes, exactly over the 259 enumerated answers (``algorithms.md`` §7):

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

Results go to ``benchmarks/results/text_nash*.json``/``.md``. Example (small CPU run)::

    OMP_NUM_THREADS=1 python benchmarks/text_nash.py tune --world plain --budget 12288 \\
        --lrs 1e-4,3e-4,1e-3 --seeds 2
    OMP_NUM_THREADS=1 python benchmarks/text_nash.py h2h --world plain --budget 49152 --seeds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
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
#: the prompts the agents train on under each protocol (see the module docstring)
PROTOCOLS = {"nash": "all", "heldout": "train"}


def tag(world: str, protocol: str = "nash", beta: float | None = None) -> str:
    """The name of a (world, protocol, beta) in the result files: ``plain``, ``cyclic_beta0.03``,
    ``heldout_plain``..."""
    name = world if protocol == "nash" else f"{protocol}_{world}"
    return name if beta is None else f"{name}_beta{beta:g}"


def per_prompt(game: Any, pi: np.ndarray, star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-prompt exploitability and ``KL(pi* || pi)`` (``algorithms.md`` §2)."""
    beta = game.beta
    g = np.einsum("cij,cj->ci", game.P, pi)
    kl_ref = (pi * (np.log(pi) - np.log(game.pi_ref))).sum(-1)
    expl = beta * logsumexp(g / beta, b=game.pi_ref, axis=1) + beta * kl_ref - 0.5
    kl_star = (star * (np.log(star) - np.log(pi))).sum(-1)
    return expl, kl_star


class Judge:
    """Exact games of one world on the validation (train) and test (held-out) prompts.

    ``env_kwargs`` (e.g. ``prompt_split``, ``beta``) build every agent's env.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        probe = agents.make("online_ipo", env_id, seed=0, env_kwargs=self.env_kwargs, **COMMON)
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


def _result(name: str) -> dict[str, Any]:
    """The result file ``text_nash_{name}.json``; a missing one stops the command naming it."""
    path = RESULTS / f"text_nash_{name}.json"
    if not path.exists():
        raise SystemExit(
            f"{path} does not exist: run the command that writes it first (tune / h2h)"
        )
    return json.loads(path.read_text())


def run(
    judge: Judge, name: str, config: dict[str, Any], seed: int, budget: int, points: list[int]
) -> dict[str, Any]:
    """Train one agent, evaluating exactly at each budget in ``points``."""
    agent = agents.make(
        name, judge.env_id, seed=seed, env_kwargs=judge.env_kwargs, **{**COMMON, **config}
    )
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
    histories: tuple[int, ...] = (2,),
) -> list[dict[str, Any]]:
    """The tuning grid of ``name`` (issue 11, item 3): ``lrs`` for every agent, ``eta`` in
    ``etas x beta`` for Nash-MP, the mixture coefficients and/or the harmonic schedule for Nash-MD,
    the population size ``history`` in ``histories`` for the token MNPO (issue 25; uniform weights,
    8 inner steps and its default ``eta = 1 / (3 beta)``, all untuned)."""
    if name == "mnpo":
        return [
            {"lr": lr, "history": h, "inner_steps": 8}
            for lr, h in itertools.product(lrs, histories)
        ]
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
    if name == "sb3_ppo_selfplay":
        return [{"learning_rate": lr} for lr in lrs]
    return [{"lr": lr} for lr in lrs]


def make_judge(args: argparse.Namespace) -> Judge:
    kwargs: dict[str, Any] = {"prompt_split": PROTOCOLS[args.protocol]}
    if args.beta is not None:
        kwargs["beta"] = args.beta
    return Judge(WORLDS[args.world], kwargs)


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


def _raw(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-(seed, prompt) cells of one agent's runs (what the summaries are computed from)."""
    n = min(len(r["curve"]) for r in rs)
    return {
        "config": rs[0]["config"],
        "seeds": [r["seed"] for r in rs],
        "seconds": [r["seconds"] for r in rs],
        "queries": [int(np.mean([r["curve"][i]["queries"] for r in rs])) for i in range(n)],
        "test_expl": [[r["curve"][i]["test_expl"] for r in rs] for i in range(n)],
        "test_kl": [[r["curve"][i]["test_kl"] for r in rs] for i in range(n)],
        "val_expl": [float(np.mean([r["curve"][i]["val_expl"] for r in rs])) for i in range(n)],
        "average_test_expl": [r["average_test_expl"] for r in rs],
        "average_test_kl": [r["average_test_kl"] for r in rs],
    }


def summarise(raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Means and 95% bootstrap intervals over (seed, prompt) cells of one agent's raw cells."""
    curves = []
    for q, e, k, v in zip(
        raw["queries"], raw["test_expl"], raw["test_kl"], raw["val_expl"], strict=True
    ):
        e, k = np.array(e), np.array(k)
        curves.append({
            "queries": q, "val_expl": v,
            "expl": float(e.mean()), "expl_ci": bootstrap(e, rng),
            "kl": float(k.mean()), "kl_ci": bootstrap(k, rng),
        })  # fmt: skip
    avg_e, avg_k = np.array(raw["average_test_expl"]), np.array(raw["average_test_kl"])
    return {
        "config": raw["config"], "seeds": len(raw["seeds"]), "curve": curves,
        "seconds_per_run": float(np.mean(raw["seconds"])),
        "average_expl": float(avg_e.mean()), "average_expl_ci": bootstrap(avg_e, rng),
        "average_kl": float(avg_k.mean()), "average_kl_ci": bootstrap(avg_k, rng),
    }  # fmt: skip


def paired(
    raws: dict[str, dict[str, Any]], rng: np.random.Generator, first: str = "nash_mp"
) -> dict[str, Any]:
    """Paired 95% intervals of ``first``'s exploitability (Nash-MP's by default) minus each other
    agent's, per evaluation point (last iterate) and for the average iterate, over the shared
    (seed, prompt) cells; keys ``"{first} - {other}"``."""
    out: dict[str, Any] = {}
    mp = raws.get(first)
    if mp is None:
        return out
    for name, raw in raws.items():
        if name in (first, "nash_mp") or raw["seeds"] != mp["seeds"]:
            continue
        rows = []
        for i in range(min(len(mp["queries"]), len(raw["queries"]))):
            if not same_budget(mp["queries"][i], raw["queries"][i]):
                continue  # evaluated at other budgets: not a pair
            d = np.array(mp["test_expl"][i]) - np.array(raw["test_expl"][i])
            rows.append({"queries": mp["queries"][i], "diff": float(d.mean()),
                         "ci": bootstrap(d, rng)})  # fmt: skip
        pair: dict[str, Any] = {"last": rows, "average": None}
        if same_budget(mp["queries"][-1], raw["queries"][-1]):
            d = np.array(mp["average_test_expl"]) - np.array(raw["average_test_expl"])
            pair["average"] = {"diff": float(d.mean()), "ci": bootstrap(d, rng)}
        out[f"{first} - {name}"] = pair
    return out


def same_budget(a: float, b: float, tol: float = 0.05) -> bool:
    """Whether two evaluations were taken at the same budget (an agent stops up to one iteration
    short of a requested budget, never past it: within ``tol`` of it)."""
    return abs(a - b) <= tol * max(a, b)


def cmd_h2h(args: argparse.Namespace) -> None:
    judge = make_judge(args)
    base_tag = tag(args.world, args.protocol, args.beta)
    name_tag = base_tag + args.suffix
    tuned_tag = args.tuned or base_tag
    tuned = _result(f"tune_{tuned_tag}")["best"]
    overrides = json.loads(args.configs)
    points = [int(p) for p in args.points.split(",")]
    path = RESULTS / f"text_nash_{name_tag}.json"
    raws: dict[str, dict[str, Any]] = {}
    if args.merge and path.exists():
        # agents added later may run a smaller budget or fewer seeds (then they are not paired)
        raws = json.loads(path.read_text())["raw"]
    if args.start_from:
        # a variant's own file that also holds the runs of another (pairs without changing it)
        raws = {**_result(args.start_from)["raw"],
                **raws}  # fmt: skip
    names = args.agents.split(",")
    if args.label and len(names) != 1:
        raise SystemExit("--label names the results of one agent: give one --agents")
    for name in names:
        cfg = overrides.get(name, tuned[name]["config"] if name in tuned else {})
        rs = [run(judge, name, cfg, 100 + s, args.budget, points) for s in range(args.seeds)]
        raws[args.label or name] = _raw(rs)
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
    """Full-size worlds: estimated Nash metrics (``algorithms.md`` §7, :meth:`TextAgent.nash_metrics`
    with ``exact=False``) at the query budgets of ``--points`` (``0``: ``pi_ref``, before training);
    ``--device cuda`` on a GPU machine.

    Each agent runs the setting chosen by ``tune`` on the tiny world ``--tuned`` (the full-size worlds
    are too slow to tune on a CPU), overridden per agent by ``--configs``."""
    points = sorted(int(p) for p in args.points.split(","))
    tuned = {}
    if args.tuned:
        tuned = _result(f"tune_{args.tuned}")["best"]
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


def _fmt(x: float, ci: Any) -> str:
    return f"{x:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _tags() -> list[str]:
    """Tags of the tuning and head-to-head files present, the ``nash`` protocol first."""
    found = set()
    for path in RESULTS.glob("text_nash_*.json"):
        name = path.stem.removeprefix("text_nash_").removeprefix("tune_")
        if not name.startswith(("full_", "prox", "floor_", "designs_")):
            found.add(name)
    return sorted(found, key=lambda t: (t.startswith("heldout_"), "beta" in t, "cyclic" in t, t))


def _describe(d: dict[str, Any], t: str) -> str:
    world = d.get("world", t.split("_")[-1])
    protocol = d.get("protocol", "heldout")  # files written before protocols existed: held-out
    where = {
        "nash": "agents trained on all 32 prompts (the game's prompt distribution)",
        "heldout": "agents trained on the 24 train prompts only: test prompts unseen "
        "(generalisation, secondary)",
    }[protocol]
    return f"{WORLDS[world]}, beta = {d.get('beta', 0.1):g}; {where}"


def _tune_lines(t: dict[str, Any], name: str) -> list[str]:
    grid_text = "; ".join(
        (
            f"{c['agents']}: lrs {c['lrs']}, history {c['histories']}"
            if set(c["agents"].split(",")) == {"mnpo"}  # MNPO alone: its own grid only
            else f"{c['agents']}: lrs {c['lrs']}, eta/beta {c['etas_over_beta']}, mixtures "
            f"{c['mixtures']}" + (f", history {c['histories']}" if "mnpo" in c["agents"] else "")
        )
        + (f", every setting with {c['extra']}" if c.get("extra") else "")
        for c in t.get("commands", [])
    ) or (f"lrs {t['lrs']}, eta/beta {t.get('etas_over_beta')}, mixtures {t.get('mixtures')}")
    lines = [f"### Tuning ({name})", "",
             f"Budget {t['budget']} queries, {t['seeds']} seeds (0..{t['seeds'] - 1}); grid: "
             f"{grid_text}. Score: mean exploitability (last iterate) on the 24 validation prompts "
             "(lower is better).", "",
             "| agent | setting | validation exploitability |", "|---|---|---|"]  # fmt: skip
    for r in t["results"]:
        best = " (chosen)" if t["best"][r["agent"]]["config"] == r["config"] else ""
        lines.append(f"| {r['agent']} | `{r['config']}`{best} | {r['val_expl']:.4f} |")
    return [*lines, ""]


def _h2h_lines(h: dict[str, Any], name: str) -> list[str]:
    test = "the 8 test prompts" + (" (unseen in training)" if h.get("protocol") != "nash" else "")
    ref = h["pi_ref"]
    seeds = {s.get("seeds", h.get("seeds")) for s in h["agents"].values()}
    lines = [f"### Head-to-head ({name})", "",
             f"Budget {h['budget']} queries, seeds 100.. ({'/'.join(map(str, sorted(seeds)))} per "
             f"agent), settings from tuning `{h.get('tuned_from', name)}`. Metrics on {test}; 95% "
             "intervals: bootstrap over (seed, prompt) cells. pi_ref: exploitability "
             f"{ref['expl']:.4f}, KL(pi*||pi_ref) {ref['kl']:.4f}.", "",
             "| agent | queries | exploitability (last iterate) | KL(pi* \\|\\| pi) |",
             "|---|---|---|---|"]  # fmt: skip
    for agent, s in h["agents"].items():
        for c in s["curve"]:
            lines.append(
                f"| {agent} | {c['queries']} | {_fmt(c['expl'], c['expl_ci'])} | "
                f"{_fmt(c['kl'], c['kl_ci'])} |"
            )
    lines += ["", "Average iterate (uniform mixture of the evaluated iterates of the second "
              "half of the budget):", "", "| agent | setting | exploitability | KL(pi* \\|\\| pi) |",
              "|---|---|---|---|"]  # fmt: skip
    for agent, s in h["agents"].items():
        lines.append(
            f"| {agent} | `{s['config']}` | {_fmt(s['average_expl'], s['average_expl_ci'])} | "
            f"{_fmt(s['average_kl'], s['average_kl_ci'])} |"
        )
    lines += ["", "Paired difference of exploitability (Nash-MP minus other, same seeds and "
              "prompts; negative: Nash-MP less exploitable)"
              + ("; a row `a - b` is a minus b likewise" if any(
                  not k.startswith("nash_mp - ") for k in h.get("paired_expl_diff", {}))
                 else "") + ":", ""]  # fmt: skip
    if "paired_expl_diff" in h:
        lines += ["| pair | queries | mean difference [95% interval] |", "|---|---|---|"]
        for k, v in h["paired_expl_diff"].items():
            for r in v["last"]:
                lines.append(f"| {k} | {r['queries']} | {_fmt(r['diff'], r['ci'])} |")
            a = v["average"]
            first, _, second = k.partition(" - ")
            other = h.get("raw", {}).get(second, {}).get("queries")
            mp_q = h.get("raw", {}).get(first, {}).get("queries")
            if a is None or (other and mp_q and not same_budget(other[-1], mp_q[-1])):
                lines.append(f"| {k} | average iterate | not paired (other budgets) |")
            else:
                lines.append(f"| {k} | average iterate | {_fmt(a['diff'], a['ci'])} |")
    else:
        for k, ci in h["paired_final_expl_diff"].items():
            lines.append(f"- {k} (last iterate, final): 95% interval [{ci[0]:.4f}, {ci[1]:.4f}]")
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
    return [*lines, ""]


def _full_lines(d: dict[str, Any]) -> list[str]:
    """The estimated Nash metrics of a ``full`` run: mean over seeds, and each seed's estimate with
    its 95% t-interval over prompts."""
    lines = [f"## Full-size world `{d['env']}` (estimated, `text_nash.py full`)", "",
             f"Estimator of `algorithms.md` §7 on {d['prompts']} held-out prompts, n = "
             f"{d['samples']} pi_ref samples per prompt (m = {2 * d['samples']} fresh samples per "
             f"side), device {d['device']}, protocol `{d['protocol']}`, settings tuned on the tiny "
             f"world `{d.get('tuned_from')}` with the shared setting {d.get('common', COMMON)}. "
             "Queries 0: pi_ref (before training).", "",
             "| agent | setting | queries | exploitability, mean of seeds | per seed [95% interval] "
             "| KL(pi* \\|\\| pi), mean | seconds |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in d["rows"]:
        by.setdefault((r["agent"], r["queries"]), []).append(r)
    for (agent, q), rs in by.items():
        per = "; ".join(
            f"{r['eval/exploitability']:.4f} [{r['eval/exploitability_low']:.4f}, "
            f"{r['eval/exploitability_high']:.4f}]"
            for r in rs
        )
        expl = np.mean([r["eval/exploitability"] for r in rs])
        kl = np.mean([r["eval/kl_to_nash"] for r in rs])
        secs = np.mean([r["seconds"] for r in rs])
        lines.append(
            f"| {agent} | `{rs[0].get('config', {})}` | {q} | {expl:.4f} | {per} | {kl:.3f} | "
            f"{secs:.0f} |"
        )
    return [*lines, ""]


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown tables (and a plot per world) from the JSON results of ``tune`` and ``h2h``."""
    lines = ["# Token-level agents on exact Nash metrics (tiny worlds)", "",
             "Written by `python benchmarks/text_nash.py report` from the JSON files next to it. "
             "The commands that produced them, and what of the issue's grid was not run, are in "
             "the README's section \"Head to head on Nash metrics\". Validation: the world's 24 "
             "\"train\" prompts (tuning only); test: its 8 \"heldout\" prompts (disjoint). "
             "Protocol `nash` (primary): the agents train on all 32 prompts, so validation and "
             "test prompts are both in the game's prompt distribution and the metrics measure "
             "convergence to the game's Nash equilibrium. Protocol `heldout` (secondary, the "
             "`heldout_*` sections): the agents train on the 24 train prompts only, so the test "
             "prompts are unseen and the metrics measure generalisation of the learned step.",
             ""]  # fmt: skip
    for t in _tags():
        tpath = RESULTS / f"text_nash_tune_{t}.json"
        hpath = RESULTS / f"text_nash_{t}.json"
        data = json.loads((hpath if hpath.exists() else tpath).read_text())
        lines += [f"## `{t}`: {_describe(data, t)}", ""]
        if tpath.exists():
            lines += _tune_lines(json.loads(tpath.read_text()), t)
        if hpath.exists():
            h = json.loads(hpath.read_text())
            lines += _h2h_lines(h, t)
            _plot(h, t)
            lines += [f"![{t}](text_nash_{t}.png)", ""]
        if (RESULTS / f"text_nash_floor_{t}.md").exists():
            lines += [f"Nash-MP's prox fidelity along training (`text_nash.py floor`): "
                      f"[text_nash_floor_{t}.md](text_nash_floor_{t}.md)", ""]  # fmt: skip
    for path in sorted(RESULTS.glob("text_nash_full_*.json")):
        lines += _full_lines(json.loads(path.read_text()))
    (RESULTS / "text_nash.md").write_text("\n".join(lines))


def _plot(h: dict[str, Any], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("expl", "kl"), strict=True):
        for agent, s in h["agents"].items():
            q = [c["queries"] for c in s["curve"]]
            ax.plot(q, [c[key] for c in s["curve"]], marker="o", label=agent)
            lo = [c[f"{key}_ci"][0] for c in s["curve"]]
            hi = [c[f"{key}_ci"][1] for c in s["curve"]]
            ax.fill_between(q, lo, hi, alpha=0.2)
        ce = h["ceiling"]
        ax.plot([c["iteration"] * ce["queries_per_iteration"] for c in ce["curve"]],
                [c[f"test_{key}"] for c in ce["curve"]], "k--", label="tabular nash_mp (ceiling)")  # fmt: skip
        ax.axhline(h["pi_ref"][key], color="grey", lw=0.8, ls=":", label="pi_ref")
        ax.set_yscale("log")
        ax.set_xlabel("preference queries")
        ax.set_ylabel({"expl": "exploitability (test)", "kl": "KL(pi* || pi) (test)"}[key])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: {_describe(h, name)}, last iterate", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / f"text_nash_{name}.png", dpi=90)
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


def cmd_floor(args: argparse.Namespace) -> None:
    """Why a neural Nash-MP flattens: its prox fidelity (``prox_fidelity`` on the test prompts, on a
    copy of the agent, so training is unaffected) and exact test exploitability along training with
    the tuned setting; writes ``results/text_nash_floor_{tag}.json`` and ``.md``."""
    import copy

    from agents.text.nash_mp import prox_fidelity

    judge = make_judge(args)
    name_tag = tag(args.world, args.protocol, args.beta)
    tuned = _result(f"tune_{name_tag}")["best"]
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
    (RESULTS / f"text_nash_floor_{name_tag}.json").write_text(
        json.dumps({"tag": name_tag, "config": cfg, "beta": judge.beta, "rows": rows}, indent=1)
    )
    what = _describe({"world": args.world, "protocol": args.protocol, "beta": judge.beta}, name_tag)
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
    (RESULTS / f"text_nash_floor_{name_tag}.md").write_text("\n".join(lines) + "\n")


#: Nash-MP's three neural designs (``agents.text.nash_mp``): (A) target networks, (B) extragradient,
#: (C) EMA anchor and opponent
DESIGNS: dict[str, dict[str, Any]] = {
    "A_target": {"variant": "target"},
    "B_extragradient": {"variant": "extragradient", "inner_steps": 1},
    "C_ema": {"variant": "ema", "inner_steps": 1},
}


def cmd_designs(args: argparse.Namespace) -> None:
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
        raw = _raw(rs)
        summary = summarise(raw, rng)
        rows.append({"label": label, "agent": name, "raw": raw, "summary": summary})
        last = summary["curve"][-1]
        print(f"{label} {cfg}: q={last['queries']} expl={last['expl']:.4f} "
              f"{last['expl_ci']} {summary['seconds_per_run']:.0f}s/run", flush=True)  # fmt: skip
    out = {"world": args.world, "protocol": args.protocol, "train_split": PROTOCOLS[args.protocol],
           "beta": judge.beta, "budget": args.budget, "seeds": args.seeds, "common": COMMON,
           "pi_ref": {"expl": float(ref[0].mean()), "kl": float(ref[1].mean())},
           "rows": rows}  # fmt: skip
    (RESULTS / f"text_nash_designs_{name_tag}.json").write_text(json.dumps(out))
    lines = [f"# Nash-MP designs (A), (B), (C) ({name_tag}: {_describe(out, name_tag)})", "",
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
                f"{_fmt(c['expl'], c['expl_ci'])} | {c['kl']:.4f} | {s['seconds_per_run']:.0f} |"
            )
    (RESULTS / f"text_nash_designs_{name_tag}.md").write_text("\n".join(lines) + "\n")


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
    commands = {"tune": cmd_tune, "h2h": cmd_h2h, "full": cmd_full, "report": cmd_report}
    commands["prox"] = cmd_prox
    commands["floor"] = cmd_floor
    commands["designs"] = cmd_designs
    commands[args.cmd](args)


if __name__ == "__main__":
    main()


__all__ = ["per_prompt", "run", "grid", "bootstrap", "ceiling", "cmd_designs", "main"]
