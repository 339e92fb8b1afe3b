"""Data-parallel token agents: ``N`` processes of a ``torch.distributed`` process group.

Launch any script that builds and trains a token agent under ``torchrun`` (or ``accelerate
launch`` on GPUs) and initialise the process group before ``agents.make``::

    torchrun --standalone --nproc_per_node 2 examples/hf_data_parallel.py --iterations 8

(``torch.distributed.init_process_group("gloo")`` on CPUs, ``"nccl"`` on GPUs with
``device=f"cuda:{LOCAL_RANK}"``). Beware: ``accelerate launch --cpu --num_processes 2`` starts a
single process; use ``torchrun`` on CPUs.

What changes with ``N`` processes (Nash-MP, Online IPO and Nash-MD):

* the global batch of every duel (``batch_size`` answer pairs) is drawn as ``shards`` equal
  parts, each from its own seeded generator (shard 0 from the agent's ``rng``, shard ``s`` from
  ``SeedSequence([seed, 13, s])``); process ``r`` draws shards ``r k .. r k + k - 1`` with
  ``k = shards / N``. A single process with the same ``shards`` draws them all, one after the
  other, and concatenates them: the same global batch;
* every loss is a mean over the batch, so the mean over processes of the local gradients is the
  global batch's gradient: gradients are all-reduced (averaged) before clipping and the optimiser
  step, and every process keeps the same weights;
* queries are counted globally (each process adds ``batch_size`` per duel); the iteration's logged
  statistics are the means over processes (equal shards: the global batch's means);
* evaluations run on every process with the same seeded generator (identical results);
* checkpoints: every process takes part in gathering the shards' generator states, the first
  process writes the file (:meth:`~agents.text.common.TextAgent.save`).

So a run on ``N`` processes reproduces one process with ``shards = N`` up to floating-point
summation order (``tests/agents/text/test_hf_data_parallel.py``: 1e-6 on the exact Nash metrics).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.config import ConfigError

__all__ = [
    "DATA_PARALLEL_AGENTS",
    "DataParallel",
    "concat_duels",
    "prompt_seed",
    "shard_seed",
]

#: the token agents whose every duel goes through ``TextAgent.duel`` (sharded)
DATA_PARALLEL_AGENTS: tuple[str, ...] = ("nash_mp", "online_ipo", "nash_md")


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


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run (see the module docstring).

    Attributes:
        rank: the process's rank (0 without a process group).
        world: the number of processes.
        shards: the global batch's parts (a multiple of ``world``).
    """

    rank: int
    world: int
    shards: int

    @classmethod
    def current(cls, config: Any, agent: str) -> DataParallel:
        """The layout of the current process group for ``config`` (``shards``, ``batch_size``).

        Raises:
            agents.config.ConfigError: when the process count does not divide ``shards``, the
                shards do not divide ``batch_size``, or ``agent`` cannot run data-parallel.
        """
        rank, world = _group()
        shards = config.shards if config.shards is not None else world
        if world > 1 and agent not in DATA_PARALLEL_AGENTS:
            raise ConfigError(
                f"{agent}: this token agent does not run data-parallel ({world} processes); "
                f"those that do: {', '.join(DATA_PARALLEL_AGENTS)}"
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
        return cls(rank, world, shards)

    @property
    def local_shards(self) -> range:
        """The global indices of the shards this process draws."""
        k = self.shards // self.world
        return range(self.rank * k, (self.rank + 1) * k)

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    def average_gradients(self, model: torch.nn.Module) -> None:
        """Replace every gradient of ``model`` by its mean over the processes (one all-reduce)."""
        if self.world == 1:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = _comm(torch.cat([g.reshape(-1) for g in grads]))
        torch.distributed.all_reduce(flat)
        flat = (flat / self.world).to(grads[0].device)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_row(self, row: dict[str, float]) -> dict[str, float]:
        """The means over the processes of an iteration's statistics (same keys everywhere)."""
        if self.world == 1:
            return row
        keys = sorted(row)
        t = _comm(torch.tensor([row[k] for k in keys], dtype=torch.float64))
        torch.distributed.all_reduce(t)
        values = (t / self.world).cpu().tolist()
        return dict(zip(keys, values, strict=True))

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
