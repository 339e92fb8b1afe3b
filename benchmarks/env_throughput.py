"""Benchmarks of the matrix games (issue: foundation).

Measures, in one run on this machine:

1. env steps/s through the PettingZoo parallel API for ``nlhf/RPS-v0`` and for PettingZoo's own
   ``classic/rps_v2`` (the peer), with the same loop, actions and episode length; the ratio.
2. ``game.sample`` throughput (Bernoulli preference queries/s) for K = 100 on one core.
3. ``regularized_nash`` wall time for K in {100, 1000} (beta = 0.1 and 0.01), each solved from scratch.

Usage: ``python benchmarks/env_throughput.py [--quick] [--out benchmarks/results/env_throughput.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def steps_per_second(make_env, episode_len: int, total_steps: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` parallel-API steps/s with pre-drawn actions in ``[0, 3)``."""
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 3, size=(total_steps, 2))
    best = 0.0
    for _ in range(repeats):
        env = make_env()
        env.reset(seed=0)
        t0 = time.perf_counter()
        for i in range(total_steps):
            if not env.agents:
                env.reset()
            env.step({"player_0": int(acts[i, 0]), "player_1": int(acts[i, 1])})
        best = max(best, total_steps / (time.perf_counter() - t0))
    return best


def sample_throughput(K: int, n: int, repeats: int = 5) -> float:
    from nlhf_envs import make_game

    game = make_game("uniform", num_actions=K, seed=0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, n)
    yp = rng.integers(0, K, n)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        game.sample(y, yp, rng)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def solve_times(sizes=(100, 1000), betas=(0.1, 0.01)) -> list[tuple[int, float, float, float]]:
    from nlhf_envs import make_game
    from nlhf_envs.solvers import exploitability, regularized_nash

    out = []
    for K in sizes:
        for beta in betas:
            game = make_game("uniform", num_actions=K, beta=beta, seed=0)
            best = np.inf
            for _ in range(3):
                t0 = time.perf_counter()
                pi = regularized_nash(game, use_cache=False)
                best = min(best, time.perf_counter() - t0)
            out.append((K, beta, best, exploitability(game, pi)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--out", default="benchmarks/results/env_throughput.md")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import pettingzoo
    from pettingzoo.classic import rps_v2

    import nlhf_envs  # noqa: F401  (registers the ids)

    steps = 20_000 if args.quick else 200_000
    episode = 100
    ours = steps_per_second(
        lambda: pettingzoo.make("parallel", "nlhf/RPS-v0", num_rounds=episode), episode, steps
    )
    peer = steps_per_second(lambda: rps_v2.parallel_env(max_cycles=episode), episode, steps)
    n = 1_000_000 if args.quick else 10_000_000
    qps = sample_throughput(100, n)
    solves = solve_times()

    lines = [
        f"Machine: {_machine()}. Command: `python benchmarks/env_throughput.py`.",
        "",
        "| measurement | value |",
        "| --- | ---: |",
        f"| nlhf/RPS-v0 parallel steps/s | {ours:,.0f} |",
        f"| PettingZoo classic/rps_v2 parallel steps/s (peer, same run) | {peer:,.0f} |",
        f"| ratio ours / classic rps | {ours / peer:.2f}x |",
        f"| game.sample queries/s (K = 100, batch {n:,}, one core) | {qps:,.3g} |",
    ]
    for K, beta, sec, expl in solves:
        lines.append(
            f"| regularized_nash K = {K}, beta = {beta:g} (exploitability {expl:.1e}) | {sec * 1e3:.0f} ms |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
