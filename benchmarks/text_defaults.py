"""Do the token agents' library defaults improve on ``pi_ref``? (issues 23 and 32)

Every token agent (``agents.available("text")`` without the SB3 wrapper) is built with
``agents.make(agent, env_id, seed=s)`` and nothing else (the library defaults, not the zoo's
settings), trained for ``--budget`` preference queries (default 50,000) on every registered
enumerable token env, and scored exactly (:func:`nlhf_envs.text.exact.exact_metrics`) on the report
splits of the protocol (``docs/nash-metrics.md``). On the 256-prompt worlds, whose prompt sets have
the class split (:meth:`nlhf_envs.text.prompts.PromptSet.class_split`), the agent trains on
``seen_train`` (the only env argument set) and is scored on the prompts it trained on
(optimisation), on unseen wording (``seen_heldout``) and on unseen classes (``unseen_heldout``); on
the 32-prompt worlds it trains on ``train`` and is scored on ``train`` and on the unseen
``heldout`` prompts. ``pi_ref``'s exploitability on the same prompts is the bar: a default that
ends above it made the policy worse.

Results: ``benchmarks/results/text_defaults.json`` (one record per run, with the full config used)
and ``text_defaults.md`` (the table). ``report`` refuses a results file whose configs are no longer
the library defaults (the table would describe other settings).

Run from the repository root (one process per env shares its exact games; two processes use the
two cores)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_defaults.py run --envs nlhf/TinyTokenDuel-v0
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/text_defaults.py report
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
from agents.config import config_to_dict
from nlhf_envs.env_ids import TEXT_ENV_IDS
from nlhf_envs.solvers import exploitability
from nlhf_envs.text.exact import MAX_ANSWERS, enumerate_answers, exact_game, exact_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules of this script
from text_nash_core import update_json  # noqa: E402

RESULTS = Path(__file__).parent / "results"
#: report column -> prompt split, per protocol: the class split (worlds that have it) and the
#: fixed split (the 32-prompt worlds)
PROTOCOLS: dict[str, dict[str, str]] = {
    "classes": {"trained": "seen_train", "wording": "seen_heldout", "classes": "unseen_heldout"},
    "fixed": {"trained": "train", "wording": "heldout"},
}
#: every report column, in table order
COLUMNS = ("trained", "wording", "classes")


def protocol_of(env_id: str) -> str:
    """``"classes"`` for the worlds made for generalisation (a validation split: the 256-prompt
    worlds) whose prompt set has the class split, else ``"fixed"`` (the 32-prompt worlds, whose
    class split would leave 11 prompts to train on)."""
    from nlhf_envs.text.world import get_world

    prompts = get_world(TEXT_ENV_IDS[env_id]["world"]).prompts
    ok = prompts.has_split("validation") and prompts.has_split("unseen_heldout")
    return "classes" if ok else "fixed"


def enumerable_env_ids() -> list[str]:
    """Registered token-duel ids whose answers can be enumerated (exact Nash metrics)."""
    out = []
    for env_id in TEXT_ENV_IDS:
        try:
            if len(enumerate_answers(env_id)) <= MAX_ANSWERS:
                out.append(env_id)
        except ValueError:  # too large to enumerate
            continue
    return out


def token_agents() -> list[str]:
    """Registered token agents trained by this library's losses (the SB3 wrapper excluded)."""
    return [a for a in agents.available("text") if not a.startswith("sb3_")]


def run_one(
    agent: str, env_id: str, seed: int, budget: int, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train ``agent`` with the library defaults (and ``params``) and score it on both splits."""
    t0 = time.perf_counter()
    protocol = protocol_of(env_id)
    kwargs = {"prompt_split": PROTOCOLS[protocol]["trained"]} if protocol == "classes" else None
    ag = agents.make(agent, env_id, seed=seed, env_kwargs=kwargs, **(params or {}))
    ag.learn(num_queries=budget)
    rec: dict[str, Any] = {
        "agent": agent,
        "env": env_id,
        "seed": seed,
        "budget": budget,
        "protocol": protocol,
        "queries": int(ag.queries_used),
        "config": config_to_dict(ag.config),
        "params": dict(params or {}),
        "seconds": time.perf_counter() - t0,
    }
    for col, split in PROTOCOLS[protocol].items():
        game = exact_game(ag.env, split)
        m = exact_metrics(ag.model, game, ag.env, split)
        rec[col] = {
            "exploitability": m["exploitability"],
            "kl_ref": m["kl_ref"],
            "ref_exploitability": exploitability(game, game.pi_ref),
            "prompts": int(game.P.shape[0]),
        }
    return rec


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def _store(path: Path, rec: dict[str, Any]) -> None:
    """Add ``rec`` to the results file (replacing a run with its key), under the file's lock: two
    processes (one per env) share it."""
    key = (rec["agent"], rec["env"], rec["seed"], rec["budget"])

    def add(data: dict[str, Any]) -> None:
        runs = data.get("runs", [])
        data["runs"] = [
            r for r in runs if (r["agent"], r["env"], r["seed"], r["budget"]) != key
        ] + [rec]

    update_json(path, add, indent=1)


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    params = json.loads(args.params) if args.params else {}
    path = Path(args.results) / "text_defaults.json"
    envs = args.envs.split(",") if args.envs else enumerable_env_ids()
    names = args.agents.split(",") if args.agents else token_agents()
    for env_id in envs:
        for agent in names:
            for seed in range(args.seeds):
                rec = run_one(agent, env_id, seed, args.budget, params)
                _store(path, rec)
                print(
                    f"{env_id} {agent} seed {seed}: "
                    + ", ".join(
                        f"{c} {rec[c]['exploitability']:.4f} (pi_ref {rec[c]['ref_exploitability']:.4f})"
                        for c in COLUMNS
                        if c in rec
                    )
                    + f" [{rec['seconds']:.0f} s]",
                    flush=True,
                )


#: config fields that only say how one run is laid out over processes (``distributed``: DDP or
#: FSDP under several processes); a single-process run's results do not depend on them, so a run
#: recorded before such a field existed still has today's defaults
LAYOUT_FIELDS = frozenset({"distributed"})


def same_defaults(recorded: dict[str, Any], today: dict[str, Any]) -> bool:
    """Whether a run's recorded config is today's defaults (fields of :data:`LAYOUT_FIELDS`
    missing from the record are allowed)."""
    return recorded == {k: v for k, v in today.items() if k in recorded or k not in LAYOUT_FIELDS}


def defaults_of(agent: str, env_id: str) -> dict[str, Any]:
    """The config ``agents.make(agent, env_id)`` builds today (no training)."""
    cls = agents.config_class(agent, "text")
    return config_to_dict(cls())


def table(runs: list[dict[str, Any]], budget: int) -> str:
    """The markdown table of the runs at ``budget``."""
    rows = [
        "| env | agent | seeds | trained prompts: exploitability (pi_ref) | unseen wording: "
        "exploitability (pi_ref) | unseen classes: exploitability (pi_ref) | KL(pi, pi_ref) "
        "unseen wording | improves on all |",
        "|---|---|---:|---|---|---|---:|---|",
    ]
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        if r["budget"] == budget:
            cells.setdefault((r["env"], r["agent"]), []).append(r)
    for (env_id, agent), rs in sorted(cells.items()):
        cols = [c for c in COLUMNS if c in rs[0]]
        parts = []
        for c in COLUMNS:
            if c not in cols:
                parts.append("-")
                continue
            v = np.array([r[c]["exploitability"] for r in rs])
            ref = rs[0][c]["ref_exploitability"]
            parts.append(f"{v.mean():.4f} [{v.min():.4f}, {v.max():.4f}] ({ref:.4f})")
        kl = np.mean([r["wording"]["kl_ref"] for r in rs])
        ok = sum(all(r[c]["exploitability"] < r[c]["ref_exploitability"] for c in cols) for r in rs)
        rows.append(
            f"| `{env_id}` | `{agent}` | {len(rs)} | " + " | ".join(parts) + f" | {kl:.3f} | "
            f"{'yes' if ok == len(rs) else 'NO'} ({ok}/{len(rs)}) |"
        )
    return "\n".join(rows)


def cmd_report(args: argparse.Namespace) -> None:
    path = Path(args.results) / "text_defaults.json"
    runs = [r for r in _load(path) if r["budget"] == args.budget]
    if not runs:
        sys.exit(f"no runs at budget {args.budget} in {path.name}")
    old = sorted(
        {(r["agent"], r["env"]) for r in runs if r.get("protocol") != protocol_of(r["env"])}
    )
    if old:
        sys.exit(
            f"{path.name}: runs of {old} were made under another protocol (before the class "
            "split); rerun them (`run --envs ... --agents ...`)"
        )
    stale = sorted(
        {
            (r["agent"], r["env"])
            for r in runs
            if r["params"] or not same_defaults(r["config"], defaults_of(r["agent"], r["env"]))
        }
    )
    if stale:
        sys.exit(
            f"{path.name}: runs of {stale} were not made with today's library defaults; rerun them "
            "(`run --envs ... --agents ...`)"
        )
    text = (
        "# Library defaults against pi_ref (`benchmarks/text_defaults.py`)\n\n"
        f"`agents.make(agent, env_id, seed=s)` with nothing else, {args.budget:,} preference queries, "
        "exact exploitability of the last iterate (mean [min, max] over seeds) on the prompts trained "
        "on, on unseen wording and on unseen classes, against `pi_ref` on the same prompts. The "
        "256-prompt worlds train on the classes trained on (`seen_train`, their only env argument) "
        "and report unseen wording (`seen_heldout`) and unseen classes (`unseen_heldout`); the "
        "32-prompt worlds train on `train` and report unseen wording on `heldout` (they have no "
        "class split).\n\n"
        "<!-- --8<-- [start:table] -->\n"
        f"{table(runs, args.budget)}\n"
        "<!-- --8<-- [end:table] -->\n"
    )
    (Path(args.results) / "text_defaults.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(RESULTS), help="results folder")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and score (appends to text_defaults.json)")
    r.add_argument("--envs", default="", help="comma-separated env ids (default: all enumerable)")
    r.add_argument(
        "--agents", default="", help="comma-separated agents (default: all token agents)"
    )
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--budget", type=int, default=50_000)
    r.add_argument("--params", default="", help="JSON config overrides (not the defaults then)")
    rep = sub.add_parser("report", help="text_defaults.md from text_defaults.json")
    rep.add_argument("--budget", type=int, default=50_000)
    args = p.parse_args(argv)
    {"run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
