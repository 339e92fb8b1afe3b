"""Stable-Baselines3 ``.zip`` models, loaded without running code from the file.

``PPO.load`` (and every SB3 loader) unpickles entries of the archive: a crafted ``.zip`` runs any
code it likes the moment it is loaded. :func:`load_sb3_model` instead rebuilds a standard model from
the archive's data alone:

* the ``data`` member is read as JSON, and its pickled (``":serialized:"``) entries are never
  decoded: the policy class, the observation and action spaces and the policy's keyword arguments
  are rebuilt from the plain descriptions SB3 writes beside each pickle (the class's module and
  name, a space's type, shape, dtype, bounds and size, the activation function's class name);
* the plain hyper-parameters (numbers, strings, lists) are passed to the algorithm's constructor;
* ``policy.pth`` and ``policy.optimizer.pth`` are read with ``torch.load(..., weights_only=True)``,
  which accepts tensors and plain containers only.

That covers PPO, A2C and DQN with their ``MlpPolicy`` on ``Box`` or ``Discrete`` observations and
``Discrete`` actions, the models that play nlhf-zoo's games: they load with the same weights and
play exactly as SB3's own loader would make them play. Anything else (another policy class, a custom
feature extractor, a pickled entry the loader does not know, which is what an injected payload looks
like) is refused with a message naming the file and the opt-in: ``trust_pickle=True`` (command
line: ``--trust-pickle``) hands the file to SB3's own loader, which unpickles it, as Hugging Face's
``trust_remote_code=True`` runs a repository's code. Use it only for a file you trust.

Every archive is size-checked first (:func:`nlhf_envs.archives.open_zip`), and nothing the file
declares is built larger than what it stores: the observation and action spaces and the network
(``net_arch``) must fit the parameters ``policy.pth`` holds, and the rollout or replay buffer that
``n_steps`` or ``buffer_size`` asks for may take at most :data:`MAX_BUFFER_BYTES`, so a small file
cannot make the loader allocate gigabytes.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import warnings
from typing import Any

import numpy as np

from nlhf_envs.archives import READ_ERRORS, open_zip
from nlhf_envs.errors import CheckpointError

__all__ = ["load_sb3_model", "MAX_BUFFER_BYTES", "TRUST_HINT", "UnsafeModelWarning"]

#: the largest rollout (PPO, A2C) or replay (DQN) buffer a model file may ask for: 2 GiB
MAX_BUFFER_BYTES = 2 * 2**30

#: the opt-in, named in every refusal.
TRUST_HINT = (
    "pass trust_pickle=True (command line: --trust-pickle) only for a file you trust: SB3's own "
    "loader unpickles it, which runs any code the file holds"
)

#: (module, class) of the policies rebuilt without unpickling -> algorithm names that use them.
POLICIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("stable_baselines3.common.policies", "ActorCriticPolicy"): ("PPO", "A2C"),
    ("stable_baselines3.dqn.policies", "DQNPolicy"): ("DQN",),
}

#: pickled entries SB3 writes for PPO, A2C and DQN. Those playing needs (the policy class, the
#: spaces, the policy's keyword arguments) are rebuilt from their plain descriptions; the others
#: (training schedules, buffers, the last observation) are left at the constructor's defaults.
KNOWN_PICKLED = frozenset(
    {
        "policy_class",
        "observation_space",
        "action_space",
        "policy_kwargs",
        "learning_rate",
        "lr_schedule",
        "clip_range",
        "clip_range_vf",
        "_last_obs",
        "_last_episode_starts",
        "_last_original_obs",
        "ep_info_buffer",
        "ep_success_buffer",
        "rollout_buffer_class",
        "rollout_buffer_kwargs",
        "replay_buffer_class",
        "replay_buffer_kwargs",
        "train_freq",
        "exploration_schedule",
        "batch_norm_stats",
        "batch_norm_stats_target",
        "action_noise",
    }
)

#: classes a pickled ``policy_kwargs`` may name, by key: (module SB3 records, allowed class names).
NAMED_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "activation_fn": (
        "torch.nn.modules.activation",
        ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Softplus", "Mish"),
    ),
    "optimizer_class": ("torch.optim", ("Adam", "AdamW", "RMSprop", "SGD")),
}

#: constructor arguments never taken from the file.
_NOT_FROM_FILE = {
    "policy",
    "env",
    "device",
    "_init_setup_model",
    "policy_kwargs",
    "tensorboard_log",
}


class UnsafeModelWarning(UserWarning):
    """A model file is being unpickled because the caller trusted it (``trust_pickle=True``)."""


def _pickled(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def _refuse(path: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path!r}: {problem}; {TRUST_HINT}")


def _numbers(text: Any, count: int, path: str, field: str) -> np.ndarray:
    """The numbers of a numpy array's ``str`` (``"[0. 1.]"``), exactly ``count`` of them (any
    number for ``count=-1``)."""
    tokens = re.sub(r"[\[\],]", " ", str(text)).split()
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        raise _refuse(path, f"{field} {text!r} is not a list of numbers") from None
    if count >= 0 and values.size != count:
        raise _refuse(path, f"{field} holds {values.size} numbers, expected {count}")
    return values


def _space(entry: Any, path: str, key: str, limit: int) -> Any:
    """A gymnasium ``Box`` or ``Discrete`` rebuilt from SB3's plain description of it; its size
    (the Box's entries, the Discrete's ``n``) may not exceed ``limit``, the parameters the file
    stores (a network reading or writing it has at least that many)."""
    from gymnasium import spaces

    kind = entry.get(":type:") if isinstance(entry, dict) else None
    try:
        if kind == "<class 'gymnasium.spaces.discrete.Discrete'>":
            n = int(entry["n"])
            if not 0 < n <= limit:
                raise CheckpointError(
                    f"{path!r}: {key} declares Discrete({n}), more actions than the "
                    f"{limit:,} parameters the file stores"
                )
            return spaces.Discrete(n, start=int(entry.get("start", 0)))
        if kind == "<class 'gymnasium.spaces.box.Box'>":
            shape = tuple(int(s) for s in _numbers(entry["_shape"], -1, path, f"{key}._shape"))
            dtype = np.dtype(str(entry["dtype"]))
            if any(d < 1 for d in shape) or math.prod(shape) > limit:
                raise CheckpointError(
                    f"{path!r}: {key} declares a Box of shape {shape}, more entries than the "
                    f"{limit:,} parameters the file stores"
                )
            count = int(np.prod(shape, dtype=np.int64))
            bounds = []
            for side in ("low", "high"):
                scalar = entry.get(f"{side}_repr")
                try:
                    values = np.full(shape, float(scalar))
                except (TypeError, ValueError):
                    values = _numbers(entry[side], count, path, f"{key}.{side}").reshape(shape)
                bounds.append(values.astype(dtype))
            return spaces.Box(bounds[0], bounds[1], shape=shape, dtype=dtype)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise _refuse(path, f"{key} cannot be read from its description ({err})") from None
    raise _refuse(path, f"{key} is a {kind}, which is rebuilt only by unpickling")


def _policy(entry: Any, path: str) -> tuple[str, str]:
    """``(module, class name)`` of the stored policy class, from SB3's plain description."""
    if not isinstance(entry, dict):
        raise _refuse(path, "the policy class is missing")
    module = entry.get("__module__")
    match = re.match(r"<function (\w+)\.__init__", str(entry.get("__init__", "")))
    name = match.group(1) if match else None
    if (module, name) not in POLICIES:
        raise _refuse(path, f"policy class {module}.{name} is rebuilt only by unpickling")
    return str(module), str(name)


def _policy_kwargs(entry: Any, path: str) -> dict[str, Any]:
    """The policy's keyword arguments: plain JSON as stored, or a pickled dict whose items are plain
    values or a class of :data:`NAMED_CLASSES` (``"<class 'torch.nn.modules.activation.ReLU'>"``)."""
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise _refuse(path, f"policy_kwargs must be a mapping; got {entry!r}")
    if not _pickled(entry):
        return dict(entry)
    import torch

    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key.startswith(":"):
            continue
        if key in NAMED_CLASSES and isinstance(value, str):
            module, names = NAMED_CLASSES[key]
            match = re.fullmatch(r"<class '([\w.]+)\.(\w+)'>", value)
            if match and match.group(1).startswith(module) and match.group(2) in names:
                package = torch.nn if module.startswith("torch.nn") else torch.optim
                out[key] = getattr(package, match.group(2))
                continue
        if isinstance(value, str):  # SB3 wrote the str() of an object it pickled
            raise _refuse(path, f"policy_kwargs[{key!r}] = {value} is rebuilt only by unpickling")
        out[key] = value
    return out


def _state(zf: Any, member: str, path: str, device: str) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(io.BytesIO(zf.read(member)), map_location=device, weights_only=True)
    except READ_ERRORS as err:  # includes the weights-only unpickler's refusals
        raise CheckpointError(
            f"{path!r}: member {member!r} is not a readable state: {err}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path!r}: member {member!r} must hold a state dict")
    return state


def _chains(net_arch: Any, path: str) -> list[list[int]]:
    """The layer widths of ``net_arch`` as chains (a list, a ``{"pi": [...], "vf": [...]}``
    mapping, or SB3's older ``[shared..., {"pi": ..., "vf": ...}]``)."""

    def widths(value: Any) -> list[int]:
        if not isinstance(value, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value
        ):
            raise CheckpointError(
                f"{path!r}: policy_kwargs net_arch {net_arch!r:.80} must list positive integers"
            )
        return value

    if net_arch is None:
        return []
    if isinstance(net_arch, dict):
        return [widths(v) for v in net_arch.values()]
    if isinstance(net_arch, list) and net_arch and isinstance(net_arch[-1], dict):
        shared = widths(net_arch[:-1])
        return [shared + widths(v) for v in net_arch[-1].values()] or [shared]
    return [widths(net_arch)]


def _check_sizes(
    path: str, algo: str, data: dict[str, Any], policy_kwargs: dict[str, Any], stored: int,
    obs_count: int,
) -> None:  # fmt: skip
    """Refuse a network or a buffer larger than the file can hold (see the module docstring)."""
    declared = 0
    for chain in _chains(policy_kwargs.get("net_arch"), path):
        widths = [obs_count, *chain]
        declared = max(declared, sum(a * b for a, b in zip(widths, widths[1:], strict=False)))
    if declared > stored:
        raise CheckpointError(
            f"{path!r}: policy_kwargs net_arch {policy_kwargs.get('net_arch')!r:.80} declares at "
            f"least {declared:,} weights, but policy.pth stores {stored:,}: refusing to build it"
        )
    key = "buffer_size" if algo == "DQN" else "n_steps"
    steps = data.get(key)
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CheckpointError(f"{path!r}: {key} must be a positive integer; got {steps!r:.40}")
    # observations (twice for DQN's next observations), the action and six floats per step, at
    # most 8 bytes each
    per_step = 8 * ((2 if algo == "DQN" else 1) * obs_count + 7)
    if steps * per_step > MAX_BUFFER_BYTES:
        raise CheckpointError(
            f"{path!r}: {key} {steps:,} asks for a buffer of about {steps * per_step:,} bytes; "
            f"a model file may ask for at most {MAX_BUFFER_BYTES:,} (MAX_BUFFER_BYTES)"
        )


def _load_trusted(path: str, device: str) -> Any:
    """SB3's own loader (it unpickles the file): PPO, A2C or DQN, tried in turn."""
    import stable_baselines3 as sb3

    warnings.warn(
        f"{path!r}: unpickling an SB3 model (trust_pickle=True): this runs any code the file holds",
        UnsafeModelWarning,
        stacklevel=3,
    )
    errors = []
    for algo in (sb3.PPO, sb3.A2C, sb3.DQN):
        try:
            return algo.load(path, device=device)
        except Exception as exc:  # noqa: BLE001  (SB3 raises assorted errors for another algorithm)
            errors.append(f"{algo.__name__}: {type(exc).__name__}")
    raise CheckpointError(f"{path!r}: not an SB3 PPO/A2C/DQN model ({'; '.join(errors)})")


def load_sb3_model(
    path: str | os.PathLike[str], *, trust_pickle: bool = False, device: str = "cpu"
) -> Any:
    """A Stable-Baselines3 PPO, A2C or DQN model saved with ``model.save(path)``.

    Args:
        path: the ``.zip`` file.
        trust_pickle: hand the file to SB3's own loader, which unpickles it and so runs any code it
            holds (off by default; see the module docstring). Needed for models this loader cannot
            rebuild from plain data (other policy classes, custom feature extractors).
        device: the torch device of the loaded model.

    Returns:
        The model (an ``stable_baselines3`` ``PPO``, ``A2C`` or ``DQN``) with the stored policy and
        optimiser states, ready for ``predict`` (and ``learn`` once given an env).

    Raises:
        CheckpointError: naming the file: a damaged archive, or one that cannot be rebuilt without
            unpickling (the message names the opt-in).
    """
    p = os.fspath(path)
    with open_zip(p, what="SB3 model") as zf:
        if trust_pickle:
            zf.close()
            return _load_trusted(p, device)
        try:
            data = json.loads(zf.read("data").decode("utf-8"))
        except READ_ERRORS as err:
            raise CheckpointError(f"{p!r}: member 'data' is not SB3's JSON: {err}") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{p!r}: member 'data' must be a JSON object")
        unknown = sorted(k for k, v in data.items() if _pickled(v) and k not in KNOWN_PICKLED)
        if unknown:
            raise _refuse(p, f"pickled entries {unknown} are not part of a standard SB3 model")
        module, name = _policy(data.get("policy_class"), p)
        algos = POLICIES[(module, name)]
        algo_name = algos[0] if len(algos) == 1 or "n_epochs" in data else algos[1]
        policy_state = _state(zf, "policy.pth", p, device)
        stored = sum(int(v.numel()) for v in policy_state.values() if hasattr(v, "numel"))
        obs_space = _space(data.get("observation_space"), p, "observation_space", stored)
        act_space = _space(data.get("action_space"), p, "action_space", stored)
        policy_kwargs = _policy_kwargs(data.get("policy_kwargs"), p)
        obs_count = int(getattr(obs_space, "n", 0) or math.prod(obs_space.shape))
        _check_sizes(p, algo_name, data, policy_kwargs, stored, obs_count)
        optim_state = (
            _state(zf, "policy.optimizer.pth", p, device)
            if "policy.optimizer.pth" in zf.namelist()
            else None
        )
    import stable_baselines3 as sb3

    cls = getattr(sb3, algo_name)
    accepted = set(inspect.signature(cls.__init__).parameters) - _NOT_FROM_FILE
    plain = {k: v for k, v in data.items() if k in accepted and not _pickled(v)}
    try:
        model = cls(
            policy="MlpPolicy",
            env=None,
            device=device,
            policy_kwargs=policy_kwargs,
            _init_setup_model=False,
            **plain,
        )
        model.observation_space, model.action_space = obs_space, act_space
        model.n_envs = 1
        model._setup_model()
        model.policy.load_state_dict(policy_state)
        if optim_state is not None:
            model.policy.optimizer.load_state_dict(optim_state)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as err:
        raise CheckpointError(f"{p!r}: cannot rebuild the {algo_name} model: {err}") from None
    for key in ("num_timesteps", "_n_updates", "_episode_num"):
        if isinstance(data.get(key), int):
            setattr(model, key, data[key])
    return model
