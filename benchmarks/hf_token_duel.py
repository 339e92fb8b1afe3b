"""The Hugging Face token duel against the native one, and a GPT-2-small-sized row for a GPU.

Usage::

    python benchmarks/hf_token_duel.py                       # tiny world: native vs from_world (CPU)
    python benchmarks/hf_token_duel.py --gpt2-small --device cuda   # adds the GPT-2-small rows

Rows (median of ``--rounds`` interleaved rounds; each ratio against the anchor measured in the same
run, so machine load falls on both):

1. **Env duels/s.** Whole seeded duels of ``nlhf/TinyTokenDuel-v0`` (the anchor) and of
   ``HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")``, same seeds and the same actions (random
   answer words): the Hugging Face path pays through the text judge protocol (decode, re-encode).
   The two are checked to pay the same rewards.
2. **Batched sampling.** ``B`` answers to ``B`` prompts by :func:`nlhf_envs.text.engine.generate`
   (KV-cached) with the native ``pi_ref`` (anchor) and with its GPT-2 conversion
   (:func:`nlhf_envs.text.hf_convert.tiny_to_gpt2` through :class:`~nlhf_envs.text.hf.HFPolicy`);
   same generator seed, and the samples are checked equal.
3. **GPT-2 small** (``--gpt2-small``): a random ``GPT2LMHeadModel`` of GPT-2 small's shape (12
   layers, 768 wide, 50,257 tokens) through ``HFPolicy``: answer tokens/s of ``generate`` at
   ``--batch`` prompts of 16 tokens and 32 new tokens, and env steps/s of ``nlhf/HFTokenDuel-v0``
   at that vocabulary (random actions, a callable judge). Meant for a lent GPU; on a CPU use it as
   a smoke run.

The machine is named in the output. :func:`main` takes ``argv``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from nlhf_envs.text import load_reference_policy
from nlhf_envs.text.engine import generate
from nlhf_envs.text.env import TokenDuelEnv
from nlhf_envs.text.hf import HFPolicy
from nlhf_envs.text.hf_convert import tiny_to_gpt2
from nlhf_envs.text.hf_env import HFTokenDuelEnv
from nlhf_envs.text.world import get_world

__all__ = ["main"]


def _median_rate(fn: Callable[[], int], rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def _duels(env: Any, seeds: list[int], alphabet: np.ndarray) -> tuple[int, list[float]]:
    rng = np.random.default_rng(0)
    paid = []
    for s in seeds:
        env.reset(seed=s)
        while env.agents:
            _, rewards, _, _, _ = env.step({a: int(rng.choice(alphabet)) for a in env.agents})
        paid.append(rewards["player_0"])
    return len(seeds), paid


def tiny_rows(rounds: int, duels: int, batch: int) -> list[tuple[str, str, str]]:
    """Rows 1 and 2 (see the module docstring)."""
    w = get_world("tiny")
    native = TokenDuelEnv(world="tiny", judge_version="latest")
    hf = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    alphabet = np.asarray(w.answer_token_ids)
    seeds = list(range(duels))
    _, paid_n = _duels(native, seeds, alphabet)
    _, paid_h = _duels(hf, seeds, alphabet)
    if paid_n != paid_h:
        raise AssertionError("the two paths paid different rewards")
    rates: dict[str, list[float]] = {"native": [], "hf": []}
    for _ in range(rounds):  # interleaved
        rates["native"].append(_median_rate(lambda: _duels(native, seeds, alphabet)[0], 1))
        rates["hf"].append(_median_rate(lambda: _duels(hf, seeds, alphabet)[0], 1))
    n_rate, h_rate = statistics.median(rates["native"]), statistics.median(rates["hf"])

    ref = load_reference_policy(world=w)
    pol = HFPolicy(tiny_to_gpt2(ref), suppress_tokens=w.suppressed_token_ids)
    texts = [w.prompts.texts[i] for i in np.resize(w.prompts.indices("all"), batch)]
    ids, mask = w.tokenizer.encode_prompts(texts, w.prompt_len)

    def sample(policy: Any) -> Any:
        return generate(
            policy, ids, mask, w.max_new_tokens, generator=torch.Generator().manual_seed(0)
        )

    if not torch.equal(sample(ref).tokens, sample(pol).tokens):
        raise AssertionError("the two paths sampled different answers")
    srates: dict[str, list[float]] = {"native": [], "hf": []}
    for _ in range(rounds):
        srates["native"].append(_median_rate(lambda: int(sample(ref).lengths.sum()), 1))
        srates["hf"].append(_median_rate(lambda: int(sample(pol).lengths.sum()), 1))
    sn, sh = statistics.median(srates["native"]), statistics.median(srates["hf"])
    return [
        ("nlhf/TinyTokenDuel-v0 env duels/s (anchor)", f"{n_rate:,.0f}", "1.00x"),
        (
            "HFTokenDuelEnv.from_world(tiny) env duels/s, same seeds and rewards",
            f"{h_rate:,.0f}",
            f"{h_rate / n_rate:.2f}x",
        ),
        (f"native pi_ref generate, B = {batch}: answer tokens/s (anchor)", f"{sn:,.0f}", "1.00x"),
        (
            f"pi_ref as transformers GPT-2 (HFPolicy), B = {batch}, same samples: answer tokens/s",
            f"{sh:,.0f}",
            f"{sh / sn:.2f}x",
        ),
    ]


def gpt2_small_rows(device: torch.device, rounds: int, batch: int) -> list[tuple[str, str, str]]:
    """Row 3 (see the module docstring)."""
    import transformers
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers

    config = transformers.GPT2Config()  # GPT-2 small's shape: 12 x 768, 50,257 tokens
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config).eval().to(device)
    policy = HFPolicy(model)
    g = torch.Generator(device).manual_seed(0)
    ids = torch.randint(3, config.vocab_size, (batch, 16), generator=g, device=device)
    mask = torch.ones_like(ids, dtype=torch.bool)

    def sample() -> int:
        gen = generate(policy, ids, mask, 32, generator=g, eos_id=config.eos_token_id)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return int(gen.lengths.sum())

    sample()  # warm-up
    tok_rate = _median_rate(sample, rounds)
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({f"w{i}": i for i in range(3, config.vocab_size)})
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    env = HFTokenDuelEnv(
        model,
        tok,
        lambda p, pairs: [0.5] * len(pairs),
        [f"w{i} w{i + 1}" for i in range(10, 50)],
        max_prompt_tokens=8,
        max_new_tokens=32,
    )
    rng = np.random.default_rng(0)

    def steps() -> int:
        n = 0
        env.reset(seed=int(rng.integers(1 << 30)))
        while env.agents:
            env.step({a: int(rng.integers(3, config.vocab_size)) for a in env.agents})
            n += 1
        return n

    step_rate = _median_rate(steps, rounds)
    return [
        (
            f"GPT-2 small (random, 124M) generate, B = {batch}, 32 new tokens: answer tokens/s",
            f"{tok_rate:,.0f}",
            "",
        ),
        (
            "nlhf/HFTokenDuel-v0 at 50,257 tokens: env steps/s (random actions, callable judge)",
            f"{step_rate:,.0f}",
            "",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duels", type=int, default=200, help="tiny-world duels per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--gpt2-small", action="store_true", help="add the GPT-2-small rows")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    rows = tiny_rows(args.rounds, args.duels, args.batch)
    if args.gpt2_small:
        rows += gpt2_small_rows(device, args.rounds, args.batch)
    if device.type == "cuda":
        where = f"CUDA {torch.cuda.get_device_name(device)}"
    else:
        where = (
            f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        )
    print(
        f"Machine: {where}, torch {torch.__version__}. Tiny-world rows on the CPU; "
        f"median of {args.rounds} interleaved rounds ({time.perf_counter() - start:.0f} s).\n"
    )
    print("| measurement | value | ratio |\n| --- | ---: | ---: |")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
