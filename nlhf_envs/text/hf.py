"""Hugging Face adapter (extra ``hf``): ``transformers`` causal LMs as duel policies, text judges.

- :class:`HFPolicy` makes any ``transformers`` causal LM a policy of :mod:`nlhf_envs.text.engine`
  (``policy(input_ids, attention_mask, past_key_values) -> (logits, cache)``), with position ids computed
  from the mask so left-padded prompts and the KV cache work.
- :func:`make_hf_tokenizer` builds a ``PreTrainedTokenizerFast`` with the world's vocabulary (same ids), so
  a model over that vocabulary plays in :class:`~nlhf_envs.text.engine.DuelEngine` and the env directly.
- :class:`HFTextDuel` plays duels between models with *any* tokenizer: prompts are encoded with it,
  answers decoded to text and scored by any text judge ``judge(prompts, completion_pairs)`` (the learned
  judge, the ground truth, or your own callable).

The token duel over Hugging Face parts builds on these: :mod:`nlhf_envs.text.hf_env`
(``nlhf/HFTokenDuel-v0``), :mod:`~nlhf_envs.text.hf_judges` (callable, reward-model, pairwise and
TRL-style judges), :mod:`~nlhf_envs.text.hf_prompts` (prompt files, datasets, splits),
:mod:`~nlhf_envs.text.hf_convert` (the tiny worlds' models as GPT-2),
:mod:`~nlhf_envs.text.hf_players` (causal LMs in tournament seats) and
:mod:`~nlhf_envs.text.hf_estimate` (estimated Nash metrics).

Nothing here downloads anything; tests build tiny random models from configs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nlhf_envs.rewards import check_reward_mode
from nlhf_envs.text import world
from nlhf_envs.text.engine import Generation, generate, pay
from nlhf_envs.text.judging import check_probabilities
from nlhf_envs.text.tokenizer import SPECIAL_TOKENS, Tokenizer

try:
    import transformers
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("nlhf_envs.text.hf needs the 'hf' extra: pip install 'nlhf-zoo[hf]'") from err

TextJudge = Callable[[list[str], list[tuple[str, str]]], Any]


def _cache_keyword(model: Any) -> str:
    """The keyword under which ``model.forward`` takes the KV cache.

    transformers 5.x renamed ``past_key_values=`` to ``cache=`` (the old keyword is deprecated and
    goes away in 5.40); older releases only know ``past_key_values=``. This is the one
    compatibility point of the Hugging Face path.
    """
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wrappers
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: Any) -> Any:
    """The cache of a model output (``cache`` in transformers 5.x, ``past_key_values`` before)."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else getattr(out, "past_key_values", None)


def causal_lm_logits(
    model: Any,
    cache_keyword: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    past_key_values: Any,
    num_tokens: int,
    suppress_mask: torch.Tensor | None = None,
    bf16: bool = False,
    logits_to_keep: int = 0,
    use_cache: bool = True,
) -> tuple[torch.Tensor, Any]:
    """One call of a ``transformers`` causal LM as the engine's policies make it.

    Positions come from the attention mask (left padding: a row's first real token is position 0),
    the cache is passed under the model's own keyword (``cache_keyword``: ``cache`` or
    ``past_key_values``), logits beyond ``num_tokens`` (a padded embedding matrix) are cut, returned
    in float32, and ``suppress_mask`` tokens get ``-1e4``. ``bf16`` runs the call under bfloat16
    autocast (weights and the returned logits stay float32). ``logits_to_keep > 0`` computes the
    logits of the last that many positions only (the model's own ``logits_to_keep`` when its
    ``forward`` takes it, else a slice); ``use_cache=False`` builds no cache (``None`` returned).

    Returns:
        ``(logits [B, T or logits_to_keep, num_tokens], cache)``.
    """
    t = input_ids.shape[1]
    if attention_mask is None:
        past = 0 if past_key_values is None else int(past_key_values.get_seq_length())
        attention_mask = torch.ones(
            input_ids.shape[0], past + t, dtype=torch.long, device=input_ids.device
        )
    mask = attention_mask.long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -t:]
    kwargs = {cache_keyword: past_key_values} if past_key_values is not None else {}
    keep_in_model = bool(logits_to_keep) and _takes_logits_to_keep(model)
    if keep_in_model:
        kwargs["logits_to_keep"] = int(logits_to_keep)
    # the model slices the kept positions out of its hidden states; a slice that is not
    # contiguous makes torch's matmul run the output layer as a batch of products against its
    # weight expanded per row (2x the time of one product at 88M parameters): copy it first
    head = getattr(model, "get_output_embeddings", lambda: None)() if keep_in_model else None
    hook = None
    if isinstance(head, torch.nn.Module):
        hook = head.register_forward_pre_hook(_contiguous_input)
    try:
        with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=use_cache,
                **kwargs,
            )
    finally:
        if hook is not None:
            hook.remove()
    logits = out.logits
    if logits_to_keep and not keep_in_model:
        logits = logits[:, -int(logits_to_keep) :]
    if logits.shape[-1] != num_tokens:
        logits = logits[..., :num_tokens]
    logits = logits.float()
    if suppress_mask is not None:
        logits = logits.masked_fill(suppress_mask.to(logits.device), -1.0e4)
    return logits, (_output_cache(out) if use_cache else None)


def _contiguous_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A forward pre-hook: the first argument made contiguous (the rest as they are)."""
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def _takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` (of the model under a PEFT wrapper) takes ``logits_to_keep``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes(type(base), "logits_to_keep")


@functools.cache
def _forward_takes(cls: type, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - no signature
        return False


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a ``transformers`` causal language model (a class of the
    ``AutoModelForCausalLM`` mapping, or named ``...ForCausalLM``/``...LMHeadModel``, as PEFT's
    ``PeftModelForCausalLM`` is)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = type(model).__name__
    return name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) or name.endswith(
        ("ForCausalLM", "LMHeadModel")
    )


def saved_architecture(folder: Any) -> str | None:
    """The non-causal-LM architecture a saved model folder declares (``config.json``'s
    ``architectures``), or ``None`` when it declares a causal LM or nothing.

    ``AutoModelForCausalLM.from_pretrained`` would build a causal LM from, e.g., a saved
    ``GPT2ForSequenceClassification`` (same ``model_type``) with a fresh output head; this check
    refuses that instead.
    """
    import json
    from pathlib import Path

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = Path(folder) / "config.json"
    try:
        archs = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    known = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    names = [str(a) for a in archs]
    if not names or any(a in known or a.endswith(("ForCausalLM", "LMHeadModel")) for a in names):
        return None
    return ", ".join(names)


class HFPolicy:
    """A ``transformers`` causal LM as a duel policy.

    Args:
        model: a causal LM (``AutoModelForCausalLM``-like: returns ``logits`` and a cache).
        num_tokens: keep only the first ``num_tokens`` logits (the tokenizer's size, when the model
            pads its embedding matrix beyond it); default all.
        suppress_tokens: token ids whose logits are set to ``-1e4`` (never sampled), as
            :class:`~nlhf_envs.text.models.TinyCausalLM` does with its suppressed tokens.
    """

    def __init__(
        self,
        model: Any,
        *,
        num_tokens: int | None = None,
        suppress_tokens: Sequence[int] = (),
    ) -> None:
        self.model = model
        self._cache_kw = _cache_keyword(model)
        width = int(model.config.vocab_size) if num_tokens is None else int(num_tokens)
        self.num_tokens = width
        suppress = torch.zeros(width, dtype=torch.bool)
        suppress[list(suppress_tokens)] = True
        self.suppress_mask = suppress if bool(suppress.any()) else None

    @classmethod
    def of_model(cls, model: Any, num_tokens: int | None = None) -> HFPolicy:
        """The policy a saved model plays: its logits with the tokens of its generation config's
        ``suppress_tokens`` (what ``generate`` masks; nlhf-zoo saves an answer alphabet's
        complement there) never sampled, cut to ``num_tokens``."""
        config = getattr(model, "generation_config", None)
        width = int(model.config.vocab_size) if num_tokens is None else int(num_tokens)
        tokens = [int(t) for t in (getattr(config, "suppress_tokens", None) or []) if t < width]
        return cls(model, num_tokens=num_tokens, suppress_tokens=tokens)

    @property
    def vocab_size(self) -> int:
        """The number of tokens the policy scores (``num_tokens``, default the model's vocabulary)."""
        return self.num_tokens

    supports_logits_to_keep = True

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
        *,
        logits_to_keep: int = 0,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, Any]:
        """Logits ``[B, T, V]`` and the model's cache (see :class:`~nlhf_envs.text.engine.Policy`;
        ``logits_to_keep`` and ``use_cache`` as in :func:`causal_lm_logits`)."""
        if self.suppress_mask is not None:
            self.suppress_mask = self.suppress_mask.to(input_ids.device)
        return causal_lm_logits(
            self.model, self._cache_kw, input_ids, attention_mask, past_key_values,
            self.num_tokens, self.suppress_mask, logits_to_keep=logits_to_keep,
            use_cache=use_cache,
        )  # fmt: skip


def make_hf_tokenizer(tokenizer: Tokenizer | None = None) -> Any:
    """A ``PreTrainedTokenizerFast`` with the world's vocabulary and ids (word level, whitespace split).

    With ``add_special_tokens=True`` (the default of ``tokenizer(text)``) a text is framed as the
    world's models read a prompt, ``<bos> words <sep>``; with ``add_special_tokens=False`` it gives the
    words' ids only. Decoding joins words with single spaces (no clean-up of spaces).
    """
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, normalizers, pre_tokenizers, processors

    tok = tokenizer or world.default_tokenizer()
    raw = RawTokenizer(models.WordLevel({w: i for i, w in enumerate(tok.vocab)}, unk_token="<unk>"))
    raw.normalizer = normalizers.Lowercase()
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    pad, bos, eos, sep, unk = SPECIAL_TOKENS
    raw.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {sep}",
        special_tokens=[(bos, tok.bos_id), (sep, tok.sep_id)],
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        sep_token=sep,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


@dataclass
class TextDuelResult:
    """Duels played by :class:`HFTextDuel`: texts, generations and payment (float ``[B]`` tensors)."""

    prompts: list[str]
    answers_0: list[str]
    answers_1: list[str]
    generation_0: Generation
    generation_1: Generation
    prob: torch.Tensor
    outcome: torch.Tensor
    reward_0: torch.Tensor
    reward_1: torch.Tensor


class HFTextDuel:
    """Duels between policies sharing a Hugging Face tokenizer, judged on text.

    Args:
        tokenizer: a ``transformers`` tokenizer with an ``eos_token_id`` (and ``pad_token_id``, else the
            eos is used for padding). Prompts are left-padded.
        judge: any ``judge(prompts, completion_pairs) -> probabilities`` (``P(first > second)``); its
            output is validated (NaN or values outside [0, 1] raise ``ValueError``).
        max_new_tokens: the longest answer, eos included.
        reward_mode: as in :mod:`nlhf_envs.rewards`.
    """

    def __init__(
        self,
        tokenizer: Any,
        judge: TextJudge,
        *,
        max_new_tokens: int = world.MAX_NEW_TOKENS,
        reward_mode: str = "outcome",
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs an eos token to end answers")
        self.tokenizer = tokenizer
        self.judge = judge
        self.max_new_tokens = int(max_new_tokens)
        self.reward_mode = check_reward_mode(reward_mode)

    def encode_prompts(
        self, prompts: Sequence[str], device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and boolean mask."""
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        rows = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(1, *(len(r) for r in rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r)
                mask[i, width - len(r) :] = True
        return ids.to(device), mask.to(device)

    def decode(self, gen: Generation) -> list[str]:
        """Answer texts (special tokens, the eos among them, skipped)."""
        rows = [gen.tokens[i][gen.mask[i]].tolist() for i in range(gen.tokens.shape[0])]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    def play(
        self,
        policy_0: Any,
        policy_1: Any,
        prompts: Sequence[str],
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str = "cpu",
        temperature: float = 1.0,
    ) -> TextDuelResult:
        """Sample both answers with KV caches, judge the texts, and pay (outcomes from ``generator``)."""
        ids, mask = self.encode_prompts(prompts, device)
        eos = self.tokenizer.eos_token_id
        gens = [
            generate(
                policy,
                ids,
                mask,
                self.max_new_tokens,
                generator=generator,
                temperature=temperature,
                eos_id=eos,
            )
            for policy in (policy_0, policy_1)
        ]
        texts_0, texts_1 = self.decode(gens[0]), self.decode(gens[1])
        pairs = list(zip(texts_0, texts_1, strict=True))
        prob = check_probabilities(self.judge(list(prompts), pairs), len(prompts), "judge")
        u = torch.rand(len(prompts), generator=generator, device=ids.device)
        outcome, r0, r1 = pay(prob, u, self.reward_mode)
        return TextDuelResult(
            list(prompts), texts_0, texts_1, gens[0], gens[1], prob, outcome, r0, r1
        )
