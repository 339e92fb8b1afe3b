"""``nlhf/HFTokenDuel-v0``: the token duel over any Hugging Face tokenizer, causal LM, judge and prompts.

Description:
    The game of ``nlhf/TokenDuel-v1`` with the parts brought by the user. ``reset`` draws a prompt
    ``x`` of the prompt set. At every step both players emit one token of their own answer; neither
    sees the other's answer until the end. When both answers are finished they are decoded to text
    and the judge gives ``p = P(y_0 > y_1 | x)``; one preference query ``o ~ Bernoulli(p)`` decides
    the duel. The reference causal LM is the game's ``pi_ref`` (``env.reference``, a
    :class:`~nlhf_envs.text.hf.HFPolicy`): it does not change rewards, learners and the Nash
    metrics read it (as ``beta``). Nothing is downloaded: models and tokenizers are objects or
    local folders. :meth:`HFTokenDuelEnv.from_world` builds the synthetic worlds' game from Hugging
    Face parts (the same game: see :mod:`nlhf_envs.text.hf_convert`).

Agents:
    ``player_0`` and ``player_1``; both stay in ``agents`` until the duel ends.

Action Space:
    ``Discrete(V)`` with ``V = len(tokenizer)`` (the tokenizer's size, added tokens included; not
    the model's possibly padded embedding count): a token id. The tokenizer's EOS ends the player's
    answer (it counts as the answer's last token). Every token id is a legal action (as in
    ``nlhf/TokenDuel-v1``); with ``allowed_token_ids`` (the answer alphabet) ``env.reference`` and
    the ``"uniform"`` participant never emit the others, and ``env.action_mask`` marks the alphabet
    (for ``action_space.sample(mask=...)``). After a player's answer has ended its actions are
    ignored (it may omit its action or pass ``None``).

Observation Space:
    ``Box(0, V - 1, (2, L), int64)`` with ``L = max_prompt_tokens + max_new_tokens``: a fixed shape
    that does not grow with the vocabulary. Row 0 holds token ids: the prompt as the model reads it
    (the tokenizer's special tokens, or the chat template's rendering), left-padded with the pad id
    to ``max_prompt_tokens``, followed by the player's own answer so far, right-padded. Row 1 is the
    mask, 1 on real tokens. ``obs[0]`` with ``attention_mask=obs[1]`` is the input of a causal LM
    policy (:class:`~nlhf_envs.text.hf.HFPolicy` computes positions from the mask).

Rewards:
    Zero until the duel ends. Then, with ``p`` from the judge and ``o = 1[u < p]``, ``u ~ U[0, 1)``
    from the env's ``np_random``: ``reward_mode="outcome"`` (default) pays ``player_0`` ``o`` and
    ``player_1`` ``1 - o``; ``"centered"`` pays ``o - 1/2`` and ``1/2 - o``; ``"probability"`` pays
    ``p`` and ``1 - p`` (:mod:`nlhf_envs.rewards`). At the end ``infos[agent]`` holds, from that
    agent's side: ``prob`` and ``judge_prob`` (the judge's probability that its answer is
    preferred; this game has no separate ground truth) and ``outcome`` (1 if it won the query);
    and, for both, ``prompt`` (the judge's prompt text), ``answer_0`` and ``answer_1`` (decoded
    without special tokens).

Episode End:
    Termination (for both players at once) when both answers have ended, by EOS or by reaching
    ``max_new_tokens`` tokens. There is no truncation.

Environment arguments:
    ``reference``: a causal LM (``AutoModelForCausalLM``-like) or the folder of one.
    ``tokenizer``: a ``transformers`` tokenizer or its folder (default: the reference's folder).
    Without a pad token the EOS pads (with a warning).
    ``judge``: a text judge (:func:`nlhf_envs.text.hf_judges.as_text_judge`: a callable, a
    reward-model judge, a symmetrised pairwise classifier, a TRL-style judge, a reward-model folder).
    ``prompts``: a list, a ``.txt``/``.jsonl``/``.json`` file or a ``datasets.Dataset``
    (:func:`nlhf_envs.text.hf_prompts.load_prompts`); strings or conversations.
    ``heldout_prompts`` (None) or ``heldout_fraction`` (None) with ``split_seed`` (0): the held-out
    prompts (:func:`~nlhf_envs.text.hf_prompts.split_prompts`). ``heldout_fraction=None`` (the
    default) holds out :data:`DEFAULT_HELDOUT_FRACTION` of a prompt set of at least
    :data:`MIN_PROMPTS_FOR_HELDOUT` prompts (none of a smaller one), so that the token agents'
    periodic evaluation and the command line's final one have unseen prompts to measure;
    ``0.0`` trains on every prompt. ``validation_prompts`` (None) or
    ``validation_fraction`` (0.0, of the prompts left after the held-out split): the validation
    prompts that ``nlhf-zoo tune`` scores (never trained on, never reported). A prompt is kept
    once: repeats within a set are dropped with a warning, and explicit held-out or validation
    prompts that are also training (or held-out) prompts are refused. A prompt with words the
    tokenizer does not know (read as its unknown token) is counted in a warning.
    ``prompt_split`` ("train"): ``"train"``, ``"heldout"`` or ``"all"`` (train and held-out):
    where ``reset`` draws prompts.
    ``beta`` (0.1): KL strength of the regularised game (read by learners and Nash metrics).
    ``max_prompt_tokens`` (64): the prompt width. ``prompt_truncation`` ("error"): what happens
    to a prompt longer than that: ``"error"`` refuses it (at construction for the prompt set),
    ``"left"`` keeps its last ``max_prompt_tokens`` tokens, as TRL's trainers do with
    ``max_prompt_length`` (a BOS token, a system prompt or a chat template's header at the start
    is what is cut; one warning says how many prompts were cut). The judge reads the whole prompt
    either way.
    ``max_new_tokens`` (16): the longest answer, EOS included; ``max_cycles`` (None) caps it.
    ``reward_mode`` ("outcome"). ``system_prompt`` (None): a system message put before every
    prompt (a first system message with a chat template, else text and a blank line).
    ``chat_template`` ("auto"): ``"auto"`` renders prompts with the tokenizer's chat template when
    it has one, ``True`` requires one, ``False`` never uses one (conversations are then refused).
    ``allowed_token_ids`` (None): the answer alphabet (EOS included) of the reference policy.
    ``render_mode`` (None): ``None``, ``"ansi"`` or ``"human"``.
    ``reset(options={"prompt": p})`` fixes the prompt of one duel (checked like the prompt set).

Exact Solution:
    Known when the env is a synthetic world built by :meth:`HFTokenDuelEnv.from_world` on an
    enumerable world (the tiny worlds): :meth:`HFTokenDuelEnv.exact_game` is the contextual matrix
    game of :func:`nlhf_envs.text.exact.exact_game` through this env's Hugging Face reference. For
    other parts, :func:`nlhf_envs.text.hf_estimate.estimate_hf_nash_metrics` estimates the Nash
    metrics.

Registered ids:
    ``nlhf/HFTokenDuel-v0`` (no defaults: pass the parts as keyword arguments of
    ``pettingzoo.make("parallel", "nlhf/HFTokenDuel-v0", **kwargs)``).

References:
    Munos et al., "Nash Learning from Human Feedback", ICML 2024 (arXiv 2312.00886);
    Tiapkin et al., "Accelerating Nash Learning from Human Feedback via Mirror Prox" (arXiv
    2505.19731).

Version History:
    v0: initial release; later in v0, ``heldout_fraction`` defaults to ``None`` (a tenth of ten or
    more prompts held out; it was 0.0) and ``prompt_truncation`` was added.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils.conversions import parallel_to_aec

from nlhf_envs.errors import GameError
from nlhf_envs.rewards import check_reward_mode
from nlhf_envs.text.engine import AnswerState, new_answers, pay
from nlhf_envs.text.env import AnswerDuelBase
from nlhf_envs.text.hf import HFPolicy, is_causal_lm, saved_architecture
from nlhf_envs.text.hf_folders import load_causal_lm, load_tokenizer
from nlhf_envs.text.hf_judges import ValidatedJudge, as_text_judge
from nlhf_envs.text.hf_players import HFModelPlayer, UniformTokenPlayer
from nlhf_envs.text.hf_prompts import (
    Prompt,
    check_prompts,
    load_prompts,
    prompt_key,
    prompt_text,
    split_prompts,
    unique_prompts,
)
from nlhf_envs.text.world import World

try:
    import transformers  # noqa: F401  (the extra's check)
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "nlhf_envs.text.hf_env needs the 'hf' extra: pip install 'nlhf-zoo[hf]'"
    ) from err

__all__ = ["HFTokenDuelEnv", "env", "parallel_env", "raw_env"]

AGENTS: tuple[str, str] = ("player_0", "player_1")
#: the share of prompts ``heldout_fraction=None`` holds out ...
DEFAULT_HELDOUT_FRACTION = 0.1
#: ... from a prompt set of at least this many prompts (a smaller one is all for training)
MIN_PROMPTS_FOR_HELDOUT = 10
PROMPT_TRUNCATIONS: tuple[str, ...] = ("error", "left")
ENV_ID = "nlhf/HFTokenDuel-v0"
SPLITS: tuple[str, ...] = ("train", "heldout", "all")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise GameError(f"{name} must be an integer at least 1, got {value!r}")
    return int(value)


def _load_reference(reference: Any) -> Any:
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference)
        if not path.is_dir():
            raise GameError(f"no reference model folder at {path}")
        arch = saved_architecture(path)
        if arch is not None:
            raise GameError(
                f"the reference {arch} saved in {path} is not a causal language model "
                "(AutoModelForCausalLM)"
            )
        return load_causal_lm(path, "the reference")
    if reference is None:
        raise GameError("HFTokenDuel needs reference= (a causal LM or the folder of one)")
    return reference


def _load_tokenizer(tokenizer: Any, reference: Any, model: Any) -> Any:
    if tokenizer is None:
        folder = reference if isinstance(reference, (str, os.PathLike)) else None
        if folder is None:
            raise GameError(
                "tokenizer= is needed when reference is a model object (or pass the model's folder)"
            )
        tokenizer = folder
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        if not path.is_dir():
            raise GameError(f"no tokenizer folder at {path}")
        return load_tokenizer(path, "the tokenizer")
    return tokenizer


def _model_vocab(model: Any) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    return int(model.config.vocab_size)


class HFTokenDuelEnv(AnswerDuelBase):
    """The token duel over Hugging Face parts, as a PettingZoo ``ParallelEnv`` (module docstring)."""

    metadata = {"name": ENV_ID, "render_modes": ["ansi", "human"], "is_parallelizable": True}

    def __init__(
        self,
        reference: Any = None,
        tokenizer: Any = None,
        judge: Any = None,
        prompts: Any = None,
        *,
        heldout_prompts: Any = None,
        heldout_fraction: float | None = None,
        split_seed: int = 0,
        validation_prompts: Any = None,
        validation_fraction: float = 0.0,
        prompt_split: str = "train",
        beta: float = 0.1,
        max_prompt_tokens: int = 64,
        prompt_truncation: str = "error",
        max_new_tokens: int = 16,
        max_cycles: int | None = None,
        reward_mode: str = "outcome",
        system_prompt: str | None = None,
        chat_template: bool | str = "auto",
        allowed_token_ids: Sequence[int] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise GameError(
                f"unknown render_mode {render_mode!r}; expected None, 'ansi' or 'human'"
            )
        if prompt_split not in SPLITS:
            raise GameError(f"unknown prompt_split {prompt_split!r}; expected one of {SPLITS}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise GameError(f"beta must be a positive number, got {beta!r}")
        self.max_prompt_tokens = _positive_int(max_prompt_tokens, "max_prompt_tokens")
        if prompt_truncation not in PROMPT_TRUNCATIONS:
            raise GameError(
                f"prompt_truncation must be one of {PROMPT_TRUNCATIONS}; got {prompt_truncation!r}"
            )
        self.prompt_truncation = prompt_truncation
        self._n_truncated = 0  # prompts cut by prompt_truncation="left" (counted at construction)
        max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        if max_cycles is not None:
            max_new_tokens = min(max_new_tokens, _positive_int(max_cycles, "max_cycles"))
        self.max_new_tokens = max_new_tokens
        self.max_cycles = max_cycles
        self.beta = float(beta)
        self.reward_mode = check_reward_mode(reward_mode)
        self.render_mode = render_mode
        self.world: World | None = None  # set by from_world (exact games need it)

        # -- the model and its tokenizer
        model = _load_reference(reference)
        if not is_causal_lm(model):
            raise GameError(
                f"the reference {type(model).__name__} is not a causal language model "
                "(AutoModelForCausalLM)"
            )
        self.tokenizer = _load_tokenizer(tokenizer, reference, model)
        self.vocab_size = len(self.tokenizer)
        model_vocab = _model_vocab(model)
        if self.vocab_size > model_vocab:
            raise GameError(
                f"the tokenizer has {self.vocab_size} tokens but the reference model's vocabulary "
                f"has {model_vocab}"
            )
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            raise GameError("the tokenizer has no eos token, so answers could not end")
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            warnings.warn(
                "the tokenizer has no pad token; padding observations with its eos token "
                f"(id {self.eos_id})",
                stacklevel=2,
            )
            self.pad_id = self.eos_id
        self.eos_id, self.pad_id = int(self.eos_id), int(self.pad_id)

        # -- the answer alphabet and the reference policy
        self.allowed_token_ids: tuple[int, ...] | None = None
        suppress: list[int] = []
        if allowed_token_ids is not None:
            allowed = sorted({int(t) for t in allowed_token_ids})
            bad = [t for t in allowed if not 0 <= t < self.vocab_size]
            if bad:
                raise GameError(
                    f"allowed_token_ids {bad[:5]} lie outside the tokenizer's [0, {self.vocab_size})"
                )
            if self.eos_id not in allowed:
                raise GameError(f"allowed_token_ids must contain the eos token id {self.eos_id}")
            self.allowed_token_ids = tuple(allowed)
            keep = set(allowed)
            suppress = [t for t in range(self.vocab_size) if t not in keep]
        self.reference_model = model.eval()
        self.reference = HFPolicy(model, num_tokens=self.vocab_size, suppress_tokens=suppress)
        #: int8 ``[V]``: 1 on the answer alphabet (all ones without ``allowed_token_ids``)
        self.action_mask = np.ones(self.vocab_size, dtype=np.int8)
        if self.allowed_token_ids is not None:
            self.action_mask[:] = 0
            self.action_mask[list(self.allowed_token_ids)] = 1

        # -- the judge
        if judge is None:
            raise GameError("HFTokenDuel needs judge= (see nlhf_envs.text.hf_judges)")
        self.judge = judge
        self._judge: ValidatedJudge = as_text_judge(judge)

        # -- prompts
        if chat_template not in ("auto", True, False):
            raise GameError(f"chat_template must be 'auto', True or False; got {chat_template!r}")
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template is True and not has_template:
            raise GameError("chat_template=True but the tokenizer has no chat template")
        self.use_chat_template = has_template and chat_template is not False
        self.system_prompt = system_prompt
        if prompts is None:
            raise GameError("HFTokenDuel needs prompts= (a list, a file or a datasets.Dataset)")
        self.prompts: dict[str, list[Prompt]] = _prompt_splits(
            prompts, heldout_prompts, heldout_fraction, validation_prompts, validation_fraction,
            split_seed,
        )  # fmt: skip
        self.prompt_split = prompt_split
        pool = self.prompts[prompt_split]
        if not pool:
            raise GameError(f"prompt_split={prompt_split!r} has no prompts")
        self._pool_ids = [self.encode_prompt(p, i) for i, p in enumerate(pool)]
        unknown = _UnknownWords(self.tokenizer)
        encoded = []
        # each prompt is encoded once (its truncation counted once)
        known = {prompt_split: self._pool_ids}
        if prompt_split == "all":
            n = len(self.prompts["train"])
            known = {"train": self._pool_ids[:n], "heldout": self._pool_ids[n:]}
        for split in ("train", "heldout", "validation"):  # every prompt is checked at construction
            ids = known.get(split)
            for i, p in enumerate(self.prompts[split]):
                row = self.encode_prompt(p, i) if ids is None else ids[i]
                unknown.count(split, i, p, row)
                encoded.append((p, row))
        unknown.warn()
        if self._n_truncated:
            _check_truncated(self, encoded)

        # -- spaces
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        length = self.max_prompt_tokens + self.max_new_tokens
        self._init_spaces(list(AGENTS), self.vocab_size, length)
        self.np_random, self.np_random_seed = seeding.np_random(None)
        self._prompt: Prompt = ""
        self._prompt_ids = torch.full((1, self.max_prompt_tokens), self.pad_id, dtype=torch.long)
        self._prompt_mask = torch.zeros(1, self.max_prompt_tokens, dtype=torch.bool)
        self._answers: dict[str, AnswerState] = {}
        self._result: dict[str, Any] | None = None
        self._fingerprint: str | None = None
        self._part_fingerprints: dict[str, str] | None = None
        self._part_values: dict[str, tuple[Any, ...]] | None = None

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def from_world(cls, world_or_env_id: str | World = "nlhf/TinyTokenDuel-v0", **kwargs: Any):
        """The synthetic token duel built from Hugging Face parts.

        The world's reference :class:`~nlhf_envs.text.models.TinyCausalLM` becomes a
        ``GPT2LMHeadModel`` with the same weights (:func:`~nlhf_envs.text.hf_convert.tiny_to_gpt2`),
        its vocabulary a ``PreTrainedTokenizerFast`` framing prompts as ``<bos> ... <sep>``
        (:func:`~nlhf_envs.text.hf.make_hf_tokenizer`), the judge is the world's shipped judge, the
        prompts its train and held-out prompts, ``allowed_token_ids`` its answer alphabet, and
        ``beta``, ``max_prompt_tokens`` and ``max_new_tokens`` its own. On the tiny worlds this is
        the same game as the native env: the same seeded duels, judge probabilities and exact
        Nash metrics (:meth:`exact_game`).

        Args:
            world_or_env_id: a token-duel id (``"nlhf/TinyTokenDuel-v0"``), a world name or a
                :class:`~nlhf_envs.text.world.World`.
            **kwargs: overrides of the constructor's arguments (e.g. ``reward_mode``).
        """
        from nlhf_envs.env_ids import TEXT_ENV_IDS
        from nlhf_envs.text.env import default_judge
        from nlhf_envs.text.hf import make_hf_tokenizer
        from nlhf_envs.text.hf_convert import tiny_to_gpt2
        from nlhf_envs.text.models import default_judge_version, load_reference_policy
        from nlhf_envs.text.world import get_world

        version = None
        if isinstance(world_or_env_id, str) and world_or_env_id in TEXT_ENV_IDS:
            spec = TEXT_ENV_IDS[world_or_env_id]
            w = get_world(spec["world"])
            version = spec.get("judge_version")
        else:
            w = get_world(world_or_env_id)
        version = default_judge_version(w) if version is None else version
        texts = w.prompts.texts
        args: dict[str, Any] = {
            "reference": tiny_to_gpt2(load_reference_policy(world=w)),
            "tokenizer": make_hf_tokenizer(w.tokenizer),
            "judge": default_judge(w, version),
            "prompts": [texts[i] for i in w.prompts.indices("train")],
            "heldout_prompts": [texts[i] for i in w.prompts.indices("heldout")],
            "beta": w.beta,
            "max_prompt_tokens": w.prompt_len,
            "max_new_tokens": w.max_new_tokens,
            "allowed_token_ids": w.answer_token_ids,
            "chat_template": False,
        }
        args.update(kwargs)
        env = cls(**args)
        env.world = w
        return env

    def encode_prompt(self, prompt: Prompt, index: int = 0) -> list[int]:
        """The token ids the model reads for ``prompt`` (chat template or the tokenizer's special
        tokens; see the module docstring).

        Raises:
            GameError: for an invalid prompt, a conversation without a chat template, or a prompt
                longer than ``max_prompt_tokens``.
        """
        if not (isinstance(prompt, str) and prompt.strip()):
            (prompt,) = check_prompts([prompt])  # raises for anything but a valid conversation
        tok = self.tokenizer
        if isinstance(prompt, list) and not self.use_chat_template:
            raise GameError(
                f"prompt {index} is a conversation but the tokenizer has no chat template "
                "(or chat_template=False)"
            )
        if self.use_chat_template:
            messages = (
                [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            )
            if self.system_prompt is not None and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": self.system_prompt}, *messages]
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
        else:
            text = prompt if self.system_prompt is None else f"{self.system_prompt}\n\n{prompt}"
            ids = list(tok(text)["input_ids"])
        if not ids:
            raise GameError(f"prompt {index} is empty after tokenization")
        if len(ids) > self.max_prompt_tokens:
            if self.prompt_truncation == "left":  # keep the end, as TRL's max_prompt_length
                self._n_truncated += 1
                return ids[-self.max_prompt_tokens :]
            raise GameError(
                f"prompt {index} has {len(ids)} tokens; max_prompt_tokens is "
                f"{self.max_prompt_tokens} (prompt_truncation='left' keeps its last tokens)"
            )
        return ids

    # ----------------------------------------------------------------------------- spaces

    def estimate_nash_metrics(self, policy: Any, **kwargs: Any) -> Any:
        """Estimated exploitability and ``KL(pi* || pi)`` of ``policy`` in this game, with
        intervals (:func:`~nlhf_envs.text.hf_estimate.estimate_hf_nash_metrics`; keywords as
        there, ``device=None`` for the CPU). :func:`nlhf_envs.text.estimate.estimate_nash_metrics`
        calls it for this env."""
        from nlhf_envs.text.hf_estimate import estimate_hf_nash_metrics

        if kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return estimate_hf_nash_metrics(policy, self, **kwargs)

    def fingerprint(self) -> str:
        """A short hash of the game this env plays (cached): the reference model's weights, the
        tokenizer's vocabulary, special tokens and chat template, the judge (the weights of every
        torch module it holds; a judge without one, a plain callable, by its qualified name only),
        the prompts of every split, the system prompt, the answer alphabet, ``beta``, the reward
        mode and both length limits. Two envs with the same fingerprint pay the same duels;
        tournaments refuse participants whose envs differ and reuse a logged match only under the
        same fingerprint. :meth:`part_fingerprints` tells which part differs."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for part in self._parts().values():
                for item in part:
                    h.update(repr(item).encode())
                    h.update(b"\0")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def part_fingerprints(self) -> dict[str, str]:
        """Short hashes of the game's parts (cached): ``reference`` (the model's weights),
        ``tokenizer`` (vocabulary, special tokens, chat template), ``judge``, ``prompts`` (every
        split) and ``settings`` (system prompt, answer alphabet, ``beta``, reward mode, lengths).
        :meth:`fingerprint` covers them all; a run records these to name what changed."""
        if self._part_fingerprints is None:
            out = {}
            for name, part in self._parts().items():
                h = hashlib.sha256()
                for item in part:
                    h.update(repr(item).encode())
                    h.update(b"\0")
                out[name] = h.hexdigest()[:16]
            self._part_fingerprints = out
        return dict(self._part_fingerprints)

    def _parts(self) -> dict[str, tuple[Any, ...]]:
        from nlhf_envs.text.models import module_digest

        if self._part_values is None:
            validation = self.prompts["validation"]
            self._part_values = {
                "reference": (module_digest(self.reference_model),),
                "tokenizer": (
                    sorted(self.tokenizer.get_vocab().items()),
                    (self.eos_id, self.pad_id, self.use_chat_template),
                    getattr(self.tokenizer, "chat_template", None)
                    if self.use_chat_template
                    else None,
                ),
                "judge": (_content_digest(self._judge),),
                "prompts": (
                    self.prompts["train"],
                    self.prompts["heldout"],
                    *([validation] if validation else []),
                ),
                "settings": (
                    self.system_prompt,
                    self.allowed_token_ids,
                    (self.beta, self.reward_mode, self.max_prompt_tokens, self.max_new_tokens),
                ),
            }
        return self._part_values

    # ----------------------------------------------------------------------------- play

    def _set_prompt(self, ids: list[int]) -> None:
        p = self.max_prompt_tokens
        self._prompt_ids = torch.full((1, p), self.pad_id, dtype=torch.long)
        self._prompt_mask = torch.zeros(1, p, dtype=torch.bool)
        self._prompt_ids[0, p - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        self._prompt_mask[0, p - len(ids) :] = True

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start a duel: draw a prompt of ``prompt_split`` (or take ``options["prompt"]``)."""
        if seed is not None:
            self.np_random, self.np_random_seed = seeding.np_random(seed)
        options = options or {}  # only "prompt" is read
        if "prompt" in options:
            self._prompt = options["prompt"]
            ids = self.encode_prompt(self._prompt)
        else:
            i = int(self.np_random.choice(len(self._pool_ids)))
            self._prompt = self.prompts[self.prompt_split][i]
            ids = self._pool_ids[i]
        self._set_prompt(ids)
        self._answers = {}
        for a in AGENTS:
            state = new_answers(1, self.max_new_tokens)
            state.tokens.fill_(self.pad_id)
            self._answers[a] = state
        self._result = None
        self.agents = list(AGENTS)
        observations = {a: self._observe(a) for a in self.agents}
        infos = {a: {"prompt": prompt_text(self._prompt)} for a in self.agents}
        return observations, infos

    def _token(self, agent: str, action: Any) -> int:
        arr = np.asarray(action)
        if arr.shape not in ((), (1,)) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"action {action!r} of {agent} must be an integer token id")
        token = int(arr.reshape(()))
        if not 0 <= token < self.vocab_size:
            raise ValueError(
                f"action {action!r} of {agent} is not a token id in [0, {self.vocab_size})"
            )
        return token

    def _eos_token_id(self) -> int:
        return self.eos_id

    def _pay(self) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        text = prompt_text(self._prompt)
        answers = (self._text("player_0"), self._text("player_1"))
        prob = self._judge([text], [answers])
        u = torch.tensor([self.np_random.random()])  # float32, as nlhf/TokenDuel-v1 draws it
        outcome, r0, r1 = pay(prob, u, self.reward_mode)
        rewards = {"player_0": float(r0[0]), "player_1": float(r1[0])}
        p = float(prob[0])
        self._result = {
            "prompt": text,
            "answer_0": answers[0],
            "answer_1": answers[1],
            "judge_prob": p,
            "prob": p,
            "outcome": float(outcome[0]),
        }
        return rewards, self._mirrored_infos(self._result, ("judge_prob", "prob", "outcome"))

    def _text(self, agent: str) -> str:
        state = self._answers[agent]
        ids = state.tokens[0][state.mask[0]].tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ----------------------------------------------------------------------------- players

    def fixed_player(self, spec: str) -> HFModelPlayer | UniformTokenPlayer:
        """The seat player of a tournament's fixed participant: ``"pi_ref"`` (the reference LM,
        with the answer alphabet's mask) or ``"uniform"`` (a uniformly random allowed token).

        Raises:
            GameError: for another name.
        """
        if spec == "pi_ref":
            return HFModelPlayer(self.reference)
        if spec == "uniform":
            tokens = self.allowed_token_ids or tuple(range(self.vocab_size))
            return UniformTokenPlayer(tokens, self.vocab_size)
        raise GameError(f"unknown fixed participant {spec!r}; expected 'pi_ref' or 'uniform'")

    # ----------------------------------------------------------------------------- exact game

    def exact_game(self, split: str = "heldout", payer: str = "judge") -> Any:
        """The exact contextual game of an enumerable world through this env's Hugging Face
        reference (:func:`nlhf_envs.text.exact.exact_game` with ``reference=self.reference``).

        Raises:
            GameError: for an env not built by :meth:`from_world` (only a synthetic world is
                enumerable).
        """
        from nlhf_envs.text.exact import exact_game

        if self.world is None:
            raise GameError(
                "exact_game needs an env built by HFTokenDuelEnv.from_world (an enumerable world)"
            )
        return exact_game(self, split, payer, reference=self.reference)

    # ----------------------------------------------------------------------------- render

    def _render_text(self) -> str:
        if not self._answers:
            return "HFTokenDuel: call reset() first"
        lines = [f"prompt   : {prompt_text(self._prompt)}"]
        lines.extend(self._answer_line(agent) for agent in AGENTS)
        if self._result is not None:
            r = self._result
            winner = "player_0" if r["outcome"] == 1.0 else "player_1"
            lines.append(f"judge P(player_0 > player_1) = {r['judge_prob']:.3f}: {winner} wins")
        return "\n".join(lines)


raw_env = HFTokenDuelEnv


def _prompt_splits(
    prompts: Any,
    heldout_prompts: Any,
    heldout_fraction: float | None,
    validation_prompts: Any,
    validation_fraction: float,
    split_seed: int,
) -> dict[str, list[Prompt]]:
    """The env's prompt sets ``train``, ``heldout``, ``validation`` and ``all`` (train and
    held-out), each prompt in one set only (see the module docstring).

    Raises:
        GameError: for both a set and its fraction, or a prompt given for two sets.
    """
    dropped: dict[str, int] = {}
    train, dropped["training"] = unique_prompts(load_prompts(prompts))
    if heldout_prompts is not None:
        if heldout_fraction:
            raise GameError("pass heldout_prompts or heldout_fraction, not both")
        heldout, dropped["held-out"] = unique_prompts(load_prompts(heldout_prompts))
        _refuse_shared(("training", train), ("held-out", heldout))
    else:
        train, heldout = split_prompts(
            train, _heldout_fraction(heldout_fraction, train), split_seed
        )
    if validation_prompts is not None:
        if validation_fraction:
            raise GameError("pass validation_prompts or validation_fraction, not both")
        validation, dropped["validation"] = unique_prompts(load_prompts(validation_prompts))
        _refuse_shared(("training", train), ("validation", validation))
        _refuse_shared(("held-out", heldout), ("validation", validation))
    else:
        seed = int(np.random.SeedSequence([split_seed, 1]).generate_state(1)[0])
        train, validation = split_prompts(
            train, validation_fraction, seed, name="validation_fraction"
        )
    repeats = [f"{n} of the {what} prompts" for what, n in dropped.items() if n]
    if repeats:
        warnings.warn(
            f"repeated prompts dropped ({', '.join(repeats)}): each prompt is kept once, so no "
            "prompt is in two splits",
            stacklevel=3,
        )
    return {"train": train, "heldout": heldout, "validation": validation, "all": train + heldout}


def _refuse_shared(first: tuple[str, list[Prompt]], second: tuple[str, list[Prompt]]) -> None:
    """Refuse prompts that are in both sets (metrics on one would be computed on the other)."""
    index = {prompt_key(p): i for i, p in enumerate(first[1])}
    shared = [(i, index[prompt_key(p)]) for i, p in enumerate(second[1]) if prompt_key(p) in index]
    if shared:
        i, j = shared[0]
        text = prompt_text(second[1][i])
        raise GameError(
            f"{len(shared)} of the {second[0]} prompts are also {first[0]} prompts (first: "
            f"{second[0]} prompt {i} = {first[0]} prompt {j}, {text[:60]!r}); a prompt may be in "
            "one set only: remove it from one of them"
        )


class _UnknownWords:
    """Counts the prompts a tokenizer reads with its unknown token (words it does not know)."""

    def __init__(self, tokenizer: Any) -> None:
        unk = getattr(tokenizer, "unk_token_id", None)
        self.unk_id = None if unk is None else int(unk)
        self.unk_text = str(getattr(tokenizer, "unk_token", "") or "")
        self.prompts = self.tokens = self.total = 0
        self.first: str | None = None

    def count(self, split: str, index: int, prompt: Prompt, ids: list[int]) -> None:
        self.total += 1
        if self.unk_id is None:
            return
        n = ids.count(self.unk_id)
        if n and self.unk_text:
            n -= prompt_text(prompt).count(self.unk_text)  # written in the prompt on purpose
        if n > 0:
            self.prompts += 1
            self.tokens += n
            if self.first is None:
                self.first = f"{split} prompt {index}, {prompt_text(prompt)[:60]!r}"

    def warn(self) -> None:
        if self.prompts:
            warnings.warn(
                f"{self.prompts} of {self.total} prompts hold words the tokenizer does not know "
                f"({self.tokens} tokens read as {self.unk_text or 'its unknown token'}; first: "
                f"{self.first}): the model cannot read them",
                stacklevel=3,
            )


def _heldout_fraction(fraction: float | None, prompts: Sequence[Any]) -> float:
    """``heldout_fraction`` as given, or its default for ``prompts`` (see the module docstring)."""
    if fraction is not None:
        return fraction
    return DEFAULT_HELDOUT_FRACTION if len(prompts) >= MIN_PROMPTS_FOR_HELDOUT else 0.0


def _check_truncated(env: HFTokenDuelEnv, encoded: list[tuple[Any, list[int]]]) -> None:
    """After ``prompt_truncation="left"`` cut some of the prompt set's ``(prompt, ids)``: refuse
    two different prompts that the model now reads as the same tokens (the judge reads their whole
    texts, so they would be one prompt for the policy and two for the judge); warn once."""
    seen: dict[tuple[int, ...], Any] = {}
    for prompt, ids in encoded:
        first = seen.setdefault(tuple(ids), prompt)
        if first != prompt:
            raise GameError(
                f"the prompts {_quoted(first)} and {_quoted(prompt)} read the same after "
                f"truncation to their last {env.max_prompt_tokens} tokens; raise max_prompt_tokens"
            )
    warnings.warn(
        f"{env._n_truncated} of {len(encoded)} prompts are longer than max_prompt_tokens="
        f"{env.max_prompt_tokens} and were cut to their last {env.max_prompt_tokens} tokens "
        "(prompt_truncation='left')",
        stacklevel=3,
    )


def _quoted(prompt: Any) -> str:
    """A prompt's text for an error message, cut after 40 characters."""
    text = prompt_text(prompt)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _content_digest(obj: Any, depth: int = 0) -> str:
    """The weights of the torch modules ``obj`` holds (searched three attributes deep), with the
    class names on the way; ``custom:<qualname>`` for an object that holds none."""
    from nlhf_envs.text.models import module_digest

    if isinstance(obj, torch.nn.Module):
        return f"module:{type(obj).__qualname__}:{module_digest(obj)}"
    found = []
    if depth < 3:
        for value in getattr(obj, "__dict__", {}).values():
            digest = _content_digest(value, depth + 1)
            if not digest.startswith("custom:"):
                found.append(digest)
    if not found:  # a judge's own name (ValidatedJudge.name), a function's or a class's
        name = getattr(obj, "name", None) or getattr(obj, "__qualname__", None)
        return f"custom:{name if isinstance(name, str) else type(obj).__qualname__}"
    return f"{type(obj).__qualname__}({','.join(found)})"


def parallel_env(**kwargs: Any) -> HFTokenDuelEnv:
    """The parallel env (keyword arguments as in :class:`HFTokenDuelEnv`)."""
    return HFTokenDuelEnv(**kwargs)


def env(**kwargs: Any) -> AECEnv:
    """The AEC view (``parallel_to_aec``), keyword arguments as in :class:`HFTokenDuelEnv`."""
    return parallel_to_aec(parallel_env(**kwargs))
