"""Throughput of the token duel: batched engine, PettingZoo env, judge, and KV-cache generation.

Usage::

    python benchmarks/text_throughput.py [--device cpu|cuda] [--threads 1] [--out benchmarks/results/text_throughput.md]

Measures, on one device in one run:

- the batched engine (``DuelEngine.play``: two KV-cached policies sample, one batched judge pass) with
  the reference policy against itself, for B = 1, 64, 512: duels/s and generated tokens/s (both
  players' tokens, ``<eos>`` included);
- the PettingZoo env ``nlhf/TokenDuel-v0`` stepped with random word actions (the env's own cost:
  rules, observations and the judge at the end): steps/s, tokens/s, duels/s;
- the learned judge and the ground truth on batches of 512 pairs: pairs/s;
- generation of B = 64 answers of up to 24 tokens with and without the KV cache, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from nlhf_envs.text import DuelEngine, generate, ground_truth, load_judge, load_reference_policy
from nlhf_envs.text.env import TokenDuelEnv

RESULTS = Path(__file__).resolve().parent / "results" / "text_throughput.md"


def _timed(fn, min_time: float = 1.0, min_reps: int = 2) -> tuple[float, object]:
    fn()  # warm-up
    reps, start, out = 0, time.perf_counter(), None
    while reps < min_reps or time.perf_counter() - start < min_time:
        out = fn()
        reps += 1
    return (time.perf_counter() - start) / reps, out


def device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    return (
        f"CPU ({platform.machine()}, {os.cpu_count()} logical cores, torch threads {threads}, "
        f"torch {torch.__version__})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ref = load_reference_policy(device=device)
    judge = load_judge(device=device)
    engine = DuelEngine(judge, device=device)
    rows: list[tuple[str, str]] = []

    for b in (1, 64, 512):
        gen = torch.Generator(device=device).manual_seed(0)
        _, ids, mask = engine.sample_prompts(b, gen)
        sec, res = _timed(lambda: engine.play(ref, ref, ids, mask, gen), args.min_time)  # noqa: B023
        tokens = int(res.answers_0.lengths.sum() + res.answers_1.lengths.sum())
        rows.append((f"engine, B = {b}", f"{b / sec:,.1f} duels/s, {tokens / sec:,.0f} tokens/s"))

    env = TokenDuelEnv()
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def env_duel() -> int:
        env.reset()
        steps = 0
        while env.agents:
            env.step({a: int(rng.integers(5, 317)) for a in env.agents})
            steps += 1
        return steps

    sec, steps = _timed(env_duel, args.min_time)
    rows.append(
        (
            "PettingZoo env (random words, 24 tokens each)",
            f"{1 / sec:,.1f} duels/s, {steps / sec:,.0f} steps/s, {2 * steps / sec:,.0f} tokens/s",
        )
    )

    gen = torch.Generator(device=device).manual_seed(1)
    _, ids, mask = engine.sample_prompts(512, gen)
    a = engine.generate(ref, ids, mask, gen)
    b_ = engine.generate(ref, ids, mask, gen)
    kw = {"prompt_mask": mask, "mask_a": a.mask, "mask_b": b_.mask}
    sec, _ = _timed(lambda: judge.prob(ids, a.tokens, b_.tokens, **kw), args.min_time)
    rows.append(("learned judge, batches of 512", f"{512 / sec:,.0f} pairs/s"))
    truth = ground_truth()
    cpu_kw = {k: v.cpu() for k, v in kw.items()}
    sec, _ = _timed(
        lambda: truth.prob(ids.cpu(), a.tokens.cpu(), b_.tokens.cpu(), **cpu_kw), args.min_time
    )
    rows.append(("ground truth (CPU, numpy), batches of 512", f"{512 / sec:,.0f} pairs/s"))

    _, ids, mask = engine.sample_prompts(64, gen)
    timings = {}
    for cache in (True, False):
        g = torch.Generator(device=device)

        def run(cache=cache, g=g):
            g.manual_seed(2)
            return generate(ref, ids, mask, 24, generator=g, use_cache=cache)

        timings[cache], out = _timed(run, args.min_time)
        tokens = int(out.lengths.sum())
        label = "with" if cache else "without"
        rows.append(
            (f"generation B = 64, {label} KV cache", f"{tokens / timings[cache]:,.0f} tokens/s")
        )
    rows.append(("KV-cache speed-up (same samples)", f"{timings[False] / timings[True]:.2f}x"))

    lines = [
        "# Token duel throughput",
        "",
        f"Device: {device_name(device, args.threads)}.",
        "Command: `python benchmarks/text_throughput.py"
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "")
        + (f" --min-time {args.min_time:g}" if args.min_time != 1.0 else "")
        + "`",
        "",
        "| measurement | throughput |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
