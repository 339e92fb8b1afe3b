"""Bring your own model, judge and prompts: the token duel over Hugging Face parts, end to end.

Builds everything locally from configs (nothing is downloaded): a word-level tokenizer, a random
GPT-2 reference model and two more models (one that only writes the judge's favourite word), a
Bradley-Terry reward model as the judge, and a prompt file; saves them as ordinary Hugging Face
folders; then plays ``nlhf/HFTokenDuel-v0`` through ``pettingzoo.make`` and ranks the saved models
and ``pi_ref`` with ``nlhf-zoo tournament`` from the command line.

    python examples/hf_token_duel.py --out hf_demo --n-duels 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pettingzoo
import torch
import transformers
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import models, pre_tokenizers

import nlhf_envs  # noqa: F401  (registers nlhf/HFTokenDuel-v0)

VOCAB = 200
FAVOURITE = 7  # the word the judge rewards ("w7")


def build_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer: <pad>, <eos>, <unk>, then the words w3 ... w199."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, VOCAB)}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def build_model(seed: int, favourite_only: bool = False) -> transformers.GPT2LMHeadModel:
    """A random two-layer GPT-2; with ``favourite_only`` it always writes the favourite word."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    if favourite_only:
        with torch.no_grad():  # the final layer norm emits a constant that only w7's row matches
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.zero_()
            model.transformer.ln_f.bias[0] = 10.0
            model.transformer.wte.weight[:, 0] = 0.0
            model.transformer.wte.weight[FAVOURITE, 0] = 10.0
    return model


def build_judge() -> transformers.GPT2ForSequenceClassification:
    """A reward model (one output) whose reward is high when an answer ends with the favourite."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_layer=1,
        n_embd=8,
        n_head=2,
        num_labels=1,
        bos_token_id=1,
        eos_token_id=1,
    )
    config.pad_token_id = 0
    rm = transformers.GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():
        for p in rm.parameters():
            p.zero_()
        rm.transformer.wte.weight[FAVOURITE, 0] = 5.0
        rm.transformer.ln_f.weight.fill_(1.0)
        rm.score.weight[0, 0] = 3.0
    return rm


def main(argv: list[str] | None = None) -> int:
    """Save the parts under ``--out``, play one duel, and run the tournament command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="hf_demo")
    parser.add_argument("--n-duels", type=int, default=100)
    args = parser.parse_args(argv)
    out = Path(args.out)
    tok = build_tokenizer()
    for name, model in (
        ("reference", build_model(0)),
        ("model_a", build_model(1, favourite_only=True)),
        ("model_b", build_model(2)),
    ):
        model.save_pretrained(out / name)
        tok.save_pretrained(out / name)
    build_judge().save_pretrained(out / "judge")
    tok.save_pretrained(out / "judge")
    prompts = [f"w{10 + i} w{40 + i}" for i in range(20)]
    (out / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    # 1. the env from Python, from the saved folders
    env = pettingzoo.make(
        "parallel",
        "nlhf/HFTokenDuel-v0",
        reference=str(out / "reference"),
        judge=str(out / "judge"),
        prompts=str(out / "prompts.jsonl"),
        max_prompt_tokens=4,
        max_new_tokens=4,
    )
    obs, _ = env.reset(seed=0)
    while env.agents:
        obs, rewards, _, _, infos = env.step({"player_0": FAVOURITE, "player_1": 50})
    info = infos["player_0"]
    print(
        f"one duel: {info['answer_0']!r} vs {info['answer_1']!r}: "
        f"P(player_0 preferred) = {info['judge_prob']:.3f}, rewards {rewards}"
    )

    # 2. the command line: rank the two saved models and pi_ref
    cmd = [
        sys.executable, "-m", "agents.zoo.cli", "tournament",
        f"model_a={out / 'model_a'}", f"model_b={out / 'model_b'}", "pi_ref",
        "--env", "nlhf/HFTokenDuel-v0",
        "--env-kwargs", f"reference:{out / 'reference'}", f"judge:{out / 'judge'}",
        f"prompts:{out / 'prompts.jsonl'}", "max_prompt_tokens:4", "max_new_tokens:4",
        "--n-duels", str(args.n_duels), "--output-dir", str(out / "tournament"), "--no-progress",
    ]  # fmt: skip
    print("$ nlhf-zoo " + " ".join(cmd[3:]))
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
