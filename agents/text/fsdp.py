"""Sharded training of a token agent's policy: FSDP2 (``torch.distributed.fsdp.fully_shard``).

Under ``distributed: fsdp`` and ``N`` processes (:mod:`agents.text.distributed`) ``pi_theta`` (a
Hugging Face causal LM, full fine-tuning) is sharded over the processes: each transformer block
(the classes the model names in ``_no_split_modules``, e.g. GPT-2's ``GPT2Block``) is one FSDP
unit, then the whole model (embeddings, final norm, tied head). Each process holds ``1/N`` of the
weights, of their gradients and of the optimiser's moments; a forward pass gathers one block's
weights at a time, the backward pass reduce-scatters (averages) its gradients. The reference
``pi_ref`` stays whole on every process (frozen, no optimiser state).

Choices:

* generation: the policy's weights are gathered ONCE around a batch's generation and an
  evaluation (:func:`gathered`: ``set_reshard_after_forward(False)``, then ``reshard()``),
  instead of at every token step; the memory of the whole policy is then in use during
  generation, as with DeepSpeed ZeRO-3's gathered generation;
* checkpoints: every process takes part in gathering the full weights
  (``get_model_state_dict(..., StateDictOptions(full_state_dict=True, cpu_offload=True))``) and
  the optimiser's moments (``DTensor.full_tensor()``); the first process writes the same
  ``.npz`` as a single process (so a sharded run resumes in one process and back), and its
  ``<name>_hf/`` folder from a plain copy of the model holding the full weights
  (``save_pretrained``);
* loading: every process reads the full state and keeps its own shards
  (``distribute_tensor(..., src_data_rank=None)``: no communication), so loading needs no
  collective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "full_optimizer_state",
    "full_policy_state",
    "gathered",
    "load_full_state",
    "shard_policy",
]

_MESHES: dict[str, Any] = {}


def default_mesh(device_type: str) -> Any:
    """The 1-D device mesh over every process (built once per device type; building it is a
    collective, so a multi-process command builds it right after joining the group)."""
    from torch.distributed.device_mesh import init_device_mesh

    if device_type not in _MESHES:
        world = torch.distributed.get_world_size()
        _MESHES[device_type] = init_device_mesh(device_type, (world,))
    return _MESHES[device_type]


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face policy (its ``_no_split_modules`` classes)."""
    lm = getattr(model, "lm", model)
    names = set(getattr(lm, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_policy(model: torch.nn.Module, device: torch.device) -> None:
    """Shard ``model`` in place: ``fully_shard`` on each transformer block, then on the model.

    Raises:
        agents.config.ConfigError: when the model names no transformer block class.
    """
    from torch.distributed.fsdp import fully_shard

    from agents.config import ConfigError

    blocks = _blocks(model)
    if not blocks:
        raise ConfigError(
            "distributed: fsdp needs a model that names its transformer blocks "
            "(_no_split_modules); use distributed: ddp"
        )
    mesh = default_mesh(device.type)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


@contextlib.contextmanager
def gathered(model: Any) -> Iterator[None]:
    """Keep a sharded ``model``'s weights gathered from its first forward pass in the block to
    the end of it (generation: one all-gather per block and batch, not per token); a model that
    is not sharded is left alone."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.set_reshard_after_forward(False)
    try:
        yield
    finally:
        model.set_reshard_after_forward(True)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()


def _full(value: Any) -> Any:
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value.full_tensor().cpu()
    return value


def full_policy_state(agent: Any) -> dict[str, torch.Tensor]:
    """The full state dict of a sharded ``pi_theta`` on the first process (``{}`` elsewhere);
    a collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(agent.model, options=options)


def full_optimizer_state(agent: Any) -> dict[str, Any]:
    """The optimiser's ``state_dict()`` with every sharded moment gathered whole (indexed as a
    single process indexes it); a collective: every process calls it."""
    opt = agent.optimizer.state_dict()
    return {
        "state": {
            idx: {key: _full(val) for key, val in st.items()} for idx, st in opt["state"].items()
        },
        "param_groups": opt["param_groups"],
    }


def _shard_like(full: torch.Tensor, like: Any) -> Any:
    """This process's shard of ``full`` laid out as the sharded tensor ``like`` (no
    communication: every process holds ``full``)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor) or tuple(full.shape) != tuple(like.shape):
        return full
    full = full.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def load_full_state(
    agent: Any, policy: dict[str, torch.Tensor], optimizer: dict[str, Any] | None
) -> None:
    """Load a full policy state (and optimiser state) into a sharded agent: each process keeps
    its shards of the full tensors it read (no collective).

    Raises:
        ValueError: when the state's keys are not the policy's.
    """
    own = dict(agent.model.state_dict())
    if set(policy) != set(own):
        odd = sorted(set(policy) ^ set(own))
        raise ValueError(f"the stored policy does not fit the model ({len(odd)} keys differ)")
    with torch.no_grad():
        for key, target in own.items():
            shard = _shard_like(policy[key], target)
            local = target.to_local() if hasattr(target, "to_local") else target
            local.copy_(shard.to_local() if hasattr(shard, "to_local") else shard)
    if optimizer is None:
        return
    params = [p for group in agent.optimizer.param_groups for p in group["params"]]
    state = {
        idx: {key: _shard_like(val, params[int(idx)]) if key != "step" else val
              for key, val in st.items()}
        for idx, st in optimizer["state"].items()
    }  # fmt: skip
    agent.optimizer.load_state_dict({"state": state, "param_groups": optimizer["param_groups"]})
