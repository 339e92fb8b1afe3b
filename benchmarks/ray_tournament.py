"""Benchmark: tournament matches/s in this process vs on a local Ray cluster with 2 workers.

Runs the same round-robin tournament (``agents.arena.run``) twice in one process, locally and
with ``use_ray=True`` on ``ray.init(num_cpus=2)``, checks that both give identical win-rate matrices,
and reports matches/s, duels/s, the ratio Ray / local and Ray's start-up time (excluded from the
Ray rate, reported separately). Participants: trained Nash-MP, MMD and SPPO agents, ``uniform``,
``pi_ref`` and three fixed strategies on ``nlhf/BiasedRPS-v0`` (8 participants, 28 matches).

Usage: ``python benchmarks/ray_tournament.py [--duels 20000] [--out benchmarks/results/ray_tournament.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def _participants() -> dict[str, object]:
    import agents

    return {
        "nash_mp": agents.make("nash_mp", "biased_rps", seed=0).learn(num_iterations=30),
        "mmd": agents.make("mmd", "biased_rps", seed=0).learn(num_iterations=30),
        "sppo": agents.make("sppo", "biased_rps", seed=0).learn(num_iterations=30),
        "uniform": "uniform",
        "pi_ref": "pi_ref",
        "rock": np.array([1.0, 0.0, 0.0]),
        "paper": np.array([0.0, 1.0, 0.0]),
        "mix": np.array([0.2, 0.5, 0.3]),
    }


class ConstantAnswer:
    """A deterministic callable participant ``observation -> k``: its policy is unknown to the
    tournament, so its matches step the PettingZoo env duel by duel (the slow path)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, observation: object) -> int:
        return self.k


def _stepped_participants() -> dict[str, object]:
    out = _participants()
    for name in ("rock", "paper", "mix"):
        del out[name]
    out.update({f"always_{k}": ConstantAnswer(k) for k in range(3)})
    return out


def _measure(arena, participants, env, duels, seed):
    n = len(participants)
    matches = n * (n - 1) // 2
    t0 = time.perf_counter()
    local = arena.run(participants, env, num_duels=duels, seed=seed)
    t_local = time.perf_counter() - t0
    arena.run(participants, env, num_duels=10, seed=seed + 1, use_ray=True)  # warm up
    t0 = time.perf_counter()
    remote = arena.run(participants, env, num_duels=duels, seed=seed, use_ray=True)
    t_ray = time.perf_counter() - t0
    return matches, t_local, t_ray, bool(np.array_equal(local.win_rate, remote.win_rate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duels", type=int, default=20000, help="duels per pair")
    parser.add_argument("--stepped-duels", type=int, default=3000, help="duels per stepped pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/ray_tournament.md")
    args = parser.parse_args()

    import ray

    from agents import arena

    env = "nlhf/BiasedRPS-v0"
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    scenarios = {
        "known policies (exact, vectorised duels)": (_participants(), args.duels),
        "callable participants (env stepped per duel)": (
            _stepped_participants(),
            args.stepped_duels,
        ),
    }
    machine = (
        f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
    )
    lines = [
        "# Tournament throughput: local vs Ray (2 workers)",
        "",
        f"`python benchmarks/ray_tournament.py --duels {args.duels} --stepped-duels "
        f"{args.stepped_duels}`; machine: {machine}, shared with other jobs while measured "
        "(absolute figures are noisy; each ratio comes from one run). 8 participants on "
        f"`{env}`, 28 matches. Ray start-up (`ray.init(num_cpus=2)`, excluded): {t_init:.1f} s.",
        "",
        "| participants | duels/pair | local matches/s | Ray matches/s | Ray / local | identical |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    record = {"ray_init_s": t_init, "machine": machine, "scenarios": {}}
    identical_all = True
    for label, (participants, duels) in scenarios.items():
        matches, t_local, t_ray, identical = _measure(arena, participants, env, duels, args.seed)
        identical_all &= identical
        local_rate, ray_rate = matches / t_local, matches / t_ray
        lines.append(
            f"| {label} | {duels} | {local_rate:.2f} | {ray_rate:.2f} | "
            f"{ray_rate / local_rate:.2f} | {identical} |"
        )
        record["scenarios"][label] = {
            "duels": duels,
            "matches": matches,
            "local_s": t_local,
            "ray_s": t_ray,
            "local_matches_per_s": local_rate,
            "ray_matches_per_s": ray_rate,
            "ratio": ray_rate / local_rate,
            "identical": identical,
        }
    ray.shutdown()
    lines += [
        "",
        "Known-policy matches are exact and vectorised (milliseconds each), so Ray's per-task "
        "overhead dominates; Ray pays off when matches step environments or run networks.",
        "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(record, f, indent=2)
    print("\n".join(lines))
    if not identical_all:
        raise SystemExit("Ray and local results differ")


if __name__ == "__main__":
    main()
