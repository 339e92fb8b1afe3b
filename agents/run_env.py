"""The environment of a train run, rebuilt from its ``config.yml``: one mechanism for every reader.

A checkpoint of a token agent on ``nlhf/HFTokenDuel-v0`` does not store the game it was trained
on (a reference model, a judge, prompts: folders and files of the user's); the run folder's
``config.yml`` records them as ``env_id`` and ``env_kwargs``. :func:`hf_env_of_run` rebuilds that
env from them, exactly as ``nlhf-zoo train --resume`` does, and :func:`run_config_of` finds the
``config.yml`` of the run holding a checkpoint (``RUN/final.npz``, ``RUN/best_model.npz``,
``RUN/checkpoints/<name>.npz``), so :func:`agents.load` and ``nlhf-zoo eval RUN`` take such a run
without ``game=env``. The rebuilt env is checked against the fingerprint the checkpoint stored
(:func:`agents.text.checkpoint.load_text_agent`), so a changed model, judge or prompt file is
refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nlhf_envs.errors import CheckpointError

__all__ = ["hf_env_of_run", "run_config_of"]


def run_config_of(checkpoint: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """``(path, content)`` of the ``config.yml`` of the train run holding ``checkpoint``
    (its folder or the one above it), or ``None`` when there is none.

    Raises:
        CheckpointError: naming the file, when it is not UTF-8 YAML holding a mapping with an
            ``env_id`` string and an ``env_kwargs`` mapping.
    """
    import yaml

    here = Path(checkpoint).parent
    for folder in (here, here.parent):
        path = folder / "config.yml"
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())
            raise CheckpointError(f"{path}: the run's config is unreadable ({detail})") from None
        if not isinstance(data, dict) or not isinstance(data.get("env_id"), str):
            raise CheckpointError(f"{path}: the run's config must be a mapping with an env_id")
        if not isinstance(data.get("env_kwargs") or {}, dict):
            raise CheckpointError(f"{path}: field 'env_kwargs' must be a mapping")
        return path, data
    return None


def hf_env_of_run(config: Mapping[str, Any]) -> Any:
    """The ``nlhf/HFTokenDuel-v0`` env a run's ``config.yml`` records (``env_id`` and
    ``env_kwargs``), built as ``train`` built it; ``None`` for another env (native envs are
    rebuilt from the checkpoint itself).

    Raises:
        ConfigError, GameError: when the recorded arguments no longer build the env (a model
            folder moved, a prompt file deleted), naming the argument.
    """
    from nlhf_envs.registration import HF_ENV_IDS

    env_id, kwargs = config["env_id"], dict(config.get("env_kwargs") or {})
    if env_id not in HF_ENV_IDS:
        return None
    from agents.registry import resolve_target, user_env_kwargs

    with user_env_kwargs(env_id, kwargs):
        return resolve_target(env_id, kwargs)[1]
