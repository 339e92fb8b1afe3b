"""Train Nash-MP with LoRA on a Hugging Face causal LM, then rank it against pi_ref and Online IPO.

Builds a small random GPT-2 reference, a word-level tokenizer, a reward-model judge that prefers
answers ending with the word ``w7`` and a prompt file (all local, nothing is downloaded; the same
parts as ``examples/hf_token_duel.py``), then runs the command line three times::

    nlhf-zoo train --agent nash_mp --env nlhf/HFTokenDuel-v0 --env-kwargs ... \\
        --params lora:{rank: 8, alpha: 16, target_modules: [c_attn]} ...
    nlhf-zoo train --agent online_ipo --env nlhf/HFTokenDuel-v0 --env-kwargs ... --params ...
    nlhf-zoo tournament nash_mp_lora=<run>/final_hf online_ipo=<run>/final_hf pi_ref ...

Each run folder holds ``final_hf/``: the LoRA adapter (or the fully fine-tuned model) as
``save_pretrained`` output with the tokenizer, which ``peft`` / ``transformers`` load directly.

    python examples/hf_nash_lora.py --out hf_lora_demo --queries 1024 --n-duels 200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hf_token_duel import build_judge, build_model, build_tokenizer  # noqa: E402

from agents.zoo.cli import main as nlhf_zoo  # noqa: E402


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
    parser.add_argument("--queries", type=int, default=1024, help="training budget of each run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-duels", type=int, default=200)
    args = parser.parse_args(argv)
    out = Path(args.out)
    tok = build_tokenizer()
    build_model(0).save_pretrained(out / "reference")
    tok.save_pretrained(out / "reference")
    build_judge().save_pretrained(out / "judge")
    tok.save_pretrained(out / "judge")
    prompts = [f"w{10 + i} w{40 + i}" for i in range(32)]
    (out / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    common = ["--env", "nlhf/HFTokenDuel-v0", "--env-kwargs", *_env_kwargs(out)]
    shared = [f"batch_size:{args.batch_size}", "mode:probability", "eval_every:0", "beta:0.05"]
    runs = {}
    for name, params in (
        ("nash_mp", [*shared, "inner_steps:2", "lr:0.01", "lora:{rank: 8, alpha: 16}"]),
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
