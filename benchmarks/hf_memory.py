"""Peak memory and time of an Online IPO step on the Hugging Face path: micro-batches
(``gradient_accumulation_steps``), gradient checkpointing, full fine-tuning and LoRA.

Usage::

    python benchmarks/hf_memory.py                  # the CPU table (about 15 minutes, 1 thread)
    python benchmarks/hf_memory.py --quick          # a smoke run (small model, one round)
    python benchmarks/hf_memory.py --device cuda    # peak CUDA memory on a GPU

The work: ``online_ipo`` on ``nlhf/HFTokenDuel-v0`` with a random ``LlamaForCausalLM``
(``--hidden`` 256, ``--layers`` 4, 4 heads, MLP 688, ``--vocab`` 8192 word-level tokens, untied
output head), a random two-layer ``GPT2ForSequenceClassification`` reward model as the judge, 64
prompts of 8-16 words (``max_prompt_tokens`` 64), ``--batch`` pairs per step, ``--new-tokens``
new tokens at temperature 1. LoRA: rank 16 on ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``.

Each row runs in a fresh process with one torch thread: it builds the parts and the agent, takes
one warm-up step, resets the peak, then takes ``--steps`` steps. Columns:

* **step peak**: the peak memory of the steps above the memory held before them (weights,
  optimiser state, the env): what a step adds, which micro-batches and checkpointing cut. On the
  CPU, the resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), with
  glibc's ``malloc`` told to map every block of 64 KiB or more on its own and to give it back when
  freed, so that the resident set follows the tensors alive (this costs some time: compare the
  s/step column between rows, not with other runs); on CUDA, ``torch.cuda.max_memory_allocated``.
* **held**: the memory held before the steps (the process's resident set on the CPU), and
  **weights copies**: the bytes of the parameters the agent's policy and ``pi_ref`` hold beyond
  the env's model, in units of its size (full fine-tuning: the one trainable copy; LoRA: the
  adapter only).
* **s/step**: median seconds per step.

Rows run interleaved over ``--rounds`` rounds (medians), so machine load falls on all alike. The
machine is named in the output. :func:`main` takes ``argv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]

ROOT = Path(__file__).resolve().parents[1]

#: the rows: label, whether LoRA, gradient_accumulation_steps, gradient_checkpointing
ROWS: tuple[tuple[str, bool, int, bool], ...] = (
    ("full, 1 micro-batch (anchor)", False, 1, False),
    ("full, 2 micro-batches", False, 2, False),
    ("full, 4 micro-batches", False, 4, False),
    ("full, 8 micro-batches", False, 8, False),
    ("full, gradient checkpointing", False, 1, True),
    ("full, 4 micro-batches + checkpointing", False, 4, True),
    ("LoRA, 1 micro-batch (anchor)", True, 1, False),
    ("LoRA, 4 micro-batches", True, 4, False),
    ("LoRA, gradient checkpointing", True, 1, True),
)


def _vm_hwm() -> int | None:
    """The process's peak resident set in bytes (``VmHWM``), or ``None`` off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _vm_rss() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _weight_bytes(agent: Any, env: Any) -> float:
    """Bytes of the parameters the agent's policy and reference hold beyond the env's model."""
    env_storages = {p.untyped_storage().data_ptr() for p in env.reference_model.parameters()}
    seen: dict[int, int] = {}
    for module in (agent.model, getattr(agent.reference, "policy", agent.reference)):
        for p in module.parameters():
            storage = p.untyped_storage()
            if storage.data_ptr() not in env_storages:
                seen[storage.data_ptr()] = storage.nbytes()
    return float(sum(seen.values()))


def _parts(args: Any) -> Any:
    """The env: a random Llama, a word tokenizer, a GPT-2 reward model, prompts."""
    import random

    import torch
    import transformers
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers

    from nlhf_envs.text.hf_env import HFTokenDuelEnv
    from nlhf_envs.text.hf_judges import RewardModelJudge

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({f"w{i}": i for i in range(3, args.vocab)})
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
        padding_side="left", clean_up_tokenization_spaces=False,
    )  # fmt: skip
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=4, intermediate_size=int(args.hidden * 2.6875),
        max_position_embeddings=256, bos_token_id=None, eos_token_id=1, pad_token_id=0,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    rm_config = transformers.GPT2Config(
        vocab_size=args.vocab, n_layer=2, n_embd=64, n_head=2, n_positions=256, num_labels=1,
        pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    reward = transformers.GPT2ForSequenceClassification(rm_config).eval()
    rng = random.Random(0)
    prompts = [
        " ".join(f"w{rng.randrange(3, args.vocab)}" for _ in range(rng.randint(8, 16)))
        for _ in range(64)
    ]
    return HFTokenDuelEnv(
        model, tok, RewardModelJudge(reward, tok), prompts,
        max_new_tokens=args.new_tokens, max_prompt_tokens=64,
    )  # fmt: skip


def measure(args: Any, lora: bool, steps_acc: int, checkpointing: bool) -> dict[str, float]:
    """One row in this process: ``{"step_peak", "held", "copies", "seconds", "params"}``."""
    import torch

    import agents

    torch.set_num_threads(1)
    env = _parts(args)
    nbytes = sum(p.numel() * p.element_size() for p in env.reference_model.parameters())
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        env.reference_model.to(device)
    config: dict[str, Any] = {
        "batch_size": args.batch, "eval_every": 0, "lr": 1.0e-5, "device": args.device,
        "gradient_accumulation_steps": steps_acc, "gradient_checkpointing": checkpointing,
    }  # fmt: skip
    if lora:
        targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
        config["lora"] = {"rank": 16, "alpha": 32.0, "target_modules": targets}
    agent = agents.make("online_ipo", env, seed=0, **config)
    agent.learn(num_iterations=1)  # warm-up (optimiser state allocated)
    if cuda:
        torch.cuda.synchronize(device)
        held = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        held = _vm_rss() or 0
        _reset_peak()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        agent.learn(num_iterations=1)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) if cuda else (_vm_hwm() or 0)
    return {
        "step_peak": float(max(peak - held, 0)),
        "held": float(held),
        "copies": _weight_bytes(agent, env) / nbytes,
        "seconds": statistics.median(times),
        "params": float(sum(p.numel() for p in env.reference_model.parameters())),
    }


def _run_row(args: Any, row: tuple[str, bool, int, bool]) -> dict[str, float]:
    _, lora, steps_acc, checkpointing = row
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--_row", json.dumps(
            [lora, steps_acc, checkpointing]
        ), "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--layers", str(args.layers),
        "--batch", str(args.batch), "--new-tokens", str(args.new_tokens), "--steps",
        str(args.steps), "--device", args.device,
    ]  # fmt: skip
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
        # glibc: every block of 64 KiB or more is its own mapping, returned to the system when
        # freed (no dynamic threshold), so the resident set follows the tensors alive
        "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072",
    }  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"row {row[0]!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"CUDA ({torch.cuda.get_device_name(0)}, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return (
        f"CPU ({cpu}, {os.cpu_count()} logical cores, torch threads 1, torch {torch.__version__})"
    )


def _mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def table(args: Any, results: dict[str, list[dict[str, float]]], seconds: float) -> str:
    """The markdown table of the rows' medians."""
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in results.items()}
    params = next(iter(med.values()))["params"]
    head = (
        f"Device: {_machine(args.device)}. Work: `online_ipo`, random Llama of {params / 1e6:.1f}M "
        f"parameters (vocabulary {args.vocab}), batch {args.batch} pairs, {args.new_tokens} new "
        f"tokens. Command: `python benchmarks/hf_memory.py{' --quick' if args.quick else ''}` "
        f"({seconds:.0f} s). Medians of {args.rounds} interleaved round(s), {args.steps} steps each."
    )
    lines = [
        head,
        "",
        "| row | step peak | ratio | held | weights copies | s/step |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    anchor = None
    for label, *_ in ROWS:
        if label not in med:
            continue
        m = med[label]
        if "(anchor)" in label:
            anchor = m["step_peak"]
        ratio = f"{m['step_peak'] / anchor:.2f}x" if anchor else ""
        lines.append(
            f"| {label} | {_mib(m['step_peak'])} | {ratio} | {_mib(m['held'])} | "
            f"{m['copies']:.2f} | {m['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a small model, one round")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._row is not None:  # one row, in this (fresh) process
        lora, steps_acc, checkpointing = json.loads(args._row)
        print(json.dumps(measure(args, lora, steps_acc, checkpointing)))
        return 0
    if args.quick:
        args.vocab, args.hidden, args.layers, args.batch, args.new_tokens = 512, 64, 2, 8, 16
        args.rounds, args.steps = 1, 1
    start = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {}
    for r in range(args.rounds):
        order = ROWS if r % 2 == 0 else tuple(reversed(ROWS))
        for row in order:
            results.setdefault(row[0], []).append(_run_row(args, row))
    text = table(args, results, time.perf_counter() - start)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
