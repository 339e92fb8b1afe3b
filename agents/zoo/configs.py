"""The zoo: YAML hyper-parameters per agent and environment id, in the rl-baselines3-zoo layout.

``zoo_configs/<agent>.yml`` maps environment ids (``nlhf/RPS-v0``, ...) and ``default`` to entries::

    default:
      mode: sampled
      batch_size: 256
      num_queries: 20000        # training budget (meta key)
    nlhf/UniformGame-v0:
      env_kwargs: {num_actions: 10, seed: 0}
      eta: 0.2

Resolution, later wins: the config dataclass's defaults < the ``default`` entry < the entry of the
environment id < ``--params key:value`` from the command line. Meta keys, not part of the agent's
config: ``num_queries`` and ``num_iterations`` (the training budget) and ``env_kwargs`` (arguments
of the environment / game factory). Every other key must be a field of the agent's config
dataclass; unknown keys and wrong types raise :class:`agents.config.ConfigError` naming the key and
the file. Zoo files and command-line values (``--params``, ``--env-kwargs``) are read by one
parser, :func:`safe_load`: PyYAML's safe loader plus the YAML 1.2 reading of plain scientific
notation, so ``3e-4`` and ``1e+6`` are floats everywhere (PyYAML's YAML 1.1 resolver alone reads
them as strings); ``3.0e-4`` is read the same by every YAML parser.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import zoo_configs
from agents.config import ConfigError, build_config, config_to_dict
from agents.registry import available, config_class, resolve_target

__all__ = [
    "META_KEYS",
    "ZooEntry",
    "default_config_dir",
    "load_yaml",
    "parse_params",
    "resolve",
    "safe_load",
]

#: keys of a zoo entry that are not fields of the agent's config.
META_KEYS: dict[str, type | tuple[type, ...]] = {
    "num_queries": int,
    "num_iterations": int,
    "env_kwargs": dict,
}


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads plain scientific notation (``1e-2``) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str) -> Any:
    """Parse YAML ``text`` with the safe loader (no Python objects are ever built from it), reading
    plain scientific notation such as ``1e-2`` as a float (YAML 1.2) rather than a string.

    Used for zoo files and for ``--params``/``--env-kwargs`` values alike, so one notation means
    the same thing in every place a value can be given.
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


def default_config_dir() -> Path:
    """``$NLHF_ZOO_CONFIGS`` if set, else the shipped ``zoo_configs`` (package data, found with
    :mod:`importlib.resources`, so a regular wheel install has them too)."""
    return zoo_configs.config_dir()


@dataclass
class ZooEntry:
    """A resolved zoo entry.

    Attributes:
        agent: the agent name.
        env_id: the environment id.
        kind: ``"matrix"`` or ``"text"``.
        config: the agent's validated config dataclass.
        num_queries: training budget in preference queries (``None``: use ``num_iterations``).
        num_iterations: training budget in iterations.
        env_kwargs: keyword arguments of the environment.
        sources: where the values came from, in order of precedence.
    """

    agent: str
    env_id: str
    kind: str
    config: Any
    num_queries: int | None = None
    num_iterations: int | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The resolved entry as plain data (what ``config.yml`` of a run holds)."""
        return {
            "agent": self.agent,
            "env_id": self.env_id,
            "kind": self.kind,
            "num_queries": self.num_queries,
            "num_iterations": self.num_iterations,
            "env_kwargs": dict(self.env_kwargs),
            "config": config_to_dict(self.config),
        }


def load_yaml(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a zoo file: a mapping from env id (or ``default``) to a mapping of values.

    Raises:
        ConfigError: for unreadable YAML or entries that are not mappings (naming the file).
    """
    path = Path(path)
    try:
        data = safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must map env ids (or 'default') to entries")
    for key, entry in data.items():
        if entry is None:
            data[key] = {}
        elif not isinstance(entry, dict):
            raise ConfigError(
                f"{path}: entry {key!r} must be a mapping; got {type(entry).__name__}"
            )
    return data


def parse_params(params: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``key:value`` strings of ``--params`` or ``--env-kwargs`` (values read by
    :func:`safe_load` as YAML scalars or flow mappings).

    ``eta:0.2`` and ``beta:1e-2`` give floats, ``mode:sampled`` a string,
    ``env_kwargs:{num_actions: 5}`` a dict.

    Raises:
        ConfigError: for an item without ``:`` or an unparsable value.
    """
    out: dict[str, Any] = {}
    for item in params or []:
        key, sep, raw = item.partition(":")
        if not sep or not key.strip():
            raise ConfigError(f"--params item {item!r} must look like key:value")
        try:
            value = safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--params {key}: cannot parse value {raw!r}") from None
        out[key.strip()] = value
    return out


def _check_meta(key: str, value: Any, where: str) -> Any:
    expected = META_KEYS[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, expected):
        name = expected.__name__ if isinstance(expected, type) else str(expected)
        raise ConfigError(f"{key} must be {name}; got {value!r} ({type(value).__name__}){where}")
    if key in ("num_queries", "num_iterations") and value < 0:
        raise ConfigError(f"{key} must be >= 0; got {value}{where}")
    return value


def resolve(
    agent: str,
    env_id: str,
    *,
    config_dir: str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> ZooEntry:
    """Resolve the hyper-parameters of ``agent`` on ``env_id`` (see the module docstring).

    Args:
        agent: a registered agent name.
        env_id: an environment id or a game family name.
        config_dir: folder of the ``<agent>.yml`` files (default :func:`default_config_dir`).
        params: command-line overrides (already parsed, e.g. by :func:`parse_params`).

    Raises:
        ConfigError: unknown agent file keys, wrong types, malformed YAML (naming key and file).
        ValueError: unknown agent or environment.
    """
    if agent not in available():
        raise ConfigError(f"unknown agent {agent!r}; available: {', '.join(available())}")
    kind, _ = resolve_target(env_id, None, build_text=False) if "/" in env_id else ("matrix", None)
    cls = config_class(agent, kind)
    folder = Path(config_dir) if config_dir is not None else default_config_dir()
    path = folder / f"{agent}.yml"
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path.exists():
        data = load_yaml(path)
        if "default" in data:
            layers.append((f"{path} [default]", data["default"]))
        if env_id in data:
            layers.append((f"{path} [{env_id}]", data[env_id]))
    if params:
        layers.append(("--params", params))

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    meta: dict[str, Any] = {"num_queries": None, "num_iterations": None, "env_kwargs": {}}
    for source, layer in layers:
        for key, value in layer.items():
            if key in META_KEYS:
                value = _check_meta(key, value, f" (in {source})")
                if key == "env_kwargs":
                    meta[key] = {**meta[key], **(value or {})}
                else:
                    meta[key] = value
            else:
                values[key] = value
                origin[key] = source
    # validate layer by layer so an error names the file (or --params) that holds the bad key
    for source, layer in layers:
        own = {k: values[k] for k in layer if k not in META_KEYS and origin.get(k) == source}
        if own:
            build_config(cls, own, source=source)
    config = build_config(cls, values, source=", ".join(s for s, _ in layers) or "defaults")
    return ZooEntry(
        agent=agent,
        env_id=env_id,
        kind=kind,
        config=config,
        num_queries=meta["num_queries"],
        num_iterations=meta["num_iterations"],
        env_kwargs=dict(meta["env_kwargs"]),
        sources=[s for s, _ in layers],
    )


def make(
    agent: str,
    env_id: str,
    *,
    seed: int | None = None,
    tensorboard_log: str | os.PathLike[str] | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """``agents.make`` with the zoo's settings for ``env_id`` (what ``nlhf-zoo train`` uses).

    ``agents.make(agent, env_id)`` keeps the library defaults (a script means the same thing when
    the zoo is re-tuned); this is the opt-in to the tuned values. The entry's budget is
    ``resolve(agent, env_id).num_queries``.

    Args:
        agent: a registered agent name.
        env_id: an environment id with (or without) an entry in ``<agent>.yml``.
        seed: the agent's seed.
        tensorboard_log: TensorBoard folder.
        config_dir: folder of the zoo YAML files (default :func:`default_config_dir`).
        params: overrides of the entry (as ``nlhf-zoo train --params``).

    Raises:
        ConfigError: as :func:`resolve`.
    """
    import agents

    entry = resolve(agent, env_id, config_dir=config_dir, params=params)
    values = {f.name: getattr(entry.config, f.name) for f in dataclasses.fields(entry.config)}
    return agents.make(
        agent,
        env_id,
        seed=seed,
        tensorboard_log=tensorboard_log,
        env_kwargs=entry.env_kwargs or None,
        **values,
    )
