"""nlhf-zoo agents: Nash Mirror Prox and baseline NLHF learners behind one small API.

    >>> import agents
    >>> agent = agents.make("nash_mp", "rps", seed=0)          # or a PreferenceGame / env id / env
    >>> agent.learn(num_queries=200).policy_table().round(3)
    array([0.333, 0.333, 0.333])

* :func:`make` ``(name, game_or_env, *, seed=None, tensorboard_log=None, env_kwargs=None,
  **config)``
* :func:`available` ``(kind=None) -> list[str]``, :func:`config_class` ``(name, kind="matrix")``
* :func:`load` ``(path, *, game=None, tensorboard_log=None)``
* :func:`register_agent` ``(name, kind="matrix")`` class decorator; :class:`Agent` base class
* :func:`agents.config.build_config` validates a mapping against a config dataclass.

Metric names are documented in :mod:`agents.base`.
"""

from agents.api import AgentBase, ZooAgent
from agents.base import METRIC_NAMES, Agent
from agents.checkpoint import CheckpointError
from agents.checkpoint import load_agent as load
from agents.config import AgentConfig, ConfigError, PGConfig, build_config
from agents.registry import (
    ZooSettingsAvailable,
    available,
    config_class,
    make,
    register_agent,
)

# algorithms (importing registers them)
from agents.egpo import EGPO, EGPOConfig  # noqa: E402  isort: skip
from agents.inpo import INPO, INPOConfig  # noqa: E402  isort: skip
from agents.mmd import MMD, MMDConfig  # noqa: E402  isort: skip
from agents.mnpo import MNPO, MNPOConfig  # noqa: E402  isort: skip
from agents.nash_md import NashMD, NashMDConfig  # noqa: E402  isort: skip
from agents.nash_mp import NashMP, NashMPConfig  # noqa: E402  isort: skip
from agents.nash_prox import NashProx, NashProxConfig  # noqa: E402  isort: skip
from agents.omwu import OMWU, OMWUConfig  # noqa: E402  isort: skip
from agents.online_ipo import OnlineIPO, OnlineIPOConfig  # noqa: E402  isort: skip
from agents.sppo import SPPO, SPPOConfig  # noqa: E402  isort: skip
from agents.sb3 import SB3PPOConfig, SB3PPOSelfPlay  # noqa: E402,F401  isort: skip

# who can play a seat: zoo agents, checkpoints and SB3 models become nlhf_envs Players
from agents.players import adapt as _adapt_player  # noqa: E402  isort: skip
from nlhf_envs.players import register_adapter as _register_adapter  # noqa: E402  isort: skip

_register_adapter(_adapt_player)
# the token agents import torch: the registry loads these modules on first use of kind "text"
from agents.registry import register_lazy_kind as _register_lazy_kind  # noqa: E402  isort: skip

_register_lazy_kind("text", ("agents.text", "agents.sb3.text"))

__all__ = [
    "ZooSettingsAvailable",
    "Agent",
    "AgentBase",
    "ZooAgent",
    "AgentConfig",
    "CheckpointError",
    "ConfigError",
    "METRIC_NAMES",
    "EGPO",
    "EGPOConfig",
    "INPO",
    "INPOConfig",
    "MMD",
    "MMDConfig",
    "MNPO",
    "MNPOConfig",
    "NashMD",
    "NashMDConfig",
    "NashMP",
    "NashMPConfig",
    "NashProx",
    "NashProxConfig",
    "OMWU",
    "OMWUConfig",
    "OnlineIPO",
    "OnlineIPOConfig",
    "SPPO",
    "SPPOConfig",
    "PGConfig",
    "available",
    "build_config",
    "config_class",
    "load",
    "make",
    "register_agent",
]
