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
        import transformers  # noqa: F401  (the extra's check)
    except ImportError:
        raise ConfigError(
            f"participant {spec!r}: a Hugging Face model needs the 'hf' extra"
        ) from None
    from nlhf_envs.text.hf import is_causal_lm, saved_architecture

    arch = saved_architecture(path)
    if arch is not None:
        raise ConfigError(f"participant {spec!r}: {path} holds a {arch}, not a causal LM")

    from nlhf_envs.errors import GameError
    from nlhf_envs.text.hf_folders import load_adapter, load_causal_lm, suppressed_tokens

    what = f"participant {spec!r}"
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        try:
            import peft  # noqa: F401
        except ImportError:
            raise ConfigError(f"{what}: a PEFT adapter needs the peft package") from None
        try:
            base_name = json.loads(adapter.read_text()).get("base_model_name_or_path")
        except (OSError, ValueError, AttributeError) as err:
            raise ConfigError(f"{what}: cannot read {adapter}: {_first_line(err)}") from None
        if not base_name or not Path(base_name).is_dir():
            raise ConfigError(
                f"{what}: the adapter's base model {base_name!r} is not a local "
                "folder (nothing is downloaded)"
            )
        base = load_causal_lm(base_name, f"{what} (the adapter's base model)", ConfigError)
        model = load_adapter(base, path, what, ConfigError)
        try:  # the tokens the trained policy never emits (its env's answer alphabet)
            tokens = suppressed_tokens(path)
        except GameError as err:
            raise ConfigError(f"{what}: {err}") from None
        if tokens:
            model.generation_config.suppress_tokens = tokens
    else:
        model = load_causal_lm(path, what, ConfigError)  # reads its generation_config.json
    if not is_causal_lm(model):  # pragma: no cover - AutoModelForCausalLM only builds causal LMs
        raise ConfigError(f"participant {spec!r}: {type(model).__name__} is not a causal LM")
    return model.eval()
