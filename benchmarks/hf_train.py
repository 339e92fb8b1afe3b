"""Training the token agents through the Hugging Face path: seconds per iteration.

Usage::

    python benchmarks/hf_train.py                          # tiny world, CPU (a few minutes)
    python benchmarks/hf_train.py --gpt2-small --device cuda   # adds the GPT-2-small rows (a GPU)

Rows (median of ``--rounds`` interleaved rounds, so machine load falls on every row alike):

1. **Native vs Hugging Face** (issue 22, item 10). Seconds per iteration of ``nash_mp``
   (``inner_steps`` 2), ``online_ipo`` and ``nash_md`` with the same seed and config
   (``--batch`` pairs per step, evaluation off) on ``nlhf/TinyTokenDuel-v0`` (native
   ``TinyCausalLM``) and on ``HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")`` (the same
   weights as a ``GPT2LMHeadModel``, text judge).
2. **The floor.** One plain ``transformers`` step on the same model and batch: ``generate``
   (sampling, ``top_k=0``) of the two seats' answers (``2 x batch``) and one forward and backward
   pass of a log-prob loss on ``batch`` of them. An Online IPO or Nash-MD iteration does this
   much work plus judging, the reference's log-probs and bookkeeping; a Nash-MP iteration does it
   ``2 inner_steps`` times.
3. **GPT-2 small** (``--gpt2-small``; issue 22, item 3): a random ``GPT2LMHeadModel`` of GPT-2
   small's shape (12 layers, 768 wide, 50,257 tokens, 16-token prompts, 32 new tokens) trained by
   ``online_ipo`` with full fine-tuning and with LoRA (rank 16 on ``c_attn``), in fp32 and with
   ``precision: bf16`` (autocast; log-probs and losses fp32): iterations/s and peak memory
   (``torch.cuda.max_memory_allocated`` on CUDA). Meant for a lent GPU; on a CPU use ``--quick``.

The machine is named in the output. :func:`main` takes ``argv``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

import torch

import agents
from nlhf_envs.text.hf_env import HFTokenDuelEnv

__all__ = ["main"]

AGENTS = {"nash_mp": {"inner_steps": 2}, "online_ipo": {}, "nash_md": {}}


def _seconds_per_iteration(agent: Any, iterations: int) -> float:
    t = time.perf_counter()
    agent.learn(num_iterations=iterations)
    return (time.perf_counter() - t) / iterations


def _floor_step(env: Any, batch: int, seed: int) -> float:
    """Seconds of one plain ``transformers`` generate (two seats) + forward/backward step."""
    model = agents.make("online_ipo", env, seed=seed, eval_every=0).model.lm
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, env.max_prompt_tokens), env.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    pool = env._pool_ids
    for r in range(batch):
        row = pool[int(torch.randint(len(pool), (1,), generator=gen))]
        ids[r, -len(row) :] = torch.tensor(row)
        mask[r, -len(row) :] = 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    t = time.perf_counter()
    with torch.no_grad():
        seqs = [
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                top_k=0,
                max_new_tokens=env.max_new_tokens,
                eos_token_id=env.eos_id,
                pad_token_id=env.pad_id,
            )
            for _ in range(2)
        ]
    full = seqs[0]
    attn = torch.cat([mask, torch.ones_like(full[:, ids.shape[1] :])], 1)
    logits = model(input_ids=full, attention_mask=attn).logits[:, ids.shape[1] - 1 : -1].float()
    lp = torch.log_softmax(logits, -1).gather(2, full[:, ids.shape[1] :, None]).sum()
    opt.zero_grad()
    (-lp / batch).backward()
    opt.step()
    return time.perf_counter() - t


def tiny_rows(batch: int, iterations: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """``(agent, native s/it, hf s/it, floor s/step)`` on the tiny world."""
    hf = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    rows = []
    for name, extra in AGENTS.items():
        cfg = {"batch_size": batch, "eval_every": 0, **extra}
        nat, hfs, floor = [], [], []
        for r in range(rounds):
            nat.append(
                _seconds_per_iteration(
                    agents.make(name, "nlhf/TinyTokenDuel-v0", seed=r, **cfg), iterations
                )
            )
            hfs.append(_seconds_per_iteration(agents.make(name, hf, seed=r, **cfg), iterations))
            floor.append(_floor_step(hf, batch, r))
        rows.append((name, statistics.median(nat), statistics.median(hfs), min(floor)))
    return rows


def _gpt2_small_env(quick: bool) -> Any:
    import transformers
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers

    vocab_size = 1000 if quick else 50257
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, vocab_size)}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    shape = {"n_layer": 2, "n_embd": 64, "n_head": 2} if quick else {}
    config = transformers.GPT2Config(vocab_size=vocab_size, bos_token_id=1, eos_token_id=1, **shape)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    prompts = [" ".join(f"w{3 + (7 * i + j) % 900}" for j in range(16)) for i in range(64)]

    def judge(prompts: list[str], pairs: list[tuple[str, str]]) -> list[float]:
        return [0.5 + 0.1 * ((a.count("w7") > b.count("w7")) - (a.count("w7") < b.count("w7")))
                for a, b in pairs]  # fmt: skip

    return HFTokenDuelEnv(
        model, tok, judge, prompts, heldout_fraction=0.25, max_prompt_tokens=16,
        max_new_tokens=8 if quick else 32,
    )  # fmt: skip


def gpt2_small_rows(device: str, batch: int, iterations: int, quick: bool) -> list[tuple]:
    """``(setting, iterations/s, peak MiB)`` of ``online_ipo`` on a GPT-2-small-sized model."""
    env = _gpt2_small_env(quick)
    rows = []
    for label, extra in (
        ("full fp32", {}),
        ("full bf16", {"precision": "bf16"}),
        ("LoRA r16 fp32", {"lora": {"rank": 16, "alpha": 32, "target_modules": ["c_attn"]}}),
        ("LoRA r16 bf16", {"lora": {"rank": 16, "alpha": 32}, "precision": "bf16"}),
    ):
        agent = agents.make(
            "online_ipo", env, seed=0, batch_size=batch, eval_every=0, device=device, **extra
        )
        agent.learn(num_iterations=1)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        spi = _seconds_per_iteration(agent, iterations)
        peak = (
            torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
        )
        rows.append((label, 1.0 / spi, peak))
        del agent
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the rows (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpt2-small", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="GPT-2 rows on a 2-layer model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    print(f"\nTiny world, batch {args.batch}, {args.iterations} iterations x {args.rounds} rounds")
    print("| agent | native s/it | Hugging Face s/it | ratio | transformers floor s/step |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, nat, hf, floor in tiny_rows(args.batch, args.iterations, args.rounds):
        print(f"| {name} | {nat:.3f} | {hf:.3f} | {hf / nat:.2f} | {floor:.3f} |")
    if args.gpt2_small:
        print(f"\nGPT-2 small shape on {args.device}, online_ipo, batch {args.batch}")
        print("| setting | iterations/s | peak MiB |")
        print("| --- | ---: | ---: |")
        for label, ips, peak in gpt2_small_rows(
            args.device, args.batch, args.iterations, args.quick
        ):
            print(f"| {label} | {ips:.3f} | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
