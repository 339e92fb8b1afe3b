"""Stable-Baselines3 agents behind the zoo's agent API.

* :mod:`agents.sb3.matrix`: ``sb3_ppo_selfplay`` on the matrix games (re-exported here);
* :mod:`agents.sb3.text`: ``sb3_ppo_selfplay`` on the token duel (imports torch; loaded on first use
  of the text agents).
"""

from agents.sb3.matrix import SB3PPOConfig, SB3PPOSelfPlay

__all__ = ["SB3PPOConfig", "SB3PPOSelfPlay"]
