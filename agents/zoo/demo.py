"""``nlhf-zoo demo``: solve the built-in games, train the main agents on a default game (exact
oracle and sampled preferences), run a tournament, print the tables and write the plots."""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.arena.match import MAX_DUELS
from agents.zoo.common import (
    MAX_SEED,
    _check_count,
    _check_folder,
    read_metrics_csv,
)
from agents.zoo.plotting import plot_runs
from agents.zoo.train import train_run

DEMO_ENV = "nlhf/UniformGame-v0"
DEMO_AGENTS = ("nash_mp", "online_ipo", "nash_md", "mmd", "sppo")


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
        m = agent.evaluate()  # the final state (the history is logged on a log-spaced cadence)
        rows.append(
            f"| {name} | {agent.queries_used:,} | {m['game/exploitability']:.2e} | "
            f"{m['game/kl_to_nash']:.2e} | {m['policy/entropy']:.3f} |"
        )
    return trained, runs, "\n".join(rows)


def cmd_demo(args: argparse.Namespace) -> int:
    """``nlhf-zoo demo``: print the tables of the main job and write its plots and runs under
    ``args.output_dir``; ``0``."""
    import numpy as np

    from agents import arena
    from nlhf_envs.catalog import format_table, solve_table

    t0 = time.perf_counter()
    out = Path(args.output_dir)
    progress = not args.no_progress
    # every argument is checked before the first minute of training
    _check_count("--exact-queries", args.exact_queries, 1)
    _check_count("--num-queries", args.num_queries, 1)
    _check_count("--n-duels", args.n_duels, 1, MAX_DUELS)
    _check_count("--seed", args.seed, 0, MAX_SEED)
    _check_folder("--output-dir", out)
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
        warnings.simplefilter("ignore", arena.IntransitivityWarning)
        result = arena.run(
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
    print(f"\n{_ranking_note(result.names, result.exploitability, best)}")
    print(
        f"\nPlots: {plot_exact}, {plot_sampled}, "
        f"{out / 'tournament' / 'heatmap.png'}. Runs (metrics.csv, checkpoints, TensorBoard): "
        f"{out / 'logs'}. Total time {time.perf_counter() - t0:.0f} s."
    )
    return 0


def _ranking_note(names: Sequence[str], exploitability: Sequence[float | None], best: str) -> str:
    """What the tournament's top participant is, next to the least exploitable one, and why the
    two rankings differ."""
    known = {n: e for n, e in zip(names, exploitability, strict=True) if e is not None}
    head = f"Top Nash-averaged participant: {best}"
    if best not in known:
        return head + "."
    least = min(known, key=lambda n: known[n])
    head += f" (exploitability {known[best]:.2e})"
    if least != best:
        head += f"; the least exploitable is {least} ({known[least]:.2e})"
    return (
        f"{head}. The two rankings answer different questions: Nash averaging ranks by the "
        "unregularised duels among these participants (the support of the meta-game's "
        "maximum-entropy Nash equilibrium); exploitability is what the best response of the "
        "beta-regularised game gains against a participant (zero only at its equilibrium "
        "pi*_beta). SPPO has no pi_ref anchor: it heads for the unregularised game and can win "
        "these duels while far from pi*_beta."
    )


def _br(game: Any) -> Any:
    """The (regularised) best response to pi_ref: strong against pi_ref, exploitable itself."""
    from nlhf_envs.solvers import best_response

    return best_response(game, game.pi_ref)
