"""Hugging Face model folders as tournament participants of the command line (``nlhf-zoo``).

A participant spec that names a folder saved by ``transformers`` (``config.json``: a causal LM)
or by PEFT (``adapter_config.json``: an adapter over a base model in a local folder) is loaded
here; :mod:`agents.zoo.cli` calls :func:`load_hf_participant` before trying the zoo's own
checkpoints. Nothing is downloaded (``local_files_only``); weights are read by the libraries'
safe loaders, never unpickled by us.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nlhf_envs.errors import ConfigError

__all__ = ["is_hf_folder", "load_hf_participant"]


def is_hf_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of a saved ``transformers`` model or PEFT adapter."""
    return path.is_dir() and (
        (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_hf_participant(path: Path, spec: str) -> Any | None:
    """The causal LM saved in ``path`` (a full model or a PEFT adapter on its base), in eval mode,
    or ``None`` when ``path`` is not such a folder.

    Raises:
        ConfigError: for a folder that cannot be loaded as a causal LM (one line naming ``spec``),
            a PEFT adapter whose base model is not a local folder, or a missing extra.
    """
    if not is_hf_folder(path):
        return None
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"participant {spec!r}: a Hugging Face model needs the 'hf' extra"
        ) from None
    from nlhf_envs.text.hf import is_causal_lm, saved_architecture

    arch = saved_architecture(path)
    if arch is not None:
        raise ConfigError(f"participant {spec!r}: {path} holds a {arch}, not a causal LM")

    adapter = path / "adapter_config.json"
    try:
        if adapter.is_file():
            try:
                import peft
            except ImportError:
                raise ConfigError(
                    f"participant {spec!r}: a PEFT adapter needs the peft package"
                ) from None
            base_name = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if not base_name or not Path(base_name).is_dir():
                raise ConfigError(
                    f"participant {spec!r}: the adapter's base model {base_name!r} is not a local "
                    "folder (nothing is downloaded)"
                )
            base = transformers.AutoModelForCausalLM.from_pretrained(
                base_name, local_files_only=True
            )
            model = peft.PeftModelForCausalLM.from_pretrained(base, path)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(
            f"participant {spec!r}: cannot load a causal LM from {path}: {_first_line(err)}"
        ) from None
    if not is_causal_lm(model):  # pragma: no cover - AutoModelForCausalLM only builds causal LMs
        raise ConfigError(f"participant {spec!r}: {type(model).__name__} is not a causal LM")
    return model.eval()
