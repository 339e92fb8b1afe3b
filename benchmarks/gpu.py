"""The token engine's table on one device: sampling vs Hugging Face ``generate``, the Nash-MD
mixture with and without KV cache, and training queries/s of the three token agents.

Usage::

    python benchmarks/gpu.py --device cuda                 # the full table (about 5 minutes)
    python benchmarks/gpu.py --device cpu --quick          # a smoke run on CPU (B = 64 and 512)

Every ratio is taken against an anchor measured in the same run, interleaved (median of
``--rounds`` rounds, so that both see the same load):

1. **Sampling.** Hugging Face ``GPT2LMHeadModel.generate`` (ancestral sampling, ``top_k=0``) of a
   GPT-2 that carries the weights of ``pi_ref`` (:func:`gpt2_from_tiny`; its logits agree with
   ``pi_ref``'s to the printed tolerance) is the anchor. Against it: the engine's
   :func:`~nlhf_envs.text.engine.generate` with the default ``multinomial`` sampler and with
   ``inverse_cdf``, and ``DuelEngine.play`` in self-play with ``sampler="inverse_cdf"`` (both seats in
   one batch of 2B; the judge pass included). Throughput counts real answer tokens only (up to and
   including ``<eos>``), for every row.
2. **Mixture.** Nash-MD's opponent ``GeometricMixture(pi_theta, pi_ref, 1/8)`` at B = 64, cached
   vs uncached (the uncached loop re-runs both models on the whole sequence each step).
3. **Hugging Face path** (``--hf``, on by default on CUDA): a random GPT-2-small-sized model (124M,
   50,257 tokens): answer tokens/s of ``generate`` and env steps/s of ``nlhf/HFTokenDuel-v0``
   (:func:`hf_token_duel.gpt2_small_rows`), and Online IPO training iterations/s and peak memory,
   full and LoRA, fp32 and bf16 (:func:`hf_train.gpt2_small_rows`).
4. **Training.** ``agent.learn`` of ``nash_mp``, ``online_ipo`` and ``nash_md`` at their zoo settings
   on ``nlhf/TokenDuel-v0`` (evaluation off), preference queries per second, each in a fresh
   process. With ``--baseline-ref GITREV`` the same runs with the code of that revision (exported
   by ``git archive`` into a temporary directory, alternating with this checkout) are the anchor.
5. **Against TRL** (``--trl``, on by default on CUDA when TRL is installed; ``--trl-only`` runs this
   section alone): ``benchmarks/hf_vs_trl.py`` on this device, nlhf-zoo's ``online_ipo`` against
   TRL's ``OnlineDPOTrainer(loss_type="ipo")`` on the same work, full fine-tuning and LoRA, in
   ``--trl-precision`` (bf16 autocast on both sides by default) at GPT-2 small's shape (124M) and
   a 1.1B Llama (``--trl-shapes``; ``--quick``: the ``tiny`` shape, a test of the script on a CPU):
   seconds per step and their ratio (interleaved, median), peak memory
   (``torch.cuda.max_memory_allocated`` on CUDA, one process per side) and its ratio. Its own
   results are ``results/hf_vs_trl_<device type>.{json,md}`` (with the work per step of each side).
   TRL is a dependency of that benchmark only: without it the section's row says why it did not run.
6. **Several processes** (``--processes``, on by default on CUDA with 2 devices; ``--processes-only``
   runs this section alone): ``online_ipo`` training iterations/s of one global batch on 1 process
   (the anchor), on 2 processes under ``distributed: ddp`` and under ``distributed: fsdp``, each a
   fresh ``torchrun --standalone --nproc_per_node N`` of this script (``--processes-worker``):
   warm-up iteration, then timed iterations between barriers; peak memory per process on CUDA.
   The model is GPT-2 small's shape (``--quick``: a 2-layer GPT-2, a test of the section on two
   CPU ``gloo`` processes). On CUDA each process needs its own device: with fewer than 2 the rows
   say so.

The device is named in the output. :func:`main` takes ``argv``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from env_throughput import replace_block  # noqa: E402  (one README-block writer for make bench)

__all__ = ["gpt2_from_tiny", "main", "measure", "process_rows", "trl_rows"]

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device, threads: int) -> str:
    """A human-readable name of ``device`` (GPU model, or CPU with its core and thread count)."""
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return (
        f"CPU ({platform.machine()}, {os.cpu_count()} logical cores, torch threads {threads}, "
        f"torch {torch.__version__})"
    )


def gpt2_from_tiny(model: Any) -> Any:
    """A ``transformers`` GPT-2 with the weights of ``model`` on its device
    (:func:`nlhf_envs.text.hf_convert.tiny_to_gpt2`, the library's one converter)."""
    from nlhf_envs.text.hf_convert import tiny_to_gpt2

    return tiny_to_gpt2(model).to(next(model.parameters()).device)


def _answer_tokens(tokens: torch.Tensor, eos: int) -> int:
    """Real answer tokens of ``[B, N]`` answers: up to and including the first ``<eos>``."""
    is_eos = tokens == eos
    has = is_eos.any(-1)
    first = torch.where(
        has, is_eos.float().argmax(-1) + 1, torch.full_like(has, tokens.shape[1], dtype=torch.long)
    )
    return int(first.sum())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(
    fns: dict[str, Callable[[], int]], rounds: int, device: torch.device
) -> dict[str, float]:
    """Median tokens/s of every ``fn`` (returns the tokens it produced) over interleaved rounds."""
    for fn in fns.values():
        fn()  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            n = fn()
            _sync(device)
            rates[k].append(n / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


#: the opt-in fast sampling of the text agents (``TextAgentConfig.sampler``)
FAST: dict[str, Any] = {"sampler": "inverse_cdf"}

#: Trains one token agent at its zoo settings in a fresh process and prints its queries/s. Run with
#: the checkout to measure as the working directory (and first on ``PYTHONPATH``).
_TRAIN_SNIPPET = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
import agents
from agents import zoo
from agents.config import config_to_dict
name, device, queries, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
assert agents.__file__.startswith(root), (agents.__file__, root)
entry = zoo.resolve(name, "nlhf/TokenDuel-v0",
                    params={"device": device, "eval_every": 0, **extra})
agent = agents.make(name, "nlhf/TokenDuel-v0", seed=0, env_kwargs=entry.env_kwargs,
                    **config_to_dict(entry.config))
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
sync(); t0 = time.perf_counter()
agent.learn(num_queries=queries)
if agent.queries_used == 0:  # a budget below one iteration (never exceeded): one iteration
    agent.learn(num_iterations=1)
sync(); print(json.dumps({"qps": agent.queries_used / (time.perf_counter() - t0),
                          "queries": agent.queries_used}))
"""


def _train_in(
    root: Path, name: str, device: torch.device, queries: int, extra: dict[str, Any] | None = None
) -> dict[str, float]:
    """Queries/s of ``name`` trained by the code under ``root`` (a fresh Python process), its zoo
    settings updated with ``extra``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    args = [name, str(device), str(queries), str(torch.get_num_threads()), str(root)]
    if extra:
        args.append(json.dumps(extra))
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN_SNIPPET, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"training {name} under {root} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_rows(
    device: torch.device,
    queries: int,
    names: tuple[str, ...],
    baseline_ref: str | None,
    rounds: int = 1,
) -> list[tuple[str, str, str]]:
    """Training queries/s per agent, at its zoo settings and with ``sampler: inverse_cdf``; with
    ``baseline_ref``, also the code of that git revision (exported with ``git archive`` to a
    temporary directory), interleaved, and the ratios to it."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        if baseline_ref:
            archive = subprocess.run(
                ["git", "archive", "--format=tar", baseline_ref],
                cwd=root,
                capture_output=True,
                check=True,
            )
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(tmp, filter="data")
            base = Path(tmp)
        rows = []
        for name in names:
            now, fast, old = [], [], []
            for r in range(rounds):  # alternate which code runs first
                if base is not None and r % 2 == 0:
                    old.append(_train_in(base, name, device, queries)["qps"])
                res = _train_in(root, name, device, queries)
                now.append(res["qps"])
                fast.append(_train_in(root, name, device, queries, FAST)["qps"])
                if base is not None and r % 2 == 1:
                    old.append(_train_in(base, name, device, queries)["qps"])
            label = f"training `{name}` (zoo settings), {int(res['queries'])} queries"
            anchor = statistics.median(old) if base is not None else statistics.median(now)
            if base is not None:
                rows.append(
                    (
                        f"{label}, code of the baseline revision (anchor)",
                        f"{anchor:,.0f} queries/s",
                        "1.00x",
                    )
                )
            for qps, what in ((statistics.median(now), "this checkout"),
                              (statistics.median(fast), "this checkout, `sampler: inverse_cdf`")):  # fmt: skip
                rows.append((f"{label}, {what}", f"{qps:,.0f} queries/s", f"{qps / anchor:.2f}x"))
    return rows


def measure(
    device: torch.device,
    batch_sizes: list[int],
    rounds: int,
    train_queries: int,
    mixture_batch: int = 64,
    agents_to_train: tuple[str, ...] = ("nash_mp", "online_ipo", "nash_md"),
    baseline_ref: str | None = None,
) -> list[tuple[str, str, str]]:
    """The table's rows ``(measurement, value, ratio to its anchor)``."""
    from nlhf_envs.text import (
        DuelEngine,
        GeometricMixture,
        generate,
        load_judge,
        load_reference_policy,
    )
    from nlhf_envs.text.hf import HFPolicy
    from nlhf_envs.text.tokenizer import EOS, PAD

    ref = load_reference_policy(device=device)
    judge = load_judge(device=device)
    engine = DuelEngine(judge, device=device)
    fast = DuelEngine(judge, device=device, sampler="inverse_cdf")
    n_new = engine.max_new_tokens
    gpt = gpt2_from_tiny(ref)
    rows: list[tuple[str, str, str]] = []

    gen = torch.Generator(device=device).manual_seed(0)
    _, ids, mask = engine.sample_prompts(64, gen)
    with torch.no_grad():
        diff = HFPolicy(gpt)(ids, attention_mask=mask)[0] - ref(ids, attention_mask=mask)[0]
        diff = diff[mask.bool()].abs().max().item()
    rows.append(
        (
            "GPT-2 carrying pi_ref's weights: largest logit difference on real tokens",
            f"{diff:.1e}",
            "",
        )
    )
    suppress = list(ref.config.suppress_tokens) or None

    for b in batch_sizes:
        _, ids, mask = engine.sample_prompts(b, gen)
        g = torch.Generator(device=device).manual_seed(1)

        def hf(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> int:
            torch.manual_seed(1)  # HF generate samples from the global generator
            out = gpt.generate(
                input_ids=ids,
                attention_mask=mask.long(),
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=n_new,
                eos_token_id=EOS,
                pad_token_id=PAD,
                suppress_tokens=suppress,
            )
            return _answer_tokens(out[:, ids.shape[1] :], EOS)

        def ours(sampler: str, ids=ids, mask=mask, g=g) -> Callable[[], int]:
            return lambda: int(
                generate(ref, ids, mask, n_new, generator=g, sampler=sampler).lengths.sum()
            )

        def play(eng: Any, ids=ids, mask=mask, g=g) -> Callable[[], int]:
            def run() -> int:
                r = eng.play(ref, ref, ids, mask, g)
                return int(r.answers_0.lengths.sum() + r.answers_1.lengths.sum())

            return run

        with torch.no_grad():
            rates = _interleaved(
                {
                    "hf": hf,
                    "multinomial": ours("multinomial"),
                    "inverse_cdf": ours("inverse_cdf"),
                    "play": play(engine),
                    "selfplay": play(fast),
                },
                rounds,
                device,
            )
        anchor = rates["hf"]
        rows.append((f"B = {b}: HF `generate` (anchor)", f"{anchor:,.0f} tokens/s", "1.00x"))
        for key, label in (
            ("multinomial", "engine `generate`, multinomial sampler (default)"),
            ("inverse_cdf", "engine `generate`, inverse-CDF sampler"),
        ):
            rows.append(
                (f"B = {b}: {label}", f"{rates[key]:,.0f} tokens/s", f"{rates[key] / anchor:.2f}x")
            )
        rows.append(
            (
                f"B = {b}: `DuelEngine.play` pi_ref vs pi_ref, default (two batches of B; anchor)",
                f"{rates['play']:,.0f} tokens/s",
                "1.00x",
            )
        )
        rows.append(
            (
                f"B = {b}: `DuelEngine.play`, `sampler='inverse_cdf'` (one batch of 2B)",
                f"{rates['selfplay']:,.0f} tokens/s",
                f"{rates['selfplay'] / rates['play']:.2f}x",
            )
        )

    theta = copy.deepcopy(ref)
    with torch.no_grad():
        for p in theta.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)).to(p))
    mix = GeometricMixture(theta, ref, 1 / 8)
    _, ids, mask = engine.sample_prompts(mixture_batch, gen)
    g = torch.Generator(device=device)

    def mixture(cache: bool) -> Callable[[], int]:
        def run() -> int:
            g.manual_seed(2)
            return int(generate(mix, ids, mask, n_new, generator=g, use_cache=cache).lengths.sum())

        return run

    with torch.no_grad():
        rates = _interleaved({"uncached": mixture(False), "cached": mixture(True)}, rounds, device)
    rows.append(
        (
            f"Nash-MD mixture, B = {mixture_batch}, uncached (anchor)",
            f"{rates['uncached']:,.0f} tokens/s",
            "1.00x",
        )
    )
    rows.append(
        (
            f"Nash-MD mixture, B = {mixture_batch}, KV cached (same samples)",
            f"{rates['cached']:,.0f} tokens/s",
            f"{rates['cached'] / rates['uncached']:.2f}x",
        )
    )

    if train_queries > 0:
        rows += training_rows(
            device, train_queries, agents_to_train, baseline_ref, rounds=2 if baseline_ref else 1
        )
    return rows


def trl_rows(
    device: torch.device,
    shapes: list[str],
    rounds: int,
    threads: int,
    batch: int = 8,
    new_tokens: int = 32,
    precision: str = "bf16",
    out: Path = RESULTS,
) -> list[tuple[str, str, str]]:
    """Section 5: ``benchmarks/hf_vs_trl.py`` on ``device`` (full fine-tuning and LoRA at each of
    ``shapes``; its results in ``out/hf_vs_trl_<device type>.*``), as rows ``(measurement,
    value, ratio)``; one row saying why when TRL cannot run here."""
    import hf_vs_trl  # the sibling benchmark

    problem = hf_vs_trl._trl_problem()
    if problem is not None:
        return [("nlhf-zoo vs TRL Online DPO (IPO)", f"not run: {problem}", "")]
    name = f"hf_vs_trl_{device.type}"
    args = ["--device", str(device), "--shapes", ",".join(shapes), "--rounds", str(rounds)]
    args += ["--batch", str(batch), "--new-tokens", str(new_tokens), "--precision", precision]
    args += ["--threads", str(threads), "--name", name]
    if out != RESULTS:
        args += ["--out", str(out)]
    if hf_vs_trl.main(args) != 0:
        raise RuntimeError("benchmarks/hf_vs_trl.py failed")
    result = json.loads((out / f"{name}.json").read_text())
    rows = []
    for row in result["rows"]:
        t, mem = row["time"], row["memory"]
        what = (
            f"nlhf-zoo `online_ipo` vs TRL Online DPO (IPO), {row['shape']} "
            f"({hf_vs_trl.parameter_count(row['parameters'])}), {row['mode']}, {precision}, "
            f"B = {batch}"
        )
        ours, trl = statistics.median(t["ours_s"]), statistics.median(t["trl_s"])
        ratio = statistics.median(t["ratios"])
        rows.append((f"{what}: s/step", f"{ours:.3f} vs {trl:.3f} s", f"{ratio:.2f}x"))
        key = "cuda_peak_mib" if device.type == "cuda" else "peak_kib"
        scale = 1.0 if device.type == "cuda" else 1 / 1024
        a, b = (mem[side][key] for side in ("ours", "trl"))
        if a and b:
            rows.append(
                (
                    f"{what}: peak memory",
                    f"{a * scale:,.0f} vs {b * scale:,.0f} MiB",
                    f"{a / b:.2f}x",
                )
            )
    return rows


#: the settings of section 6: (label, processes, ``distributed``)
PROCESS_SETTINGS = (
    ("1 process (anchor)", 1, "ddp"),
    ("2 processes, DDP", 2, "ddp"),
    ("2 processes, FSDP", 2, "fsdp"),
)


def _process_worker(device: str, batch: int, iterations: int, quick: bool, out: Path) -> None:
    """One process of a ``torchrun`` launch of section 6: train, time, the first writes JSON."""
    import torch.distributed as dist
    from hf_train import _gpt2_small_env  # the sibling benchmark's model and game

    import agents
    from agents.text.distributed import init_process_group_from_env

    rank, world, device = init_process_group_from_env(device)
    strategy = os.environ.get("NLHF_BENCH_DISTRIBUTED", "ddp")
    env = _gpt2_small_env(quick)
    agent = agents.make(
        "online_ipo", env, seed=0, batch_size=batch, shards=2, eval_every=0, nash_eval="off",
        device=device, distributed=strategy,
    )  # fmt: skip
    agent.learn(num_iterations=1)  # warm-up
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    agent.learn(num_iterations=iterations)
    _sync(dev)
    if world > 1:
        dist.barrier()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else float("nan")
    if rank == 0:
        out.write_text(json.dumps({"iterations_per_s": iterations / elapsed, "peak_mib": peak}))
    if world > 1:
        dist.destroy_process_group()


def process_rows(
    device: torch.device, batch: int, iterations: int, quick: bool, threads: int
) -> list[tuple[str, str, str]]:
    """Section 6: ``(measurement, value, ratio)`` rows of ``online_ipo`` on 1 and 2 processes
    (DDP, FSDP), each a fresh ``torchrun`` launch of this script; ratios to the 1-process row."""
    shape = "2-layer GPT-2 (quick)" if quick else "GPT-2 small"
    what = f"{shape} on nlhf/HFTokenDuel-v0, online_ipo full fine-tuning, global B = {batch}"
    rows: list[tuple[str, str, str]] = []
    anchor = None
    for label, nproc, strategy in PROCESS_SETTINGS:
        if device.type == "cuda" and torch.cuda.device_count() < nproc:
            rows.append((f"{what}, {label}", f"not run: needs {nproc} CUDA devices", ""))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            cmd = [
                sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(nproc), __file__, "--processes-worker", "--device", device.type,
                "--processes-batch", str(batch), "--processes-iterations", str(iterations),
                "--out", str(out),
                *(["--quick"] if quick else []),
            ]  # fmt: skip
            env = {
                **os.environ, "NLHF_BENCH_DISTRIBUTED": strategy, "OMP_NUM_THREADS": str(threads),
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                               os.environ.get("PYTHONPATH", "")]),
            }  # fmt: skip
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                tail = " ".join(proc.stderr.strip().splitlines()[-1:])[-200:]
                rows.append((f"{what}, {label}", f"failed: {tail}", ""))
                continue
            result = json.loads(out.read_text())
        ips = result["iterations_per_s"]
        anchor = ips if anchor is None and nproc == 1 else anchor
        memory = (
            f", peak {result['peak_mib']:,.0f} MiB per process" if device.type == "cuda" else ""
        )
        ratio = f"{ips / anchor:.2f}x" if anchor else ""
        rows.append((f"{what}, {label}", f"{ips:.2f} iterations/s{memory}", ratio))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the markdown table; returns 0."""
    p = argparse.ArgumentParser(prog="gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="B = 64, 512; short training")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--mixture-batch", type=int, default=64)
    p.add_argument("--train-queries", type=int, default=None, help="0 skips training")
    p.add_argument(
        "--baseline-ref",
        default=None,
        help="also train with the code of this git revision (git archive to a temp dir), interleaved",
    )
    p.add_argument(
        "--hf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the GPT-2-small rows of nlhf/HFTokenDuel-v0 (default: on CUDA only)",
    )
    p.add_argument(
        "--trl",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the rows of benchmarks/hf_vs_trl.py (default: on CUDA when TRL is installed)",
    )
    p.add_argument("--trl-only", action="store_true", help="run only the TRL section")
    p.add_argument(
        "--processes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the 1- and 2-process rows (default: on CUDA with 2 devices)",
    )
    p.add_argument("--processes-only", action="store_true", help="run only that section")
    p.add_argument(
        "--processes-batch", type=int, default=None, help="global B (default 64; quick 8)"
    )
    p.add_argument(
        "--processes-iterations", type=int, default=None, help="timed (default 4; quick 2)"
    )
    p.add_argument("--processes-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--trl-shapes", default=None, help="default gpt2-small,llama-1b (--quick: tiny)")
    p.add_argument("--trl-batch", type=int, default=8, help="prompts per step of the TRL section")
    p.add_argument("--trl-new-tokens", type=int, default=32)
    p.add_argument("--trl-precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default results/gpu_<device type>.md (--trl-only: gpu_<device type>_trl.md)",
    )
    p.add_argument("--readme", type=Path, default=None, help="also replace its bench:engine table")
    args = p.parse_args(argv)
    batch_p = args.processes_batch or (8 if args.quick else 64)
    iterations_p = args.processes_iterations or (2 if args.quick else 4)
    if args.processes_worker:  # one process of a torchrun launch of process_rows
        _process_worker(args.device, batch_p, iterations_p, args.quick, args.out)
        return 0
    only = args.trl_only or args.processes_only
    if only and args.readme:
        p.error("--readme takes the whole table; --trl-only/--processes-only write one section")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = args.batch_sizes or ([64, 512] if args.quick else [64, 512, 1024, 2048, 4096, 8192])
    rounds = args.rounds or 5
    train_q = (
        args.train_queries if args.train_queries is not None else (1024 if args.quick else 8192)
    )
    start = time.perf_counter()
    rows = []
    if not only:
        rows += measure(
            device, sizes, rounds, train_q, args.mixture_batch, baseline_ref=args.baseline_ref
        )
    if not only and (args.hf if args.hf is not None else device.type == "cuda"):
        from hf_token_duel import gpt2_small_rows  # the sibling benchmarks (need transformers)
        from hf_train import gpt2_small_rows as training_rows_hf

        rows += gpt2_small_rows(device, rounds, batch=64)
        for label, ips, peak in training_rows_hf(str(device), 64, 4, quick=False):
            memory = f", peak {peak:,.0f} MiB" if peak == peak else ""
            rows.append(
                (
                    f"GPT-2 small on nlhf/HFTokenDuel-v0, online_ipo training, {label}, B = 64",
                    f"{ips:.2f} iterations/s{memory}",
                    "",
                )
            )
    want_trl = args.trl if args.trl is not None else device.type == "cuda"
    if args.trl_only or (want_trl and not args.processes_only):
        shapes = args.trl_shapes or ("tiny" if args.quick else "gpt2-small,llama-1b")
        rows += trl_rows(
            device, [s for s in shapes.split(",") if s], args.rounds or 5, args.threads,
            args.trl_batch, args.trl_new_tokens, args.trl_precision,
            args.out.parent if args.out else RESULTS,
        )  # fmt: skip
    two = device.type == "cuda" and torch.cuda.device_count() >= 2
    if args.processes_only or (not args.trl_only and (args.processes or two)):
        rows += process_rows(device, batch_p, iterations_p, args.quick, args.threads)
    shown = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python benchmarks/gpu.py", *[a for a in shown if a]])
    lines = [
        "# Token engine on one device",
        "",
        f"Device: {device_name(device, args.threads)}. Command: `{cmd}` "
        f"({time.perf_counter() - start:.0f} s). Ratios: to the anchor of the same block, same run, "
        f"median of {rounds} interleaved rounds.",
        "",
        "| measurement | value | ratio |",
        "| --- | ---: | ---: |",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    suffix = "_trl" if args.trl_only else "_processes" if args.processes_only else ""
    out = args.out or RESULTS / f"gpu_{device.type}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.readme:
        replace_block(args.readme, "engine", "\n".join(lines[2:-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
