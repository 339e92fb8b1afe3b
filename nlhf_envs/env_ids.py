"""Every nlhf-zoo environment id and its default keyword arguments (plain data, imports nothing).

:mod:`nlhf_envs.registration` registers these ids with PettingZoo and Gymnasium; everything else
that needs the list of ids (single-seat views, the exact tiny games, the CLI) reads it here.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HF_ENV_IDS",
    "MATRIX_ENV_IDS",
    "MULTIPLAYER_ENV_IDS",
    "MULTIPLAYER_TEXT_ENV_IDS",
    "TEXT_ENV_IDS",
    "registered_ids",
]

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

#: n-player preference-game ids: id -> default keyword arguments of
#: :func:`nlhf_envs.multiplayer.parallel_env` (``num_players`` may be overridden at ``make``). They
#: are not in :func:`registered_ids`, whose ids are all two-seat games (single-seat views, duels).
MULTIPLAYER_ENV_IDS: dict[str, dict[str, Any]] = {
    "nlhf/MultiMatrixGame-v0": {"num_players": 3},
    "nlhf/MultiRPS-v0": {"game": "rps", "num_players": 3},
}

#: Token-level text duel ids: id -> default keyword arguments of the text env factories.
TEXT_ENV_IDS: dict[str, dict[str, Any]] = {
    "nlhf/TokenDuel-v0": {"world": "default", "judge_version": "v0"},
    "nlhf/TokenDuel-v1": {"world": "default", "judge_version": "latest"},
    "nlhf/TokenDuel-Cyclic-v0": {"world": "default-cyclic", "judge_version": "latest"},
    "nlhf/TinyTokenDuel-v0": {"world": "tiny", "judge_version": "latest"},
    "nlhf/TinyTokenDuel-Cyclic-v0": {"world": "tiny-cyclic", "judge_version": "latest"},
    "nlhf/TinyTokenDuel-v1": {"world": "tiny-wide", "judge_version": "latest"},
    "nlhf/TinyTokenDuel-Cyclic-v1": {"world": "tiny-wide-cyclic", "judge_version": "latest"},
}

#: Ids of envs built from the user's own parts (no defaults: every part is a keyword argument of
#: ``pettingzoo.make``), registered with PettingZoo but left out of :func:`registered_ids`, whose
#: ids all make an env without arguments: id -> entry module under ``nlhf_envs``.
HF_ENV_IDS: dict[str, str] = {"nlhf/HFTokenDuel-v0": "nlhf_envs.text.hf_env"}

#: n-player token-duel ids: id -> default keyword arguments of
#: :func:`nlhf_envs.text.multiplayer.parallel_env` (``num_players`` may be overridden at ``make``).
#: Like :data:`MULTIPLAYER_ENV_IDS`, they are not in :func:`registered_ids`.
MULTIPLAYER_TEXT_ENV_IDS: dict[str, dict[str, Any]] = {
    "nlhf/MultiTokenDuel-v0": {"world": "default", "judge_version": "latest", "num_players": 3},
    "nlhf/MultiTinyTokenDuel-v0": {"world": "tiny", "judge_version": "latest", "num_players": 3},
}


def registered_ids() -> list[str]:
    """All nlhf-zoo environment ids, matrix games first."""
    return list(MATRIX_ENV_IDS) + list(TEXT_ENV_IDS)
