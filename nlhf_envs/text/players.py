"""Players of the token duel that come with the world: ``pi_ref`` and uniformly random answers.

Both follow :class:`nlhf_envs.players.Player` (``act(observation, rng)``): they read the seat's
observation (``int64 [2, L]``, token ids and mask of the prompt and the answer so far) and draw the
next token with the generator of whoever runs the episode, so a seeded match is reproducible.

* :class:`ReferencePlayer`: the world's reference policy ``pi_ref`` (the shipped language model);
* :class:`UniformAnswerPlayer`: a uniformly random token of the world's answer alphabet
  (``World.answer_token_ids``: ``<eos>`` and the words an answer may use), i.e. random words.

Tournaments seat them for the participant strings ``"pi_ref"`` and ``"uniform"`` on the token duel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nlhf_envs.players import BasePlayer
from nlhf_envs.text.world import World

__all__ = ["ReferencePlayer", "UniformAnswerPlayer"]


def observation_prefix(observation: Any) -> np.ndarray:
    """The token ids of a token duel seat's observation (``int64 [2, L]``) where its mask is set:
    the prompt and the answer so far, as the seat's policy reads them.

    Raises:
        ValueError: for an array of another shape, or one whose mask row is all zero.
    """
    obs = np.asarray(observation)
    if obs.ndim != 2 or obs.shape[0] != 2:
        raise ValueError(
            f"observation must be the token duel's array of shape (2, L); got shape {obs.shape}"
        )
    ids = obs[0][obs[1].astype(bool)]
    if ids.size == 0:
        raise ValueError("observation holds no tokens (its mask row is all zero)")
    return ids


class ReferencePlayer(BasePlayer):
    """``pi_ref`` of a world in a seat: the next token is drawn from its distribution.

    Args:
        world: the world (its shipped reference policy is loaded), or
        model: a reference model to use instead (a :class:`~nlhf_envs.text.models.TinyCausalLM`).
    """

    def __init__(self, world: World | str | None = None, model: torch.nn.Module | None = None):
        if model is None:
            from nlhf_envs.text.models import load_reference_policy

            model = load_reference_policy(world=world)
        self.model = model.eval()

    @torch.no_grad()
    def action_probabilities(self, observation: Any) -> np.ndarray:
        ids = torch.as_tensor(observation_prefix(observation), dtype=torch.long)
        logits, _ = self.model(ids[None])
        p = torch.softmax(logits[0, -1].double(), -1).cpu().numpy()
        return p / p.sum()

    def act(self, observation: Any, rng: np.random.Generator) -> int:
        p = self.action_probabilities(observation)
        return int(rng.choice(p.shape[0], p=p))


class UniformAnswerPlayer(BasePlayer):
    """A uniformly random token of a world's answer alphabet (random words, ``<eos>`` included)."""

    def __init__(self, world: World) -> None:
        self.tokens = np.asarray(world.answer_token_ids, dtype=np.int64)
        self.vocab_size = int(world.vocab_size)

    def action_probabilities(self, observation: Any) -> np.ndarray:
        p = np.zeros(self.vocab_size)
        p[self.tokens] = 1.0 / self.tokens.size
        return p

    def act(self, observation: Any, rng: np.random.Generator) -> int:
        observation_prefix(observation)  # the observation must be the duel's
        return int(self.tokens[rng.integers(self.tokens.size)])
