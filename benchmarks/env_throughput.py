"""Benchmarks of the matrix games: every figure with its anchor, measured in the same run.

Measures, in one process (interleaved rounds, median; the machine's load hits anchor and subject
alike):

1. env steps/s of ``nlhf/RPS-v0`` against PettingZoo's ``classic/rps_v2`` with the same loop,
   actions and episode length: the parallel API, and the AEC API (``env()``, with PettingZoo's
   standard wrappers on both sides); the old AEC path (``parallel_to_aec`` of the parallel env under
   the same wrappers) is shown against the same anchor.
2. ``game.sample`` throughput (Bernoulli preference queries/s) for K = 100.
3. ``regularized_nash`` from scratch (uniform game, K = 1000, beta 0.1 and 0.01; K = 10,000 with
   ``--large``): the matrix-free Newton-Krylov path against the dense LU path and against one
   product ``P @ pi`` (the solve's cost in products).
4. exact Nash-MP on C = 16 contexts, K = 1000 against two batched products per iteration.

Usage: ``python benchmarks/env_throughput.py [--quick | --smoke] [--large]
[--out benchmarks/results/env_throughput.md] [--readme benchmarks/README.md]``; ``--out`` may be a
bare file name. :func:`main` takes ``argv``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

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


def _interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds of each ``fn``'s value (a rate or a time)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            out[k].append(fn())
    return {k: statistics.median(v) for k, v in out.items()}


def parallel_rate(make_env: Callable, total_steps: int) -> Callable[[], float]:
    """A function timing ``total_steps`` parallel-API steps (pre-drawn actions in [0, 3))."""
    acts = np.random.default_rng(0).integers(0, 3, size=(total_steps, 2)).tolist()

    def run() -> float:
        env = make_env()
        env.reset(seed=0)
        t0 = time.perf_counter()
        for a0, a1 in acts:
            if not env.agents:
                env.reset()
            env.step({"player_0": a0, "player_1": a1})
        return total_steps / (time.perf_counter() - t0)

    return run


def aec_rate(make_env: Callable, total_steps: int) -> Callable[[], float]:
    """A function timing ``total_steps`` AEC ``step`` calls (dead agents step with ``None``)."""
    acts = np.random.default_rng(0).integers(0, 3, size=total_steps).tolist()

    def run() -> float:
        env = make_env()
        env.reset(seed=0)
        t0 = time.perf_counter()
        for a in acts:
            if not env.agents:
                env.reset()
            agent = env.agent_selection
            env.step(None if env.terminations[agent] or env.truncations[agent] else a)
        return total_steps / (time.perf_counter() - t0)

    return run


def sample_throughput(K: int, n: int, repeats: int = 5) -> float:
    """Median preference queries/s of ``game.sample`` on batches of ``n``."""
    from nlhf_envs import make_game

    game = make_game("uniform", num_actions=K, seed=0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, n)
    yp = rng.integers(0, K, n)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        game.sample(y, yp, rng)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def solver_rows(K: int, beta: float, rounds: int, dense: bool = True) -> list[tuple[str, str, str]]:
    """Krylov vs dense ``regularized_nash`` and vs one ``P @ pi``, interleaved."""
    from nlhf_envs import make_game
    from nlhf_envs.solvers import exploitability, regularized_nash

    game = make_game("uniform", num_actions=K, beta=beta, seed=0)
    P, pi = game.P[0], np.full(K, 1.0 / K)

    def timed(fn: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        return run

    fns = {
        "krylov": timed(lambda: regularized_nash(game, use_cache=False, method="krylov")),
        "matvec": timed(lambda: [P @ pi for _ in range(10)]),
    }
    if dense:
        fns["dense"] = timed(lambda: regularized_nash(game, use_cache=False, method="dense"))
    t = _interleaved(fns, rounds)
    t["matvec"] /= 10
    expl = exploitability(game, regularized_nash(game, use_cache=False, method="krylov"))
    name = f"regularized_nash K = {K:,}, beta = {beta:g}, Newton-Krylov (exploitability {expl:.0e})"
    rows = [(name, f"{t['krylov'] * 1e3:,.0f} ms", f"{t['krylov'] / t['matvec']:,.0f} x P @ pi")]
    if dense:
        rows.append(
            (
                f"regularized_nash K = {K:,}, beta = {beta:g}, dense LU path",
                f"{t['dense'] * 1e3:,.0f} ms",
                f"{t['dense'] / t['krylov']:.1f}x the Krylov time",
            )
        )
    return rows


def contextual_nash_mp(C: int, K: int, iterations: int, rounds: int) -> tuple[str, str, str]:
    """Exact Nash-MP iterations on ``C`` contexts against ``2 iterations`` batched products."""
    import agents
    from nlhf_envs import make_game

    game = make_game("uniform", num_actions=K, num_contexts=C, beta=0.1, seed=0)
    agent = agents.make("nash_mp", game, seed=0, log_every=0)
    P, pi = game.P, np.full((C, K, 1), 1.0 / K)
    agent.learn(num_iterations=2)

    def run_agent() -> float:
        t0 = time.perf_counter()
        agent.learn(num_iterations=iterations)
        return time.perf_counter() - t0

    def run_limit() -> float:
        t0 = time.perf_counter()
        for _ in range(2 * iterations):
            np.matmul(P, pi)
        return time.perf_counter() - t0

    t = _interleaved({"agent": run_agent, "limit": run_limit}, rounds)
    return (
        f"exact Nash-MP, C = {C}, K = {K:,}: ms per iteration",
        f"{t['agent'] * 1e3 / iterations:.1f} ms",
        f"{t['agent'] / t['limit']:.2f}x two batched P @ pi",
    )


def machine() -> str:
    """The CPU, its visible cores and the thread settings."""
    return (
        f"{_machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"numpy {np.__version__}"
    )


def replace_block(readme: Path, name: str, text: str) -> None:
    """Replace the lines between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` of ``readme``."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    old = readme.read_text()
    if begin not in old or end not in old:
        raise SystemExit(f"{readme} has no {begin} ... {end} block")
    head, rest = old.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a test of the script)")
    parser.add_argument("--large", action="store_true", help="also solve K = 10,000 (~1 min)")
    parser.add_argument("--out", default="benchmarks/results/env_throughput.md")
    parser.add_argument("--readme", default=None, help="also replace the table in this README")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import pettingzoo
    from pettingzoo.classic import rps_v2
    from pettingzoo.utils import parallel_to_aec, wrappers

    import nlhf_envs  # noqa: F401  (registers the ids)
    from nlhf_envs import matrix_game

    start = time.perf_counter()
    steps = 2_000 if args.smoke else 20_000 if args.quick else 100_000
    rounds = 1 if args.smoke else 3 if args.quick else 5
    episode = 100

    def old_aec():  # PettingZoo's generic conversion of the parallel env
        aec = parallel_to_aec(matrix_game.parallel_env(game="rps", num_rounds=episode))
        return wrappers.OrderEnforcingWrapper(wrappers.AssertOutOfBoundsWrapper(aec))

    par = _interleaved(
        {
            "ours": parallel_rate(
                lambda: pettingzoo.make("parallel", "nlhf/RPS-v0", num_rounds=episode), steps
            ),
            "peer": parallel_rate(lambda: rps_v2.parallel_env(max_cycles=episode), steps),
        },
        rounds,
    )
    aec = _interleaved(
        {
            "ours": aec_rate(lambda: matrix_game.env(game="rps", num_rounds=episode), steps),
            "peer": aec_rate(lambda: rps_v2.env(max_cycles=episode), steps),
            "old": aec_rate(old_aec, steps),
        },
        rounds,
    )
    n = 100_000 if args.smoke else 1_000_000 if args.quick else 10_000_000
    qps = sample_throughput(100, n)
    rows = [
        (
            "nlhf/RPS-v0 parallel steps/s",
            f"{par['ours']:,.0f}",
            f"{par['ours'] / par['peer']:.2f}x",
        ),
        ("PettingZoo classic/rps_v2 parallel steps/s (anchor)", f"{par['peer']:,.0f}", "1.00x"),
        ("native AEC env() steps/s", f"{aec['ours']:,.0f}", f"{aec['ours'] / aec['peer']:.2f}x"),
        (
            "AEC through parallel_to_aec steps/s",
            f"{aec['old']:,.0f}",
            f"{aec['old'] / aec['peer']:.2f}x",
        ),
        ("PettingZoo classic/rps_v2 env() steps/s (anchor)", f"{aec['peer']:,.0f}", "1.00x"),
        (f"game.sample queries/s (K = 100, batch {n:,})", f"{qps:,.3g}", ""),
    ]
    if args.smoke:
        rows += solver_rows(300, 0.1, 1)
    else:
        for beta in (0.1, 0.01):
            rows += solver_rows(1000, beta, rounds)
        if args.large:
            rows += solver_rows(10_000, 0.1, 1, dense=False)
        rows.append(contextual_nash_mp(16, 1000, 10 if args.quick else 20, rounds))
    shown = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python benchmarks/env_throughput.py", *shown])
    lines = [
        f"Machine: {machine()}. Command: `{cmd}` ({time.perf_counter() - start:.0f} s). Ratios: "
        f"to the anchor named in the row, same run, median of {rounds} interleaved rounds.",
        "",
        "| measurement | value | ratio |",
        "| --- | ---: | ---: |",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)  # "." for a bare file name
        out.write_text(text + "\n")
    if args.readme:
        replace_block(Path(args.readme), "matrix", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
