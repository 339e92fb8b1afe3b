"""Checkpoints of the token-level agents: one pickle-free ``.npz`` per agent, written atomically.

:func:`checkpoint_payload` gathers the arrays of a :class:`~agents.text.common.TextAgent`'s
checkpoint (``meta`` JSON, policy and reference weights, optimiser state, generator states, history),
:func:`save_text_agent` writes them and :func:`load_text_agent` rebuilds the agent (its env too, from
the stored env arguments, for the native token duels). ``TextAgent.save``,
``TextAgent.checkpoint_arrays`` and ``TextAgent.from_checkpoint`` call these; :func:`agents.load`
reads any checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
from typing import Any

import numpy as np
import torch

from agents.checkpoint import (
    checkpoint_header,
    history_arrays,
    read_history,
    write_npz_atomic,
)
from agents.config import build_config, config_to_dict
from nlhf_envs.errors import CheckpointError
from nlhf_envs.text.models import LMConfig, TinyCausalLM, build_checked

__all__ = ["ENV_ID", "checkpoint_payload", "load_text_agent", "save_sharded", "save_text_agent"]

#: The env id a native text-agent checkpoint records when its env does not name one.
ENV_ID = "nlhf/TokenDuel-v0"


def _tensor_arrays(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v.detach().cpu().numpy() for k, v in state.items()}


#: optimiser options that choose an implementation, not the update: a resumed run keeps those of
#: the optimiser it built (a checkpoint of a run with the per-tensor Adam resumes with the fused
#: kernel where that is the default now, and the other way round)
KERNEL_OPTIONS = ("fused", "foreach", "capturable", "differentiable")


def _current_kernels(groups: list[dict[str, Any]], optimizer: Any) -> list[dict[str, Any]]:
    """``groups`` (a saved optimiser's ``param_groups``) with ``optimizer``'s implementation
    options (:data:`KERNEL_OPTIONS`)."""
    mine = optimizer.param_groups
    return [
        {**g, **{k: m[k] for k in KERNEL_OPTIONS if k in m}}
        for g, m in zip(groups, mine, strict=False)
    ] + list(groups[len(mine) :])


def checkpoint_payload(agent: Any, include_history: bool = True) -> dict[str, np.ndarray]:
    """The arrays of the checkpoint of ``agent``, a :class:`~agents.text.common.TextAgent` (``meta``
    JSON + model, optimiser and RNG states, and the history as a float64 table unless
    ``include_history`` is false: periodic checkpoints of a run record only the number of rows,
    which the run's ``metrics.csv`` holds)."""
    if agent.dp.sharded:  # FSDP: every process gathers the full weights and moments
        from agents.text.fsdp import full_optimizer_state, full_policy_state

        opt, policy = full_optimizer_state(agent), full_policy_state(agent)
    else:
        opt, policy = agent.optimizer.state_dict(), agent.backend.policy_state(agent.model)
    opt_arrays: dict[str, np.ndarray] = {}
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                opt_arrays[f"optim/{idx}/{key}"] = val.detach().cpu().numpy()
            else:
                opt_scalars.setdefault(str(idx), {})[key] = val
    kind = agent.backend.kind
    env_id = "nlhf/HFTokenDuel-v0" if kind != "native" else None
    meta = {
        **checkpoint_header(agent),
        "env": {
            "id": env_id or getattr(agent.env, "env_id", None) or ENV_ID,
            "world": agent.world.name if agent.world is not None else "default",
            "judge_version": getattr(agent.env, "judge_version", "v0"),
            "beta": float(getattr(agent.env, "beta", agent.beta)),
            "max_new_tokens": int(agent.env.max_new_tokens),
            "prompt_split": getattr(agent.env, "prompt_split", "train"),
        },
        "lm_config": config_to_dict(agent.reference.config) if kind == "native" else {},
        "backend": kind,
        "optim_param_groups": opt["param_groups"],
        "optim_scalars": opt_scalars,
        "history_len": len(agent.history),
        "history_keys": None,
    }
    if kind != "native":  # the reference is the env's: the env must be the same game
        meta["env"]["fingerprint"] = agent.env.fingerprint()
    history: dict[str, np.ndarray] = {}
    if include_history:
        keys, values, present = history_arrays(agent.history)
        meta["history_keys"] = keys
        history = {"history/values": values, "history/present": present}
    reference = (
        _tensor_arrays("reference", agent.reference.state_dict()) if kind == "native" else {}
    )
    shards = agent.shard_states()  # [shards, L], as of the last iteration boundary
    extra = {"rng_shards": shards[1:].numpy()} if shards.shape[0] > 1 else {}
    return {
        "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
        "rng": shards[0].numpy(),
        "act_rng": agent.act_rng.get_state().numpy(),
        **extra,
        **_tensor_arrays("policy", policy),
        **reference,
        **opt_arrays,
        **history,
    }


def save_text_agent(agent: Any, target: str, include_history: bool = True) -> str:
    """Write ``agent`` to ``target`` atomically (one pickle-free ``.npz``); returns ``target``.

    The archive holds ``meta`` (JSON: format, name, kind, config, seed, counters, env arguments,
    optimiser hyper-parameters, history), ``policy/*`` and ``reference/*`` (state dicts),
    ``optim/<i>/<key>`` (Adam moments and step counts) and both torch generator states.
    """
    return write_npz_atomic(target, checkpoint_payload(agent, include_history))


def _state(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {
        k[n:]: torch.from_numpy(np.array(v))
        for k, v in arrays.items()
        if k.startswith(prefix + "/")
    }


def load_text_agent(
    agent_cls: type[Any],
    path: str,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    *,
    tensorboard_log: str | os.PathLike[str] | None = None,
    env: Any = None,
) -> Any:
    """Rebuild a text agent of class ``agent_cls`` (a :class:`~agents.text.common.TextAgent`
    subclass) from a checkpoint's ``meta`` and arrays (called by :func:`agents.load`).

    The env is rebuilt from its id and ``max_new_tokens`` with the shipped judge (a custom judge is
    not stored); pass ``env`` to use another. A Hugging Face checkpoint without ``env`` takes the
    env its train run's ``config.yml`` records (:mod:`agents.run_env`, as ``train --resume``
    does), checked against the fingerprint the checkpoint stored.

    Raises:
        agents.checkpoint.CheckpointError: naming ``path`` when a part is missing or inconsistent.
    """
    kind = meta.get("backend", "native")
    if kind != "native":
        from agents.text.backend import is_hf_env

        if env is None:
            env = _env_of_run(path)
        if env is None or not is_hf_env(env):
            raise CheckpointError(
                f"{path!r}: a Hugging Face ({kind}) checkpoint of nlhf/HFTokenDuel-v0 needs its "
                "env: agents.load(path, game=env), or the file inside its train run folder "
                "(whose config.yml rebuilds the env)"
            )
        want, have = meta["env"].get("fingerprint"), env.fingerprint()
        if want != have:
            raise CheckpointError(
                f"{path!r}: trained on another HFTokenDuel game (fingerprint {want}; this env's "
                f"is {have}: a different reference model, tokenizer, judge, prompts or beta)"
            )
    try:
        cls = agent_cls
        config = build_config(cls.config_cls, meta["config"], source=path)
        stored = 1 + (len(arrays["rng_shards"]) if "rng_shards" in arrays else 0)
        if config.shards is None and stored > 1:  # "as many as processes" in a sharded run
            config.shards = stored
        if env is None:
            env = _rebuild_env(meta["env"])
        reference = None
        if kind == "native":
            shapes = {k[10:]: v.shape for k, v in arrays.items() if k.startswith("reference/")}
            reference = build_checked(
                TinyCausalLM, LMConfig, meta["lm_config"], shapes, f"{path!r}: field 'lm_config'"
            )
            reference.load_state_dict(_state(arrays, "reference"))
        agent = cls(
            env,
            config,
            seed=int(meta["seed"]),
            tensorboard_log=tensorboard_log,
            reference=reference,
        )
        if agent.backend.kind != kind:
            raise ValueError(
                f"the checkpoint's backend is {kind!r}, the agent's {agent.backend.kind!r}"
            )
        sharded = agent.dp.sharded
        if not sharded:
            agent.backend.load_policy_state(agent.model, _state(arrays, "policy"))
        opt_state: dict[int, dict[str, Any]] = {}
        for key, val in arrays.items():
            if key.startswith("optim/"):
                _, idx, name = key.split("/", 2)
                opt_state.setdefault(int(idx), {})[name] = torch.from_numpy(np.array(val))
        for idx, scalars in meta["optim_scalars"].items():
            opt_state.setdefault(int(idx), {}).update(scalars)
        groups = _current_kernels(meta["optim_param_groups"], agent.optimizer)
        full_opt = {"state": opt_state, "param_groups": groups}
        if sharded:  # FSDP: each process keeps its shards of the full state
            from agents.text.fsdp import load_full_state

            load_full_state(agent, _state(arrays, "policy"), full_opt)
        else:
            agent.optimizer.load_state_dict(full_opt)
        states = [np.array(arrays["rng"])]
        if "rng_shards" in arrays:
            states += list(np.array(arrays["rng_shards"]))
        if len(states) != agent.dp.shards:
            raise ValueError(
                f"the checkpoint holds {len(states)} shard generators; the config has "
                f"{agent.dp.shards} shards"
            )
        for gen, s in zip(agent.shard_rngs, agent.dp.local_shards, strict=True):
            gen.set_state(torch.from_numpy(states[s]))
        if agent.dp.world > 1:  # every shard's state, for a checkpoint written by rank 0
            agent._shard_states = torch.stack([torch.from_numpy(np.array(x)) for x in states])
        agent.act_rng.set_state(torch.from_numpy(np.array(arrays["act_rng"])))
        agent.queries_used = int(meta["queries_used"])
        agent.num_iterations = int(meta["num_iterations"])
        agent.history = read_history(path, meta, arrays)
    except (KeyError, ValueError, RuntimeError, TypeError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path!r}: cannot rebuild the text agent: {err}") from None
    return agent


def _env_of_run(path: str) -> Any:
    """The ``nlhf/HFTokenDuel-v0`` env of the train run holding ``path``, rebuilt from its
    ``config.yml`` as ``train --resume`` does (:mod:`agents.run_env`); ``None`` without one."""
    from agents.run_env import hf_env_of_run, run_config_of

    found = run_config_of(path)
    return None if found is None else hf_env_of_run(found[1])


def _rebuild_env(env_meta: dict[str, Any]) -> Any:
    """The token-duel env a checkpoint was trained on (the shipped judge of its world)."""
    if "world" not in env_meta:  # checkpoints written before worlds existed: nlhf/TokenDuel-v0
        import pettingzoo

        return pettingzoo.make(
            "parallel", env_meta["id"], max_new_tokens=env_meta["max_new_tokens"]
        )
    from nlhf_envs.text.env import TokenDuelEnv

    return TokenDuelEnv(
        world=env_meta["world"],
        judge_version=env_meta["judge_version"],
        beta=env_meta["beta"],
        max_new_tokens=env_meta["max_new_tokens"],
        prompt_split=env_meta.get("prompt_split", "train"),
    )


def _plain_policy(agent: Any, policy: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain (unsharded) copy of the policy holding the gathered weights: the reference's
    structure with ``policy`` loaded (the first process, to write ``save_pretrained`` output)."""
    plain = copy.deepcopy(agent.reference)
    plain.load_state_dict(policy)
    return plain


def save_sharded(agent: Any, path: str | os.PathLike[str]) -> str:
    """:meth:`~agents.text.common.TextAgent.save` of a sharded agent: every process gathers, the
    first one writes the checkpoint and its Hugging Face folder; returns the path."""
    from agents.checkpoint import _resolve_path, write_npz_atomic
    from agents.text.backend import hf_folder_of, save_hf_folder

    target = _resolve_path(path)
    arrays = agent.checkpoint_arrays()
    if not agent.dp.is_main:
        return target
    write_npz_atomic(target, arrays)
    sharded, agent.model = agent.model, _plain_policy(agent, _state(arrays, "policy"))
    try:
        save_hf_folder(agent, hf_folder_of(target))
    finally:
        agent.model = sharded
    return target
