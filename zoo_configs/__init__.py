"""The zoo's hyper-parameters, one YAML file per agent (``<agent>.yml``), shipped as package data.

This folder is a package so that an installed wheel carries the YAML files; :func:`config_dir`
finds them with :mod:`importlib.resources` and :func:`entry_ids` lists a file's env ids (what
``agents.make`` reads to say that tuned settings exist, without importing the zoo layer).
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import yaml

__all__ = ["config_dir", "entry_ids"]


def config_dir() -> Path:
    """``$NLHF_ZOO_CONFIGS`` if set, else this folder (package data, found with
    :mod:`importlib.resources`, so a regular wheel install has it too)."""
    env = os.environ.get("NLHF_ZOO_CONFIGS")
    if env:
        return Path(env)
    return Path(str(importlib.resources.files("zoo_configs")))


def entry_ids(agent: str) -> frozenset[str]:
    """The env ids with an entry of their own in ``<agent>.yml`` (``default`` excluded; empty when
    the file is absent or unreadable: the zoo's loader reports those errors where the file is used)."""
    path = config_dir() / f"{agent}.yml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return frozenset()
    if not isinstance(data, dict):
        return frozenset()
    return frozenset(str(k) for k in data if k != "default")
