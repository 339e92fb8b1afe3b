"""Players of ``nlhf/HFTokenDuel-v0``: any ``transformers`` causal LM in a seat.

Both follow :class:`nlhf_envs.players.Player` (``act(observation, rng)``): they read the seat's
observation (``int64 [2, L]``: token ids and mask of the prompt and the answer so far) and draw the
next token with the generator of whoever runs the episode, so a seeded match is reproducible.

* :class:`HFModelPlayer`: a causal LM (a ``transformers`` model, a PEFT model, or an
  :class:`~nlhf_envs.text.hf.HFPolicy`); the whole prefix is re-read at every token (no cache
  across steps: a seat sees one observation at a time);
* :class:`UniformTokenPlayer`: a uniformly random token of a set (the env's answer alphabet, or
  its whole vocabulary).

Importing this module registers an adapter with :func:`nlhf_envs.players.register_adapter`, so
:func:`~nlhf_envs.players.as_player` and tournaments seat a ``transformers`` causal LM directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from nlhf_envs.players import BasePlayer, register_adapter
from nlhf_envs.text.hf import HFPolicy, is_causal_lm
from nlhf_envs.text.players import observation_prefix

__all__ = ["HFModelPlayer", "UniformTokenPlayer"]


class HFModelPlayer(BasePlayer):
    """A causal LM in a seat: the next token is drawn from its distribution (temperature 1).

    Args:
        model: a ``transformers`` causal LM (the tokens of its generation config's
            ``suppress_tokens`` are never played: :meth:`~nlhf_envs.text.hf.HFPolicy.of_model`)
            or an :class:`~nlhf_envs.text.hf.HFPolicy` (whose ``num_tokens`` and suppressed
            tokens are kept).
        deterministic: play the most likely token instead of sampling.

    When bound to the seat's ``Discrete(V)`` action space (tournaments do this), a model's logits
    are cut to the first ``V`` (the tokenizer's size).
    """

    def __init__(self, model: Any, deterministic: bool = False) -> None:
        self.policy = model if isinstance(model, HFPolicy) else HFPolicy.of_model(model)
        self._own_policy = not isinstance(model, HFPolicy)
        self.deterministic = deterministic
        self.policy.model.eval()

    def bind(self, action_space: spaces.Space) -> None:
        """Cut the logits to the action space's size (models only, not a given HFPolicy)."""
        n = getattr(action_space, "n", None)
        if self._own_policy and n is not None and int(n) != self.policy.num_tokens:
            self.policy = HFPolicy.of_model(self.policy.model, num_tokens=int(n))

    @torch.no_grad()
    def action_probabilities(self, observation: Any) -> np.ndarray:
        """The model's next-token distribution after the observed prefix, float64 ``[V]``."""
        ids = torch.as_tensor(observation_prefix(observation), dtype=torch.long)
        device = next(self.policy.model.parameters()).device
        logits, _ = self.policy(ids[None].to(device))
        p = torch.softmax(logits[0, -1].double(), -1).cpu().numpy()
        return p / p.sum()

    def act(self, observation: Any, rng: np.random.Generator) -> int:
        """One token id, drawn with ``rng`` (or the most likely one)."""
        p = self.action_probabilities(observation)
        if self.deterministic:
            return int(np.argmax(p))
        return int(rng.choice(p.shape[0], p=p))


class UniformTokenPlayer(BasePlayer):
    """A uniformly random token of ``tokens`` (e.g. the env's ``allowed_token_ids``)."""

    def __init__(self, tokens: Any, vocab_size: int) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.vocab_size = int(vocab_size)

    def action_probabilities(self, observation: Any) -> np.ndarray:
        """Uniform over ``tokens``, float64 ``[vocab_size]``."""
        p = np.zeros(self.vocab_size)
        p[self.tokens] = 1.0 / self.tokens.size
        return p

    def act(self, observation: Any, rng: np.random.Generator) -> int:
        """One of ``tokens``, drawn with ``rng``."""
        observation_prefix(observation)
        return int(self.tokens[rng.integers(self.tokens.size)])


def _adapt(spec: Any, deterministic: bool) -> HFModelPlayer | None:
    """The :func:`~nlhf_envs.players.as_player` adapter: causal LMs and ``HFPolicy`` objects."""
    if isinstance(spec, HFPolicy) or (isinstance(spec, torch.nn.Module) and is_causal_lm(spec)):
        return HFModelPlayer(spec, deterministic)
    return None


register_adapter(_adapt)
