"""``nlhf-zoo export RUN OUT``: a Hugging Face run's policy as a plain model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.zoo.common import (
    UserError,
    _check_folder,
)
from agents.zoo.train import _hf_env_of, _resume_state


def cmd_export(args: argparse.Namespace) -> int:
    """``nlhf-zoo export RUN OUT``: a Hugging Face run's policy as a plain model folder (a LoRA
    adapter merged into its base; full fine-tuning: the model) with its tokenizer."""
    import agents
    from agents.text.backend import export_merged

    run_dir = Path(args.run)
    final = run_dir / "final.npz"
    state = _resume_state(run_dir, None, None)
    env = _hf_env_of(state["config"])
    if env is None:
        raise UserError(
            f"export {run_dir}: only runs on nlhf/HFTokenDuel-v0 hold a Hugging Face model "
            f"(this run trained on {state['config']['env_id']})"
        )
    if not final.is_file():
        raise UserError(f"export {run_dir}: no final.npz yet (finish the run with train --resume)")
    out = Path(args.out)
    from agents.zoo.runs import remove_stale_folders

    remove_stale_folders(out.parent, out.name)  # an earlier export that was killed
    if out.exists():
        raise UserError(
            f"export: {out} already exists; choose a new folder (nothing is overwritten)"
        )
    _check_folder("export: the parent of OUT", out.parent)
    folder = export_merged(agents.load(final, game=env), out)
    print(f"wrote {folder}/ (AutoModelForCausalLM.from_pretrained loads it)")
    return 0
