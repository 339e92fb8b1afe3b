"""``nlhf-zoo export RUN OUT``: a Hugging Face run's policy as a plain model folder.

It does no more than load, merge and save: the run's ``final_hf/`` folder (written next to
``final.npz`` by every save: the LoRA adapter and its base's path, or the whole fine-tuned model,
and the tokenizer) is loaded with the safe loaders of :mod:`nlhf_envs.text.hf_folders`, checked to
hold the policy ``final.npz`` holds (tensor by tensor: a save interrupted between the two files
is refused, not exported), the adapter merged into its base (``merge_and_unload``), and the model
and tokenizer saved with ``save_pretrained`` into a new folder (written aside, then moved in place).
No environment, judge, prompt set or agent is built.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from agents.zoo.common import (
    UserError,
    _check_folder,
)
from agents.zoo.train import _resume_state


def _same_policy(model: Any, final: Path, run_dir: Path) -> None:
    """Refuse a ``final_hf/`` whose weights are not the policy stored in ``final.npz``.

    ``final.npz`` stores the policy as ``policy/lm.<name>`` (the model's own state-dict names;
    with LoRA, the adapter's weights only); each is compared with the loaded model's tensor of the
    same name, one at a time.
    """
    import numpy as np
    import torch

    from nlhf_envs.archives import READ_ERRORS, open_zip

    state = model.state_dict()
    try:
        open_zip(final, what="checkpoint").close()  # bounded before numpy reads it
        with np.load(final, allow_pickle=False) as data:
            names = [k for k in data.files if k.startswith("policy/lm.")]
            if not names:
                raise UserError(f"export {run_dir}: {final.name} holds no Hugging Face policy")
            for key in names:
                name = key[len("policy/lm.") :]
                mine = state.get(name)
                if mine is None or not torch.equal(
                    mine.detach().cpu(), torch.from_numpy(np.array(data[key]))
                ):
                    raise UserError(
                        f"export {run_dir}: final_hf/ does not hold the policy of final.npz "
                        f"({name} differs: a save was interrupted between the two); "
                        f"nlhf-zoo train --resume {run_dir} writes both again"
                    )
    except READ_ERRORS as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"export {run_dir}: {final} is unreadable ({detail})") from None


def _load_policy(folder: Path, run_dir: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a run's ``final_hf/``: the full model, or the LoRA adapter on
    the base model its ``adapter_config.json`` names (not yet merged)."""
    from nlhf_envs.errors import ConfigError
    from nlhf_envs.text.hf_folders import load_adapter, load_causal_lm, load_tokenizer

    what = f"export {run_dir}: final_hf/"
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        try:
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError, AttributeError) as exc:
            raise UserError(f"{what}: cannot read {adapter.name}: {exc}") from None
        if not base or not Path(base).is_dir():
            raise UserError(f"{what}: the adapter's base model {base!r} is not a local folder")
        model = load_adapter(
            load_causal_lm(base, f"{what} (the adapter's base)", ConfigError),
            folder,
            what,
            ConfigError,
        )
    else:
        model = load_causal_lm(folder, what, ConfigError)
    return model.eval(), load_tokenizer(folder, f"{what} (its tokenizer)", ConfigError)


def cmd_export(args: argparse.Namespace) -> int:
    """``nlhf-zoo export RUN OUT``: a Hugging Face run's policy as a plain model folder (a LoRA
    adapter merged into its base; full fine-tuning: the model) with its tokenizer."""
    from nlhf_envs.env_ids import HF_ENV_IDS

    run_dir = Path(args.run)
    final, folder = run_dir / "final.npz", run_dir / "final_hf"
    state = _resume_state(run_dir, None, None)
    if state["config"]["env_id"] not in HF_ENV_IDS:
        raise UserError(
            f"export {run_dir}: only runs on nlhf/HFTokenDuel-v0 hold a Hugging Face model "
            f"(this run trained on {state['config']['env_id']})"
        )
    if not final.is_file():
        raise UserError(f"export {run_dir}: no final.npz yet (finish the run with train --resume)")
    if not folder.is_dir():
        raise UserError(
            f"export {run_dir}: no final_hf/ next to final.npz; nlhf-zoo train --resume {run_dir} "
            "writes it"
        )
    out = Path(args.out)
    from agents.zoo.runs import remove_stale_folders

    remove_stale_folders(out.parent, out.name)  # an earlier export that was killed
    if out.exists():
        raise UserError(
            f"export: {out} already exists; choose a new folder (nothing is overwritten)"
        )
    _check_folder("export: the parent of OUT", out.parent)
    model, tokenizer = _load_policy(folder, run_dir)  # load
    _same_policy(model, final, run_dir)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # merge
    from agents.text.backend import replace_folder  # the one way a model folder is put in place

    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    try:  # save
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}/ (AutoModelForCausalLM.from_pretrained loads it)")
    return 0
