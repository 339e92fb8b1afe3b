"""nlhf-zoo's ``online_ipo`` against TRL's Online DPO with the IPO loss, on the same work.

Usage (TRL is a dependency of this benchmark only; install it in a virtual environment of its own,
see ``benchmarks/README.md``)::

    .venv-trl/bin/python benchmarks/hf_vs_trl.py                  # 12M and 90M, full and LoRA
    .venv-trl/bin/python benchmarks/hf_vs_trl.py --shapes 12m --rounds 3
    python benchmarks/hf_vs_trl.py --ours-only --shapes tiny      # nlhf-zoo's side alone

**What is compared.** nlhf-zoo: ``agents.make("online_ipo", env)`` on an ``nlhf/HFTokenDuel-v0``
env (:class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv`) whose judge is a
:class:`~nlhf_envs.text.hf_judges.RewardModelJudge` (Bradley-Terry, ``P(a > b) = sigmoid(r_a -
r_b)``), one ``agent.learn(num_iterations=1)`` per step. TRL: ``OnlineDPOTrainer`` of
``trl.experimental.online_dpo`` with ``OnlineDPOConfig(loss_type="ipo")`` and the same reward model
as ``reward_funcs``, one optimiser step per step. Both sides get the same parts, built from configs
and seeds (nothing is downloaded): a random causal LM (``LlamaConfig``; ``--shapes`` names the
sizes, ``tiny`` is for tests and ``gpt2-small`` / ``llama-1b`` for a GPU), the same initial weights,
one word-level tokenizer, the same prompts (``--prompt-words`` words each), one random
``LlamaForSequenceClassification`` reward model (one output), and the same settings: ``--batch``
prompts per step (``2 x batch`` answers), ``--new-tokens`` answer tokens, temperature 1, no top-k
or top-p, ``--beta``, ``--lr`` (constant), Adam without weight decay, gradient norm clipped at 1,
full fine-tuning or LoRA (rank 16, alpha 32, dropout 0, on ``q_proj k_proj v_proj o_proj``;
``c_attn`` for GPT-2), fp32 (``--precision bf16``: autocast on both sides), ``--threads`` torch
threads (one by default). Both sides stop an answer at the tokenizer's EOS (the same stop); with
a random model answers practically always run to ``--new-tokens`` (the generated tokens per step
are counted and printed).

**How.** *Time*: both sides live in one process, interleaved: a ``TrainerCallback`` runs one
nlhf-zoo step at the end of every TRL step, so the two alternate step by step under the same load.
TRL's step is the wall time from the end of the nlhf-zoo step before it to TRL's next
``on_step_end`` (its whole loop: batch, generation, forwards, reward, backward, clipping, optimiser,
scheduler, logging); nlhf-zoo's is ``agent.learn(num_iterations=1)``. The first ``--warmup`` rounds
are dropped; the ratio is the median over rounds of ``nlhf-zoo seconds / TRL seconds``, in wall
seconds and in CPU seconds of the process (``time.process_time``: on a shared machine it leaves
out the time spent waiting for a core, and is then the steadier of the two); the report gives the
CPU-time ratio with a distribution-free 90% interval for its median (:func:`median_interval`: the
order statistics of the per-round ratios, rounds taken as independent draws). *Memory*:
each side runs ``--memory-steps`` steps in a fresh Python process of its own (the same imports,
TRL's included when installed, and the same parts): the peak resident set size (Linux ``VmHWM``,
reset after the parts are built) and that peak minus the resident size before the side was
built (its own memory: copies of the weights, optimiser state, activations); on CUDA
``torch.cuda.max_memory_allocated``. *Work*: in the same processes the forward calls of the causal
LM's class and of the reward model are recorded over the last step: a generate call is a forward
without cache followed by cached one-token forwards (its rows and steps), the other causal-LM
forwards are scoring passes, with gradient (the policy) or without (the reference), and the
copies of the base weights are the distinct storages of the input embeddings of every live model
of the causal LM's class. ``--profile N`` prints where each side's step spends its time
(``torch.profiler`` operator table and ``cProfile`` functions over ``N`` steps).

**What differs.** TRL's config defaults are changed where they would make the work differ:
``gradient_checkpointing=False`` (TRL's default turns it on, which also turns the KV cache off
during generation), ``bf16`` as ``--precision`` (TRL's default is on), ``optim="adamw_torch"``
with ``weight_decay=0`` (AdamW without decay takes Adam's steps), ``lr_scheduler_type="constant"``,
``temperature=1``. Left as they are, because they are how each library works: nlhf-zoo's
``torch.optim.Adam`` runs torch's fused kernel (its default for Hugging Face models where torch
has one; TRL's ``adamw_torch`` runs the per-tensor loop, ``optim="adamw_torch_fused"`` is TRL's
option for the fused kernel); both pad each batch's prompts to its longest prompt (left padding; the env's
``max_prompt_tokens`` is set here to the longest prompt of the set, ``--max-prompt-tokens`` to
change it), and nlhf-zoo encodes each prompt once for both answers of its pair, in generation and
in both scoring passes (the pair's answers run on the prompt's KV cache), where TRL runs the
``2 x batch`` sequences whole (nlhf-zoo's policy scoring pass takes generation's prompts' pass,
made with gradient, and runs the answers alone; generation writes new keys and values into room
reserved in the KV cache, Hugging Face ``generate`` concatenates them); TRL labels the pair by comparing the two rewards (chosen, rejected), nlhf-zoo draws a
preference ``o ~ Bernoulli(sigmoid(r_a - r_b))`` (the same loss form, ``(h - (o - 1/2) / beta)^2``);
TRL decodes answers and tokenizes ``prompt + answer`` in one padded batch, nlhf-zoo's judge scores
the same texts (``format=prompt + answer``) one tokenisation per text; TRL logs every 10 steps,
nlhf-zoo keeps one metrics row per step; each side samples from the same distributions with its
own sampler (Hugging Face ``generate``'s ``torch.multinomial``: one exponential draw per
vocabulary entry and token; nlhf-zoo's default for Hugging Face models, ``sampler: auto``, the
inverse CDF: one uniform per answer and token; ``--ours-extra '{"sampler": "multinomial"}'``
gives nlhf-zoo the same sampler as TRL); with ``--precision bf16`` TRL's accelerate also wraps the
reward model's forward in autocast, nlhf-zoo's judge scores in fp32. Data-parallel, vLLM and
evaluation are off on both sides.

Results go to ``benchmarks/results/hf_vs_trl.json`` and ``.md`` (``--out``, ``--name``; written
after every row, so a cut run keeps what it measured): the machine (CPU model, cores, threads and
load average, or the GPU), the versions and the command; ``--readme`` also replaces the
``bench:trl`` block of a README. :func:`main` takes ``argv``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "SHAPES",
    "Census",
    "Parts",
    "Setup",
    "Shape",
    "base_weight_copies",
    "build_parts",
    "main",
    "make_ours",
    "make_trl",
    "measure_side",
    "parameter_count",
    "summarise",
    "time_pair",
]

RESULTS = Path(__file__).resolve().parent / "results"
#: the distribution names whose versions every result records
PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "trl", "nlhf-zoo")
PINNED_TRL = "1.16.0"


# ------------------------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class Shape:
    """A causal LM's shape: ``arch`` is ``"llama"`` (``LlamaConfig``) or ``"gpt2"``."""

    arch: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int | None = None
    inter: int | None = None


#: the policy shapes (parameter counts are printed with every result)
SHAPES: dict[str, Shape] = {
    "tiny": Shape("llama", 128, 32, 2, 2, 2, 64),  # tests and quick runs
    "12m": Shape("llama", 8000, 256, 8, 4, 4, 1024),  # 12.4M parameters
    "90m": Shape("llama", 16000, 768, 9, 12, 12, 2048),  # 88.3M
    "gpt2-small": Shape("gpt2", 50257, 768, 12, 12),  # 124M (GPT-2 small), for a GPU
    "llama-1b": Shape("llama", 32000, 2048, 22, 32, 4, 5632),  # 1.1B, for a GPU
}
#: the reward model: a small Llama with one output over the policy's vocabulary
REWARD_SHAPE = {"hidden": 64, "layers": 2, "heads": 4, "inter": 128}
LORA = {"rank": 16, "alpha": 32.0, "dropout": 0.0}
LORA_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "gpt2": ["c_attn"]}


@dataclass
class Setup:
    """One comparison's settings (the module docstring says what each side does with them)."""

    shape: str = "12m"
    lora: bool = False
    batch: int = 8
    new_tokens: int = 32
    prompt_words: tuple[int, int] = (8, 16)
    prompts: int = 64
    max_prompt_tokens: int | None = None
    lr: float = 1.0e-5
    beta: float = 0.1
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0
    ours_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """``"LoRA"`` or ``"full"``."""
        return "LoRA" if self.lora else "full"


@dataclass
class Parts:
    """What both sides are given: the causal LM, tokenizer, reward model and prompts."""

    model: Any
    tokenizer: Any
    reward_model: Any
    prompts: list[str]
    max_prompt_tokens: int

    @property
    def parameters(self) -> int:
        """The causal LM's parameter count."""
        return sum(p.numel() for p in self.model.parameters())


def word_tokenizer(size: int) -> Any:
    """A word-level tokenizer of ``size`` tokens: ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, ``w3``..."""
    import transformers
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, size)}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _causal_lm(shape: Shape) -> Any:
    import transformers

    ids = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None}
    if shape.arch == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=shape.vocab, n_embd=shape.hidden, n_layer=shape.layers,
            n_head=shape.heads, n_positions=512, **ids,
        )  # fmt: skip
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.inter, max_position_embeddings=512, tie_word_embeddings=False,
        **ids,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


def _reward_model(vocab: int) -> Any:
    import transformers

    r = REWARD_SHAPE
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=r["hidden"], num_hidden_layers=r["layers"],
        num_attention_heads=r["heads"], num_key_value_heads=r["heads"],
        intermediate_size=r["inter"], max_position_embeddings=512, num_labels=1,
        pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )  # fmt: skip
    return transformers.LlamaForSequenceClassification(cfg)


def make_prompts(vocab: int, n: int, words: tuple[int, int], seed: int) -> list[str]:
    """``n`` prompts of ``words[0]`` to ``words[1]`` random words of the tokenizer."""
    rng = np.random.default_rng(seed)
    lo, hi = words
    return [
        " ".join(f"w{int(t)}" for t in rng.integers(3, vocab, int(rng.integers(lo, hi + 1))))
        for _ in range(n)
    ]


def build_parts(setup: Setup) -> Parts:
    """The parts of ``setup`` (seeded: the same weights and prompts in every process of a run),
    built on its device (a 1.1B model initialises in seconds on a GPU), in eval mode."""
    shape = SHAPES[setup.shape]
    tok = word_tokenizer(shape.vocab)
    device = torch.device(setup.device)
    gpus = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus), device:
        torch.manual_seed(setup.seed)
        model = _causal_lm(shape)
        rm = _reward_model(shape.vocab)
    prompts = make_prompts(shape.vocab, setup.prompts, setup.prompt_words, setup.seed)
    longest = max(len(tok(p)["input_ids"]) for p in prompts)
    width = setup.max_prompt_tokens or longest
    if width < longest:
        raise SystemExit(
            f"hf_vs_trl: error: --max-prompt-tokens {width} is below the longest prompt ({longest})"
        )
    return Parts(model.eval(), tok, rm.eval(), prompts, width)


# ------------------------------------------------------------------------------------- the sides


def _concat(prompt: str, answer: str) -> str:
    """The reward model's text: ``prompt + answer``, as TRL builds it."""
    return prompt + answer


def make_ours(parts: Parts, setup: Setup) -> Any:
    """nlhf-zoo's ``online_ipo`` agent on an ``nlhf/HFTokenDuel-v0`` env of ``parts`` (public API
    only: :class:`HFTokenDuelEnv`, :class:`RewardModelJudge`, ``agents.make``)."""
    import agents
    from nlhf_envs.text.hf_env import HFTokenDuelEnv
    from nlhf_envs.text.hf_judges import RewardModelJudge

    judge = RewardModelJudge(parts.reward_model, parts.tokenizer, format=_concat)
    env = HFTokenDuelEnv(
        parts.model, parts.tokenizer, judge, parts.prompts, beta=setup.beta,
        max_prompt_tokens=parts.max_prompt_tokens, max_new_tokens=setup.new_tokens,
        chat_template=False,
    )  # fmt: skip
    config: dict[str, Any] = {
        "batch_size": setup.batch,
        "lr": setup.lr,
        "optimizer": "adam",
        "beta": setup.beta,
        "grad_clip": 1.0,
        "eval_every": 0,
        "nash_eval": "off",
        "device": setup.device,
        "precision": setup.precision,
    }
    if setup.lora:
        targets = LORA_TARGETS[SHAPES[setup.shape].arch]
        config["lora"] = {**LORA, "target_modules": targets}
    config.update(setup.ours_extra)
    return agents.make("online_ipo", env, seed=setup.seed, **config)


def make_trl(
    parts: Parts, setup: Setup, max_steps: int, callbacks: list[Any], output_dir: str
) -> Any:
    """TRL's ``OnlineDPOTrainer`` with the IPO loss on ``parts`` (trains ``parts.model`` in place,
    as TRL does; see the module docstring for the settings)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    args = OnlineDPOConfig(
        output_dir=output_dir, per_device_train_batch_size=setup.batch,
        max_new_tokens=setup.new_tokens, temperature=1.0, top_k=0, top_p=1.0,
        beta=[setup.beta], loss_type="ipo", learning_rate=setup.lr, optim="adamw_torch",
        weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        gradient_checkpointing=False, bf16=setup.precision == "bf16", fp16=False,
        use_cpu=setup.device == "cpu", max_steps=max_steps, save_strategy="no",
        report_to="none", disable_tqdm=True, seed=setup.seed, dataloader_num_workers=0,
        use_vllm=False,
    )  # fmt: skip
    peft_config = None
    if setup.lora:
        from peft import LoraConfig

        arch = SHAPES[setup.shape].arch
        peft_config = LoraConfig(
            r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
            target_modules=LORA_TARGETS[arch], fan_in_fan_out=arch == "gpt2", bias="none",
            task_type="CAUSAL_LM",
        )  # fmt: skip
    trainer = OnlineDPOTrainer(
        model=parts.model,
        reward_funcs=parts.reward_model,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": list(parts.prompts)}),
        processing_class=parts.tokenizer,
        reward_processing_classes=parts.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # no log lines on stdout (the work is the same)
    return trainer


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _trainer_callback() -> type:
    """A ``TrainerCallback`` subclass (imported only when TRL's side runs)."""
    from transformers import TrainerCallback

    class _StepHook(TrainerCallback):
        """Calls ``hook()`` at the end of every TRL step."""

        def __init__(self, hook: Callable[[], None]) -> None:
            self.hook = hook

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.hook()

    return _StepHook


def time_pair(
    parts: Parts, setup: Setup, rounds: int, warmup: int, ours_only: bool = False
) -> dict[str, Any]:
    """Seconds per step of both sides, interleaved in this process (module docstring, "How").

    Returns ``{"ours_s", "trl_s", "ratios", "ours_cpu_s", "trl_cpu_s", "cpu_ratios"}``: wall
    seconds of each side's ``rounds`` steps after ``warmup``, their per-round ratios
    (nlhf-zoo / TRL), and the same in CPU seconds of this process (``time.process_time``: on a
    shared machine it leaves out the time spent waiting for a core). Without TRL (``ours_only``)
    nlhf-zoo's steps alone.
    """
    agent = make_ours(parts, setup)
    ours: list[tuple[float, float]] = []

    def ours_step() -> None:
        _sync(setup.device)
        t, c = time.perf_counter(), time.process_time()
        agent.learn(num_iterations=1)
        _sync(setup.device)
        ours.append((time.perf_counter() - t, time.process_time() - c))

    trl: list[tuple[float, float]] = []
    if ours_only:
        for _ in range(warmup + rounds):
            ours_step()
    else:
        mark = [0.0, 0.0]

        def between_trl_steps() -> None:
            _sync(setup.device)
            trl.append((time.perf_counter() - mark[0], time.process_time() - mark[1]))
            ours_step()
            mark[:] = [time.perf_counter(), time.process_time()]

        theirs = Parts(
            copy.deepcopy(parts.model), copy.deepcopy(parts.tokenizer),
            copy.deepcopy(parts.reward_model), list(parts.prompts), parts.max_prompt_tokens,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_trl(
                theirs, setup, warmup + rounds, [_trainer_callback()(between_trl_steps)], tmp
            )
            _sync(setup.device)
            mark[:] = [time.perf_counter(), time.process_time()]
            trainer.train()
    ours, trl = ours[warmup:], trl[warmup:]
    return {
        "ours_s": [w for w, _ in ours],
        "trl_s": [w for w, _ in trl],
        "ratios": [o[0] / t[0] for o, t in zip(ours, trl, strict=True)] if trl else [],
        "ours_cpu_s": [c for _, c in ours],
        "trl_cpu_s": [c for _, c in trl],
        "cpu_ratios": [o[1] / t[1] for o, t in zip(ours, trl, strict=True)] if trl else [],
    }


# ------------------------------------------------------------------------------------- the census


class Census:
    """Records the forward calls of a causal LM's class and of the reward model's base model.

    :meth:`install` wraps ``lm_cls.forward`` and ``reward_base_cls.forward`` at the class level (so
    every copy of a model, and every wrapper that calls it later, is seen); it must run before the
    sides are built (a trainer may keep a bound ``forward``). Only calls made while :attr:`on`
    is true are recorded; the reward model's calls are told apart by a ``_bench_role`` attribute
    on its base model (:meth:`tag_reward_model`). Each event is ``(kind, grad, rows, width,
    cached)``: ``kind`` ``"lm"`` or ``"reward"``, whether autograd records, the batch and sequence
    sizes of the call's input ids, and how many positions the cache passed to it holds. ``grad`` is
    true when autograd is on and the model has a trainable weight (a frozen reference called with
    autograd on builds no graph: it counts as a forward without gradient).
    :meth:`mark` ends a step.
    """

    def __init__(self, lm_cls: type, reward_base_cls: type) -> None:
        self.classes = {"lm": lm_cls, "reward": reward_base_cls}
        self.events: list[tuple[str, bool, int, int, int] | None] = []
        self.on = False
        self._originals: dict[type, Callable[..., Any]] = {}

    @staticmethod
    def tag_reward_model(reward_model: Any) -> None:
        """Mark ``reward_model``'s base model (its copies keep the mark)."""
        reward_model.base_model._bench_role = "reward"

    def _wrap(self, kind: str, cls: type) -> None:
        original = cls.forward
        census = self

        @functools.wraps(original)
        def forward(module: Any, *args: Any, **kwargs: Any) -> Any:
            if census.on and (kind == "lm" or getattr(module, "_bench_role", None) == kind):
                census.record(kind, module, args, kwargs)
            return original(module, *args, **kwargs)

        self._originals[cls] = original
        cls.forward = forward

    def record(self, kind: str, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Append one event (see the class docstring)."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cached = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
        self.events.append((kind, grad, int(ids.shape[0]), int(ids.shape[1]), cached))

    def install(self) -> Census:
        """Wrap the classes' ``forward`` (undone by :meth:`remove`); returns ``self``."""
        for kind, cls in self.classes.items():
            if cls not in self._originals:
                self._wrap(kind, cls)
        return self

    def remove(self) -> None:
        """Restore the classes' own ``forward``."""
        for cls, original in self._originals.items():
            cls.forward = original
        self._originals.clear()

    def mark(self) -> None:
        """End the current step."""
        self.events.append(None)

    def steps(self) -> list[list[tuple[str, bool, int, int, int]]]:
        """The recorded events, one list per step ended by :meth:`mark`."""
        out: list[list[tuple[str, bool, int, int, int]]] = [[]]
        for e in self.events:
            if e is None:
                out.append([])
            else:
                out[-1].append(e)
        return out[:-1]

    @contextlib.contextmanager
    def recording(self) -> Iterator[Census]:
        """Record while inside (the classes stay wrapped)."""
        self.on = True
        try:
            yield self
        finally:
            self.on = False


def summarise(events: list[tuple[str, bool, int, int, int]]) -> dict[str, Any]:
    """One step's work from its :class:`Census` events.

    A generate call is a causal-LM forward without cache (the prompts' pass, over each distinct
    prompt once when both seats share it) followed by one-token forwards with a cache (one per
    further token); its ``[rows, tokens]`` counts every sampled position of the cached steps' rows
    (an answer that ended early keeps its row until all end). The other causal-LM forwards are
    scoring passes, ``[rows, width]`` of new positions: with gradient (the policy) or without (the
    reference); a generate call's prompts' pass made with gradient (nlhf-zoo's Online IPO: the
    policy scoring pass takes it and runs the answers alone) is listed as a policy forward too; a
    pass over the answers on the cache of their prompts' pass (each prompt encoded
    once for both answers of its pair) is listed after that prompts' pass. Reward-model calls are
    ``[rows, width]``.
    """
    lm = [e for e in events if e[0] == "lm"]
    generate: list[list[int]] = []
    policy: list[list[int]] = []
    reference: list[list[int]] = []
    for i, (_, grad, rows, width, cached) in enumerate(lm):
        if cached > 0 and width == 1 and generate:
            generate[-1][0] = rows  # the sampled rows (the prompts' pass may have fewer)
            generate[-1][1] += 1
        elif i + 1 < len(lm) and lm[i + 1][4] > 0 and lm[i + 1][3] == 1:
            generate.append([rows, 1])
            if grad:  # the prompts' pass of generation made for the policy's scoring pass too
                policy.append([rows, width])
        elif grad:
            policy.append([rows, width])
        else:
            reference.append([rows, width])
    reward = [[rows, width] for kind, _, rows, width, _ in events if kind == "reward"]
    return {
        "generate": generate,
        "generated_tokens": sum(r * t for r, t in generate),
        "policy_forwards": policy,
        "reference_forwards": reference,
        "reward_calls": reward,
    }


def base_weight_copies(lm_cls: type, shape: tuple[int, ...] | None = None) -> int:
    """Distinct storages of the input embeddings of every live ``lm_cls`` model in this process
    (of embedding ``shape`` when given): how many copies of the base weights are held (a LoRA model
    sharing its frozen base counts once)."""
    gc.collect()
    ptrs = set()
    for obj in gc.get_objects():
        if issubclass(type(obj), lm_cls):  # not isinstance: no attribute of obj is read
            weight = obj.get_input_embeddings().weight
            if shape is None or tuple(weight.shape) == tuple(shape):
                ptrs.add(weight.untyped_storage().data_ptr())
    return len(ptrs)


# ------------------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    """Reset Linux's peak resident size (``VmHWM``) to the current one; False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _import_libraries() -> None:
    """The imports of every measuring process (TRL's too when installed: the same baseline)."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import transformers

    import agents  # noqa: F401
    import nlhf_envs.text.hf_env  # noqa: F401

    transformers.logging.set_verbosity_error()
    if importlib.util.find_spec("trl") is not None:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        import trl.experimental.online_dpo  # noqa: F401


def measure_side(side: str, setup: Setup, steps: int, parts: Parts | None = None) -> dict[str, Any]:
    """Run ``steps`` steps of one side (``"ours"`` or ``"trl"``) in this process and measure them.

    Returns ``{"work": summarise(last step), "steps_work": [summarise(step) ...], "copies":
    base_weight_copies, "peak_kib", "baseline_kib", "cuda_peak_mib", "cuda_baseline_mib",
    "step_s": [...], "queries": ...}``. Memory figures are meaningful in a fresh process (what
    :func:`main` uses); the work and the copies in any process where no other model of the same
    class is alive.
    """
    _import_libraries()
    parts = parts or build_parts(setup)
    lm_cls, embedding = type(parts.model), tuple(parts.model.get_input_embeddings().weight.shape)
    census = Census(lm_cls, type(parts.reward_model.base_model)).install()
    Census.tag_reward_model(parts.reward_model)
    cuda = setup.device.startswith("cuda")
    gc.collect()
    baseline = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cuda_base = torch.cuda.memory_allocated() / 2**20 if cuda else None
    step_s: list[float] = []
    out: dict[str, Any] = {}
    try:
        if side == "ours":
            agent = make_ours(parts, setup)
            with census.recording():
                for _ in range(steps):
                    _sync(setup.device)
                    t = time.perf_counter()
                    agent.learn(num_iterations=1)
                    _sync(setup.device)
                    step_s.append(time.perf_counter() - t)
                    census.mark()
            out["queries"] = agent.queries_used
            out["answer_length"] = agent.history[-1].get("policy/answer_length")
        elif side == "trl":
            mark = [0.0]

            def end_step() -> None:
                _sync(setup.device)
                step_s.append(time.perf_counter() - mark[0])
                census.mark()
                mark[0] = time.perf_counter()

            with tempfile.TemporaryDirectory() as tmp:
                trainer = make_trl(parts, setup, steps, [_trainer_callback()(end_step)], tmp)
                with census.recording():
                    mark[0] = time.perf_counter()
                    trainer.train()
                out["queries"] = trainer.state.global_step * setup.batch
        else:
            raise ValueError(f"side must be 'ours' or 'trl'; got {side!r}")
        out["copies"] = base_weight_copies(lm_cls, embedding)
    finally:
        census.remove()
    per_step = [summarise(s) for s in census.steps()]
    out.update(
        work=per_step[-1],
        steps_work=per_step,
        step_s=step_s,
        peak_kib=_status_kib("VmHWM") if reset else None,
        baseline_kib=baseline,
        cuda_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        cuda_baseline_mib=cuda_base,
    )
    return out


def _child(spec: dict[str, Any]) -> int:
    """The entry of a measuring process: one side, printed as ``RESULT <json>``."""
    torch.set_num_threads(spec.pop("threads"))
    warnings.simplefilter("ignore")
    side, steps = spec.pop("side"), spec.pop("steps")
    spec["prompt_words"] = tuple(spec["prompt_words"])
    res = measure_side(side, Setup(**spec), steps)
    print("RESULT " + json.dumps(res))
    return 0


def memory_in_subprocesses(
    sides: tuple[str, ...], setup: Setup, steps: int, threads: int
) -> dict[str, dict[str, Any]]:
    """:func:`measure_side` of each side in a fresh Python process of its own (the same
    interpreter), all started at once (memory does not depend on the load)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    procs = {}
    for side in sides:
        spec = {**asdict(setup), "side": side, "steps": steps, "threads": threads}
        procs[side] = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
    out = {}
    for side, proc in procs.items():
        stdout, stderr = proc.communicate()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"the {side} process failed ({proc.returncode}):\n{stderr[-3000:]}")
        out[side] = json.loads(lines[-1][len("RESULT ") :])
    return out


# ------------------------------------------------------------------------------------- profile


def profile_side(side: str, parts: Parts, setup: Setup, steps: int) -> str:
    """Where ``steps`` steps of one side spend their time: the ``torch.profiler`` operators (self
    CPU time) and the ``cProfile`` functions (cumulative), after one warm-up step."""
    import cProfile

    from torch.profiler import ProfilerActivity, profile

    if side == "ours":
        agent = make_ours(parts, setup)
        agent.learn(num_iterations=1)

        def run() -> None:
            agent.learn(num_iterations=steps)

    else:
        prof, cprof = profile(activities=[ProfilerActivity.CPU]), cProfile.Profile()
        started = [0.0]

        def hook() -> None:  # the end of the warm-up step starts the profilers
            if not started[0]:
                prof.__enter__()
                cprof.enable()
                started[0] = time.perf_counter()

        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_trl(parts, setup, steps + 1, [_trainer_callback()(hook)], tmp)
            trainer.train()
            cprof.disable()
            prof.__exit__(None, None, None)
            wall = time.perf_counter() - started[0]
        return _profile_text(side, prof, cprof, steps, wall)

    cprof = cProfile.Profile()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        cprof.enable()
        run()
        cprof.disable()
        wall = time.perf_counter() - t
    return _profile_text(side, prof, cprof, steps, wall)


def _profile_text(side: str, prof: Any, cprof: Any, steps: int, wall: float) -> str:
    import io
    import pstats

    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18)
    buf = io.StringIO()
    pstats.Stats(cprof, stream=buf).sort_stats("cumulative").print_stats(30)
    return (
        f"==== {side}: {steps} steps, {wall:.2f} s under the profilers\n{table}\n"
        f"-- cProfile, cumulative --\n{buf.getvalue()}"
    )


# ------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """The CPU model, logical cores and torch threads (and the GPU, when there is one)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            cpu = found.group(1).strip()
    out: dict[str, Any] = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError, AttributeError):
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def versions() -> dict[str, str | None]:
    """The installed versions of :data:`PACKAGES` (``None`` when absent)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _work_text(work: dict[str, Any]) -> dict[str, str]:
    def calls(items: list[list[int]], unit: str) -> str:
        if not items:
            return "none"
        groups: dict[tuple[int, ...], int] = {}
        for item in items:
            groups[tuple(item)] = groups.get(tuple(item), 0) + 1
        return ", ".join(f"{n} x [{a} x {b} {unit}]" for (a, b), n in groups.items())

    return {
        "generate": calls(work["generate"], "tokens"),
        "policy": calls(work["policy_forwards"], "positions"),
        "reference": calls(work["reference_forwards"], "positions"),
        "reward": calls(work["reward_calls"], "tokens"),
    }


def parameter_count(n: int) -> str:
    """``n`` parameters in short: ``46k``, ``12.5M``, ``124M``, ``1.1B``."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e8:
        return f"{n / 1e6:.0f}M"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}k"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.0f} MiB"


def median_interval(values: list[float], level: float = 0.9) -> tuple[float, float, float]:
    """A distribution-free interval for the median of ``values`` (independent draws): the order
    statistics ``x_(k)`` and ``x_(n+1-k)`` with the largest ``k`` whose coverage
    ``1 - 2 P(Bin(n, 1/2) < k)`` is at least ``level``; ``(lo, hi, coverage)``. Below ``level``
    even for ``k = 1`` (fewer than 5 values at 90%): the range, with its coverage."""
    xs, n = sorted(values), len(values)
    if not n:
        raise ValueError("median_interval needs at least one value")

    def coverage(k: int) -> float:  # P(x_(k) <= median <= x_(n+1-k))
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def _coverage_text(rounds: int) -> str:
    """Which order statistics :func:`median_interval` takes for ``rounds`` values, and their
    coverage."""
    if rounds < 1:
        return "no rounds"
    lo, hi, cov = median_interval([float(i) for i in range(1, rounds + 1)])
    return f"the values ranked {int(lo)} and {int(hi)} of {rounds}, coverage {cov:.1%}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def render(result: dict[str, Any]) -> str:
    """The markdown report of a :func:`main` result."""
    m = result["machine"]
    where = m.get("gpu") if result["settings"]["device"].startswith("cuda") else None
    device = f"GPU {where}" if where else f"CPU {m['cpu']}"
    v = result["versions"]
    load = ""
    if m.get("load_average") and m.get("load_average_end"):
        load = (
            f", load average {m['load_average'][0]:.1f} at the start and "
            f"{m['load_average_end'][0]:.1f} at the end (other work on the machine)"
        )
    lines = [
        '# nlhf-zoo `online_ipo` vs TRL `OnlineDPOTrainer(loss_type="ipo")`',
        "",
        f"Machine: {device}, {m['logical_cores']} logical cores, torch threads "
        f"{m['torch_threads']}, Python {m['python']}{load}. Versions: "
        + ", ".join(f"{k} {v[k]}" for k in PACKAGES if v.get(k))
        + f". Command: `{result['command']}` ({result['seconds']:.0f} s).",
        "",
        "Same random model, tokenizer, prompts, reward model, batch "
        f"{result['settings']['batch']} prompts ({2 * result['settings']['batch']} answers), "
        f"{result['settings']['new_tokens']} new tokens, temperature 1, "
        f"{result['settings']['precision']}; see `benchmarks/hf_vs_trl.py` for what differs. "
        "Time: median of per-round ratios, both sides interleaved step by step in one process "
        f"({result['settings']['rounds']} rounds after {result['settings']['warmup']} dropped); "
        "s/step are the medians of wall seconds; the CPU-time ratio uses the process's CPU "
        "seconds instead (not counting waits for a core); in brackets, the order statistics "
        "that cover its median with probability at least 90% (rounds taken as independent draws: "
        f"{_coverage_text(result['settings']['rounds'])}). "
        "Memory: each side in its own process (same imports and parts), peak resident size over "
        f"construction and {result['settings']['memory_steps']} steps; 'own' is that peak minus "
        "the resident size before the side was built.",
        "",
        "| model | fine-tuning | nlhf-zoo s/step | TRL s/step | time ratio | CPU-time ratio | "
        "nlhf-zoo peak | TRL peak | peak ratio | own-memory ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        t, mem = row["time"], row.get("memory", {})
        ours_m, trl_m = mem.get("ours", {}), mem.get("trl", {})
        ours_s = statistics.median(t["ours_s"])
        trl_s = statistics.median(t["trl_s"]) if t["trl_s"] else None
        ratio = f"{statistics.median(t['ratios']):.2f}x" if t["ratios"] else "n/a"
        cpu = "n/a"
        if t["cpu_ratios"]:
            lo, hi, _ = median_interval(t["cpu_ratios"])
            cpu = f"{statistics.median(t['cpu_ratios']):.2f}x ({lo:.2f}-{hi:.2f})"
        if row["device"].startswith("cuda"):
            peaks = [m.get("cuda_peak_mib") for m in (ours_m, trl_m)]
            own = [
                None
                if m.get("cuda_peak_mib") is None
                else m["cuda_peak_mib"] - m["cuda_baseline_mib"]
                for m in (ours_m, trl_m)
            ]
            shown = [("n/a" if p is None else f"{p:,.0f} MiB") for p in peaks]
        else:
            peaks = [m.get("peak_kib") for m in (ours_m, trl_m)]
            own = [
                None if m.get("peak_kib") is None else m["peak_kib"] - m["baseline_kib"]
                for m in (ours_m, trl_m)
            ]
            shown = [_mib(p) for p in peaks]
        lines.append(
            f"| {row['shape']} ({parameter_count(row['parameters'])}) | {row['mode']} | {ours_s:.3f} | "
            f"{'n/a' if trl_s is None else f'{trl_s:.3f}'} | {ratio} | {cpu} | {shown[0]} | "
            f"{shown[1]} | "
            f"{_ratio(peaks[0], peaks[1])} | {_ratio(own[0], own[1])} |"
        )
    if not any(row.get("memory") for row in result["rows"]):
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "Work per step (last measured step; `[rows x length]`; a generate call's length is its "
        "sampled tokens, a forward's its positions, `base copies` the copies of the causal LM's "
        "weights held):",
        "",
        "| model | fine-tuning | side | generate calls | policy forwards (gradient) | "
        "reference forwards | reward-model calls | generated tokens | base copies |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for row in result["rows"]:
        for side, label in (("ours", "nlhf-zoo"), ("trl", "TRL")):
            m = row.get("memory", {}).get(side)
            if not m:
                continue
            w = _work_text(m["work"])
            lines.append(
                f"| {row['shape']} | {row['mode']} | {label} | {w['generate']} | {w['policy']} | "
                f"{w['reference']} | {w['reward']} | {m['work']['generated_tokens']} | "
                f"{m['copies']} |"
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- main


def _trl_problem() -> str | None:
    """Why TRL's side cannot run here (``None`` when it can)."""
    try:
        spec = importlib.util.find_spec("trl")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return (
            "TRL is not installed in this Python: it is a dependency of this benchmark only "
            f"(pip install trl=={PINNED_TRL} in a separate virtual environment, see "
            "benchmarks/README.md), or pass --ours-only"
        )
    try:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        importlib.import_module("trl.experimental.online_dpo")
    except ImportError as err:
        return (
            f"this TRL has no trl.experimental.online_dpo ({err}); the benchmark pins {PINNED_TRL}"
        )
    return None


def comparison(
    setup: Setup,
    rounds: int,
    warmup: int,
    memory_steps: int,
    threads: int,
    ours_only: bool = False,
    memory: bool = True,
) -> dict[str, Any]:
    """One row of the result: time (in this process) and memory and work (one process per
    side) of ``setup``."""
    parts = build_parts(setup)
    row: dict[str, Any] = {
        "shape": setup.shape,
        "mode": setup.mode,
        "device": setup.device,
        "parameters": parts.parameters,
        "max_prompt_tokens": parts.max_prompt_tokens,
        "time": time_pair(parts, setup, rounds, warmup, ours_only),
    }
    del parts
    gc.collect()
    if memory:
        sides = ("ours",) if ours_only else ("ours", "trl")
        row["memory"] = memory_in_subprocesses(sides, setup, memory_steps, threads)
    return row


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the results (see the module docstring); returns 0, or 2 when
    TRL is needed and missing."""
    p = argparse.ArgumentParser(prog="hf_vs_trl", description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="12m,90m", help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--modes", default="full,lora", help="comma list of full, lora")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per comparison")
    p.add_argument("--warmup", type=int, default=1, help="rounds dropped first")
    p.add_argument("--memory-steps", type=int, default=2, help="steps of each memory process")
    p.add_argument("--no-memory", action="store_true", help="time only (no side processes)")
    p.add_argument("--batch", type=int, default=8, help="prompts per step (2 x answers)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-words", default="8,16", help="shortest,longest prompt in words")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="default: longest prompt")
    p.add_argument("--lr", type=float, default=1.0e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ours-only", action="store_true", help="nlhf-zoo's side alone (no TRL)")
    p.add_argument("--ours-extra", default="{}", help="JSON of extra online_ipo config fields")
    p.add_argument("--profile", type=int, default=0, help="profile N steps of each side and stop")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    p.add_argument("--name", default="hf_vs_trl", help="stem of the results files")
    p.add_argument("--readme", type=Path, default=None, help="also replace its bench:trl block")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        return _child(json.loads(args.child))
    if not args.ours_only:
        problem = _trl_problem()
        if problem is not None:
            print(f"hf_vs_trl: error: {problem}", file=sys.stderr)
            return 2
    shapes = [s for s in args.shapes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    bad = [s for s in shapes if s not in SHAPES] + [m for m in modes if m not in ("full", "lora")]
    if bad or args.new_tokens < 2 or args.batch < 1 or args.rounds < 1:
        p.error(f"bad --shapes/--modes {bad}, or --new-tokens < 2, --batch or --rounds < 1")
    lo, hi = (int(x) for x in args.prompt_words.split(","))
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    _import_libraries()
    extra = json.loads(args.ours_extra)

    def setup(shape: str, mode: str) -> Setup:
        return Setup(
            shape=shape, lora=mode == "lora", batch=args.batch, new_tokens=args.new_tokens,
            prompt_words=(lo, hi), max_prompt_tokens=args.max_prompt_tokens, lr=args.lr,
            beta=args.beta, device=args.device, precision=args.precision, seed=args.seed,
            ours_extra=extra,
        )  # fmt: skip

    if args.profile:
        for shape in shapes:
            for mode in modes:
                for side in ("ours",) if args.ours_only else ("ours", "trl"):
                    parts = build_parts(setup(shape, mode))
                    print(f"\n######## {shape} {mode}")
                    print(profile_side(side, parts, setup(shape, mode), args.profile))
        return 0

    start, where = time.perf_counter(), machine()
    shown = sys.argv[1:] if argv is None else argv
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/hf_vs_trl.py", *shown]),
        "seconds": 0.0,
        "machine": where,
        "versions": versions(),
        "settings": {
            "batch": args.batch,
            "new_tokens": args.new_tokens,
            "prompt_words": [lo, hi],
            "lr": args.lr,
            "beta": args.beta,
            "device": args.device,
            "precision": args.precision,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "memory_steps": args.memory_steps,
            "lora": {**LORA, "targets": LORA_TARGETS},
            "reward_model": REWARD_SHAPE,
            "ours_extra": extra,
            "ours_only": args.ours_only,
        },
        "rows": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for shape in shapes:
        for mode in modes:
            row = comparison(
                setup(shape, mode), args.rounds, args.warmup, args.memory_steps, args.threads,
                args.ours_only, not args.no_memory,
            )  # fmt: skip
            result["rows"].append(row)
            t = row["time"]
            ratios = ""
            if t["ratios"]:
                ratios = (
                    f", ratio {statistics.median(t['ratios']):.2f}x "
                    f"(CPU time {statistics.median(t['cpu_ratios']):.2f}x)"
                )
            print(f"{shape} {mode}: nlhf-zoo {statistics.median(t['ours_s']):.3f} s/step{ratios}")
            with contextlib.suppress(OSError, AttributeError):
                where["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            result["seconds"] = time.perf_counter() - start
            text = render(result)  # written after every row: a cut run keeps what it measured
            (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
            (args.out / f"{args.name}.md").write_text(text)
    print(text)
    if args.readme:
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts
        from env_throughput import replace_block  # one README-block writer for every benchmark

        replace_block(args.readme, "trl", "\n".join(text.splitlines()[2:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
