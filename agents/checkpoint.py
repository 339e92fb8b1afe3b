"""Pickle-free, atomic agent checkpoints.

A checkpoint is one ``.npz`` archive (read with ``allow_pickle=False``) holding

* ``meta``: UTF-8 JSON with the format version, agent name and kind, resolved config, seed, counters
  (``queries_used``, ``num_iterations``, the game's query counter), both generator states, the
  history and the game's ``beta`` and ``name``;
* ``game/P``, ``game/pi_ref``, ``game/rho``: the game's arrays;
* ``state/<attr>``: the agent's learning state (``log_pi`` and algorithm-specific arrays).

The file is written to a temporary file in the destination folder, flushed, fsync'ed and moved into
place with :func:`os.replace`, so a crash never leaves a half-written checkpoint under the final
name. Loading restores everything bit for bit: ``policy()`` is identical, and ``learn`` continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.config import ConfigError, build_config, config_to_dict
from nlhf_envs.atomic import atomic_open
from nlhf_envs.errors import CheckpointError
from nlhf_envs.game import PreferenceGame

if TYPE_CHECKING:
    from agents.base import Agent

__all__ = ["save_agent", "load_agent", "CheckpointError", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _resolve_path(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not os.path.splitext(p)[1]:
        p += ".npz"
    return p


def checkpoint_header(agent: Any) -> dict[str, Any]:
    """The ``meta`` fields every agent checkpoint starts with (format, name, kind, config, counters)."""
    return {
        "format": "nlhf-zoo-agent",
        "version": FORMAT_VERSION,
        "name": agent.name,
        "kind": agent.kind,
        "config": config_to_dict(agent.config),
        "seed": agent.seed,
        "queries_used": agent.queries_used,
        "num_iterations": agent.num_iterations,
    }


def save_agent(agent: Agent, path: str | os.PathLike[str]) -> str:
    """Write ``agent`` to ``path`` atomically (see the module docstring); return the path."""
    target = _resolve_path(path)
    if agent.kind == "text":  # token-level agents: torch state dicts (agents.text.common)
        from agents.text.common import save_text_agent

        return save_text_agent(agent, target)
    state: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for attr in agent.state_attrs:
        value = getattr(agent, attr)
        if isinstance(value, np.ndarray):
            state[f"state/{attr}"] = value
        else:
            scalars[attr] = value
    meta = {
        **checkpoint_header(agent),
        "game_queries": agent.game.queries,
        "game_beta": agent.game.beta,
        "game_name": agent.game.name,
        "rng": agent.rng.bit_generator.state,
        "act_rng": agent.act_rng.bit_generator.state,
        "scalars": scalars,
        "history": agent.history,
    }
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    arrays = {
        "meta": meta_bytes,
        "game/P": np.asarray(agent.game.P),
        "game/pi_ref": np.asarray(agent.game.pi_ref),
        "game/rho": np.asarray(agent.game.rho),
        **state,
    }
    return write_npz_atomic(target, arrays)


def write_npz_atomic(target: str, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` as an ``.npz`` archive at ``target`` atomically; returns ``target``."""
    with atomic_open(target, "wb") as fh:
        np.savez(fh, **arrays)
    return target


def load_agent(
    path: str | os.PathLike[str],
    *,
    game: PreferenceGame | None = None,
    tensorboard_log: str | os.PathLike[str] | None = None,
) -> Agent:
    """Load a checkpoint written by :meth:`Agent.save`.

    Args:
        path: the file (``.npz`` is appended when the path has no suffix and does not exist).
        game: use this game object instead of rebuilding one from the stored arrays (its arrays
            must equal the stored ones).
        tensorboard_log: TensorBoard folder for the continued run.

    Raises:
        CheckpointError: naming the path, for a missing, corrupt, truncated or foreign file.
    """
    from agents.registry import get_agent_class

    p = os.fspath(path)
    if not os.path.exists(p) and os.path.exists(_resolve_path(p)):
        p = _resolve_path(p)
    if not os.path.exists(p):
        raise CheckpointError(f"no agent checkpoint at {p!r}")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise CheckpointError(f"{p!r} is not a readable agent checkpoint: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != "nlhf-zoo-agent":
        raise CheckpointError(f"{p!r} is not an nlhf-zoo agent checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{p!r} has checkpoint format version {meta.get('version')!r}; this library reads "
            f"version {FORMAT_VERSION}"
        )
    if meta.get("kind") == "text":
        from agents.text.common import load_text_agent

        return load_text_agent(p, meta, arrays, tensorboard_log=tensorboard_log)
    try:
        cls = get_agent_class(meta["name"], meta["kind"])
        config = build_config(cls.config_cls, meta["config"], source=p)
        stored = PreferenceGame(
            arrays["game/P"],
            arrays["game/pi_ref"],
            meta["game_beta"],
            arrays["game/rho"],
            name=meta["game_name"],
        )
    except (KeyError, ValueError, ConfigError) as err:
        raise CheckpointError(f"{p!r}: cannot rebuild the agent: {err}") from None
    if game is None:
        game = stored
        game.queries = int(meta["game_queries"])
    elif not (
        np.array_equal(game.P, stored.P)
        and np.array_equal(game.pi_ref, stored.pi_ref)
        and np.array_equal(game.rho, stored.rho)
        and game.beta == stored.beta
    ):
        raise CheckpointError(
            f"{p!r}: the given game differs from the game stored in the checkpoint"
        )
    agent = cls(game, config, seed=int(meta["seed"]), tensorboard_log=tensorboard_log)
    agent.queries_used = int(meta["queries_used"])
    agent.num_iterations = int(meta["num_iterations"])
    agent.history = [dict(row) for row in meta["history"]]
    agent.rng.bit_generator.state = meta["rng"]
    agent.act_rng.bit_generator.state = meta["act_rng"]
    for attr in cls.state_attrs:
        key = f"state/{attr}"
        if key in arrays:
            setattr(agent, attr, np.array(arrays[key]))
        elif attr in meta["scalars"]:
            setattr(agent, attr, meta["scalars"][attr])
        else:
            raise CheckpointError(f"{p!r}: missing state {attr!r} of agent {meta['name']!r}")
    return agent
