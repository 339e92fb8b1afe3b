"""Speed of an exact Nash-MP iteration against its limit, two bare ``P @ pi`` products.

An exact Nash-MP iteration needs two win-rate vectors ``g = P @ pi`` (one per half-step); everything
else is O(K). For each ``K`` this script times, in the same process and interleaved (best of
``--repeats`` rounds, so that both see the same machine load):

* ``agent``: ``NashMP.learn(num_iterations=n)`` with metrics off (``log_every=0``);
* ``limit``: ``2 n`` bare products ``P[0] @ pi`` on the same float64 arrays (with ``--contexts C``,
  ``2 n`` batched products ``np.matmul(P, pi[..., None])`` over the ``C`` contexts);

and reports iterations/s and the ratio ``agent time / limit time`` (1.0 = no overhead).

Run ``python benchmarks/agent_speed.py`` (``--sizes 100 1000 --iterations 200``). :func:`main`
takes ``argv``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import agents
from nlhf_envs import make_game

__all__ = ["main", "measure"]


def measure(K: int, iterations: int, repeats: int, contexts: int = 1) -> dict[str, float]:
    """Best-of-``repeats`` seconds for ``iterations`` Nash-MP iterations and for ``2 iterations``
    bare products (batched over ``contexts``), interleaved."""
    game = make_game("uniform", num_actions=K, num_contexts=contexts, beta=0.1, seed=0)
    agent = agents.make("nash_mp", game, seed=0, log_every=0)
    if contexts == 1:
        P = np.ascontiguousarray(game.P[0])
        pi = np.full(K, 1.0 / K)
    else:
        P = np.ascontiguousarray(game.P)
        pi = np.full((contexts, K, 1), 1.0 / K)
    agent.learn(num_iterations=5)  # warm-up
    best_agent = best_limit = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        agent.learn(num_iterations=iterations)
        best_agent = min(best_agent, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(2 * iterations):
            g = np.matmul(P, pi)
        best_limit = min(best_limit, time.perf_counter() - t0)
        pi = 0.5 * (pi + g / g.sum(axis=-2 if contexts > 1 else -1, keepdims=contexts > 1))
    return {
        "K": K,
        "C": contexts,
        "iterations_per_s": iterations / best_agent,
        "agent_ms_per_iteration": 1e3 * best_agent / iterations,
        "two_products_ms": 1e3 * best_limit / iterations,
        "ratio": best_agent / best_limit,
    }


def main(argv: list[str] | None = None) -> int:
    """Print a markdown table of the measurements; returns 0."""
    p = argparse.ArgumentParser(prog="agent_speed", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--contexts", type=int, default=1, help="C contexts (batched products)")
    args = p.parse_args(argv)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores visible, numpy {np.__version__}"
    print(f"Machine: {machine}; no GPU used.\n")
    print("| C | K | Nash-MP iterations/s | ms / iteration | 2 x (P @ pi) ms | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for K in args.sizes:
        r = measure(K, args.iterations, args.repeats, args.contexts)
        print(
            f"| {args.contexts} | {K} | {r['iterations_per_s']:.0f} | {r['agent_ms_per_iteration']:.3f} | "
            f"{r['two_products_ms']:.3f} | {r['ratio']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
