"""Shared runners and statistics of ``benchmarks/text_nash.py``: the exact games of the tiny worlds
(:class:`Judge`), training one agent with exact evaluations (:func:`run`), the tuning grid, the
tabular ceiling and the bootstrap statistics (paired differences over (seed, prompt) cells).

Not a script: ``text_nash.py`` (argument parsing and the ``tune``/``h2h``/``full`` commands),
``text_nash_report.py`` (``report``) and ``text_nash_studies.py`` (``prox``, ``floor``,
``designs``) import it.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

import agents
from nlhf_envs.solvers import regularized_nash
from nlhf_envs.text.exact import exact_game, sequence_policy

WORLDS = {"plain": "nlhf/TinyTokenDuel-v0", "cyclic": "nlhf/TinyTokenDuel-Cyclic-v0"}
#: the default folder of the result files (``--results`` overrides it)
DEFAULT_RESULTS = Path(__file__).parent / "results"

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
    """Exact per-prompt exploitability and ``KL(pi* || pi)`` (``equations.md`` §2)."""
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


def update_json(
    path: Path, fn: Callable[[dict[str, Any]], None], indent: int | None = None
) -> None:
    """Read the JSON file ``path`` (``{}`` when absent), let ``fn`` change it in place and write it
    back atomically, all under an exclusive lock (``.<stem>.lock`` beside it): several benchmark
    processes append to one results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.stem}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {}
        fn(data)
        tmp = path.with_suffix(".tmp")
        separators = (",", ":") if indent is None else None  # compact: per-prompt arrays
        tmp.write_text(json.dumps(data, indent=indent, separators=separators))
        tmp.replace(path)


def read_result(results: Path, name: str) -> dict[str, Any]:
    """The result file ``text_nash_{name}.json`` of the folder ``results``; a missing one stops the
    command naming it."""
    path = results / f"text_nash_{name}.json"
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


def raw_cells(rs: list[dict[str, Any]]) -> dict[str, Any]:
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


def describe(d: dict[str, Any], t: str) -> str:
    """What a result file measures: the world's env id, beta and the training protocol."""
    world = d.get("world", t.split("_")[-1])
    protocol = d.get("protocol", "heldout")  # files written before protocols existed: held-out
    where = {
        "nash": "agents trained on all 32 prompts (the game's prompt distribution)",
        "heldout": "agents trained on the 24 train prompts only: test prompts unseen "
        "(generalisation, secondary)",
    }[protocol]
    return f"{WORLDS[world]}, beta = {d.get('beta', 0.1):g}; {where}"


def fmt_ci(x: float, ci: Any) -> str:
    """``x [lo, hi]`` with four decimals."""
    return f"{x:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"
