"""The agent registry and :func:`make`, keyed by ``(name, kind)``.

``kind`` is ``"matrix"`` (tabular agents on :class:`~nlhf_envs.game.PreferenceGame`) or ``"text"``
(token-level agents on the text duel). :func:`make` decides the kind from its target: a game, a
family name, a matrix or n-player env id or env instance is ``"matrix"`` (the agent learns the
env's game); a text env id (:data:`nlhf_envs.registration.TEXT_ENV_IDS`) or a text env instance is
``"text"``.

A text agent registered with ``@register_agent("nash_mp", kind="text")`` must have a ``config_cls``
dataclass attribute and accept ``cls(env, config, *, seed=..., tensorboard_log=...)``, where ``env``
is the PettingZoo parallel env built from the id (or passed in).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import zoo_configs
from agents.config import build_config
from nlhf_envs.errors import ConfigError, EnvironmentSetupError, NlhfError
from nlhf_envs.game import PreferenceGame

__all__ = [
    "register_agent",
    "available",
    "config_class",
    "get_agent_class",
    "make",
    "resolve_target",
    "KINDS",
]

KINDS = ("matrix", "text")
_REGISTRY: dict[tuple[str, str], type] = {}
T = TypeVar("T", bound=type)


@contextlib.contextmanager
def user_env_kwargs(env_id: str, kwargs: Any) -> Iterator[None]:
    """Report a bad ``env_kwargs`` value met while building ``env_id`` as the user's mistake: a
    ``TypeError`` about an argument or the environment's own ``ValueError`` becomes one
    :class:`~nlhf_envs.errors.ConfigError`; library errors and other exceptions pass unchanged."""
    try:
        yield
    except NlhfError:
        raise
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise ConfigError(f"env_kwargs of {env_id}: {exc}") from None
    except ValueError as exc:  # the environment's own check of a user-given argument
        raise ConfigError(f"env_kwargs {kwargs} of {env_id}: {exc}") from None


def register_agent(name: str, kind: str = "matrix") -> Callable[[T], T]:
    """Class decorator registering an agent under ``(name, kind)``; sets ``cls.name``/``cls.kind``.

    Raises:
        ValueError: for an unknown kind or a name already registered for that kind.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")

    def decorator(cls: T) -> T:
        key = (name, kind)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"agent {name!r} is already registered for kind {kind!r}")
        if not hasattr(cls, "config_cls"):
            raise TypeError(f"agent class {cls.__name__} needs a config_cls attribute")
        cls.name = name
        cls.kind = kind
        _REGISTRY[key] = cls
        return cls

    return decorator


def available(kind: str | None = None) -> list[str]:
    """Sorted names of the registered agents (of one kind, or of any kind when ``None``)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None; got {kind!r}")
    if kind == "text":
        _load_text_agents()
    return sorted({n for (n, k) in _REGISTRY if kind is None or k == kind})


#: kind -> modules whose import registers that kind's agents (imported on first use)
_LAZY_KINDS: dict[str, tuple[str, ...]] = {}


def register_lazy_kind(kind: str, modules: tuple[str, ...]) -> None:
    """Import ``modules`` (which register the agents of ``kind``) the first time ``kind`` is used.

    :mod:`agents` declares the token agents this way, so ``import agents`` stays free of torch.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    _LAZY_KINDS[kind] = tuple(modules)


def _load_kind(kind: str) -> None:
    for module in _LAZY_KINDS.get(kind, ()):
        importlib.import_module(module)
    _LAZY_KINDS.pop(kind, None)


def _load_text_agents() -> None:
    _load_kind("text")


def get_agent_class(name: str, kind: str = "matrix") -> type:
    """The class registered under ``(name, kind)``.

    Raises:
        ValueError: naming the agent and the registered names; for a known matrix agent without a
            text implementation: ``"agent X has no text-game implementation yet"``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if kind == "text":
        _load_text_agents()
    if (name, kind) in _REGISTRY:
        return _REGISTRY[(name, kind)]
    if kind == "text" and any(n == name for (n, _) in _REGISTRY):
        raise ConfigError(
            f"agent {name!r} has no text-game implementation yet "
            f"(text agents: {', '.join(available('text')) or 'none'})"
        )
    raise ConfigError(
        f"unknown agent {name!r} for kind {kind!r}; "
        f"available: {', '.join(available(kind)) or 'none'}"
    )


def config_class(name: str, kind: str = "matrix") -> type:
    """The config dataclass of agent ``name`` (for YAML and CLI validation)."""
    return get_agent_class(name, kind).config_cls


def _game_of_env(env: Any) -> PreferenceGame | None:
    for obj in (env, getattr(env, "unwrapped", None)):
        game = getattr(obj, "game", None)
        if isinstance(game, PreferenceGame):
            return game
    # wrapped AEC envs keep the parallel env further in
    inner = getattr(getattr(env, "unwrapped", None), "env", None)
    game = getattr(inner, "game", None)
    return game if isinstance(game, PreferenceGame) else None


def resolve_target(
    game_or_env: Any, env_kwargs: Mapping[str, Any] | None = None, *, build_text: bool = True
) -> tuple[str, Any]:
    """``(kind, target)`` for :func:`make`: a ``PreferenceGame`` for matrix, the env for text.

    Args:
        game_or_env: a game, a family name, an env id or an env instance.
        env_kwargs: keyword arguments of the family factory or of ``pettingzoo.make``.
        build_text: build the text env from its id (``False`` returns the id).

    Raises:
        ValueError: for an unknown name/id or an object that is neither a game nor an env.
    """
    kwargs = dict(env_kwargs or {})
    if isinstance(game_or_env, PreferenceGame):
        if kwargs:
            raise ValueError(f"env_kwargs {sorted(kwargs)} given with a PreferenceGame instance")
        return "matrix", game_or_env
    if isinstance(game_or_env, str):
        import pettingzoo

        import nlhf_envs
        from nlhf_envs.families import FAMILIES
        from nlhf_envs.registration import (
            HF_ENV_IDS,
            MATRIX_ENV_IDS,
            MULTIPLAYER_ENV_IDS,
            MULTIPLAYER_TEXT_ENV_IDS,
            TEXT_ENV_IDS,
        )

        name = game_or_env
        if name in FAMILIES:
            return "matrix", nlhf_envs.make_game(name, **kwargs)
        # HF: the token agents' Hugging Face path; the n-player token duels are pairwise duels too
        if name in TEXT_ENV_IDS or name in HF_ENV_IDS or name in MULTIPLAYER_TEXT_ENV_IDS:
            if not build_text:
                return "text", name
            return "text", pettingzoo.make("parallel", name, **kwargs)
        if name in MATRIX_ENV_IDS or name in MULTIPLAYER_ENV_IDS:
            env = pettingzoo.make("parallel", name, **kwargs)
            game = _game_of_env(env)
            if game is None:
                raise ValueError(f"env {name!r} exposes no PreferenceGame as .game")
            return "matrix", game
        raise EnvironmentSetupError(
            f"unknown game or env {name!r}; expected a family ({', '.join(FAMILIES)}) or an env "
            f"id ({', '.join(list(MATRIX_ENV_IDS) + list(TEXT_ENV_IDS))})"
        )
    if kwargs:
        raise ValueError(f"env_kwargs {sorted(kwargs)} given with an env instance")
    game = _game_of_env(game_or_env)
    if game is not None:
        return "matrix", game
    if hasattr(game_or_env, "possible_agents"):
        return "text", game_or_env
    raise TypeError(
        "game_or_env must be a PreferenceGame, a family name, an env id or a PettingZoo env; "
        f"got {type(game_or_env).__name__}"
    )


def make(
    name: str,
    game_or_env: Any,
    *,
    seed: int | None = None,
    tensorboard_log: str | os.PathLike[str] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    **config: Any,
) -> Any:
    """Build agent ``name`` for a game or an environment.

    Args:
        name: a registered agent (:func:`available`).
        game_or_env: a :class:`PreferenceGame`, a family name (``"rps"``, ``"uniform"``, ...), an
            env id (``"nlhf/RPS-v0"``, ``"nlhf/TokenDuel-v0"``) or a PettingZoo env instance.
        seed: seed of the agent's generators.
        tensorboard_log: TensorBoard folder (``None``: no TensorBoard).
        env_kwargs: arguments of the family factory or of ``pettingzoo.make`` for a string target.
        **config: fields of the agent's config dataclass (:func:`config_class`).

    Returns:
        The agent.

    Raises:
        agents.config.ConfigError: (a ``ValueError``) for an unknown config key or a wrong type,
            naming the key and the valid keys.
        ValueError: for an unknown agent, game or env, or a text env without a text implementation.
    """
    if name not in available():
        raise ConfigError(f"unknown agent {name!r}; available: {', '.join(available())}")
    kind, target = resolve_target(game_or_env, env_kwargs, build_text=False)
    cls = get_agent_class(name, kind)  # fails early for text agents that do not exist
    cfg = build_config(cls.config_cls, config, source=f"agents.make({name!r})")
    if not config and isinstance(game_or_env, str) and game_or_env in zoo_configs.entry_ids(name):
        warnings.warn(
            f"agents.make({name!r}, {game_or_env!r}) uses the library defaults; the zoo has tuned "
            f"settings for this env (zoo_configs/{name}.yml): agents.zoo.make({name!r}, "
            f"{game_or_env!r}) builds the agent with them, as `nlhf-zoo train` does "
            f"(agents.zoo.resolve({name!r}, {game_or_env!r}).num_queries is their budget)",
            ZooSettingsAvailable,
            stacklevel=2,
        )
    if kind == "text" and isinstance(target, str):
        _, target = resolve_target(target, env_kwargs)
    return cls(target, cfg, seed=seed, tensorboard_log=tensorboard_log)


class ZooSettingsAvailable(UserWarning):
    """Issued by :func:`make` when it builds an agent with the library defaults for an env id that
    has tuned settings in the zoo (``agents.zoo.make`` uses them). Silence it with
    ``warnings.filterwarnings("ignore", category=agents.ZooSettingsAvailable)``."""
