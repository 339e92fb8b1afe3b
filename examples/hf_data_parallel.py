"""Data-parallel training of the token agents on the Hugging Face path (``torch.distributed``).

Run on two CPU processes (``gloo``; on GPUs ``torchrun`` picks ``nccl`` here and each process uses
``cuda:LOCAL_RANK``)::

    torchrun --standalone --nproc_per_node 2 examples/hf_data_parallel.py --iterations 8

Each process draws its shards of every global batch, gradients are averaged over the processes,
and the first process writes the results (``--out``: the metric history as JSON; ``--save``: the
checkpoint and its Hugging Face folder). The same command without ``torchrun`` (one process, the
same ``--shards``) trains the same policy (see :mod:`agents.text.distributed`). Note that
``accelerate launch --cpu --num_processes 2`` starts a single process: use ``torchrun`` on CPUs.

The game is ``HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")`` (a GPT-2 with the tiny world's
weights, exact Nash metrics); pass your own parts to ``HFTokenDuelEnv`` for a real model.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch
import torch.distributed as dist

import agents
from nlhf_envs.text.hf_env import HFTokenDuelEnv

EXTRA = {"nash_mp": {"inner_steps": 2}, "online_ipo": {}, "nash_md": {}}


def train(
    name: str,
    env: Any,
    *,
    iterations: int,
    batch_size: int,
    shards: int | None,
    seed: int,
    device: str = "cpu",
) -> Any:
    """Train ``name`` for ``iterations`` on ``env`` (exact Nash metrics at every iteration)."""
    agent = agents.make(
        name,
        env,
        seed=seed,
        batch_size=batch_size,
        shards=shards,
        eval_every=1,
        eval_prompts=8,
        device=device,
        **EXTRA[name],
    )
    return agent.learn(num_iterations=iterations)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, join the process group (under ``torchrun``) and train."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", nargs="+", default=["nash_mp"], choices=sorted(EXTRA))
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch")
    parser.add_argument("--shards", type=int, default=None, help="default: the process count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON file of the histories (first process)")
    parser.add_argument("--save", default=None, help="checkpoint folder (first process writes)")
    args = parser.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = "cpu"
    if world > 1:
        cuda = torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    rank = dist.get_rank() if world > 1 else 0
    env = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    histories = {}
    for name in args.agent:
        agent = train(
            name,
            env,
            iterations=args.iterations,
            batch_size=args.batch_size,
            shards=args.shards,
            seed=args.seed,
            device=device,
        )
        histories[name] = agent.history
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            agent.save(os.path.join(args.save, f"{name}.npz"))  # written by the first process
        if rank == 0:
            last = agent.history[-1]
            print(
                f"{name}: {agent.queries_used} queries on {world} process(es); exploitability "
                f"{last['eval/exploitability']:.6f}, KL to Nash {last['eval/kl_to_nash']:.6f}"
            )
    if rank == 0 and args.out:
        with open(args.out, "w") as fh:
            json.dump(histories, fh)
    if world > 1:
        dist.barrier()  # leave together (the first process evaluated alone, after the others)
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
