"""nlhf-zoo environments: preference games for Nash Learning from Human Feedback.

* :class:`PreferenceGame` — a validated (contextual) preference game with ``pi_ref`` and ``beta``;
* :mod:`nlhf_envs.families` — built-in game families (:func:`make_game`);
* :mod:`nlhf_envs.solvers` — exact regularised Nash, exploitability and other metrics (numpy/scipy);
* :mod:`nlhf_envs.matrix_game` — the PettingZoo ``ParallelEnv`` (and AEC) that plays a game;
* :mod:`nlhf_envs.text` — the token-level text duel with a learned judge (imports torch on demand).

Importing this package registers every ``nlhf/...`` id with PettingZoo's registry (and Gymnasium
single-agent views with Gymnasium's), so ``pettingzoo.make("parallel", "nlhf/RPS-v0")`` works.
Importing it does not import torch.
"""

from nlhf_envs.families import FAMILIES, make_game
from nlhf_envs.game import GameValidationError, PreferenceGame
from nlhf_envs.registration import register_all, registered_ids

register_all()

__all__ = [
    "FAMILIES",
    "GameValidationError",
    "PreferenceGame",
    "make_game",
    "registered_ids",
]
__version__ = "0.1.0"
