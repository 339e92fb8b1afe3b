"""Train Nash-MP with LoRA on a Hugging Face causal LM, then rank it against pi_ref and Online IPO.

Builds a small random GPT-2 reference, the word-level tokenizer of ``examples/hf_token_duel.py``, a
reward-model judge that prefers answers ending with one of the words ``w100`` ... ``w199`` (half of
the vocabulary: about half of ``pi_ref``'s answers end with one, so a learner sees the judge's
preference from its first batch) and a prompt file, all local (nothing is downloaded). Then it runs
the command line three times::

    nlhf-zoo train --agent nash_mp --env nlhf/HFTokenDuel-v0 --env-kwargs ... \\
        --params lora:{rank: 8, alpha: 16} ...
    nlhf-zoo train --agent online_ipo --env nlhf/HFTokenDuel-v0 --env-kwargs ... --params ...
    nlhf-zoo tournament nash_mp_lora=<run>/final_hf online_ipo=<run>/final_hf pi_ref ...

The reference's weights are drawn with a standard deviation of 0.3 (``initializer_range``), not
GPT-2's 0.02: a LoRA adapter on the attention layers cannot reach the (tied) output embedding, and
with embeddings of GPT-2's initial scale every next-token distribution is close to uniform whatever
the hidden state, so an adapter moves almost nothing (the situation of a freshly initialised model,
not of a trained one). Online IPO fine-tunes every weight. Each run folder holds ``final_hf/``: the LoRA
adapter (or the fully fine-tuned model) as ``save_pretrained`` output with the tokenizer, which
``peft`` / ``transformers`` load directly.

    python examples/hf_nash_lora.py --out hf_lora_demo --queries 4096 --n-duels 200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import transformers  # noqa: E402
from hf_token_duel import VOCAB, build_tokenizer  # noqa: E402

from agents.zoo.cli import main as nlhf_zoo  # noqa: E402

#: the judge prefers answers whose last word is one of w100 ... w199
FAVOURITES = range(100, VOCAB)


def build_reference(seed: int = 0) -> transformers.GPT2LMHeadModel:
    """A random two-layer GPT-2 whose weights have standard deviation 0.3 (module docstring)."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=1,
        initializer_range=0.3,
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).eval()


def build_judge() -> transformers.GPT2ForSequenceClassification:
    """A reward model (one output): 7.9 when the answer's last word is a favourite, else 0."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_layer=1, n_embd=8, n_head=2, num_labels=1, bos_token_id=1,
        eos_token_id=1,
    )  # fmt: skip
    config.pad_token_id = 0
    rm = transformers.GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():  # the last token's embedding alone sets the reward
        for p in rm.parameters():
            p.zero_()
        rm.transformer.wte.weight[list(FAVOURITES), 0] = 5.0
        rm.transformer.ln_f.weight.fill_(1.0)
        rm.score.weight[0, 0] = 3.0
    return rm


def _env_kwargs(out: Path) -> list[str]:
    return [
        f"reference:{out / 'reference'}",
        f"judge:{out / 'judge'}",
        f"prompts:{out / 'prompts.jsonl'}",
        "heldout_fraction:0.25",
        "max_prompt_tokens:4",
        "max_new_tokens:4",
    ]


def _run(args: list[str]) -> None:
    print("$ nlhf-zoo " + " ".join(args))
    code = nlhf_zoo(args)
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """Save the parts under ``--out``, train both agents and run the tournament."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="hf_lora_demo")
    parser.add_argument("--queries", type=int, default=4096, help="training budget of each run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-duels", type=int, default=200)
    args = parser.parse_args(argv)
    out = Path(args.out)
    tok = build_tokenizer()
    build_reference(0).save_pretrained(out / "reference")
    tok.save_pretrained(out / "reference")
    build_judge().save_pretrained(out / "judge")
    tok.save_pretrained(out / "judge")
    prompts = [f"w{10 + i} w{40 + i}" for i in range(32)]
    (out / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    common = ["--env", "nlhf/HFTokenDuel-v0", "--env-kwargs", *_env_kwargs(out)]
    shared = [f"batch_size:{args.batch_size}", "mode:probability", "eval_every:0", "beta:0.05"]
    runs = {}
    for name, params in (
        ("nash_mp", [*shared, "inner_steps:4", "lr:3.0e-3", "lora:{rank: 8, alpha: 16}"]),
        ("online_ipo", [*shared, "lr:0.001"]),
    ):
        logs = out / "logs"
        _run(
            ["train", "--agent", name, *common, "--params", *params, "-n", str(args.queries),
             "--log-folder", str(logs), "--no-progress"]
        )  # fmt: skip
        runs[name] = sorted((logs / name).iterdir())[-1] / "final_hf"
    _run(
        ["tournament", f"nash_mp_lora={runs['nash_mp']}", f"online_ipo={runs['online_ipo']}",
         "pi_ref", *common, "--n-duels", str(args.n_duels), "--output-dir",
         str(out / "tournament"), "--no-progress"]
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
