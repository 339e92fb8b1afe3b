"""Players made from zoo agents, checkpoints and Stable-Baselines3 models (the agents-side adapters).

:mod:`nlhf_envs.players` defines the :class:`~nlhf_envs.players.Player` protocol and the players
that need nothing but numpy; this module adds the ones that need the agents (or torch), and
:func:`adapt` is registered with :func:`nlhf_envs.players.register_adapter` when :mod:`agents` is
imported, so single-seat views (``SingleSeatEnv(opponent=agent)``) and tournaments resolve every
spec the same way.

* :class:`AgentPlayer`: a zoo agent. A tabular agent (one with ``policy_table()``) is sampled from
  its current policy with the episode's generator, so a seeded episode is reproducible and its
  distribution is known; a token agent calls its own ``act``.
* :class:`ModelPlayer`: a Stable-Baselines3 model. With a ``Discrete`` action distribution it is
  sampled with the episode's generator; otherwise ``predict`` decides.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from nlhf_envs.players import BasePlayer, Player, context_index

__all__ = ["AgentPlayer", "ModelPlayer", "adapt", "is_zoo_agent", "sb3_action_probs"]


def is_zoo_agent(obj: Any) -> bool:
    """Whether ``obj`` is an nlhf-zoo agent (tabular or token)."""
    from agents.api import ZooAgent

    return isinstance(obj, ZooAgent) and not isinstance(obj, BasePlayer)


class AgentPlayer(BasePlayer):
    """A zoo agent in a seat (see the module docstring).

    Args:
        agent: the agent (``agents.make(...)``, ``agents.load(path)``).
        deterministic: pick the most likely action instead of sampling.
    """

    def __init__(self, agent: Any, deterministic: bool = False) -> None:
        self.agent = agent
        self.deterministic = bool(deterministic)
        self.tabular = callable(getattr(agent, "policy_table", None))

    def action_probabilities(self, observation: Any) -> np.ndarray | None:
        if not self.tabular:
            return None
        return np.asarray(self.agent.policy_table(context_index(observation)), dtype=np.float64)

    def policy_table(self) -> np.ndarray | None:
        if not self.tabular:
            return None
        return np.atleast_2d(np.asarray(self.agent.policy_table(), dtype=np.float64))

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        if not self.tabular:
            return self.agent.act(observation, deterministic=self.deterministic)
        probs = self.action_probabilities(observation)
        if self.deterministic:
            return int(np.argmax(probs))
        return int(rng.choice(probs.shape[0], p=probs / probs.sum()))


def sb3_action_probs(model: Any, observation: Any) -> np.ndarray | None:
    """Action probabilities of an SB3 policy for one observation, or ``None`` if not available."""
    policy = getattr(model, "policy", None)
    if policy is None or not hasattr(policy, "get_distribution"):
        return None
    import torch  # an SB3 model exists, so torch is importable

    with torch.no_grad():
        obs_tensor, _ = policy.obs_to_tensor(observation)
        dist = policy.get_distribution(obs_tensor)
        probs = getattr(getattr(dist, "distribution", None), "probs", None)
        if probs is None:
            return None
        return probs.cpu().numpy().astype(np.float64).reshape(-1)


class ModelPlayer(BasePlayer):
    """A Stable-Baselines3 model (anything with ``predict``) in a seat.

    Args:
        model: the model.
        deterministic: pick the most likely action instead of sampling.
    """

    def __init__(self, model: Any, deterministic: bool = False) -> None:
        self.model = model
        self.deterministic = bool(deterministic)
        self.action_space: Any = getattr(model, "action_space", None)

    def bind(self, action_space: Any) -> None:
        self.action_space = action_space

    def __deepcopy__(self, memo: dict[int, Any]) -> ModelPlayer:
        """Copies share the model: playing never changes it (actions are drawn with the caller's
        generator), and a live SB3 model holds tensors that cannot be deep-copied."""
        twin = ModelPlayer(self.model, self.deterministic)
        twin.action_space = self.action_space
        return twin

    def action_probabilities(self, observation: Any) -> np.ndarray | None:
        return sb3_action_probs(self.model, observation)

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        n = getattr(self.action_space, "n", None)
        probs = self.action_probabilities(observation) if n is not None else None
        if probs is not None and probs.shape == (int(n),):
            if self.deterministic:
                return int(np.argmax(probs))
            return int(rng.choice(probs.shape[0], p=probs / probs.sum()))
        action, _ = self.model.predict(observation, deterministic=self.deterministic)
        return np.asarray(action).reshape(()).item() if np.ndim(action) else action


def adapt(spec: Any, deterministic: bool) -> Player | None:
    """The adapter registered with :func:`nlhf_envs.players.register_adapter`.

    Returns a player for a zoo agent, the path of a saved agent (:func:`agents.load`), the path of
    an SB3 ``.zip`` model (:func:`agents.sb3.files.load_sb3_model`, never unpickled) or a
    Stable-Baselines3 model (an object with ``predict`` that is not a zoo agent); ``None`` for
    anything else (the environment side handles it).
    """
    if isinstance(spec, BasePlayer):
        return None
    if is_zoo_agent(spec):
        return AgentPlayer(spec, deterministic)
    if isinstance(spec, (str, os.PathLike)) and spec != "uniform":
        path = os.fspath(spec)
        if path.endswith(".zip") and os.path.isfile(path):  # an SB3 model, rebuilt without pickle
            from agents.sb3.files import load_sb3_model

            return ModelPlayer(load_sb3_model(path), deterministic)
        if os.path.exists(path) or os.path.exists(path + ".npz"):
            from agents.checkpoint import load_agent

            return AgentPlayer(load_agent(path), deterministic)
        return None
    if callable(getattr(spec, "predict", None)):
        return ModelPlayer(spec, deterministic)
    return None
