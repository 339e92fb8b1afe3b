"""Shared plumbing of the token-level agents: config, learning loop, duels, metrics, acting.

A token-level agent trains a :class:`~nlhf_envs.text.models.TinyCausalLM` ``pi_theta``, initialised
from the reference policy ``pi_ref``, on the text duel ``nlhf/TokenDuel-v0``. It implements the same
API as the tabular agents (:mod:`agents.base`):

* ``learn(num_queries=None, num_iterations=None, callback=None) -> self``;
* ``queries_used`` (one preference query per judged pair of answers), ``num_iterations``,
  ``history`` (one metrics dict per logged iteration);
* ``act(observation, deterministic=False)`` for the PettingZoo env's observation, ``predict``;
* ``save(path)`` / :func:`agents.load` (see :func:`agents.text.checkpoint.save_text_agent`).

An algorithm writes only ``_iteration()`` with the helpers :meth:`duel` (sample and judge a batch
of pairs), :meth:`pair_log_probs` (both answers of a pair scored in one forward pass) and
:meth:`optimise_duel` (one optimiser step on the algorithm's loss of the batch, computed in
``gradient_accumulation_steps`` micro-batches).

The checkpoint plumbing is in :mod:`agents.text.checkpoint` and the evaluation (win rates against
``pi_ref``, Nash metrics) in :mod:`agents.text.evaluation`; :class:`TextAgent`'s methods call them,
and their names (:func:`save_text_agent`, :func:`load_text_agent`, :func:`checkpoint_payload`,
``ENV_ID``) are importable from this module too.

Metrics (``history`` and TensorBoard, step = ``queries_used``):

================================= ======================================================================
name                              meaning
================================= ======================================================================
``game/queries``                  training preference queries used so far (evaluation is not counted)
``time/iterations``               iterations done so far
``eval/win_rate_ref_judge``       mean learned-judge ``P(y > y_ref | x)``, ``y ~ pi_theta``,
                                  ``y_ref ~ pi_ref``, on ``eval_prompts`` held-out prompts (every
                                  ``eval_every`` iterations)
``eval/win_rate_ref_true``        the same under the ground truth ``P*``
``eval/kl_ref``                   sequence ``KL(pi_theta || pi_ref)`` on the held-out prompts (nats)
``eval/exploitability``           ``max_pi' P_beta(pi' > pi_theta) - 1/2`` in the regularised game of the
                                  paying judge on held-out prompts: exact on enumerable worlds
                                  (:func:`nlhf_envs.text.exact.exact_game`), estimated elsewhere
                                  (:func:`nlhf_envs.text.estimate.estimate_nash_metrics`, on
                                  Hugging Face games :func:`nlhf_envs.text.hf_estimate.
                                  estimate_hf_nash_metrics`; also ``eval/exploitability_low``/
                                  ``_high``, a 95% interval over prompts)
``eval/kl_to_nash``               ``E_x KL(pi*_beta || pi_theta)`` (exact or estimated, as above)
``eval/exploitability_trained``   the same two on the prompts the agent trains on (the env's
``eval/kl_to_nash_trained``       ``prompt_split``, ``"train"`` by default): optimisation beside the
                                  held-out prompts' generalisation (``docs/nash-metrics.md``, "One
                                  protocol")
``policy/kl_ref``                 sequence ``KL(pi_theta || pi_ref)`` on the iteration's training
                                  answers: Monte-Carlo mean of ``sum_n log(pi_theta/pi_ref)(y_n)``
``policy/entropy``                sequence entropy of ``pi_theta`` (nats): mean of ``-sum_n log
                                  pi_theta(y_n)`` over the training answers
``policy/answer_length``          mean answer length in tokens (``<eos>`` included)
``loss/...``                      the algorithm's loss and each of its terms (see
                                  :mod:`agents.text.losses`), averaged over the iteration's steps
``time/queries_per_s``            training queries per second of the iteration (evaluation excluded)
``time/tokens_per_s``             generated tokens (all answers, opponents included) per second
================================= ======================================================================
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from agents.api import AgentBase
from agents.config import ConfigError, build_config
from agents.text import evaluation
from agents.text.backend import LoraSettings
from agents.text.checkpoint import (  # noqa: F401 (re-exported)
    ENV_ID,
    _rebuild_env,
    _state,
    _tensor_arrays,
    checkpoint_payload,
    load_text_agent,
    save_text_agent,
)
from agents.text.distributed import (
    DISTRIBUTED_STRATEGIES,
    DataParallel,
    concat_duels,
    prompt_seed,
    shard_seed,
)
from agents.text.losses import LossTerms
from nlhf_envs.progress import Progress
from nlhf_envs.text.engine import SAMPLERS, Generation, token_log_probs, trim_left_padding
from nlhf_envs.text.models import TinyCausalLM
from nlhf_envs.text.tokenizer import PAD

__all__ = [
    "TEXT_METRIC_NAMES",
    "TextAgentConfig",
    "TextAgent",
    "Duel",
    "save_text_agent",
    "load_text_agent",
]

#: Metric names every text agent records (agents add ``loss/...`` names).
TEXT_METRIC_NAMES: tuple[str, ...] = (
    "game/queries",
    "time/iterations",
    "eval/win_rate_ref_judge",
    "eval/win_rate_ref_true",
    "eval/kl_ref",
    "eval/exploitability",
    "eval/kl_to_nash",
    "eval/exploitability_trained",
    "eval/kl_to_nash_trained",
    "policy/kl_ref",
    "policy/entropy",
    "policy/answer_length",
    "time/queries_per_s",
    "time/tokens_per_s",
)


#: prompts per batch of :meth:`TextAgent.evaluate` (larger evaluations run in chunks of this size).
EVAL_CHUNK = 1024


@dataclass
class TextAgentConfig:
    """Fields shared by the token-level agents.

    Attributes:
        mode: what a preference query returns to the learner: ``"sampled"`` (default) the Bernoulli
            outcome ``o ~ Bernoulli(P(y > y'|x))``; ``"probability"`` the paying judge's probability
            ``P(y > y'|x)`` itself (lower variance; still one query per pair).
        batch_size: answer pairs (= preference queries) per gradient step.
        lr: the optimiser's learning rate (the initial one under a decay schedule).
        optimizer: ``"adam"`` (default) or ``"sgd"`` (plain stochastic gradient, no momentum). Adam
            normalises each coordinate's step, so a fresh Adam moves every parameter by about ``lr``
            whatever the gradient's size; SGD's step shrinks with the gradient, which vanishes at the
            solution of a prox half-step (Nash-MP's inner loop; ``equations.md`` §3). SGD learning
            rates are larger (the benchmarks tune them separately).
        sampler: how answers are drawn (:func:`nlhf_envs.text.engine.generate`): ``"auto"``
            (default: ``"inverse_cdf"`` for Hugging Face causal LMs, ``"multinomial"`` for the
            native tiny models, whose shipped results are seeded with it), ``"multinomial"``
            (``torch.multinomial``: one exponential draw per vocabulary entry and step) or
            ``"inverse_cdf"`` (one uniform per row and step and a cumulative sum: the same
            distribution, cheaper per step, other samples for a seed). With either, the two
            answers of a self-play pair (Online IPO's ``y, y' ~ pi_theta``, MNPO's members) and
            Nash-MD's pair (``pi_theta`` against its geometric mixture) are sampled in one batch
            of ``2 B`` (:meth:`~nlhf_envs.text.engine.DuelEngine.generate_pair` with
            ``joint=True``).
        lr_schedule: learning-rate schedule over training queries ``q``: ``"constant"`` (default),
            ``"inverse"`` (``lr / (1 + q / lr_decay_queries)``, the harmonic decay) or
            ``"inverse_sqrt"`` (``lr / sqrt(1 + q / lr_decay_queries)``). A decaying step lowers
            the noise floor of constant-step stochastic methods (``equations.md`` §3-4).
        lr_decay_queries: the schedule's time scale in queries.
        beta: KL regularisation ``beta`` towards ``pi_ref`` (``None``: the env's ``beta``, which
            belongs to the game).
        grad_clip: clip the gradient's global norm at this value (``None``: no clipping).
        max_new_tokens: the longest answer, ``<eos>`` included (``None``: the env's).
        payer: ``"judge"`` (default, the learned judge) or ``"ground_truth"`` (the annotator
            population ``P*``): who answers the training queries.
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        eval_every: evaluate win rates vs ``pi_ref`` every this many iterations (``0``: never).
        eval_prompts: held-out prompts per evaluation (one answer pair each; not counted as queries).
        log_every: record metrics every this many iterations (``0``: never).
        nash_eval: Nash metrics at each evaluation: ``"auto"`` (exact on enumerable worlds, estimated
            elsewhere), ``"exact"``, ``"estimate"`` or ``"off"`` (YAML's unquoted ``off`` and
            ``false`` mean ``"off"``; every evaluation, the end-of-run one too, respects it).
        nash_eval_prompts: held-out prompts of an estimate.
        nash_eval_samples: ``pi_ref`` samples per prompt of an estimate (``n``; twice as many fresh
            samples ``m`` for the exploitability). On ``nlhf/HFTokenDuel-v0`` under ``nash_eval:
            auto`` it is the largest ``n``: an estimate is held to the sampling cost of 8
            training batches (:func:`agents.text.evaluation.estimate_sizes`).
        lora: train a LoRA adapter instead of every weight (``nlhf/HFTokenDuel-v0`` only): a
            block ``{rank, alpha, dropout, target_modules, merge_for_sampling}``
            (:class:`~agents.text.backend.LoraSettings`;
            TRL's and peft's names ``r``, ``lora_alpha``, ``lora_dropout`` are accepted too), or a
            ``peft.LoraConfig``; ``None`` (default): full fine-tuning.
        shards: the global batch of a duel is drawn as ``shards`` equal parts, each from its own
            seeded generator (``None``: the number of data-parallel processes, 1 without them).
            Under ``N`` data-parallel processes (a ``torch.distributed`` process group, e.g.
            ``torchrun --nproc_per_node N``) each process draws ``shards / N`` parts, so a run on
            ``N`` processes equals one process with the same ``shards`` (see
            :mod:`agents.text.distributed`). ``batch_size`` must be a multiple of it.
        distributed: how ``N`` processes share ``pi_theta`` (only read under a process group):
            ``"ddp"`` (default; ``DistributedDataParallel``: every process holds the whole model
            and its optimiser; gradients are averaged in the backward pass) or ``"fsdp"``
            (``torch.distributed.fsdp.fully_shard``, FSDP2: the weights, gradients and optimiser
            state are sharded over the processes, per transformer block; full fine-tuning of
            Online IPO and Nash-MD on ``nlhf/HFTokenDuel-v0``; accelerate's
            ``distributed_type: FSDP``, TRL's ``fsdp: full_shard``). Both train the same policy
            as one process with the same ``shards`` (see :mod:`agents.text.distributed`).
        precision: ``"fp32"`` (default) or ``"bf16"``: the Hugging Face policy's forward passes
            run under ``torch.autocast`` in bfloat16 (weights, optimiser, log-probs and losses
            stay float32; ``nlhf/HFTokenDuel-v0`` only).
        init_from: the model ``pi_theta`` starts from, when it is not ``pi_ref`` (TRL's ``model``
            next to its ``ref_model``; ``nlhf/HFTokenDuel-v0`` only): a causal-LM folder (an SFT
            model, a previous run's full ``final_hf/``), fine-tuned fully or, with a ``lora``
            block, under a fresh adapter; or a LoRA adapter folder (a previous run's LoRA
            ``final_hf/``, with the same ``lora`` block) on the base model its
            ``adapter_config.json`` names. ``pi_ref`` stays the env's reference. The model must
            use the env's tokenizer (a tokenizer saved in the folder is compared with it). Its
            weights are stored once: a full model is trained in place; an adapter whose base is
            the env's reference shares the reference's weights.
        gradient_accumulation_steps: split every batch of ``batch_size`` answer pairs into this
            many micro-batches for the training passes (the policy's and the other models'
            log-probs, the loss and its backward pass), accumulating their gradients before one
            optimiser step: the same gradient (to float rounding; every loss is a mean over the
            batch) and the same logged statistics, with the activation memory of one
            micro-batch. Answers are still generated and judged for the whole batch at once, so
            the samples do not change. ``batch_size`` must be a multiple of it. TRL's
            ``per_device_train_batch_size x gradient_accumulation_steps`` is this ``batch_size``.
        gradient_checkpointing: recompute each transformer layer's activations in the backward
            pass instead of keeping them (``transformers``' activation checkpointing, for the
            training forward only): less memory, about one more forward's time, the same results.
            Generation keeps its KV cache (TRL's ``gradient_checkpointing`` turns it off).
            ``nlhf/HFTokenDuel-v0`` only.
        generation_backend: who samples the answers: ``"transformers"`` (default; the engine's own
            loop, :func:`nlhf_envs.text.engine.generate`) or ``"vllm"`` (a vLLM engine colocated in
            the training process, extra ``vllm``; ``nlhf/HFTokenDuel-v0`` only, not Nash-MD:
            :mod:`agents.text.vllm_backend`).
    """

    MODES: ClassVar[tuple[str, ...]] = ("sampled", "probability")
    LR_SCHEDULES: ClassVar[tuple[str, ...]] = ("constant", "inverse", "inverse_sqrt")
    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("adam", "sgd")
    SAMPLERS: ClassVar[tuple[str, ...]] = ("auto", *SAMPLERS)
    NASH_EVALS: ClassVar[tuple[str, ...]] = ("auto", "exact", "estimate", "off")
    #: YAML reads ``off`` (and ``false``) as a boolean: it means ``nash_eval: "off"`` (build_config)
    FALSE_MEANS: ClassVar[dict[str, str]] = {"nash_eval": "off"}

    mode: str = "sampled"
    batch_size: int = 64
    lr: float = 1.0e-4
    optimizer: str = "adam"
    sampler: str = "auto"
    lr_schedule: str = "constant"
    lr_decay_queries: int = 10000
    beta: float | None = None
    grad_clip: float | None = 1.0
    max_new_tokens: int | None = None
    payer: str = "judge"
    device: str = "cpu"
    eval_every: int = 10
    eval_prompts: int = 256
    log_every: int = 1
    nash_eval: str = "auto"
    nash_eval_prompts: int = 16
    nash_eval_samples: int = 32
    lora: LoraSettings | None = None
    shards: int | None = None
    distributed: str = "ddp"
    precision: str = "fp32"
    init_from: str | None = None
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    generation_backend: str = "transformers"

    def __post_init__(self) -> None:
        if self.lora is not None and not isinstance(self.lora, LoraSettings):
            # a peft.LoraConfig or a mapping given to the dataclass itself (build_config
            # converts them before)
            self.lora = build_config(TextAgentConfig, {"lora": self.lora}).lora
        if self.mode not in self.MODES:
            raise ConfigError(
                f"mode: {self.mode!r} is not a mode of the token-level agents; "
                f"expected one of {', '.join(map(repr, self.MODES))}"
            )
        if self.payer not in ("judge", "ground_truth"):
            raise ConfigError(f"payer: expected 'judge' or 'ground_truth'; got {self.payer!r}")
        if self.nash_eval not in self.NASH_EVALS:
            raise ConfigError(
                f"nash_eval: expected one of {', '.join(map(repr, self.NASH_EVALS))}; "
                f"got {self.nash_eval!r}"
            )
        if self.shards is not None and self.shards < 1:
            raise ConfigError(f"shards: must be an integer >= 1 or None; got {self.shards}")
        if self.shards is not None and self.batch_size % self.shards:
            raise ConfigError(
                f"batch_size: {self.batch_size} is not a multiple of shards: {self.shards}"
            )
        gas = self.gradient_accumulation_steps
        if gas < 1:
            raise ConfigError(f"gradient_accumulation_steps: must be an integer >= 1; got {gas}")
        if self.batch_size % gas:
            raise ConfigError(
                f"batch_size: {self.batch_size} is not a multiple of "
                f"gradient_accumulation_steps: {gas} (micro-batches of equal size)"
            )
        for key in ("batch_size", "eval_prompts", "nash_eval_prompts", "nash_eval_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be an integer >= 1; got {getattr(self, key)}")
        for key in ("eval_every", "log_every"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0; got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0; got {self.lr}")
        if self.optimizer not in self.OPTIMIZERS:
            raise ConfigError(
                f"optimizer: expected one of {', '.join(map(repr, self.OPTIMIZERS))}; "
                f"got {self.optimizer!r}"
            )
        if self.sampler not in self.SAMPLERS:
            raise ConfigError(
                f"sampler: expected one of {', '.join(map(repr, self.SAMPLERS))}; "
                f"got {self.sampler!r}"
            )
        if self.lr_schedule not in self.LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule: expected one of {', '.join(map(repr, self.LR_SCHEDULES))}; "
                f"got {self.lr_schedule!r}"
            )
        if self.lr_decay_queries < 1:
            raise ConfigError(f"lr_decay_queries: must be >= 1; got {self.lr_decay_queries}")
        if self.beta is not None and not self.beta > 0:
            raise ConfigError(f"beta: must be > 0 or None (the env's); got {self.beta}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip: must be > 0 or None; got {self.grad_clip}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: must be >= 1 or None; got {self.max_new_tokens}")
        try:
            dev = torch.device(self.device)
        except RuntimeError as err:
            raise ConfigError(f"device: {self.device!r} is not a torch device ({err})") from None
        if dev.type == "cuda" and (dev.index or 0) >= (
            torch.cuda.device_count() if torch.cuda.is_available() else 0
        ):
            raise ConfigError(
                f"device: {self.device!r} but this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA device(s)"
                " (use device: cpu)"
            )
        if self.distributed not in DISTRIBUTED_STRATEGIES:
            raise ConfigError(
                f"distributed: expected one of {', '.join(map(repr, DISTRIBUTED_STRATEGIES))}; "
                f"got {self.distributed!r}"
            )
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision: expected 'fp32' or 'bf16'; got {self.precision!r}")
        if self.generation_backend not in ("transformers", "vllm"):
            raise ConfigError(
                "generation_backend: expected 'transformers' or 'vllm'; "
                f"got {self.generation_backend!r}"
            )


@dataclass
class Duel:
    """``B`` judged answer pairs: ``y ~ pi_theta`` (player 0) against ``y'`` (player 1).

    Attributes:
        prompt_ids: ``[B, P]`` prompt ids; ``prompt_mask`` their mask.
        prompt_mask: ``[B, P]`` bool.
        y: the answers of ``pi_theta``.
        y2: the opponent's answers.
        outcome: ``[B]`` what the learner sees of ``P(y > y'|x)`` (see ``TextAgentConfig.mode``).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    y: Generation
    y2: Generation
    outcome: torch.Tensor

    @property
    def size(self) -> int:
        """``B``, the number of answer pairs."""
        return int(self.prompt_ids.shape[0])

    def rows(self, index: slice) -> Duel:
        """The pairs ``index`` (a slice of rows) as a duel of their own."""

        def gen(g: Generation) -> Generation:
            return Generation(g.tokens[index], g.log_probs[index], g.mask[index], g.lengths[index])

        return Duel(
            self.prompt_ids[index], self.prompt_mask[index], gen(self.y), gen(self.y2),
            self.outcome[index],
        )  # fmt: skip

    def trimmed(self) -> Duel:
        """The same pairs with the columns that are padding in every row cut: prompts to the
        longest prompt (left padding), both seats' answers to the longest answer of either. Every
        log-prob, loss and statistic is the same (positions are counted over the masks)."""
        ids, mask = trim_left_padding(self.prompt_ids, self.prompt_mask)
        n = max(1, int(self.y.lengths.max()), int(self.y2.lengths.max()))

        def cut(g: Generation) -> Generation:
            if g.tokens.shape[1] <= n:
                return g
            return Generation(g.tokens[:, :n], g.log_probs[:, :n], g.mask[:, :n], g.lengths)

        return Duel(ids, mask, cut(self.y), cut(self.y2), self.outcome)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A detached copy of ``model`` (eval mode, no gradients): a target network.

    Of a model that trains only part of its weights (a LoRA policy: the adapter), the frozen part
    (the base weights) is shared with ``model``, not copied; a model frozen or trainable as a
    whole is copied whole (so loading a state into the copy never touches ``model``).
    """
    params = list(model.parameters())
    partial = any(p.requires_grad for p in params) and not all(p.requires_grad for p in params)
    memo = {id(p): p for p in params if not p.requires_grad} if partial else {}
    twin = copy.deepcopy(model, memo).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class TextAgent(AgentBase):
    """Base class of the token-level agents (see the module docstring).

    Args:
        env: the ``nlhf/TokenDuel-v*`` parallel env (its judge, ground truth and
            ``max_new_tokens`` are used; ``agents.make`` builds it from the id), or an
            ``nlhf/HFTokenDuel-v0`` env, whose reference causal LM is trained through the Hugging
            Face backend (:mod:`agents.text.backend`).
        config: the agent's config dataclass (default: its defaults).
        seed: seed of the agent's torch generators (``None``: fresh entropy, recorded in ``seed``).
        tensorboard_log: TensorBoard folder (``None``: no TensorBoard).
        reference: ``pi_ref`` (default: the env's reference; the shipped reference policy of the
            world on the native duels); ``pi_theta`` starts as a copy.

    Attributes:
        model: ``pi_theta`` (trainable :class:`TinyCausalLM`, or an
            :class:`~agents.text.backend.HFCausalPolicy`), the token agent's policy.
        reference: ``pi_ref`` (frozen; with LoRA, the policy with its adapter disabled).
        backend: the :class:`~agents.text.backend.Backend` the policy, reference and engine come
            from; ``dp`` the data-parallel layout (:mod:`agents.text.distributed`).
        optimizer: the optimiser over ``model``'s parameters (:meth:`new_optimizer`).
        engine: the :class:`DuelEngine` that generates and judges training duels.
        rng: the learning generator (prompts, answers, outcomes); ``act_rng`` is used by :meth:`act`.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "text"
    observation_rank: ClassVar[int] = 2
    config_cls: ClassVar[type[TextAgentConfig]] = TextAgentConfig

    def __init__(
        self,
        env: Any,
        config: TextAgentConfig | None = None,
        *,
        seed: int | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
        reference: TinyCausalLM | None = None,
    ) -> None:
        from agents.text.backend import make_backend

        config = self._init_common(config, seed, tensorboard_log)
        self.env = env
        #: the KL strength in use: the config's, else the env's (the game's)
        self.beta = float(config.beta if config.beta is not None else getattr(env, "beta", 0.1))
        self.world = getattr(env, "world", None)
        self.device = torch.device(config.device)
        #: the policy backend (native ``TinyCausalLM`` or a Hugging Face causal LM)
        self.backend = make_backend(env, config, self.device, reference, self.seed)
        if self.backend.kind != "native" and config.payer != "judge":
            raise ConfigError(
                "payer: 'ground_truth' needs a synthetic world; nlhf/HFTokenDuel-v0 is paid by "
                "its judge only (payer: judge)"
            )
        self.engine = self.backend.engine
        self.truth = self.backend.truth
        #: data-parallel layout: this process's rank, the process count and the global shards
        self.dp = DataParallel.current(config, type(self).name)
        if self.dp.sharded and self.backend.kind != "hf":
            raise ConfigError(
                "distributed: fsdp shards a Hugging Face model (nlhf/HFTokenDuel-v0, full "
                "fine-tuning); use distributed: ddp"
            )
        self.model, self.optimizer = self._build_model(self.backend.initial)
        #: ``DistributedDataParallel`` around ``model`` for its training forward passes (built at
        #: the first one; ``None`` in one process or under FSDP)
        self._ddp: torch.nn.Module | None = None
        if self.dp.sharded:  # FSDP2: shard pi_theta, then build its optimiser over the shards
            from agents.text.fsdp import shard_policy

            shard_policy(self.model, self.device)
            self.optimizer = self.new_optimizer(self.model, config.lr)
        #: ``pi_ref`` (frozen; with LoRA, the policy with its adapter disabled)
        self.reference = self.backend.reference_for(self.model)
        if config.generation_backend == "vllm":  # hook: answers sampled by a colocated vLLM engine
            from agents.text.vllm_backend import vllm_engine

            self.engine = vllm_engine(self)
        self.rng = torch.Generator(self.device).manual_seed(self.seed)
        self.act_rng = torch.Generator("cpu").manual_seed(self.seed + 1)
        #: the generators of this process's shards (global shard 0 is ``rng``)
        self.shard_rngs = [
            self.rng
            if s == 0
            else torch.Generator(self.device).manual_seed(shard_seed(self.seed, s))
            for s in self.dp.local_shards
        ]
        #: every shard's generator state (``[shards, L]``) at the last iteration boundary, kept
        #: under several processes (gathered after each iteration) so that saving needs no
        #: collective; before the first iteration every shard is freshly seeded
        self._shard_states: torch.Tensor | None = None
        if self.dp.world > 1:
            self._shard_states = torch.stack(
                [
                    torch.Generator(self.device)
                    .manual_seed(self.seed if s == 0 else shard_seed(self.seed, s))
                    .get_state()
                    for s in range(self.dp.shards)
                ]
            )
        self._tokens = 0
        self._stats: dict[str, list[float]] = {}
        self._exact: dict[str, tuple[Any, Any]] = {}
        trained = evaluation.trained_split(self)
        if trained in ("all", "heldout") and config.nash_eval != "off":
            warnings.warn(
                f"{type(self).__name__} trains on the env's {trained!r} prompts, which include the "
                "held-out ones: eval/exploitability and eval/kl_to_nash then measure optimisation, "
                "not generalisation to unseen prompts (train on prompt_split='train' for that)",
                stacklevel=3,
            )
        self._setup()

    # ------------------------------------------------------------------ to override
    def _build_model(self, reference: torch.nn.Module) -> tuple[Any, Any]:
        """``(model, optimizer)``: ``pi_theta`` as a trainable copy of ``reference`` and
        :meth:`new_optimizer` over it.

        An agent whose network is built elsewhere (in :meth:`_setup`) returns ``(None, None)``.
        """
        model = self.backend.trainable_copy(reference, self.device)
        return model, self.new_optimizer(model, self.config.lr)

    def new_optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
        """A fresh optimiser of ``config.optimizer`` over ``model``'s parameters.

        Adam runs torch's fused kernel for Hugging Face models (``fused=True``: one pass over
        each tensor's weights, gradient and moments instead of one per operation; the same update
        up to float rounding) where torch has one for the parameters' device, except under FSDP
        (sharded parameters) and ``generation_backend: vllm`` (which sees optimiser steps through
        the weights' version counters, which fused steps do not move). The native tiny models
        keep the per-tensor loop: it saves nothing measurable there, and their shipped results
        reproduce to the digit.
        """
        params = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapter's
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr)
        return torch.optim.Adam(params, lr=lr, fused=self._fused_adam(params) or None)

    def _fused_adam(self, params: list[torch.nn.Parameter]) -> bool:
        if self.backend.kind == "native" or self.dp.sharded or not params:
            return False
        if self.config.generation_backend == "vllm":
            return False
        try:
            from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        except ImportError:  # pragma: no cover - a torch without the helper
            return False
        devices = {p.device.type for p in params}
        return devices <= set(_get_fused_kernels_supported_devices()) and all(
            p.dtype.is_floating_point and type(p) is torch.nn.Parameter for p in params
        )

    def _setup(self) -> None:
        """Algorithm-specific state. Default: nothing."""

    def iteration_queries(self) -> int:
        """Preference queries of one iteration: ``batch_size`` (one judged batch). An agent that
        judges more per iteration overrides this; for an agent whose count is random it is an
        upper bound (the budget loop of :mod:`agents.api` never exceeds ``num_queries``)."""
        return int(self.config.batch_size)

    def _iteration(self) -> None:
        """One iteration of the algorithm (uses :meth:`duel`, :meth:`optimise`, :meth:`note`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for algorithms
    def prompt_generator(self, shard: int = 0) -> torch.Generator:
        """The generator of the next duel's prompts (of ``shard``): seeded by the agent's seed, the
        shard and the number of duels judged so far (``queries_used // batch_size``), so every
        agent with the same seed and ``batch_size`` trains on the same prompts at the same step
        (common random numbers: comparisons between agents are paired), whatever else it draws;
        answers and outcomes come from the agent's own generators."""
        step = self.queries_used // self.config.batch_size
        return torch.Generator("cpu").manual_seed(prompt_seed(self.seed, shard, step))

    def duel(self, opponent: Any, policy: Any | None = None) -> Duel:
        """Sample ``batch_size`` prompts, answers of ``policy`` (default ``pi_theta``) and of
        ``opponent``, and judge them: ``batch_size`` preference queries, counted."""
        cfg = self.config
        policy = self.model if policy is None else policy
        # the env's prompt split (``TokenDuelEnv(prompt_split=...)``, default ``"train"``)
        split = getattr(self.env, "prompt_split", "train")
        n = cfg.batch_size // self.dp.shards
        parts = []
        local = zip(self.dp.local_shards, self.shard_rngs, strict=True)
        for shard, gen in local:  # one shard (the whole batch) without data parallelism
            _, ids, mask = self.engine.sample_prompts(n, self.prompt_generator(shard), split=split)
            # self-play (the same policy object in both seats): one generate call of 2 B rows
            with self._gathered():
                y, y2 = self.engine.generate_pair(policy, opponent, ids, mask, gen, joint=True)
            pay = self.engine.score(ids, mask, y, y2, gen)
            self._tokens += int(y.lengths.sum()) + int(y2.lengths.sum())
            outcome = pay.outcome if cfg.mode == "sampled" else pay.prob.float()
            parts.append(Duel(ids, mask, y, y2, outcome.to(self.device)))
        self.queries_used += cfg.batch_size  # counted globally: every process counts them all
        self._queries_counted()  # learn's progress, per batch
        if len(parts) == 1:
            return parts[0]
        # each shard's prompts are padded to its own longest: left-pad them to a common width
        width = max(d.prompt_ids.shape[1] for d in parts)
        pad_id = int(getattr(self.engine, "pad_id", PAD))
        for d in parts:
            extra = width - d.prompt_ids.shape[1]
            if extra:
                d.prompt_ids = torch.nn.functional.pad(d.prompt_ids, (extra, 0), value=pad_id)
                d.prompt_mask = torch.nn.functional.pad(d.prompt_mask, (extra, 0), value=False)
        return concat_duels(parts)

    def prompt_pass_memo(self) -> Any | None:
        """A :class:`~agents.text.backend.PromptPassMemo` of ``pi_theta`` for one self-play step
        (generation's prompt pass reused by the scoring pass with gradients), or ``None`` where
        the two passes could differ or the scoring pass does not take it: native models, vLLM
        sampling, several processes or shards (the scoring pass runs their concatenation),
        gradient checkpointing, micro-batches, a LoRA dropout (the scoring pass trains with it,
        generation samples without)."""
        from agents.text.backend import HFCausalPolicy, HFDuelEngine, PromptPassMemo

        model = self.model
        if (
            not isinstance(model, HFCausalPolicy)
            or type(self.engine) is not HFDuelEngine
            or self.dp.world != 1
            or self.dp.shards != 1
            or model.gradient_checkpointing
            or self.config.gradient_accumulation_steps != 1
        ):
            return None
        for module in model.modules():
            dropout = getattr(module, "lora_dropout", None)
            if isinstance(dropout, torch.nn.Module) and any(
                isinstance(m, torch.nn.Dropout) and m.p > 0 for m in dropout.modules()
            ):
                return None
        return PromptPassMemo(model)

    def _gathered(self) -> contextlib.AbstractContextManager[None]:
        """Under FSDP: ``pi_theta``'s weights gathered once for the block's forward passes
        (generation, evaluation; :func:`agents.text.fsdp.gathered`); else nothing."""
        if not self.dp.sharded:
            return contextlib.nullcontext()
        from agents.text.fsdp import gathered

        return gathered(self.model)

    def agree_on_stop(self, requested: bool) -> bool:
        """Whether to stop at this iteration boundary (Ctrl-C): under several processes, whether
        any process was interrupted (one all-reduce), so all of them stop at the same one."""
        return self.dp.any(requested)

    def shard_states(self) -> torch.Tensor:
        """``[shards, L]`` uint8: every shard's generator state, in shard order (under several
        processes: this process's shards as they are, the others' as gathered at the last
        iteration boundary, see :meth:`_run_iteration`)."""
        live = torch.stack([g.get_state() for g in self.shard_rngs])
        if self.dp.world == 1 or self._shard_states is None:
            return live
        out = self._shard_states.clone()
        out[self.dp.local_shards.start : self.dp.local_shards.stop] = live
        return out

    def _trained(self, model: Any) -> Any:
        """``model`` as a training forward pass calls it: ``pi_theta`` inside
        ``DistributedDataParallel`` under several DDP processes when gradients are on (built at
        the first call, so every process builds it at the same step), else ``model`` itself."""
        if model is not self.model or self.dp.world == 1 or self.dp.sharded:
            return model
        if not torch.is_grad_enabled():
            return model
        if self._ddp is None:
            self._ddp = self.dp.wrap(self.model, self.device)
        return self._ddp

    def log_probs(self, model: Any, duel: Duel, second: bool = False) -> torch.Tensor:
        """Token log-probs ``[B, N]`` of ``duel.y`` (or ``duel.y2``) under ``model``."""
        ans = duel.y2 if second else duel.y
        model = self._trained(model)
        return token_log_probs(model, duel.prompt_ids, duel.prompt_mask, ans.tokens, ans.mask)

    def pair_log_probs(self, model: Any, duel: Duel) -> tuple[torch.Tensor, torch.Tensor]:
        """Token log-probs of ``duel.y`` and ``duel.y2`` under ``model`` (``[B, N]`` and
        ``[B, N']``) from one batch of the ``2 B`` answers (right-padded to the longer width):
        the same values as two :meth:`log_probs` calls, half the calls.

        For Hugging Face models each prompt is encoded once for both of its answers
        (``token_log_probs(prompt_rows=)``: the prompts' KV cache is shared by the pair), except
        where the model builds no cache with gradients (gradient checkpointing) or is sharded by
        FSDP (one forward call per backward). There, and for the native tiny models (whose
        shipped results reproduce to the digit: sharing changes float rounding, which Adam
        amplifies), the ``2 B`` sequences repeat the prompts."""
        y, y2 = duel.y, duel.y2
        b, n, n2 = duel.size, y.tokens.shape[1], y2.tokens.shape[1]
        width = max(n, n2)

        def pad(x: torch.Tensor, value: Any) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

        rows = torch.arange(b, device=duel.prompt_ids.device).repeat(2)
        checkpointed = torch.is_grad_enabled() and bool(getattr(model, "gradient_checkpointing", 0))
        if self.backend.kind == "native" or self.dp.sharded or checkpointed:
            ids, mask, rows = duel.prompt_ids[rows], duel.prompt_mask[rows], None
        else:
            ids, mask = duel.prompt_ids, duel.prompt_mask
        lp = token_log_probs(
            self._trained(model),
            ids,
            mask,
            torch.cat([pad(y.tokens, PAD), pad(y2.tokens, PAD)]),
            torch.cat([pad(y.mask, False), pad(y2.mask, False)]),
            prompt_rows=rows,
        )
        return lp[:b, :n], lp[b:, :n2]

    def optimise_duel(self, duel: Duel, loss_fn: Callable[[Duel], LossTerms]) -> None:
        """One optimiser step on ``loss_fn(duel)``, computed in ``gradient_accumulation_steps``
        micro-batches.

        ``loss_fn`` maps a duel (a micro-batch of ``duel``'s pairs, padding columns cut,
        :meth:`Duel.trimmed`) to its loss, a mean over its pairs, and the statistics to record
        (``terms``: means over its pairs too). Each micro-batch's loss, weighted by its share of
        the batch, is backpropagated at once (its activations freed before the next one); the
        accumulated gradient is the whole batch's, and the recorded statistics are the weighted
        sums of the micro-batches' (the whole batch's means). Then, as :meth:`optimise`:
        clipping at ``grad_clip`` and the optimiser step at :meth:`current_lr`; the gradients
        are freed after the step (``zero_grad(set_to_none=True)``, as TRL's trainer does), so
        they are not held through the next step's generation.

        Under several processes the gradients are averaged over them by the backward pass
        (``DistributedDataParallel``, or FSDP's reduce-scatter), once per step: the micro-batches
        before the last one accumulate locally (``no_sync``).
        """
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        b = duel.size
        k = min(self.config.gradient_accumulation_steps, b)
        step = -(-b // k)
        totals: dict[str, float] = {}
        starts = range(0, b, step)
        for start in starts:
            micro = (duel if k == 1 else duel.rows(slice(start, start + step))).trimmed()
            with self._gradient_sync(start == starts[-1]):
                out = loss_fn(micro)
                share = micro.size / b
                (out.loss if k == 1 else out.loss * share).backward()
            for key, value in out.terms.items():
                totals[key] = totals.get(key, 0.0) + share * float(value)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # not held through the next generation
        self.note(totals)

    @contextlib.contextmanager
    def _gradient_sync(self, sync: bool) -> Iterator[None]:
        """Around a micro-batch's forward and backward passes: with ``sync`` false, the
        processes' gradients are accumulated locally, not averaged (DDP's ``no_sync``, FSDP's
        ``set_requires_gradient_sync(False)``)."""
        if sync or self.dp.world == 1:
            yield
        elif self.dp.sharded:
            self.model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.model.set_requires_gradient_sync(True)
        else:
            if self._ddp is None:
                self._ddp = self.dp.wrap(self.model, self.device)
            with self._ddp.no_sync():
                yield

    def current_lr(self) -> float:
        """The learning rate of the schedule at ``queries_used`` (see ``TextAgentConfig``)."""
        cfg = self.config
        t = self.queries_used / cfg.lr_decay_queries
        if cfg.lr_schedule == "inverse":
            return cfg.lr / (1.0 + t)
        if cfg.lr_schedule == "inverse_sqrt":
            return cfg.lr / float(np.sqrt(1.0 + t))
        return cfg.lr

    def optimise(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` (gradient norm clipped at ``grad_clip``; learning rate from
        :meth:`current_lr`); the gradients are freed after it."""
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def note(self, values: dict[str, Any]) -> None:
        """Accumulate per-step statistics; the iteration's record holds their means."""
        for key, value in values.items():
            self._stats.setdefault(key, []).append(float(value))

    def note_policy(self, duel: Duel, log_pi: torch.Tensor, log_ref: torch.Tensor) -> None:
        """Record the policy statistics of a batch of ``pi_theta``'s answers ``duel.y``."""
        self.note(self.policy_terms(duel, log_pi, log_ref))

    @staticmethod
    def policy_terms(
        duel: Duel, log_pi: torch.Tensor, log_ref: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The policy statistics (means over the batch) of ``pi_theta``'s answers ``duel.y``:
        ``policy/kl_ref``, ``policy/entropy``, ``policy/answer_length``."""
        m = duel.y.mask.float()
        return {
            "policy/kl_ref": ((log_pi - log_ref).detach() * m).sum(-1).mean(),
            "policy/entropy": -(duel.y.log_probs * m).sum(-1).mean(),
            "policy/answer_length": duel.y.lengths.float().mean(),
        }

    # ------------------------------------------------------------------ learning loop
    def _run_iteration(self) -> dict[str, float]:
        self._stats, self._tokens = {}, 0
        q_before, start = self.queries_used, time.perf_counter()
        self._iteration()
        elapsed = max(time.perf_counter() - start, 1e-9)
        row = {k: float(np.mean(v)) for k, v in self._stats.items()}
        row["time/queries_per_s"] = (self.queries_used - q_before) / elapsed
        row["time/tokens_per_s"] = self._tokens / elapsed
        if self.dp.world > 1:  # every shard's generator, for a checkpoint written by rank 0
            self._shard_states = self.dp.gather_generator_states(self.shard_rngs)
        return self.dp.average_row(row)  # data parallel: the means over processes

    def _log_row(self, extra: dict[str, float]) -> dict[str, float]:
        row = {
            "game/queries": float(self.queries_used),
            "time/iterations": float(self.num_iterations),
        }
        ev = self.config.eval_every
        # under DDP the first process alone evaluates (its generator is its own, so the others
        # lose nothing by skipping it); under FSDP every process takes part
        if ev and self.num_iterations % ev == 0 and self.dp.evaluates:
            row.update(self.evaluate())
        row.update(extra)
        return row

    @torch.no_grad()
    def evaluate(
        self, num_prompts: int | None = None, split: str = "heldout", progress: Progress = None
    ) -> dict[str, float]:
        """Win rates of ``pi_theta`` against ``pi_ref`` under the judge and the ground truth
        (:func:`agents.text.evaluation.evaluate`).

        Uses its own generator (seeded from the agent's seed and ``num_iterations``), so evaluating
        never changes what ``learn`` does next; no queries are counted.

        Args:
            num_prompts: prompts (one answer pair each); default ``config.eval_prompts``. They are
                evaluated in chunks of :data:`EVAL_CHUNK`, so memory does not grow with it.
            split: prompt split, ``"heldout"`` (default), ``"train"`` or ``"all"``.
            progress: ``None`` (silent), ``True`` (a bar on stderr) or a callable receiving
                :class:`~nlhf_envs.progress.ProgressEvent` objects.

        Returns:
            ``{"eval/win_rate_ref_judge", "eval/win_rate_ref_true", "eval/kl_ref"}`` and the Nash
            metrics of :meth:`nash_metrics` (unless ``nash_eval`` is ``"off"``).
        """
        with self._gathered():
            return evaluation.evaluate(
                self, num_prompts, split, chunk=EVAL_CHUNK, progress=progress
            )

    def exact_game(self, split: str = "heldout") -> tuple[Any, Any]:
        """The exact regularised game of the paying judge on the prompts of ``split`` (default the
        held-out ones) and its equilibrium ``(game, pi*)`` (built once per split; needs an
        enumerable world, see :mod:`nlhf_envs.text.exact`)."""
        return evaluation.exact_game_and_nash(self, split)

    def enumerable(self) -> bool:
        """Whether the env's answers can be enumerated (exact Nash metrics)."""
        return evaluation.enumerable(self)

    @torch.no_grad()
    def nash_metrics(
        self, exact: bool | None = None, progress: Progress = None
    ) -> dict[str, float]:
        """``eval/exploitability`` and ``eval/kl_to_nash`` of ``pi_theta`` on held-out prompts
        (:func:`agents.text.evaluation.nash_metrics`).

        Args:
            exact: ``True``: exact (enumerable worlds); ``False``: estimated with
                ``nash_eval_prompts`` prompts and ``nash_eval_samples`` samples; ``None``: from
                ``config.nash_eval`` (``"auto"``: exact when the world is enumerable).
            progress: reports of the estimates (``None``: silent; see :mod:`nlhf_envs.progress`).
        """
        with self._gathered():
            return evaluation.nash_metrics(self, exact, progress)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, observation: Any, deterministic: bool = False) -> int:
        """The next token for a ``nlhf/TokenDuel-v0`` observation (slow path: one full forward pass).

        Args:
            observation: ``int64 [2, L]``: token ids (row 0) and mask (row 1), the prompt followed by
                the player's answer so far.
            deterministic: return the most likely token instead of sampling (with ``act_rng``).

        Returns:
            A token id.
        """
        obs = np.asarray(observation)
        if obs.ndim != 2 or obs.shape[0] != 2:
            raise ValueError(
                f"observation must be the TokenDuel array of shape (2, L); got shape {obs.shape}"
            )
        ids = torch.as_tensor(obs[0][obs[1].astype(bool)], dtype=torch.long, device=self.device)
        if ids.numel() == 0:
            raise ValueError("observation holds no tokens (its mask row is all zero)")
        logits, _ = self.model(ids[None])
        logits = logits[0, -1].float().cpu()
        if deterministic:
            return int(logits.argmax())
        probs = torch.softmax(logits, -1)
        return int(torch.multinomial(probs, 1, generator=self.act_rng))

    def checkpoint_arrays(self, include_history: bool = True) -> dict[str, np.ndarray]:
        """The arrays of this agent's checkpoint (see :func:`checkpoint_payload`)."""
        return checkpoint_payload(self, include_history)

    @classmethod
    def from_checkpoint(
        cls,
        p: str,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        game: Any = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
    ) -> TextAgent:
        """Rebuild an agent from a checkpoint (see :func:`load_text_agent`); ``game`` is the env
        to use (needed for ``nlhf/HFTokenDuel-v0`` checkpoints; native ones rebuild theirs)."""
        return load_text_agent(cls, p, meta, arrays, tensorboard_log=tensorboard_log, env=game)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the checkpoint (see :func:`save_text_agent`); returns the path written.

        On ``nlhf/HFTokenDuel-v0`` the policy is also written, next to it, as a Hugging Face
        folder ``<name>_hf/`` (``final.npz`` -> ``final_hf/``): ``save_pretrained`` output (the
        full model, or the LoRA adapter) and the tokenizer, loadable by
        ``AutoModelForCausalLM.from_pretrained`` / ``PeftModel.from_pretrained`` without nlhf-zoo
        and usable as a participant of ``nlhf-zoo eval``/``tournament``
        (:func:`agents.text.backend.save_hf_folder`). The ``.npz`` holds what an exact resume
        needs (policy weights, optimiser, generators, history).
        """
        if self.dp.sharded:  # every process gathers the shards; the first one writes
            from agents.text.checkpoint import save_sharded

            return save_sharded(self, path)
        if not self.dp.is_main:  # the first process writes alone (the states it needs are kept)
            return os.fspath(path)
        target = super().save(path)
        if self.backend.kind != "native":
            from agents.text.backend import hf_folder_of, save_hf_folder

            save_hf_folder(self, hf_folder_of(target))
        return target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(device={self.config.device!r}, "
            f"iterations={self.num_iterations}, queries={self.queries_used})"
        )


def make_text_config(cls: type[TextAgentConfig], **values: Any) -> TextAgentConfig:
    """``build_config(cls, values)`` (a convenience for tests and scripts)."""
    return build_config(cls, values, source=f"{cls.__name__}(...)")


__all__ += ["checkpoint_payload", "frozen_copy", "make_text_config"]
