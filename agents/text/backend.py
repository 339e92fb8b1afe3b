"""Policy backends of the token-level agents: the native ``TinyCausalLM`` and any Hugging Face causal LM.

The token agents (:mod:`agents.text`) have one code path. What they need of a backend is:

* a **policy**: a ``torch.nn.Module`` with the duel engine's signature
  ``policy(input_ids, attention_mask=None, past_key_values=None) -> (logits, cache)``
  (:class:`~nlhf_envs.text.engine.Policy`), so that ``copy.deepcopy``, ``state_dict``,
  ``parameters``, ``train``/``eval`` and :func:`~nlhf_envs.text.engine.token_log_probs` work as
  they do on :class:`~nlhf_envs.text.models.TinyCausalLM`;
* a **reference** ``pi_ref`` of the same signature (frozen);
* a **duel engine**: ``sample_prompts``, ``generate``, ``generate_pair`` and ``score`` of
  :class:`~nlhf_envs.text.engine.DuelEngine`, a ``judge`` and optionally a ground ``truth``
  whose ``prob(prompt_ids, a, b, prompt_mask=, mask_a=, mask_b=)`` gives ``P(a > b | x)``.

:func:`make_backend` picks the backend from the env: ``nlhf/TokenDuel-v*`` (the synthetic worlds)
gets the native one; ``nlhf/HFTokenDuel-v0``
(:class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv`) gets the Hugging Face one:

* the policy is :class:`HFCausalPolicy` around a trainable copy of the env's reference causal LM
  (full fine-tuning), or a LoRA adapter on it (``lora`` config block, :class:`LoraSettings`), or
  around a separate starting model (``init_from``: an SFT model, a previous run's ``final_hf/``);
* ``pi_ref`` is the env's reference model itself, through a :func:`shared_twin` (frozen, its
  weights stored once: full fine-tuning holds the trainable model and this one reference; LoRA
  holds the adapter on the base weights, stored once, and ``pi_ref`` is the adapter disabled);
* the engine is :class:`HFDuelEngine`: the env's prompts (encoded as the env encodes them,
  left-padded to the longest prompt of each batch), the env's EOS, and the env's *text* judge on
  decoded answers (:class:`TextJudgeProbs`).

On :meth:`HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
<nlhf_envs.text.hf_env.HFTokenDuelEnv.from_world>` both backends play the same game with the same
weights, so a seeded run draws the same prompts, answers and outcomes and reaches the same exact
Nash metrics (``tests/agents/text/test_hf_backend.py``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from agents.config import ConfigError
from nlhf_envs.text.engine import (
    DuelEngine,
    Generation,
    _check_prompts,
    generate,
    trim_left_padding,
)

__all__ = [
    "AdapterDisabled",
    "Backend",
    "LoraSettings",
    "HFCausalPolicy",
    "PromptPassMemo",
    "HFDuelEngine",
    "TextJudgeProbs",
    "export_merged",
    "hf_folder_of",
    "is_hf_env",
    "make_backend",
    "merged_lora",
    "replace_folder",
    "resolved_sampler",
    "save_hf_folder",
    "shared_twin",
    "with_lora",
]


def is_hf_env(env: Any) -> bool:
    """Whether ``env`` is the Hugging Face token duel (``nlhf/HFTokenDuel-v0``)."""
    meta = getattr(env, "metadata", None) or {}
    return meta.get("name") == "nlhf/HFTokenDuel-v0"


@dataclass
class LoraSettings:
    """The ``lora`` config block: train a LoRA adapter (Hu et al., "LoRA: Low-Rank Adaptation of
    Large Language Models", ICLR 2022, arXiv 2106.09685) on the env's reference instead of all its
    weights (``nlhf/HFTokenDuel-v0`` only; needs ``peft``).

    ``pi_ref`` is then the same model with its adapter *disabled* (``disable_adapter()``), which is
    exactly the base model (``get_base_model()`` is not: it keeps the LoRA layers active).

    Attributes:
        rank: the adapter's rank ``r``.
        alpha: the scaling numerator (the update is ``(alpha / r) B A``).
        dropout: dropout on the adapter's input while scoring (answers are sampled without it).
        target_modules: names (or name suffixes) of the layers that get an adapter (``None``:
            ``peft``'s default for the architecture, e.g. ``c_attn`` for GPT-2).
        merge_for_sampling: sample with each adapter merged into a temporary copy of its
            layer's weight (:func:`merged_lora`: one matrix product per layer instead of three,
            the same answers up to float rounding). The copies exist while sampling only, but
            they are about one more copy of the targeted weights: ``false`` where those do not
            fit twice (every linear layer of a large model targeted) samples through peft's
            layers instead.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    merge_for_sampling: bool = True

    #: TRL's and peft's names (``peft.LoraConfig``) of the same settings, accepted as keys too
    ALIASES: ClassVar[dict[str, str]] = {
        "r": "rank",
        "lora_alpha": "alpha",
        "lora_dropout": "dropout",
    }

    @classmethod
    def from_value(cls, value: Any) -> dict[str, Any] | None:
        """The block's fields of a ``peft.LoraConfig`` (``None`` for any other object).

        ``r``, ``lora_alpha``, ``lora_dropout`` and ``target_modules`` (a list of names) are read;
        ``fan_in_fan_out`` is set from the layers' type (GPT-2's ``Conv1D``), and ``task_type``
        (``CAUSAL_LM`` or unset), ``inference_mode``, ``base_model_name_or_path``, ``revision`` and
        peft's own bookkeeping are ignored. Any other field set away from peft's default
        (``modules_to_save``, ``use_dora``, ``bias``, ``init_lora_weights``, ...) is refused: this
        library trains a plain LoRA adapter whose base weights all stay frozen.

        Raises:
            agents.config.ConfigError: naming the first unsupported field and its value.
        """
        try:
            import peft
        except ImportError:  # without peft there is no LoraConfig to convert
            return None
        if not isinstance(value, peft.LoraConfig):
            return None
        default = peft.LoraConfig()
        read = {"r", "lora_alpha", "lora_dropout", "target_modules"}
        for f in dataclasses.fields(value):
            if f.name in read or f.name in _IGNORED_LORA_FIELDS:
                continue
            mine, theirs = getattr(value, f.name), getattr(default, f.name)
            if mine != theirs:
                raise ConfigError(
                    f"the peft.LoraConfig field {f.name}={mine!r} is not supported (a plain LoRA "
                    "adapter with every base weight frozen; supported: r, lora_alpha, "
                    f"lora_dropout, target_modules; set {f.name} back to {theirs!r})"
                )
        task = value.task_type
        if task is not None and str(getattr(task, "value", task)) != "CAUSAL_LM":
            raise ConfigError(f"the peft.LoraConfig task_type {task!r} is not CAUSAL_LM")
        targets = value.target_modules
        if isinstance(targets, str):
            raise ConfigError(
                f"the peft.LoraConfig target_modules {targets!r} is a pattern; give a list of "
                "module names"
            )
        return {
            "rank": value.r,
            "alpha": value.lora_alpha,
            "dropout": value.lora_dropout,
            "target_modules": None if targets is None else sorted(targets),
        }

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"rank: must be an integer >= 1; got {self.rank}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha: must be > 0; got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must lie in [0, 1); got {self.dropout}")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("target_modules: give at least one module name (or null)")


#: ``peft.LoraConfig`` fields that do not change the adapter (or that nlhf-zoo sets itself)
_IGNORED_LORA_FIELDS = frozenset(
    {
        "task_type",
        "peft_type",
        "auto_mapping",
        "peft_version",
        "base_model_name_or_path",
        "revision",
        "inference_mode",
        "fan_in_fan_out",
    }
)


@dataclass
class Backend:
    """What :class:`~agents.text.common.TextAgent` is built from.

    Attributes:
        kind: ``"native"`` (``TinyCausalLM``), ``"hf"`` (a ``transformers`` causal LM, full
            fine-tuning) or ``"lora"`` (a LoRA adapter on it).
        engine: the duel engine (:class:`~nlhf_envs.text.engine.DuelEngine` or
            :class:`HFDuelEngine`).
        truth: the ground truth ``P*`` (``None`` when the game has none: a Hugging Face env not
            built from a synthetic world).
        reference: ``pi_ref`` (frozen, on the agent's device); with LoRA on the reference itself,
            ``None`` until :meth:`reference_for` gives the adapter-disabled view of the policy.
        initial: what ``pi_theta`` starts as (see :meth:`trainable_copy`).
        owned: ``initial`` was built for this backend alone (a model loaded from ``init_from``, a
            fresh adapter), so :meth:`trainable_copy` trains it in place instead of copying it.
        base_folder: with LoRA, the folder of the model under the adapter when it has one (saved
            adapters name it as their base).
        base_model: with LoRA, that model as the user gave it (without the adapter's layers),
            saved next to an adapter when it has no folder.
        base_fingerprint: with LoRA, the fingerprint of the weights under the adapter, taken
            before the adapter's layers were added (a saved adapter records it, and loaders put
            it only on a base with these weights).
    """

    kind: str
    engine: Any
    truth: Any
    reference: Any
    initial: torch.nn.Module
    owned: bool = False
    base_folder: Path | None = None
    base_model: Any = None
    base_fingerprint: str | None = None

    def trainable_copy(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``pi_theta`` from ``module`` on ``device``, in training mode, all its weights trainable
        (with LoRA, only the adapter's).

        ``module`` is copied, except the frozen base weights of a LoRA model (shared, never
        copied) and an :attr:`owned` ``initial`` (trained in place, once).
        """
        if self.owned and module is self.initial:
            self.owned = False  # a second call copies
            model = module.to(device).train()
        else:
            memo: dict[int, Any] = {}
            if self.kind == "lora":  # the frozen base weights are shared, not copied
                memo = {id(p): p for p in module.parameters() if not p.requires_grad}
            model = copy.deepcopy(module, memo).to(device).train()
        if self.kind == "lora":
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name)
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        return model

    def policy_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """What a checkpoint stores of ``pi_theta``: every weight, or with LoRA the adapter's."""
        state = model.state_dict()
        if self.kind == "lora":
            return {k: v for k, v in state.items() if "lora_" in k}
        return state

    def load_policy_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`policy_state` output into ``model`` (exact; refuses other keys)."""
        if self.kind != "lora":
            model.load_state_dict(state)
            return
        own = {k for k in model.state_dict() if "lora_" in k}
        if set(state) != own:
            odd = sorted(set(state) ^ own)
            raise ValueError(
                f"the stored adapter does not fit the configured lora block ({len(odd)} "
                f"weights differ, e.g. {odd[0]!r})"
            )
        model.load_state_dict(state, strict=False)

    def reference_for(self, model: Any) -> Any:
        """``pi_ref`` of an agent whose policy is ``model``: the backend's frozen reference, or,
        with LoRA on the reference itself, :class:`AdapterDisabled` on ``model``."""
        if self.kind == "lora" and self.reference is None and model is not None:
            return AdapterDisabled(model)
        return self.reference


class AdapterDisabled:
    """``pi_ref`` of a LoRA policy: the same :class:`HFCausalPolicy` called with its adapters
    disabled around every call (so a KV-cached geometric mixture that alternates policy and
    reference calls sees each model as it is), and without gradients. This is exactly the base
    model; ``get_base_model()`` is not (peft keeps its LoRA layers active there).

    The adapters are switched off and on again through each adapter layer's own
    ``enable_adapters`` (what ``PeftModel.disable_adapter()`` does for LoRA, without its
    per-call inspection of the whole model's adapter status, which cost 24 ms a call on a 12M
    model). Where that context does more (a model sharded by FSDP, merged or already disabled
    adapters, a trained LoRA bias, wrapped ``modules_to_save``), ``disable_adapter()`` itself is
    used.

    Args:
        policy: an :class:`HFCausalPolicy` around a ``peft`` model.
    """

    supports_logits_to_keep = True

    def __init__(self, policy: HFCausalPolicy) -> None:
        self.policy = policy
        #: the adapter layers found, and the adapters (name, config) they were found for
        self._layers: tuple[Any, ...] = ()
        self._found_for: tuple[tuple[str, int], ...] | None = None

    @property
    def vocab_size(self) -> int:
        """The number of tokens the policy scores."""
        return self.policy.vocab_size

    def _adapter_layers(self) -> tuple[Any, ...]:
        """The adapter layers to switch (empty: use ``disable_adapter()``), found again whenever
        the model's adapters (names and configs) change."""
        configs = getattr(self.policy.lm, "peft_config", {})
        key = tuple((name, id(cfg)) for name, cfg in configs.items())
        if key != self._found_for:
            self._layers = _switchable_adapter_layers(self.policy.lm)
            self._found_for = key
        return self._layers

    @contextlib.contextmanager
    def _disabled(self) -> Iterator[None]:
        layers = self._adapter_layers()
        if not layers or any(layer.merged or layer.disable_adapters for layer in layers):
            with self.policy.lm.disable_adapter():
                yield
            return
        try:
            for layer in layers:
                layer.enable_adapters(False)
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        *,
        logits_to_keep: int = 0,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, Any]:
        """Logits and cache of the base model (see :class:`HFCausalPolicy`)."""
        with torch.no_grad(), self._disabled():
            return self.policy(
                input_ids, attention_mask, past_key_values,
                logits_to_keep=logits_to_keep, use_cache=use_cache,
            )  # fmt: skip

    def __deepcopy__(self, memo: dict[int, Any]) -> AdapterDisabled:
        return AdapterDisabled(copy.deepcopy(self.policy, memo))


def _switchable_adapter_layers(peft_model: Any) -> tuple[Any, ...]:
    """The LoRA layers of ``peft_model`` that ``disable_adapter()`` switches, when switching
    them one by one is all it does; else ``()``."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - a LoRA policy has peft
        return ()
    try:  # modules_to_save and trainable tokens (peft 0.15 and later)
        from peft.utils.other import AuxiliaryTrainingWrapper as wrapper
    except ImportError:  # pragma: no cover - older peft: found by name below
        wrapper = ()
    configs = getattr(peft_model, "peft_config", {})
    if any(getattr(c, "bias", "none") != "none" for c in configs.values()):
        return ()
    if any(
        getattr(c, "is_prompt_learning", False) or getattr(c, "is_adaption_prompt", False)
        for c in configs.values()
    ):
        return ()
    layers = []
    for module in peft_model.modules():
        name = type(module).__name__
        if name.startswith(("FSDP", "FullySharded")) or "ModulesToSave" in name:
            return ()
        if isinstance(module, wrapper):
            return ()
        if isinstance(module, BaseTunerLayer):
            layers.append(module)
    return tuple(layers)


# ---------------------------------------------------------------------------------- HF policy


def _disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0: generation and scoring must see the same policy."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def shared_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model``'s modules that stores no weights of its own.

    Every parameter of the twin is a new ``Parameter`` over the same storage as ``model``'s (with
    ``requires_grad=False``), every buffer is ``model``'s own tensor, every module is a new
    object. So the weights exist once, while the twin can be changed as a structure without
    touching ``model``: ``peft`` can inject an adapter's layers into it, its dropout can be
    switched off, ``requires_grad`` and ``.to(device)`` act on the twin's parameters only (moving
    the twin to another device copies its weights there and leaves ``model`` where it is). Tied
    weights stay tied. Writing into a twin's weight in place writes into ``model``'s: the twin is
    for frozen uses (``pi_ref``, the base under a LoRA adapter).
    """
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach(), requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = b
    return copy.deepcopy(model, memo)


class HFCausalPolicy(torch.nn.Module):
    """A ``transformers`` causal LM (or a PEFT model around one) as a duel policy module.

    ``forward(input_ids, attention_mask=None, past_key_values=None) -> (logits, cache)`` as
    :class:`~nlhf_envs.text.engine.Policy`: position ids are computed from the attention mask, so
    left-padded prompts and the KV cache work; logits are cut to ``num_tokens`` (the tokenizer's
    size, when the model pads its embedding matrix) and returned in float32, and
    ``suppress_tokens`` get ``-1e4`` (never sampled), as
    :class:`~nlhf_envs.text.hf.HFPolicy` does for the env's reference.

    Args:
        lm: the causal LM. Its dropout never acts (it stays in eval mode, see :meth:`train`), so
            log-probs of scoring equal those of sampling; a LoRA adapter's dropout stays.
        num_tokens: the action space's size (the env's ``vocab_size``).
        suppress_tokens: bool ``[num_tokens]`` mask of tokens never emitted (or ``None``).
        precision: ``"fp32"`` or ``"bf16"`` (the forward pass under ``torch.autocast`` in
            bfloat16 on the input's device; logits are returned in float32).

    Attributes:
        merge_for_sampling: whether :func:`merged_lora` merges this policy's LoRA adapters while
            it samples (the ``lora`` block's ``merge_for_sampling``; ``True`` by default).
    """

    supports_logits_to_keep = True
    merge_for_sampling: bool = True

    def __init__(
        self,
        lm: Any,
        num_tokens: int,
        suppress_tokens: torch.Tensor | None = None,
        precision: str = "fp32",
    ) -> None:
        from nlhf_envs.text.hf import _cache_keyword

        super().__init__()
        self.lm = lm
        self.precision = precision
        #: the modules transformers checkpoints (empty until :meth:`enable_gradient_checkpointing`)
        self._checkpointed: list[torch.nn.Module] = []
        self.num_tokens = int(num_tokens)
        self._cache_kw = _cache_keyword(lm)
        mask = (
            torch.zeros(self.num_tokens, dtype=torch.bool)
            if suppress_tokens is None
            else suppress_tokens.clone().bool()
        )
        self.register_buffer("suppress_mask", mask, persistent=False)
        self._suppress = bool(mask.any())

    @property
    def vocab_size(self) -> int:
        """The number of tokens the policy scores."""
        return self.num_tokens

    def train(self, mode: bool = True) -> HFCausalPolicy:
        """Training mode for the policy, never for the causal LM's own layers: models read
        ``self.training`` for attention dropout (GPT-2 passes ``config.attn_pdrop`` to SDPA), so
        the LM stays in eval mode and only a LoRA adapter's layers follow ``mode``.

        The adapter's layers (peft's tuner layers: the wrapper of each targeted module) are put in
        training mode as a whole, their wrapped base layer back in eval mode: peft (0.22 and
        later) resets an adapter's dropout to its layer's mode whenever the adapter is enabled
        again (after ``disable_adapter()``, the reference's forward), so setting the dropout
        alone would be undone by the next reference forward."""
        self.training = mode
        _set_modes(self.lm, mode)
        return self

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the training forward recomputes the layers' activations in the backward pass."""
        return bool(self._checkpointed)

    def enable_gradient_checkpointing(self) -> None:
        """Gradient (activation) checkpointing for the passes that build a graph, through
        ``transformers``' own ``activation_checkpointing_enable`` (``gradient_checkpointing_enable``
        before transformers 5.x), non-reentrant.

        ``transformers`` checkpoints a layer only in training mode, and turns the KV cache off
        there. This policy keeps the causal LM in eval mode (so no dropout acts) and marks only
        the checkpointed layers as training, only for a forward pass with gradients and no cache
        (:meth:`forward`): generation keeps its KV cache, and scoring under ``torch.no_grad()``
        runs as before. A layer-level float dropout rate (read with ``self.training``) is set to 0
        on the marked layers, which are this policy's own (the env's model is untouched).

        Raises:
            agents.config.ConfigError: when the model does not support it.
        """
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise ConfigError(
                f"gradient_checkpointing: {type(base).__name__} does not support gradient "
                "checkpointing in transformers"
            )
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is None:  # transformers before 5.x
            enable = base.gradient_checkpointing_enable
        enable({"use_reentrant": False})
        marked = [m for m in base.modules() if getattr(m, "gradient_checkpointing", False) is True]
        for module in marked:
            for name, value in vars(module).items():
                if "dropout" in name and isinstance(value, float):
                    setattr(module, name, 0.0)
        self._checkpointed = marked

    @contextlib.contextmanager
    def _checkpointing(self, active: bool) -> Iterator[None]:
        if not active:
            yield
            return
        for module in self._checkpointed:
            module.training = True  # the layer alone: its sub-modules stay in eval mode
        try:
            yield
        finally:
            for module in self._checkpointed:
                module.training = False

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        *,
        logits_to_keep: int = 0,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, Any]:
        """Logits ``[B, T, V]`` (float32; the last ``logits_to_keep`` positions when it is
        positive) and the model's cache (``None`` with ``use_cache=False``)."""
        from nlhf_envs.text.hf import causal_lm_logits

        checkpoint = (
            bool(self._checkpointed) and torch.is_grad_enabled() and past_key_values is None
        )
        with self._checkpointing(checkpoint):
            return causal_lm_logits(
                self.lm, self._cache_kw, input_ids, attention_mask, past_key_values,
                self.num_tokens, self.suppress_mask if self._suppress else None,
                bf16=self.precision == "bf16", logits_to_keep=logits_to_keep,
                use_cache=use_cache and not checkpoint,
            )  # fmt: skip


class PromptPassMemo:
    """``pi_theta`` (an :class:`HFCausalPolicy`) as one training step of self-play calls it, with
    the prompts' forward pass made once for generation and for the scoring pass with gradients.

    Generation's first call runs over the batch's distinct prompts and builds their KV cache;
    the policy's scoring pass (:func:`~nlhf_envs.text.engine.token_log_probs` with
    ``prompt_rows``) runs the same prompts through the same weights first. While armed, the
    memo makes generation's prompt pass with gradients and keeps its logits and a copy of its
    cache (:func:`~nlhf_envs.text.hf_cache.copy_cache`); the next prompt pass with gradients on the
    same ids and mask gets them (once) instead of a second forward. Every other call is the
    policy's. The values are the ones a second forward gives: the same weights, inputs and
    modes (the caller arms it only without dropout, gradient checkpointing, micro-batches or
    several processes, and only between the weights' updates, see
    ``TextAgent.prompt_pass_memo``).

    Args:
        policy: ``pi_theta``.
    """

    supports_logits_to_keep = True

    def __init__(self, policy: HFCausalPolicy) -> None:  # noqa: D107 - documented on the class
        self.policy = policy
        self.armed = True
        self._kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any] | None = None

    @property
    def vocab_size(self) -> int:
        """The number of tokens the policy scores."""
        return self.policy.vocab_size

    @property
    def gradient_checkpointing(self) -> bool:
        """The policy's (see :attr:`HFCausalPolicy.gradient_checkpointing`)."""
        return self.policy.gradient_checkpointing

    def clear(self) -> None:
        """Disarm, and drop a kept pass (and the graph it holds)."""
        self.armed = False
        self._kept = None

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        *,
        logits_to_keep: int = 0,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, Any]:
        """As :meth:`HFCausalPolicy.forward`."""
        from nlhf_envs.text.hf_cache import copy_cache

        prompt_pass = (
            past_key_values is None
            and logits_to_keep == 1
            and use_cache
            and attention_mask is not None
        )
        if prompt_pass and self._kept is not None and torch.is_grad_enabled():
            ids, mask, logits, cache = self._kept
            if (
                ids.shape == input_ids.shape
                and torch.equal(ids, input_ids)
                and torch.equal(mask, attention_mask)
            ):
                self._kept = None
                return logits, cache
        if prompt_pass and self.armed:
            self.armed = False
            with torch.enable_grad():
                logits, cache = self.policy(input_ids, attention_mask, logits_to_keep=1)
            kept = copy_cache(cache)
            if kept is not None and logits.requires_grad:
                self._kept = (input_ids, attention_mask, logits, kept)
            return logits, cache
        return self.policy(
            input_ids,
            attention_mask,
            past_key_values,
            logits_to_keep=logits_to_keep,
            use_cache=use_cache,
        )


# ---------------------------------------------------------------------------------- HF engine


class TextJudgeProbs:
    """The env's text judge with the token-level ``prob`` interface of the engine's judges.

    ``prob(prompt_ids, a, b, prompt_mask=, mask_a=, mask_b=)`` maps each prompt row back to the
    prompt it encodes (every prompt of the env is registered by :class:`HFDuelEngine`), decodes
    both answers without special tokens (as the env does) and asks the judge, in one batch, for
    ``P(a > b | x)``.
    """

    def __init__(self, env: Any, texts: dict[tuple[int, ...], str]) -> None:
        self.env = env
        self.texts = texts
        self.device = torch.device("cpu")

    def _decode(self, tokens: torch.Tensor, mask: torch.Tensor) -> list[str]:
        rows = [tokens[i][mask[i]].tolist() for i in range(tokens.shape[0])]
        return self.env.tokenizer.batch_decode(rows, skip_special_tokens=True)

    @torch.no_grad()
    def prob(
        self,
        prompt_ids: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        *,
        prompt_mask: torch.Tensor,
        mask_a: torch.Tensor,
        mask_b: torch.Tensor,
    ) -> torch.Tensor:
        """``P(a > b | x)``, float32 ``[B]`` on the CPU."""
        ids, pm = prompt_ids.cpu(), prompt_mask.cpu().bool()
        prompts = []
        for i in range(ids.shape[0]):
            key = tuple(ids[i][pm[i]].tolist())
            if key not in self.texts:
                raise ValueError(f"prompt row {i} is not one of the env's prompts")
            prompts.append(self.texts[key])
        ta, tb = self._decode(a.cpu(), mask_a.cpu()), self._decode(b.cpu(), mask_b.cpu())
        return self.env._judge(prompts, list(zip(ta, tb, strict=True)))


class HFDuelEngine(DuelEngine):
    """:class:`~nlhf_envs.text.engine.DuelEngine` over an ``nlhf/HFTokenDuel-v0`` env.

    Prompts are the env's (``env.prompts[split]``, encoded once by ``env.encode_prompt`` and
    left-padded with the pad id; a drawn batch is cut to its longest prompt); answers end with the env's EOS; the
    judge is the env's text judge on decoded answers (:class:`TextJudgeProbs`). ``generate_pair``,
    ``score`` and ``play`` are the parent's. The ground truth exists only for envs built by
    ``HFTokenDuelEnv.from_world`` (the world's annotator population; same token ids).

    Args:
        env: the :class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv`.
        payer: ``"judge"`` or ``"ground_truth"`` (``from_world`` envs only).
        max_new_tokens: the longest answer, EOS included.
        device: where prompts and answers live.
        sampler: as in :class:`~nlhf_envs.text.engine.DuelEngine`.
        reward_mode: the payment rule (only ``outcome`` and ``prob`` are read by the agents).

    Raises:
        agents.config.ConfigError: for ``payer="ground_truth"`` on an env without a ground truth.
    """

    def __init__(  # noqa: D107 - documented on the class
        self,
        env: Any,
        *,
        payer: str = "judge",
        max_new_tokens: int | None = None,
        device: torch.device | str = "cpu",
        sampler: str = "multinomial",
        reward_mode: str = "outcome",
    ) -> None:
        from nlhf_envs.rewards import check_reward_mode
        from nlhf_envs.text.hf_prompts import prompt_text

        self.env = env
        self.world = getattr(env, "world", None)
        self.sampler = sampler
        self.reward_mode = check_reward_mode(reward_mode)
        self.payer = payer
        self.device = torch.device(device)
        self.max_new_tokens = int(env.max_new_tokens if max_new_tokens is None else max_new_tokens)
        self.prompt_len = int(env.max_prompt_tokens)
        self.eos_id, self.pad_id = int(env.eos_id), int(env.pad_id)
        self.vocab_size = int(env.vocab_size)
        self.tokenizer = env.tokenizer
        self._splits: dict[str, tuple[list[str], torch.Tensor, torch.Tensor]] = {}
        texts: dict[tuple[int, ...], str] = {}
        for split in ("train", "heldout"):
            for i, prompt in enumerate(env.prompts[split]):
                texts.setdefault(tuple(env.encode_prompt(prompt, i)), prompt_text(prompt))
        self.judge = TextJudgeProbs(env, texts)
        self.truth = None
        if self.world is not None:
            from nlhf_envs.text.ground_truth import ground_truth

            self.truth = ground_truth(self.world)
        elif payer == "ground_truth":
            raise ConfigError(
                "payer: 'ground_truth' needs a game with a ground truth (an HFTokenDuel env built "
                "by HFTokenDuelEnv.from_world); this env has only its judge"
            )

    def _split(self, split: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        if split not in self._splits:
            from nlhf_envs.text.hf_prompts import prompt_text

            pool = self.env.prompts.get(split) if split in ("train", "heldout", "all") else None
            if not pool:
                raise ValueError(f"the env has no {split!r} prompts")
            width = self.prompt_len
            ids = torch.full((len(pool), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(pool), width), dtype=torch.bool)
            for r, prompt in enumerate(pool):
                row = self.env.encode_prompt(prompt, r)
                ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[r, width - len(row) :] = True
            texts = [prompt_text(p) for p in pool]
            self._splits[split] = (texts, ids.to(self.device), mask.to(self.device))
        return self._splits[split]

    def encode_prompts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask of ``texts`` (each must be one of the env's prompts)."""
        rows = [self.env.encode_prompt(t, i) for i, t in enumerate(texts)]
        width = self.prompt_len
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[r, width - len(row) :] = True
        return ids.to(self.device), mask.to(self.device)

    def sample_prompts(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` prompts of the env's ``split`` uniformly: ``(texts, ids, mask)``
        (the draw of :meth:`DuelEngine.sample_prompts`: one ``randint`` of the generator),
        left-padded to the longest prompt drawn, not to ``max_prompt_tokens``."""
        texts, ids, mask = self._split(split)
        pick = torch.randint(
            len(texts), (batch_size,), generator=generator, device=generator.device
        )
        pick_list = pick.tolist()
        pick = pick.to(ids.device)
        return ([texts[i] for i in pick_list], *trim_left_padding(ids[pick], mask[pick]))

    def generate(
        self,
        policy: Any,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        temperature: float = 1.0,
        use_cache: bool = True,
        prompt_rows: torch.Tensor | None = None,
    ) -> Generation:
        """:func:`~nlhf_envs.text.engine.generate` with the env's EOS and ``max_new_tokens``; a
        LoRA policy samples with its adapters merged into its weights (:func:`merged_lora`)."""
        _check_prompts(prompt_ids, prompt_mask, self.vocab_size)
        modules = _modules_of(policy)
        training = [m for m in modules if m.training]
        for m in training:  # sample without (LoRA) dropout
            m.eval()
        try:
            with merged_lora(modules):
                return generate(
                    policy,
                    prompt_ids,
                    prompt_mask,
                    self.max_new_tokens,
                    generator=generator,
                    temperature=temperature,
                    use_cache=use_cache,
                    eos_id=self.eos_id,
                    sampler=self.sampler,
                    prompt_rows=prompt_rows,
                )
        finally:
            for m in training:
                m.train()


def _set_modes(lm: torch.nn.Module, mode: bool) -> None:
    """The end state of ``lm.eval()`` followed by ``train(mode)`` on each adapter layer and
    ``eval()`` on its base layer (:meth:`HFCausalPolicy.train`), in one walk over the modules
    (``nn.Module.train`` walks them all at every call: three walks, 20 ms a call at 88M)."""
    stack: list[tuple[torch.nn.Module, bool]] = [(lm, False)]
    while stack:
        module, on = stack.pop()
        children = module._modules
        if mode and "lora_dropout" in children and "base_layer" in children:
            on = True  # an adapter layer: its own parts follow mode, its base layer does not
        module.training = on
        base = children.get("base_layer") if on else None
        for child in children.values():
            if child is not None:
                stack.append((child, on and child is not base))


@contextlib.contextmanager
def merged_lora(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Inside: the LoRA layers of the fp32 :class:`HFCausalPolicy` objects in ``modules`` (those
    whose ``merge_for_sampling`` is on) compute ``x W'^T + b`` with the merged weight
    ``W' = W + s B A`` (peft's ``get_delta_weight``, made at the layer's first call and dropped at
    the exit) instead of ``x W^T + b + s B (A x)``:
    one matrix product for three, without peft's per-call Python. For sampling: the weights do
    not change inside, and the values equal peft's up to float rounding.

    A call takes peft's own path whenever the merge would not be that layer's output: with
    gradients on, the layer in training mode (dropout), its adapters disabled (a LoRA
    ``pi_ref`` in a geometric mixture shares the layers) or merged, more or other than one plain
    LoRA adapter active (DoRA and other variants), extra arguments (mixed-adapter batches). Models
    where peft's ``disable_adapter()`` does more than switch layers (FSDP, a LoRA bias, wrapped
    ``modules_to_save``) are not touched. The base weights stay as they are (nothing is merged
    into them), and the merged weights of a layer exist only inside, about one copy of the
    targeted base weights."""
    patched = []
    for module in modules:
        if (
            isinstance(module, HFCausalPolicy)
            and module.precision == "fp32"
            and module.merge_for_sampling
        ):
            patched += [
                layer for layer in _switchable_adapter_layers(module.lm) if _mergeable(layer)
            ]
    for layer in patched:
        layer.forward = _merged_forward(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward  # the class's forward again


def _mergeable(layer: Any) -> bool:
    """A peft LoRA ``Linear`` over a ``Linear`` (or GPT-2's ``Conv1D``, ``fan_in_fan_out``)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    base = getattr(layer, "base_layer", None)
    return type(layer) is LoraLinear and (
        isinstance(base, torch.nn.Linear) or type(base).__name__ == "Conv1D"
    )


def _merged_forward(layer: Any) -> Any:
    """``layer``'s forward with its active adapter merged (see :func:`merged_lora`)."""
    original = type(layer).forward.__get__(layer)
    weights: dict[str, torch.Tensor] = {}

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        names = layer.active_adapters
        if (
            args
            or kwargs
            or torch.is_grad_enabled()
            or layer.training
            or layer.disable_adapters
            or layer.merged
            or len(names) != 1
            or names[0] not in layer.lora_A
            or names[0] in getattr(layer, "lora_variant", {})
            or getattr(layer, "use_dora", {}).get(names[0], False)
        ):
            return original(x, *args, **kwargs)
        name = names[0]
        w = weights.get(name)
        if w is None:
            w = weights[name] = _merged_weight(layer, name)
        if x.dtype != w.dtype:
            return original(x, *args, **kwargs)
        return torch.nn.functional.linear(x, w, layer.base_layer.bias)

    return forward


def _merged_weight(layer: Any, name: str) -> torch.Tensor:
    """``W + s B A`` of a LoRA layer's adapter ``name``, as ``F.linear`` takes it (``[out, in]``):
    one ``addmm`` (the product, its scaling and the sum in one call) where peft's
    ``get_delta_weight`` makes ``B A``, scales it and leaves the sum to a third pass."""
    base = layer.base_layer.weight
    a, b, s = layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name]
    if layer.fan_in_fan_out:  # GPT-2's Conv1D holds W as [in, out]
        return torch.addmm(base, a.t(), b.t(), alpha=s).t()
    return torch.addmm(base, b, a, alpha=s)


def _modules_of(policy: Any, depth: int = 0) -> list[torch.nn.Module]:
    """The modules a policy runs: itself, or those of a geometric mixture / reference view."""
    if isinstance(policy, torch.nn.Module):
        return [policy]
    if depth > 2:
        return []
    found: list[torch.nn.Module] = []
    for attr in ("policy", "reference"):
        part = getattr(policy, attr, None)
        if part is not None:
            found += [m for m in _modules_of(part, depth + 1) if all(m is not f for f in found)]
    return found


# ---------------------------------------------------------------------------------- factory


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in eval mode without gradients (in place); returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def make_backend(
    env: Any, config: Any, device: torch.device, reference: Any = None, seed: int = 0
) -> Backend:
    """The backend of ``env`` (see the module docstring).

    Args:
        env: the token-duel env (native or ``nlhf/HFTokenDuel-v0``).
        config: the agent's :class:`~agents.text.common.TextAgentConfig`.
        device: the agent's device.
        reference: ``pi_ref`` to use instead of the env's (native: a ``TinyCausalLM``; Hugging
            Face: a causal LM with the env's vocabulary, e.g. from a checkpoint).
        seed: seeds a LoRA adapter's random initialisation (its ``A`` matrices).

    Raises:
        agents.config.ConfigError: for a config the backend cannot run.
        TypeError: for an env that is neither.
    """
    max_new = config.max_new_tokens or env.max_new_tokens
    if max_new > env.max_new_tokens:
        raise ConfigError(
            f"max_new_tokens: {max_new} exceeds the env's max_new_tokens {env.max_new_tokens}"
        )
    if is_hf_env(env):
        return _hf_backend(env, config, device, max_new, reference, seed)
    return _native_backend(env, config, device, max_new, reference)


def resolved_sampler(sampler: str, *, hf: bool) -> str:
    """The engine's sampler for a config's ``sampler``: ``"auto"`` is ``"inverse_cdf"`` for a
    Hugging Face causal LM and ``"multinomial"`` for the native tiny models (the sampler of their
    shipped, seeded results); a named sampler is itself."""
    if sampler != "auto":
        return sampler
    return "inverse_cdf" if hf else "multinomial"


def _native_backend(
    env: Any, config: Any, device: torch.device, max_new: int, reference: Any
) -> Backend:
    from nlhf_envs.text.models import load_reference_policy

    if config.lora is not None:
        raise ConfigError(
            "lora: LoRA adapters need a Hugging Face causal LM (nlhf/HFTokenDuel-v0); the native "
            "TinyCausalLM is fine-tuned fully (remove the lora block)"
        )
    if config.init_from is not None:
        raise ConfigError(
            "init_from: starting from a saved Hugging Face folder needs nlhf/HFTokenDuel-v0"
        )
    if config.precision != "fp32":
        raise ConfigError(
            f"precision: {config.precision!r} is for Hugging Face causal LMs "
            "(nlhf/HFTokenDuel-v0); the native TinyCausalLM runs in fp32"
        )
    if config.gradient_checkpointing:
        raise ConfigError(
            "gradient_checkpointing: is for Hugging Face causal LMs (nlhf/HFTokenDuel-v0); the "
            "native TinyCausalLM keeps its activations (set it to false)"
        )
    judge = getattr(env, "judge", None)
    if judge is None or not hasattr(env, "max_new_tokens"):
        raise TypeError(
            "env must be a token-duel parallel env (nlhf/TokenDuel-v*, with .judge and "
            f".max_new_tokens, or nlhf/HFTokenDuel-v0); got {type(env).__name__}"
        )
    world = getattr(env, "world", None)
    if judge.device != device and hasattr(judge, "to"):
        judge = copy.deepcopy(judge).to(device)
    engine = DuelEngine(
        judge,
        payer=config.payer,
        max_new_tokens=max_new,
        device=device,
        world=world,
        sampler=resolved_sampler(config.sampler, hf=False),
    )
    truth = getattr(env, "truth", None)
    if truth is None:
        from nlhf_envs.text.ground_truth import ground_truth

        truth = ground_truth(world)
    ref = reference if reference is not None else load_reference_policy(world=world)
    return Backend("native", engine, truth, frozen(copy.deepcopy(ref)).to(device), ref)


def _hf_backend(
    env: Any, config: Any, device: torch.device, max_new: int, reference: Any, seed: int
) -> Backend:
    if config.eval_every and not env.prompts["heldout"]:
        raise ConfigError(
            "eval_every: the env has no held-out prompts to evaluate on (give the env "
            "heldout_prompts= or heldout_fraction=, or set eval_every: 0)"
        )
    engine = HFDuelEngine(
        env,
        payer=config.payer,
        max_new_tokens=max_new,
        device=device,
        sampler=resolved_sampler(config.sampler, hf=True),
    )
    ref_model = env.reference_model if reference is None else reference
    suppress = env.reference.suppress_mask

    def policy(lm: Any) -> HFCausalPolicy:
        return HFCausalPolicy(lm, env.vocab_size, suppress, config.precision)

    def own(lm: Any) -> Any:  # a model of this agent's own: its (non-LoRA) dropout off
        _disable_dropout(lm)
        return lm

    def with_checkpointing(p: HFCausalPolicy) -> HFCausalPolicy:
        if config.gradient_checkpointing:
            p.enable_gradient_checkpointing()
        return p

    def frozen_reference() -> HFCausalPolicy:
        # the env's weights, stored once: a twin of new modules over the same tensors
        return frozen(policy(own(shared_twin(ref_model)))).to(device)

    start = _start_model(config.init_from, config.lora is not None, env, ref_model)
    if config.lora is None:
        ref = frozen_reference()
        if start is None:  # pi_theta: the one trainable copy of the reference's weights
            return Backend("hf", engine, engine.truth, ref, with_checkpointing(ref))
        initial = with_checkpointing(policy(own(start.model)))  # loaded for this agent alone
        return Backend("hf", engine, engine.truth, ref, initial, owned=True)
    shared = start is None or start.model is None  # the adapter sits on the reference itself
    # the weights under the adapter, fingerprinted before its layers go in (the reference's,
    # which no adapter touches, when a saved adapter first needs it)
    fingerprint = None if shared else _fingerprint(start.model)
    base = own(shared_twin(ref_model) if shared else start.model)  # before the adapter's dropout
    with torch.random.fork_rng(devices=[]):  # the adapter's init is the agent's seed's
        torch.manual_seed(seed)
        lora = with_checkpointing(policy(with_lora(base, config.lora)))
    lora.merge_for_sampling = config.lora.merge_for_sampling
    if start is not None and start.adapter is not None:
        _load_adapter(lora.lm, start.adapter)
    if shared:
        return Backend(
            "lora", engine, engine.truth, None, lora, owned=True,
            base_folder=_local_folder(ref_model), base_model=ref_model,
            base_fingerprint=fingerprint,
        )  # fmt: skip
    return Backend(
        "lora", engine, engine.truth, frozen_reference(), lora, owned=True,
        base_folder=start.folder, base_model=None, base_fingerprint=fingerprint,
    )  # fmt: skip


def _fingerprint(model: Any) -> str:
    from nlhf_envs.text.hf_folders import weights_fingerprint

    return weights_fingerprint(model)


@dataclass
class _Start:
    """A checked ``init_from``: the model ``pi_theta`` starts from.

    Attributes:
        model: the loaded starting model (``None``: the env's reference, for an adapter trained
            on it).
        folder: the folder of that model (``None`` for the env's reference).
        adapter: the adapter folder to load on top of it (``None``: no adapter).
    """

    model: Any
    folder: Path | None
    adapter: Path | None


def _start_model(
    init_from: str | None, lora: bool, env: Any, reference_model: Any
) -> _Start | None:
    """The checked starting model of ``init_from`` (``None`` without one).

    ``init_from`` is a causal-LM folder (an SFT model, a previous run's full ``final_hf/``), or
    a LoRA adapter folder (a previous run's LoRA ``final_hf/``) with its base model named in
    ``adapter_config.json``. An adapter whose base has the env's reference weights sits on the
    reference itself (base stored once, ``pi_ref`` = the adapter disabled); on another base, that
    base is loaded and ``pi_ref`` stays the env's reference.

    Raises:
        agents.config.ConfigError: for a folder that is not a saved model or adapter, an adapter
            without a ``lora`` block, a model with fewer tokens than the env's tokenizer or
            saved with another tokenizer, or a base folder that cannot be read.
    """
    if init_from is None:
        return None
    folder = Path(init_from)
    adapter = (folder / "adapter_config.json").is_file()
    if not adapter and not (folder / "config.json").is_file():
        raise ConfigError(
            f"init_from: {folder} is not a saved model or adapter folder (no config.json or "
            "adapter_config.json)"
        )
    if adapter and not lora:
        raise ConfigError(
            f"init_from: {folder} holds a LoRA adapter; give the lora block it was trained with"
        )
    if not adapter:
        return _Start(_load_start_model(folder, "init_from", env), folder, None)
    import json

    try:
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"init_from: {folder}/adapter_config.json names no base model") from None
    if not base or not Path(base).is_dir():
        raise ConfigError(f"init_from: the adapter's base model {base!r} is not a local folder")
    base_model = _load_start_model(Path(base), "init_from (the adapter's base model)", env)
    mine, theirs = reference_model.state_dict(), base_model.state_dict()
    same = set(mine) == set(theirs) and all(
        mine[k].shape == theirs[k].shape and torch.equal(mine[k].cpu(), theirs[k]) for k in mine
    )
    if same:  # an adapter trained on the env's reference: it sits on the reference itself
        return _Start(None, None, folder)
    return _Start(base_model, Path(base), folder)


def _load_start_model(folder: Path, what: str, env: Any) -> Any:
    """A causal LM from ``folder`` that can play with the env's tokenizer (eval mode)."""
    from nlhf_envs.text.hf import saved_architecture
    from nlhf_envs.text.hf_folders import check_no_folder_code, load_causal_lm, load_tokenizer

    check_no_folder_code(folder, what, ConfigError)  # before reading anything else of it
    arch = saved_architecture(folder)
    if arch is not None:
        raise ConfigError(f"{what}: {folder} holds a {arch}, not a causal language model")
    model = load_causal_lm(folder, what, ConfigError).eval()
    head = model.get_output_embeddings()
    n = int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)
    if n < env.vocab_size:
        raise ConfigError(
            f"{what}: the model in {folder} scores {n} tokens; the env's tokenizer has "
            f"{env.vocab_size}"
        )
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        theirs = load_tokenizer(folder, f"{what} (its tokenizer)", ConfigError).get_vocab()
        if theirs != env.tokenizer.get_vocab():
            raise ConfigError(
                f"{what}: the tokenizer saved in {folder} is not the env's (other tokens or ids); "
                "pi_theta must use the env's tokenizer"
            )
    return model


def _safetensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / name
    if not path.is_file():
        raise ConfigError(f"init_from: {folder} has no {name}")
    return load_file(str(path))  # a safe format: tensors only, nothing is unpickled


def _load_adapter(peft_model: Any, folder: Path) -> None:
    """Load a saved adapter's weights into the fresh adapter of ``peft_model`` (exactly)."""
    from peft import set_peft_model_state_dict

    state = _safetensors(folder, "adapter_model.safetensors")
    try:
        result = set_peft_model_state_dict(peft_model, state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1]
        raise ConfigError(
            f"init_from: the adapter in {folder} does not fit the lora block ({first})"
        ) from None
    loaded = {k for k in peft_model.state_dict() if "lora_" in k} - set(result.missing_keys)
    want = {k for k in peft_model.state_dict() if "lora_" in k}
    if result.unexpected_keys or loaded != want:
        raise ConfigError(
            f"init_from: the adapter in {folder} does not fit the lora block (its layers or "
            "target modules differ)"
        )


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def with_lora(lm: Any, lora: LoraSettings) -> Any:
    """``lm`` (modified in place) inside a ``peft`` model with one fresh LoRA adapter
    (``"default"``; ``B = 0``, so it starts exactly at ``lm``). GPT-2's ``Conv1D`` layers get
    ``fan_in_fan_out``. No ``modules_to_save``: every base weight stays frozen.

    Raises:
        agents.config.ConfigError: when ``peft`` is missing, or a target module matches no layer
            of ``lm`` (one line naming it and the model's layers).
    """
    try:
        import peft
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults
    except ImportError:
        raise ConfigError("lora: needs the peft package (pip install 'nlhf-zoo[hf]')") from None
    names = [n for n, _ in lm.named_modules() if n]
    targets = lora.target_modules
    if targets is None:
        model_type = getattr(lm.config, "model_type", None)
        if model_type not in defaults:
            raise ConfigError(
                f"lora.target_modules: peft has no default for model type {model_type!r}; name "
                "the layers (e.g. [q_proj, v_proj])"
            )
        targets = list(defaults[model_type])
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        layers = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in lm.named_modules()
                if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"
            }
        )
        raise ConfigError(
            f"lora.target_modules: {', '.join(map(repr, missing))} match no module of "
            f"{type(lm).__name__} (its linear layers: {', '.join(layers)})"
        )
    conv1d = any(
        type(m).__name__ == "Conv1D"
        for n, m in lm.named_modules()
        if any(_matches(n, t) for t in targets)
    )
    cfg = peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(targets),
        fan_in_fan_out=conv1d,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.simplefilter("ignore", FutureWarning)
        return peft.get_peft_model(lm, cfg)


# ---------------------------------------------------------------------------------- HF folders


def hf_folder_of(checkpoint: str | os.PathLike[str]) -> Path:
    """The Hugging Face folder saved next to a checkpoint: ``final.npz`` -> ``final_hf``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + "_hf")


def _local_folder(model: Any) -> Path | None:
    name = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", "")
    path = Path(name) if name else None
    if path is not None and (path / "config.json").is_file():
        return path.resolve()
    return None


def replace_folder(tmp: Path, folder: Path) -> None:
    """Put ``tmp`` at ``folder``, replacing an older one only once the new one is complete."""
    old = folder.with_name(f"{folder.name}.old{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def save_hf_folder(agent: Any, folder: str | os.PathLike[str], *, merged: bool = False) -> Path:
    """Write ``agent``'s policy as a Hugging Face folder (written aside, then moved in place).

    Full fine-tuning: the model's ``save_pretrained`` output (``config.json``,
    ``model.safetensors``) and the tokenizer. LoRA: the adapter's ``save_pretrained`` output
    (``adapter_config.json``, ``adapter_model.safetensors``) and the tokenizer; the adapter's
    ``base_model_name_or_path`` is the folder of the model under the adapter (the env's reference,
    or the ``init_from`` model) when it was loaded from one, else that model is saved in
    ``base_model/`` inside the folder. ``merged=True`` writes the
    merged model instead (``merge_and_unload``: a plain causal LM). Without LoRA it changes
    nothing.

    Returns:
        The folder.
    """
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return _save_hf_folder(agent, folder, merged)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _save_hf_folder(agent: Any, folder: Path, merged: bool) -> Path:
    from nlhf_envs.text.hf_folders import weights_fingerprint, write_base_record

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        lm = agent.model.lm
        kind = agent.backend.kind
        if kind == "lora" and merged:
            lm = copy.deepcopy(lm).merge_and_unload()  # a copy: the agent keeps its adapter
            kind = "hf"
        if kind == "lora":
            base = agent.backend.base_folder  # the folder of the model under the adapter
            if base is None:  # that model was built in memory: keep a copy with the adapter
                base = (folder / "base_model").resolve()
                model = agent.backend.base_model
                model = agent.env.reference_model if model is None else model
                model.save_pretrained(tmp / "base_model")
                agent.env.tokenizer.save_pretrained(tmp / "base_model")
            config = lm.peft_config["default"]
            before = config.base_model_name_or_path
            config.base_model_name_or_path = str(base)
            try:
                lm.save_pretrained(tmp)
            finally:
                config.base_model_name_or_path = before
            if agent.backend.base_fingerprint is None:  # the reference, which no adapter touches
                agent.backend.base_fingerprint = weights_fingerprint(agent.backend.base_model)
            # the base's fingerprint, checked by load_adapter
            write_base_record(tmp, base, agent.backend.base_fingerprint)
        else:
            lm.save_pretrained(tmp)
        _save_suppressed_tokens(agent.model, tmp)
        agent.env.tokenizer.save_pretrained(tmp)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _save_suppressed_tokens(policy: Any, folder: Path) -> None:
    """Write the tokens ``policy`` never emits (the env's answer alphabet's complement) as
    ``suppress_tokens`` of the folder's ``generation_config.json``: ``generate`` of
    ``transformers`` then samples the trained policy, and nlhf-zoo's participants read it back
    (:func:`nlhf_envs.text.hf_folders.suppressed_tokens`). Without an alphabet nothing is
    written (a full model's own generation config is kept as saved)."""
    mask = getattr(policy, "suppress_mask", None)
    if mask is None or not bool(mask.any()):
        return
    import transformers

    path = folder / "generation_config.json"
    if path.is_file():
        config = transformers.GenerationConfig.from_pretrained(folder)
    else:
        config = transformers.GenerationConfig()
    config.suppress_tokens = [int(t) for t in torch.nonzero(mask.cpu()).flatten().tolist()]
    config.save_pretrained(folder)


def export_merged(agent: Any, folder: str | os.PathLike[str]) -> Path:
    """Write ``agent``'s policy with its LoRA adapter merged into the base weights (a plain
    ``AutoModelForCausalLM`` folder with the tokenizer; full fine-tuning: the model as it is)."""
    return save_hf_folder(agent, folder, merged=True)
