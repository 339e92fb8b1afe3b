"""Registration of every nlhf-zoo environment id with PettingZoo's registry.

Importing :mod:`nlhf_envs` calls :func:`register_all`, after which
``pettingzoo.make("parallel", "nlhf/RPS-v0")`` (or ``"aec"``) works. Entry points are strings, so
registering imports neither torch nor the text game.
"""

from __future__ import annotations

import pettingzoo

from nlhf_envs.env_ids import (
    HF_ENV_IDS,
    MATRIX_ENV_IDS,
    MULTIPLAYER_ENV_IDS,
    MULTIPLAYER_TEXT_ENV_IDS,
    TEXT_ENV_IDS,
    registered_ids,
)
from nlhf_envs.gym_views import register_gym_views

__all__ = [
    "HF_ENV_IDS",
    "MATRIX_ENV_IDS",
    "MULTIPLAYER_ENV_IDS",
    "MULTIPLAYER_TEXT_ENV_IDS",
    "TEXT_ENV_IDS",
    "register_all",
    "registered_ids",
]

_registered = False


def register_all() -> None:
    """Register every id (both the ``"parallel"`` and the ``"aec"`` form). Idempotent."""
    global _registered
    if _registered:
        return
    for env_id, kwargs in MATRIX_ENV_IDS.items():
        pettingzoo.register(
            "parallel", env_id, entry_point="nlhf_envs.matrix_game:parallel_env", kwargs=kwargs
        )
        pettingzoo.register("aec", env_id, entry_point="nlhf_envs.matrix_game:env", kwargs=kwargs)
    for env_id, kwargs in MULTIPLAYER_ENV_IDS.items():
        pettingzoo.register(
            "parallel", env_id, entry_point="nlhf_envs.multiplayer:parallel_env", kwargs=kwargs
        )
        pettingzoo.register("aec", env_id, entry_point="nlhf_envs.multiplayer:env", kwargs=kwargs)
    for env_id, kwargs in TEXT_ENV_IDS.items():
        pettingzoo.register(
            "parallel", env_id, entry_point="nlhf_envs.text.env:parallel_env", kwargs=kwargs
        )
        pettingzoo.register("aec", env_id, entry_point="nlhf_envs.text.env:env", kwargs=kwargs)
    for env_id, kwargs in MULTIPLAYER_TEXT_ENV_IDS.items():
        pettingzoo.register(
            "parallel", env_id, entry_point="nlhf_envs.text.multiplayer:parallel_env", kwargs=kwargs
        )
        pettingzoo.register(
            "aec", env_id, entry_point="nlhf_envs.text.multiplayer:env", kwargs=kwargs
        )
    for env_id, module in HF_ENV_IDS.items():  # needs the 'hf' extra only when made
        pettingzoo.register("parallel", env_id, entry_point=f"{module}:parallel_env")
        pettingzoo.register("aec", env_id, entry_point=f"{module}:env")
    register_gym_views()
    _registered = True
