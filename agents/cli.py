"""The ``nlhf-zoo`` command-line tool (rl-baselines3-zoo style).

Subcommands:

* ``list``: registered environment ids, game families, agents and zoo configs;
* ``train --agent A --env ID [--params k:v ...] [--seed] [--device] [--log-folder] [--tensorboard-log]``:
  trains from ``zoo_configs/<agent>.yml`` into ``<log-folder>/<agent>/<EnvName>_<n>/`` (resolved
  ``config.yml``, ``args.yml``, ``checkpoints/``, ``final.npz``, ``metrics.csv``, TensorBoard events);
* ``eval``: a saved agent against ``pi_ref`` (or another saved agent): win rate with a 95% interval,
  exact exploitability on matrix games;
* ``tournament``: round robin among participants (saved agents, train runs, ``pi_ref``, ``uniform``,
  ``zoo:AGENT`` trained on the spot), optionally on Ray (``--ray [--address]``);
* ``plot``: a metric against preference queries for the runs of a log folder;
* ``convergence``: the convergence study of the tabular agents (:mod:`agents.convergence`);
* ``demo``: the README's main job: solve the built-in games, train the main agents on a default
  game, run a tournament, print the tables and write the plots.

A user's mistake (unknown agent or id, a config typo, a missing file) prints one line
``nlhf-zoo: error: ...`` on stderr and exits with status 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from nlhf_envs.atomic import atomic_open, atomic_write_text

__all__ = ["main", "build_parser", "UserError", "train_run"]

DEMO_ENV = "nlhf/UniformGame-v0"
DEMO_AGENTS = ("nash_mp", "online_ipo", "nash_md", "mmd", "sppo")


class UserError(Exception):
    """A mistake in the command line: reported as one line, without a traceback."""


# ---------------------------------------------------------------------------------- helpers
def env_folder_name(env_id: str) -> str:
    """``nlhf/RPS-v0`` -> ``RPS-v0`` (the run folder's prefix); other ``/`` become ``_``."""
    name = env_id[5:] if env_id.startswith("nlhf/") else env_id
    return name.replace("/", "_")


def next_run_dir(root: str | os.PathLike[str], prefix: str) -> Path:
    """``root/prefix_<n>`` with ``n`` one more than the largest existing (rl-zoo numbering)."""
    root = Path(root)
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)$")
    largest = 0
    if root.is_dir():
        for entry in root.iterdir():
            m = pattern.match(entry.name)
            if m:
                largest = max(largest, int(m.group(1)))
    return root / f"{prefix}_{largest + 1}"


def write_metrics_csv(path: Path, history: Sequence[dict[str, float]]) -> None:
    """Write an agent's ``history`` as CSV (one row per logged iteration), atomically."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def read_metrics_csv(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """Columns of a ``metrics.csv`` as float lists."""
    cols: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                cols.setdefault(k, []).append(float(v) if v not in ("", None) else float("nan"))
    return cols


def _progress(total: int | None, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


# ---------------------------------------------------------------------------------- train
def train_run(
    agent_name: str,
    env_id: str,
    *,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | None = None,
    log_folder: str | os.PathLike[str] = "logs",
    tensorboard_log: str | os.PathLike[str] | None = None,
    num_queries: int | None = None,
    save_freq: int = 0,
    config_dir: str | None = None,
    progress: bool = True,
    args_record: dict[str, Any] | None = None,
) -> tuple[Any, Path]:
    """Train ``agent_name`` on ``env_id`` from the zoo config; returns ``(agent, run_dir)``.

    The run folder ``<log_folder>/<agent>/<EnvName>_<n>/`` receives ``config.yml`` (the resolved
    entry), ``args.yml``, ``checkpoints/<agent>_<queries>_queries.npz`` every ``save_freq``
    iterations, ``final.npz`` at the end (also on Ctrl-C), ``metrics.csv`` and TensorBoard events
    (``tb/``, unless ``tensorboard_log`` points elsewhere).
    """
    import agents
    from agents import zoo

    params = dict(params or {})
    if device is not None:
        kind = "text" if env_id in _text_ids() else "matrix"
        fields = {f.name for f in dataclasses.fields(agents.config_class(agent_name, kind))}
        if "device" in fields:
            params.setdefault("device", device)
        elif device != "cpu":
            raise UserError(f"{agent_name} on {env_id} is a numpy agent: it runs on the CPU only")
    entry = zoo.resolve(agent_name, env_id, config_dir=config_dir, params=params)
    budget_q = num_queries if num_queries is not None else entry.num_queries
    budget_i = entry.num_iterations
    if budget_q is None and budget_i is None:
        raise UserError(
            f"no training budget for {agent_name} on {env_id}: set num_queries in "
            f"zoo_configs/{agent_name}.yml or pass --num-queries"
        )
    run_dir = next_run_dir(Path(log_folder) / agent_name, env_folder_name(env_id))
    run_dir.mkdir(parents=True)
    tb = tensorboard_log if tensorboard_log is not None else run_dir / "tb"
    atomic_write_text(run_dir / "config.yml", yaml.safe_dump(entry.to_dict(), sort_keys=False))
    atomic_write_text(
        run_dir / "args.yml",
        yaml.safe_dump(
            args_record
            or {
                "agent": agent_name,
                "env": env_id,
                "seed": seed,
                "params": params,
                "device": device,
            },
            sort_keys=False,
        ),
    )
    target: Any = env_id
    agent = agents.make(
        agent_name,
        target,
        seed=seed,
        tensorboard_log=os.fspath(tb),
        env_kwargs=entry.env_kwargs or None,
        **_config_kwargs(entry.config),
    )
    ckpt_dir = run_dir / "checkpoints"
    bar = _progress(budget_q or budget_i, f"train {agent_name}", progress)
    last = [0]

    def callback(a: Any) -> bool:
        done = a.queries_used if budget_q is not None else a.num_iterations
        bar.update(done - last[0])
        last[0] = done
        if save_freq and a.num_iterations % save_freq == 0:
            ckpt_dir.mkdir(exist_ok=True)
            a.save(ckpt_dir / f"{agent_name}_{a.queries_used}_queries.npz")
        return True

    try:
        agent.learn(num_queries=budget_q, num_iterations=budget_i, callback=callback)
    finally:
        bar.close()
        agent.save(run_dir / "final.npz")
        write_metrics_csv(run_dir / "metrics.csv", agent.history)
    return agent, run_dir


def _text_ids() -> list[str]:
    from nlhf_envs.registration import TEXT_ENV_IDS

    return list(TEXT_ENV_IDS)


def _config_kwargs(config: Any) -> dict[str, Any]:
    from agents.config import config_to_dict

    return config_to_dict(config)


def _cmd_train(args: argparse.Namespace) -> int:
    from agents import zoo

    params = zoo.parse_params(args.params)
    agent, run_dir = train_run(
        args.agent,
        args.env,
        params=params,
        seed=args.seed,
        device=args.device,
        log_folder=args.log_folder,
        tensorboard_log=args.tensorboard_log,
        num_queries=args.num_queries,
        save_freq=args.save_freq,
        config_dir=args.conf_dir,
        progress=not args.no_progress,
        args_record=vars(args) | {"func": None},
    )
    last = agent.history[-1] if agent.history else {}
    print(f"trained {args.agent} on {args.env}: {agent.queries_used} queries -> {run_dir}")
    for key in ("game/exploitability", "game/kl_to_nash", "policy/entropy"):
        if key in last:
            print(f"  {key} = {last[key]:.6g}")
    return 0


# ---------------------------------------------------------------------------------- eval / tournament
def _resolve_participant(spec: str, env_id: str, args: argparse.Namespace) -> tuple[str, Any]:
    """``name=spec`` or ``spec`` -> ``(name, object)`` for the tournament runner."""
    name, sep, value = spec.partition("=")
    if not sep:
        name, value = "", spec
    if value in ("pi_ref", "uniform"):
        return name or value, value
    if value.startswith("zoo:"):
        agent_name = value[4:]
        agent, _ = train_run(
            agent_name,
            env_id,
            seed=args.seed,
            log_folder=args.log_folder,
            num_queries=getattr(args, "train_queries", None),
            progress=not args.no_progress,
        )
        return name or agent_name, agent
    path = Path(value)
    if path.is_dir() and (path / "final.npz").exists():
        path = path / "final.npz"
    if not path.exists():
        raise UserError(
            f"participant {spec!r}: expected pi_ref, uniform, zoo:AGENT, a checkpoint file or a "
            "train run folder"
        )
    import agents

    try:
        loaded = agents.load(path)
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    return name or getattr(loaded, "name", "") or path.stem, loaded


def _unique_names(parts: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Number repeated default names (``nash_mp``, ``nash_mp#2``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for name, obj in parts:
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", obj))
    return out


def _env_kwargs_for(participants: list[tuple[str, Any]], env_id: str, extra: dict) -> dict:
    """Use a loaded agent's own game (so the tournament plays the game it was trained on)."""
    from nlhf_envs.registration import MATRIX_ENV_IDS

    if extra or env_id not in MATRIX_ENV_IDS:
        return extra
    for _, obj in participants:
        game = getattr(obj, "game", None)
        if game is not None:
            return {"game": game}
    return extra


def _cmd_tournament(args: argparse.Namespace) -> int:
    from agents import tournament, zoo

    env_kwargs = zoo.parse_params(args.env_kwargs)
    parts = _unique_names([_resolve_participant(s, args.env, args) for s in args.participants])
    env_kwargs = _env_kwargs_for(parts, args.env, env_kwargs)
    out = (
        Path(args.output_dir)
        if args.output_dir
        else next_run_dir(Path(args.log_folder) / "tournaments", env_folder_name(args.env))
    )
    n = len(parts)
    bar = _progress(n * (n - 1) // 2, "tournament", not args.no_progress)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", tournament.IntransitivityWarning)
        result = tournament.run(
            parts,
            args.env,
            env_kwargs=env_kwargs,
            num_duels=args.n_duels,
            seed=args.seed,
            out_dir=out,
            resume=not args.no_resume,
            use_ray=args.ray,
            ray_address=args.address,
            on_match=lambda r: bar.update(1),
        )
    bar.close()
    print(result.to_markdown())
    for w in caught:
        if issubclass(w.category, tournament.IntransitivityWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"\nwritten to {out}/ (tournament.md, win_rates.csv, tournament.json, heatmap.png)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from agents import tournament

    me = _resolve_participant(f"agent={args.agent_path}", args.env or "", args)
    if getattr(me[1], "kind", "") == "text":
        _print_text_eval(me[1], args)
        if args.opponent == "pi_ref":
            return 0
    env_id = args.env or _env_id_of(me[1])
    opp = _resolve_participant(f"opponent={args.opponent}", env_id, args)
    env_kwargs = _env_kwargs_for([me, opp], env_id, {})
    result = tournament.run(
        [me, opp], env_id, env_kwargs=env_kwargs, num_duels=args.n_duels, seed=args.seed
    )
    lo, hi = result.ci_low[0, 1], result.ci_high[0, 1]
    print(
        f"win rate of {args.agent_path} vs {args.opponent} on {env_id}: "
        f"{result.win_rate[0, 1]:.4f} (95% CI [{lo:.4f}, {hi:.4f}], {args.n_duels} duels)"
    )
    if result.exploitability[0] is not None:
        print(f"exact exploitability Expl_beta = {result.exploitability[0]:.6g}")
    return 0


def _print_text_eval(agent: Any, args: argparse.Namespace) -> None:
    """Win rates against pi_ref (judge and ground truth) and the Nash metrics of a token agent."""
    m = agent.evaluate(num_prompts=args.n_duels)
    env_id = _env_id_of(agent)
    exact = agent.enumerable() and agent.config.nash_eval in ("auto", "exact")
    print(
        f"{args.agent_path} vs pi_ref on {env_id} ({args.n_duels} held-out prompts): win rate "
        f"{m['eval/win_rate_ref_judge']:.4f} under the judge, {m['eval/win_rate_ref_true']:.4f} "
        f"under the ground truth; KL(pi || pi_ref) = {m['eval/kl_ref']:.4f}"
    )
    if "eval/exploitability" in m:
        how = "exact" if exact else "estimated"
        ci = (
            f" (95% CI [{m['eval/exploitability_low']:.4f}, {m['eval/exploitability_high']:.4f}])"
            if "eval/exploitability_low" in m
            else ""
        )
        print(
            f"{how} Nash metrics (beta = {agent.beta:g}): exploitability "
            f"{m['eval/exploitability']:.6g}{ci}, KL(pi* || pi) = {m['eval/kl_to_nash']:.6g}"
        )


def _env_id_of(agent: Any) -> str:
    if getattr(agent, "kind", "matrix") == "text":
        return getattr(agent.env, "env_id", None) or "nlhf/TokenDuel-v0"
    return "nlhf/MatrixGame-v0"


# ---------------------------------------------------------------------------------- plot
def plot_runs(
    runs: Sequence[tuple[str, str | os.PathLike[str]]],
    out: str | os.PathLike[str],
    metric: str = "game/exploitability",
    title: str | None = None,
    bound: Callable[[Any], Any] | None = None,
) -> str:
    """Plot ``metric`` against ``game/queries`` (log y) for ``[(label, metrics.csv path), ...]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, path in runs:
        cols = read_metrics_csv(path)
        if metric not in cols:
            raise UserError(f"{path} has no column {metric!r}; columns: {', '.join(cols)}")
        y = np.maximum(np.asarray(cols[metric]), 1e-16)
        ax.plot(cols["game/queries"], y, label=label)
    if bound is not None:
        xs = np.linspace(0, ax.get_xlim()[1], 200)
        ax.plot(xs, bound(xs), "k--", label="theory bound")
    ax.set_yscale("log")
    ax.set_xlabel("preference queries")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return os.fspath(out)


def _cmd_plot(args: argparse.Namespace) -> int:
    root = Path(args.log_folder)
    prefix = env_folder_name(args.env)
    runs = []
    agent_dirs = [root / a for a in args.agents] if args.agents else sorted(root.glob("*"))
    for adir in agent_dirs:
        for run in sorted(adir.glob(f"{prefix}_*")):
            if (run / "metrics.csv").exists():
                runs.append((f"{adir.name}/{run.name}", run / "metrics.csv"))
    if not runs:
        raise UserError(f"no runs with metrics.csv for {args.env} under {root}")
    out = args.out or root / f"{prefix}_{args.metric.replace('/', '_')}.png"
    print(plot_runs(runs, out, args.metric, title=f"{args.metric} on {args.env}"))
    return 0


# ---------------------------------------------------------------------------------- list / demo
def _cmd_list(args: argparse.Namespace) -> int:
    import nlhf_envs
    from agents import zoo

    print("Environment ids (pettingzoo.make('parallel' | 'aec', ID)):")
    for env_id in nlhf_envs.registered_ids():
        print(f"  {env_id}")
    print("Game families (nlhf_envs.make_game):")
    print("  " + ", ".join(nlhf_envs.FAMILIES))
    import agents

    print("Agents (agents.make):")
    for kind in ("matrix", "text"):
        names = agents.available(kind)
        if names:
            print(f"  {kind}: " + ", ".join(names))
    folder = Path(args.conf_dir) if args.conf_dir else zoo.default_config_dir()
    print(f"Zoo configs ({folder}):")
    for path in sorted(folder.glob("*.yml")):
        entries = [k for k in zoo.load_yaml(path) if k != "default"]
        print(f"  {path.stem}: default, " + ", ".join(entries))
    return 0


def _train_table(
    names: Sequence[str], mode: str, budget: int, out: Path, seed: int, progress: bool
) -> tuple[list[tuple[str, Any]], list[tuple[str, Path]], str]:
    """Train each agent on the demo game in ``mode`` with the same query budget."""
    rows = [
        "| agent | queries | exploitability | KL(pi* \\|\\| pi) | entropy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    trained, runs = [], []
    for name in names:
        agent, run_dir = train_run(
            name,
            DEMO_ENV,
            params={"mode": mode},
            seed=seed,
            log_folder=out / "logs" / mode,
            num_queries=budget,
            progress=progress,
        )
        trained.append((name, agent))
        runs.append((name, run_dir / "metrics.csv"))
        m = agent.history[-1]
        rows.append(
            f"| {name} | {agent.queries_used:,} | {m['game/exploitability']:.2e} | "
            f"{m['game/kl_to_nash']:.2e} | {m['policy/entropy']:.3f} |"
        )
    return trained, runs, "\n".join(rows)


def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from agents import tournament
    from nlhf_envs.catalog import format_table, solve_table

    t0 = time.perf_counter()
    out = Path(args.output_dir)
    progress = not args.no_progress
    print("1. Built-in preference games, solved exactly (beta = 0.1, pi_ref uniform):\n")
    print(format_table(solve_table()))

    print(
        f"\n2. Exact win-rate oracle: {', '.join(DEMO_AGENTS)} on {DEMO_ENV} (K = 10, beta = 0.1), "
        f"{args.exact_queries} preference queries each, theory step sizes. Nash-MP's last iterate "
        "converges linearly, KL <= (1 + 2 beta)^(-N/2) KL_0:\n"
    )
    _, exact_runs, table = _train_table(
        DEMO_AGENTS, "exact", args.exact_queries, out, args.seed, progress
    )
    print(table)
    beta = 0.1
    kl0 = read_metrics_csv(exact_runs[0][1])["game/kl_to_nash"][0]
    plot_exact = plot_runs(
        exact_runs,
        out / "kl_exact.png",
        "game/kl_to_nash",
        title=f"KL(pi* || pi) vs queries on {DEMO_ENV} (exact oracle)",
        bound=lambda q: kl0 * (1 + 2 * beta) ** (-(q - 2) / 2),
    )

    print(
        f"\n3. Sampled preferences only (Bernoulli outcomes, batches of 256): "
        f"{args.num_queries:,} queries each. Constant-step methods stop at a noise floor; "
        "Nash-MD's decreasing step keeps averaging the noise:\n"
    )
    trained, runs, table = _train_table(
        DEMO_AGENTS, "sampled", args.num_queries, out, args.seed, progress
    )
    print(table)
    plot_sampled = plot_runs(
        runs,
        out / "exploitability_sampled.png",
        "game/exploitability",
        title=f"exploitability vs queries on {DEMO_ENV} (sampled)",
    )
    game = trained[0][1].game
    print(
        f"\n4. Round-robin tournament of the sampled-mode agents, pi_ref, uniform and the best "
        f"response to pi_ref ({args.n_duels} duels per pair):\n"
    )
    parts = [*trained, ("pi_ref", "pi_ref"), ("uniform", "uniform"), ("br_to_ref", _br(game))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tournament.IntransitivityWarning)
        result = tournament.run(
            parts,
            DEMO_ENV,
            env_kwargs={"game": game},
            num_duels=args.n_duels,
            seed=args.seed,
            out_dir=out / "tournament",
            resume=False,
        )
    print(result.to_markdown())
    best = result.names[int(np.argmax(result.nash_score))]
    print(
        f"\nTop Nash-averaged participant: {best}. Plots: {plot_exact}, {plot_sampled}, "
        f"{out / 'tournament' / 'heatmap.png'}. Runs (metrics.csv, checkpoints, TensorBoard): "
        f"{out / 'logs'}. Total time {time.perf_counter() - t0:.0f} s."
    )
    return 0


def _br(game: Any) -> Any:
    """The (regularised) best response to pi_ref: strong against pi_ref, exploitable itself."""
    from nlhf_envs.solvers import best_response

    return best_response(game, game.pi_ref)


def _cmd_convergence(args: argparse.Namespace) -> int:
    from agents.convergence import main as study_main

    return study_main(args.study_args)


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nlhf-zoo`` (one subparser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog="nlhf-zoo",
        description="Nash learning from human feedback: games, agents, tournaments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, fn: Callable[[argparse.Namespace], int]):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    p = add("list", "list environment ids, game families, agents and zoo configs", _cmd_list)
    p.add_argument("--conf-dir", default=None, help="folder of the zoo YAML files")

    p = add("train", "train an agent from its zoo config", _cmd_train)
    p.add_argument("--agent", required=True, help="agent name (see `nlhf-zoo list`)")
    p.add_argument("--env", required=True, help="environment id, e.g. nlhf/RPS-v0")
    p.add_argument("--params", nargs="*", default=[], metavar="KEY:VALUE", help="config overrides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device for neural agents (cpu, cuda)")
    p.add_argument("--log-folder", default="logs", help="root of the run folders (default: logs)")
    p.add_argument("--tensorboard-log", default=None, help="TensorBoard folder (default: <run>/tb)")
    p.add_argument("--num-queries", type=int, default=None, help="override the query budget")
    p.add_argument(
        "--save-freq", type=int, default=0, help="checkpoint every N iterations (0: off)"
    )
    p.add_argument("--conf-dir", default=None, help="folder of the zoo YAML files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add("eval", "evaluate a saved agent against pi_ref or another agent", _cmd_eval)
    p.add_argument("agent_path", help="checkpoint file or train run folder")
    p.add_argument(
        "--opponent", default="pi_ref", help="pi_ref, uniform or a checkpoint/run folder"
    )
    p.add_argument("--env", default=None, help="environment id (default: the agent's own game)")
    p.add_argument("--n-duels", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--no-progress", action="store_true")

    p = add("tournament", "round-robin tournament among participants", _cmd_tournament)
    p.add_argument(
        "participants",
        nargs="+",
        metavar="[NAME=]SPEC",
        help="pi_ref, uniform, zoo:AGENT (trained now), a checkpoint file or a train run folder",
    )
    p.add_argument("--env", default="nlhf/RPS-v0", help="environment id")
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    p.add_argument("--n-duels", type=int, default=500, help="duels per pair")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-queries", type=int, default=None, help="budget of zoo:AGENT entries")
    p.add_argument("--output-dir", default=None, help="default: <log-folder>/tournaments/<Env>_<n>")
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--no-resume", action="store_true", help="replay matches already in output-dir")
    p.add_argument("--ray", action="store_true", help="distribute matches over a Ray cluster")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local cluster)")
    p.add_argument("--no-progress", action="store_true")

    p = add(
        "plot", "plot a metric against preference queries for the runs of a log folder", _cmd_plot
    )
    p.add_argument("--env", required=True)
    p.add_argument("--log-folder", default="logs")
    p.add_argument("--agents", nargs="*", default=None)
    p.add_argument("--metric", default="game/exploitability")
    p.add_argument(
        "--out", default=None, help="PNG path (default: <log-folder>/<Env>_<metric>.png)"
    )

    p = add(
        "convergence",
        "the convergence study: queries to reach pi*_beta per agent (`convergence --help`)",
        _cmd_convergence,
    )
    p.add_argument("study_args", nargs=argparse.REMAINDER, help="options of the study")

    p = add("demo", "the main job: solve games, train the main agents, run a tournament", _cmd_demo)
    p.add_argument("--exact-queries", type=int, default=300, help="budget per agent, exact oracle")
    p.add_argument("--num-queries", type=int, default=1_000_000, help="budget per agent, sampled")
    p.add_argument("--n-duels", type=int, default=2000, help="duels per pair in the tournament")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="demo_output")
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nlhf-zoo`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convergence"]:  # the study parses its own options (and --help)
        args = argparse.Namespace(func=_cmd_convergence, study_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from agents.checkpoint import CheckpointError
    from agents.config import ConfigError
    from nlhf_envs.game import GameValidationError

    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError, CheckpointError, GameValidationError) as exc:
        print(f"nlhf-zoo: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # unknown agent / env id and other bad values from the library
        print(f"nlhf-zoo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nlhf-zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
