"""Registration of every nlhf-zoo environment id with PettingZoo's registry.

Importing :mod:`nlhf_envs` calls :func:`register_all`, after which
``pettingzoo.make("parallel", "nlhf/RPS-v0")`` (or ``"aec"``) works. Entry points are strings, so
registering imports neither torch nor the text game.
"""

from __future__ import annotations

from typing import Any

import pettingzoo

#: Matrix-game ids: id -> default keyword arguments of :func:`nlhf_envs.matrix_game.parallel_env`.
MATRIX_ENV_IDS: dict[str, dict[str, Any]] = {
    "nlhf/MatrixGame-v0": {},
    "nlhf/RPS-v0": {"game": "rps"},
    "nlhf/BiasedRPS-v0": {"game": "biased_rps"},
    "nlhf/Cyclic-v0": {"game": "cyclic"},
    "nlhf/UniformGame-v0": {"game": "uniform"},
    "nlhf/SkewGaussian-v0": {"game": "skew_gaussian"},
    "nlhf/BradleyTerry-v0": {"game": "bradley_terry"},
    "nlhf/Condorcet-v0": {"game": "condorcet"},
    "nlhf/DiscGame-v0": {"game": "disc"},
    "nlhf/ContextualUniform-v0": {"game": "uniform", "num_contexts": 8},
}

#: Token-level text duel ids: id -> default keyword arguments of the text env factories.
TEXT_ENV_IDS: dict[str, dict[str, Any]] = {
    "nlhf/TokenDuel-v0": {"world": "default", "judge_version": "v0"},
    "nlhf/TokenDuel-v1": {"world": "default", "judge_version": "latest"},
    "nlhf/TokenDuel-Cyclic-v0": {"world": "default-cyclic", "judge_version": "latest"},
    "nlhf/TinyTokenDuel-v0": {"world": "tiny", "judge_version": "latest"},
    "nlhf/TinyTokenDuel-Cyclic-v0": {"world": "tiny-cyclic", "judge_version": "latest"},
}

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
    for env_id, kwargs in TEXT_ENV_IDS.items():
        pettingzoo.register(
            "parallel", env_id, entry_point="nlhf_envs.text.env:parallel_env", kwargs=kwargs
        )
        pettingzoo.register("aec", env_id, entry_point="nlhf_envs.text.env:env", kwargs=kwargs)
    from nlhf_envs.gym_views import register_gym_views

    register_gym_views()
    _registered = True


def registered_ids() -> list[str]:
    """All nlhf-zoo environment ids, matrix games first."""
    return list(MATRIX_ENV_IDS) + list(TEXT_ENV_IDS)
