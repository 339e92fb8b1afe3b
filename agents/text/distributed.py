"""Data-parallel token agents: ``N`` processes of a ``torch.distributed`` process group.

Launch any script that builds and trains a token agent under ``torchrun`` (or ``accelerate
launch`` on GPUs) and initialise the process group before ``agents.make``::

    torchrun --standalone --nproc_per_node 2 examples/hf_data_parallel.py --iterations 8

(``torch.distributed.init_process_group("gloo")`` on CPUs, ``"nccl"`` on GPUs with
``device=f"cuda:{LOCAL_RANK}"``; :func:`init_process_group_from_env` does both). The command
line does it itself: ``torchrun --standalone --nproc_per_node 2 -m nlhf_zoo_cli train ...`` (or
``nlhf-zoo train --nproc 2 ...``) trains one run on two processes (:func:`agents.zoo.train.
train_run`). Beware: ``accelerate launch --cpu --num_processes 2`` starts a single process; use
``torchrun`` on CPUs.

What changes with ``N`` processes (Nash-MP, Online IPO and Nash-MD):

* the global batch of every duel (``batch_size`` answer pairs) is drawn as ``shards`` equal
  parts, each from its own seeded generator (shard 0 from the agent's ``rng``, shard ``s`` from
  ``SeedSequence([seed, 13, s])``); process ``r`` draws shards ``r k .. r k + k - 1`` with
  ``k = shards / N``. A single process with the same ``shards`` draws them all, one after the
  other, and concatenates them: the same global batch;
* every loss is a mean over the batch, so the mean over processes of the local gradients is the
  global batch's gradient. With ``distributed: ddp`` (the default) the training forward passes
  of ``pi_theta`` go through :class:`torch.nn.parallel.DistributedDataParallel`, which averages
  the gradients over the processes during the backward pass (``no_sync`` for all micro-batches
  but the last under ``gradient_accumulation_steps``; LoRA: only the adapter's weights); every
  process keeps the same weights. With ``distributed: fsdp`` (full fine-tuning of Online IPO
  and Nash-MD) ``pi_theta`` and its optimiser state are sharded over the processes
  (``torch.distributed.fsdp.fully_shard`` per transformer block, then the whole model):
  :mod:`agents.text.fsdp`;
* queries are counted globally (each process adds ``batch_size`` per duel); the iteration's logged
  statistics are the means over processes (equal shards: the global batch's means);
* evaluations run on the first process only under DDP (the others go on to the next iteration
  and wait for it there; their ``history`` rows have no ``eval/`` metrics); under FSDP every
  process takes part (the forward passes gather the sharded weights), with the same seeded
  generator (identical results);
* checkpoints: the generator states of every shard are gathered at the end of each iteration,
  so under DDP the first process writes a checkpoint alone (:meth:`~agents.text.common.
  TextAgent.save` is a no-op elsewhere); under FSDP every process takes part in gathering the
  full weights and optimiser state, and the first one writes them.

So a run on ``N`` processes reproduces one process with ``shards = N`` up to floating-point
summation order (``tests/agents/text/test_hf_data_parallel.py``: 1e-6 on the exact Nash metrics;
``tests/agents/zoo/test_train_processes.py``: ``nlhf-zoo train`` under ``torchrun``).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.config import ConfigError

__all__ = [
    "DATA_PARALLEL_AGENTS",
    "DISTRIBUTED_STRATEGIES",
    "FSDP_AGENTS",
    "PROCESS_GROUP_TIMEOUT",
    "DataParallel",
    "broadcast_object",
    "concat_duels",
    "init_process_group_from_env",
    "launched_processes",
    "prompt_seed",
    "shard_seed",
]

#: the token agents whose every duel goes through ``TextAgent.duel`` (sharded)
DATA_PARALLEL_AGENTS: tuple[str, ...] = ("nash_mp", "online_ipo", "nash_md")

#: the values of ``TextAgentConfig.distributed``: replicated weights (``ddp``) or sharded ones
DISTRIBUTED_STRATEGIES: tuple[str, ...] = ("ddp", "fsdp")

#: the token agents that train under ``distributed: fsdp`` (Nash-MP copies its policy into
#: frozen targets, which a sharded model does not support here)
FSDP_AGENTS: tuple[str, ...] = ("online_ipo", "nash_md")

#: how long a process waits in a collective for the others (an evaluation on the first process,
#: a peer that died) before it fails: an error then ends every process instead of a hang
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=60)


def launched_processes() -> int:
    """The process count a launcher (``torchrun``) announced in ``WORLD_SIZE`` (1 without one)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_process_group_from_env(device: str | None = None) -> tuple[int, int, str]:
    """Join the process group a launcher describes (``torchrun`` sets ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), once.

    ``gloo`` on CPUs, ``nccl`` when CUDA is available and ``device`` is not ``"cpu"`` (each
    process then uses ``cuda:LOCAL_RANK``). Collectives time out after
    :data:`PROCESS_GROUP_TIMEOUT`.

    Args:
        device: the device the user asked for (``None``: CUDA when available, else the CPU).

    Returns:
        ``(rank, world_size, device)``: ``(0, 1, device or "cpu")`` without a launcher.

    Raises:
        agents.config.ConfigError: on CUDA, for a process whose ``LOCAL_RANK`` has no GPU.
    """
    dist = torch.distributed
    world = launched_processes()
    if world == 1 or not dist.is_available():
        return 0, 1, device or "cpu"
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda and local >= torch.cuda.device_count():
        raise ConfigError(
            f"process {local} of this machine needs its own GPU (cuda:{local}); this machine has "
            f"{torch.cuda.device_count()}: launch as many processes per machine as it has GPUs "
            "(or use --device cpu)"
        )
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return dist.get_rank(), dist.get_world_size(), device


def broadcast_object(value: Any) -> Any:
    """``value`` of the first process, on every process (itself without a process group).

    The value is pickled by ``torch.distributed.broadcast_object_list`` between the run's own
    processes (never read from a file)."""
    rank, world = _group()
    if world == 1:
        return value
    box = [value if rank == 0 else None]
    if torch.distributed.get_backend() == "nccl":
        torch.distributed.broadcast_object_list(
            box, src=0, device=torch.device("cuda", torch.cuda.current_device())
        )
    else:
        torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard ``shard >= 1``'s generator (shard 0 uses the agent's ``rng``)."""
    return int(np.random.SeedSequence([int(seed), 13, int(shard)]).generate_state(1)[0])


def prompt_seed(seed: int, shard: int, step: int) -> int:
    """The seed of the prompts of duel ``step`` of shard ``shard`` (see
    :meth:`agents.text.common.TextAgent.prompt_generator`)."""
    return int(np.random.SeedSequence([int(seed), 17, int(shard), int(step)]).generate_state(1)[0])


def _group() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the device the process group's backend communicates from."""
    if torch.distributed.get_backend() == "nccl":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


class _PolicyDDP(torch.nn.parallel.DistributedDataParallel):
    """``DistributedDataParallel`` around a duel policy that keeps its ``supports_logits_to_keep``
    (so :func:`~nlhf_envs.text.engine.policy_logits` still projects only the kept positions)."""

    @property
    def supports_logits_to_keep(self) -> bool:
        return bool(getattr(self.module, "supports_logits_to_keep", False))


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run (see the module docstring).

    Attributes:
        rank: the process's rank (0 without a process group).
        world: the number of processes.
        shards: the global batch's parts (a multiple of ``world``).
        strategy: ``"ddp"`` (replicated weights) or ``"fsdp"`` (sharded weights).
    """

    rank: int
    world: int
    shards: int
    strategy: str = "ddp"

    @classmethod
    def current(cls, config: Any, agent: str) -> DataParallel:
        """The layout of the current process group for ``config`` (``shards``, ``batch_size``,
        ``distributed``, ``lora``).

        Raises:
            agents.config.ConfigError: when the process count does not divide ``shards``, the
                shards do not divide ``batch_size``, ``agent`` cannot run data-parallel, or
                ``distributed: fsdp`` is asked of an agent or a LoRA model it does not shard.
        """
        rank, world = _group()
        shards = config.shards if config.shards is not None else world
        strategy = getattr(config, "distributed", "ddp")
        if world > 1 and agent not in DATA_PARALLEL_AGENTS:
            raise ConfigError(
                f"{agent}: this token agent does not run data-parallel ({world} processes); "
                f"those that do: {', '.join(DATA_PARALLEL_AGENTS)}"
            )
        if world > 1 and strategy == "fsdp":
            if agent not in FSDP_AGENTS:
                raise ConfigError(
                    f"distributed: fsdp does not shard {agent} (its frozen copies of the policy); "
                    f"those it shards: {', '.join(FSDP_AGENTS)} (or use distributed: ddp)"
                )
            if getattr(config, "lora", None) is not None:
                raise ConfigError(
                    "distributed: fsdp shards full fine-tuning only; a LoRA adapter is small: "
                    "use distributed: ddp"
                )
        if shards % world:
            raise ConfigError(
                f"shards: {shards} is not a multiple of the {world} data-parallel processes"
            )
        if config.batch_size % shards:
            raise ConfigError(
                f"batch_size: {config.batch_size} does not split into {shards} equal shards "
                f"({world} data-parallel processes); use a multiple of {shards}"
            )
        return cls(rank, world, shards, strategy if world > 1 else "ddp")

    @property
    def local_shards(self) -> range:
        """The global indices of the shards this process draws."""
        k = self.shards // self.world
        return range(self.rank * k, (self.rank + 1) * k)

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether ``pi_theta`` is sharded over several processes (FSDP)."""
        return self.world > 1 and self.strategy == "fsdp"

    @property
    def evaluates(self) -> bool:
        """Whether this process runs evaluations: the first one, or every one under FSDP (whose
        forward passes need every process)."""
        return self.is_main or self.sharded

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` in ``DistributedDataParallel`` (its trainable parameters' gradients are
        averaged over the processes during the backward pass; buffers are synchronised once, when
        it is built, not at every forward pass)."""
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        return _PolicyDDP(
            model,
            device_ids=ids,
            forward_sync_buffers=False,
            find_unused_parameters=False,
        )

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (one all-reduce; ``flag`` itself alone)."""
        if self.world == 1:
            return bool(flag)
        t = _comm(torch.tensor([int(bool(flag))], dtype=torch.int64))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def average_row(self, row: dict[str, float]) -> dict[str, float]:
        """The means over the processes of an iteration's statistics (same keys everywhere)."""
        if self.world == 1:
            return row
        keys = sorted(row)
        t = _comm(torch.tensor([row[k] for k in keys], dtype=torch.float64))
        torch.distributed.all_reduce(t)
        mean = dict(zip(keys, (t / self.world).cpu().tolist(), strict=True))
        return {k: mean[k] for k in row}  # the row's own order (its CSV columns)

    def gather_generator_states(self, generators: list[torch.Generator]) -> torch.Tensor:
        """``[shards, L]`` uint8: every shard's generator state, in shard order, on every process."""
        local = torch.stack([g.get_state() for g in generators])
        if self.world == 1:
            return local
        mine = _comm(local)
        out = [torch.empty_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(out, mine)
        return torch.cat([o.cpu() for o in out])


def concat_duels(parts: list[Any]) -> Any:
    """The shards' duels as one (rows concatenated in shard order)."""

    def cat(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, torch.Tensor):
            return torch.cat(values)
        return type(first)(
            **{f.name: cat([getattr(v, f.name) for v in values]) for f in dataclasses.fields(first)}
        )

    return cat(parts)
