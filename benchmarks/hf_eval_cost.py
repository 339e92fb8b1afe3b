"""The end-of-run evaluation of ``nlhf-zoo train`` on your own model, against the training before it.

Usage::

    python benchmarks/hf_eval_cost.py                 # CPU-sized (about a minute)
    python benchmarks/hf_eval_cost.py --folder parts  # keep the model folders

It builds, in a temporary folder, the parts of ``docs/games/hf.md``'s own-model command at CPU
size (nothing is downloaded): a word-level tokenizer, a random Llama causal LM (the reference
``pi_ref``), a random Llama reward model with one output (the judge) and a prompt file. Then it runs
that page's command, CPU-sized (no ``--device cuda`` or ``precision: bf16``; ``max_new_tokens``
16)::

    nlhf-zoo train --agent nash_mp --env nlhf/HFTokenDuel-v0 \\
      --env-kwargs reference:REF judge:RM prompts:PROMPTS heldout_fraction:0.1 max_new_tokens:16 \\
      --params batch_size:32 inner_steps:4 lr:1.0e-4 \\
        "lora:{rank: 16, alpha: 32, target_modules: [q_proj, v_proj]}" -n QUERIES

with ``QUERIES`` 2304 by default: nine Nash-MP iterations of ``2 inner_steps batch_size = 256``
queries, so the run's only evaluation is the final one (the first periodic one would come at
iteration 10, ``eval_every``'s default). It reads the seconds ``train`` prints for the training and
for the final evaluation (win rates on the held-out prompts and the default Nash estimates on the
held-out and the trained prompts), wall clock and CPU time of the process (on a shared machine the
CPU time is the fair measure), and prints both, their ratio and the machine. :func:`main` takes
``argv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["build_parts", "main"]

VOCAB = 512


def build_parts(folder: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> None:
    """Save ``reference/`` (a random Llama causal LM), ``judge/`` (a random Llama reward model,
    one output) with a word-level tokenizer each, and ``prompts.jsonl`` (64 prompts) in ``folder``."""
    import torch
    import transformers
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, VOCAB)}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    shape = {
        "vocab_size": VOCAB,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128,
        "bos_token_id": 1,
        "eos_token_id": 1,
        "pad_token_id": 0,
    }
    torch.manual_seed(seed)
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).eval()
    lm.save_pretrained(folder / "reference")
    tok.save_pretrained(folder / "reference")
    rm = transformers.LlamaForSequenceClassification(
        transformers.LlamaConfig(**shape, num_labels=1)
    ).eval()
    rm.save_pretrained(folder / "judge")
    tok.save_pretrained(folder / "judge")
    lines = [json.dumps({"prompt": f"w{10 + i} w{100 + 3 * i} w{300 + i}"}) for i in range(64)]
    (folder / "prompts.jsonl").write_text("\n".join(lines) + "\n")


def command(folder: Path, queries: int, logs: Path, extra: list[str]) -> list[str]:
    """The CPU-sized command of ``docs/games/hf.md`` on the parts in ``folder``."""
    return [
        sys.executable, "-m", "agents.zoo.cli", "train", "--agent", "nash_mp",
        "--env", "nlhf/HFTokenDuel-v0",
        "--env-kwargs", f"reference:{folder / 'reference'}", f"judge:{folder / 'judge'}",
        f"prompts:{folder / 'prompts.jsonl'}", "heldout_fraction:0.1", "max_new_tokens:16",
        "--params", "batch_size:32", "inner_steps:4", "lr:1.0e-4",
        "lora:{rank: 16, alpha: 32, target_modules: [q_proj, v_proj]}", *extra,
        "-n", str(queries), "--log-folder", str(logs), "--no-progress",
    ]  # fmt: skip


def machine() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` where there is one) and its core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    """Build the parts, run the command, print the training and evaluation seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2304, help="-n of the command")
    parser.add_argument("--folder", default=None, help="where to build the parts (kept)")
    parser.add_argument("--params", nargs="*", default=[], help="more --params of the command")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "parts"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "prompts.jsonl").is_file():
            build_parts(folder)
        cmd = command(folder, args.queries, Path(tmp) / "logs", args.params)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    print(done.stdout, end="")
    print(done.stderr, end="", file=sys.stderr)
    if done.returncode:
        return done.returncode
    found = re.search(
        r"trained in ([\d.]+) s; final evaluation in ([\d.]+) s "
        r"\(CPU ([\d.]+) s and ([\d.]+) s\)",
        done.stdout,
    )
    if found is None:
        print("no timing line in the output", file=sys.stderr)
        return 1
    train_s, eval_s, train_cpu, eval_cpu = (float(g) for g in found.groups())
    print(
        f"\nmachine: {machine()}, 1 torch thread\ntraining {train_s:.1f} s (CPU {train_cpu:.1f} s), final evaluation "
        f"{eval_s:.1f} s (CPU {eval_cpu:.1f} s): {eval_cpu / train_cpu:.2f} of the training in "
        f"CPU time, {eval_s / train_s:.2f} in wall time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
