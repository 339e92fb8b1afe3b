"""The pairwise-judge interface shared by the learned judge and the ground truth.

A pairwise judge answers ``P(a > b | prompt)``. Every judge here has

- :meth:`PairwiseJudge.prob` ``(prompts, answers_a, answers_b) -> Tensor[B]`` on token ids or text;
- :meth:`PairwiseJudge.judge` ``(prompts, completions, shuffle_order=True, return_scores=False)``
  (TRL's pairwise-judge semantics: the index of the preferred completion, or scores);
- calling the judge, ``judge(prompts, completion_pairs) -> list[float]``: the probabilities on text.

Inputs are validated here once: token ids must lie in ``[0, vocab_size)``, shapes must agree, and a
judge's output must be a finite probability, otherwise a ``ValueError`` names the problem.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nlhf_envs.errors import JudgeError
from nlhf_envs.text.tokenizer import EOS, SPECIAL_TOKENS, Tokenizer

#: A batch of token sequences: a 2-D integer tensor ``[B, L]`` or a list of strings.
TokenInput = torch.Tensor | Sequence[str]


@dataclass
class PairBatch:
    """A validated batch of ``(prompt, a, b)`` triples.

    The masks are *content* masks: true on ordinary words only (special tokens, padding and everything
    after an answer's first ``<eos>`` are masked out).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    a_ids: torch.Tensor
    a_mask: torch.Tensor
    b_ids: torch.Tensor
    b_mask: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]


def check_token_ids(ids: torch.Tensor, vocab_size: int, name: str) -> None:
    """Raise a ``ValueError`` unless ``ids`` is a 2-D integer tensor with entries in ``[0, vocab_size)``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dtype.is_complex:
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(
            f"{name} must have shape [batch, length]; got shape {tuple(ids.shape)} ({ids.dim()}-D)"
        )
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        pos = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} contains token id {int(ids[pos])} at position {pos}; "
            f"ids must lie in [0, {vocab_size})"
        )


def to_mask(mask: torch.Tensor | None, ids: torch.Tensor, name: str) -> torch.Tensor:
    """A boolean ``[B, L]`` mask from a mask, from lengths ``[B]`` (right padding), or ``None``.

    With ``None`` every position that is not ``<pad>`` counts.
    """
    if mask is None:
        return ids != 0
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    mask = mask.to(ids.device)
    if mask.dim() == 1:
        if mask.shape[0] != ids.shape[0]:
            raise ValueError(
                f"{name} as lengths must have shape ({ids.shape[0]},); got {tuple(mask.shape)}"
            )
        if bool(((mask < 0) | (mask > ids.shape[1])).any()):
            raise ValueError(f"{name} has a length outside [0, {ids.shape[1]}]: {mask.tolist()}")
        return torch.arange(ids.shape[1], device=ids.device)[None, :] < mask[:, None]
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(
            f"{name} must have the shape of its token ids, {tuple(ids.shape)}; got {tuple(mask.shape)}"
        )
    return mask.bool()


def content_mask(ids: torch.Tensor, mask: torch.Tensor, cut_at_eos: bool) -> torch.Tensor:
    """``mask`` restricted to ordinary words (and, with ``cut_at_eos``, to before the first ``<eos>``)."""
    keep = mask & (ids >= len(SPECIAL_TOKENS))
    if cut_at_eos:
        keep = keep & ((ids == EOS).long().cumsum(-1) == 0)
    return keep


def check_probabilities(prob: object, batch_size: int, source: str) -> torch.Tensor:
    """Validate a judge's output: ``batch_size`` finite numbers in [0, 1] (as a float tensor).

    Raises:
        JudgeError: (a ``ValueError``) naming the first NaN, infinity or value outside [0, 1],
            or the wrong length.
    """
    p = torch.as_tensor(prob, dtype=torch.float32) if not isinstance(prob, torch.Tensor) else prob
    p = p.float()
    if p.dim() != 1 or p.shape[0] != batch_size:
        raise JudgeError(
            f"{source} must return {batch_size} probabilities; got shape {tuple(p.shape)}"
        )
    bad = ~torch.isfinite(p)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise JudgeError(f"{source} returned {float(p[i])} for pair {i}; expected a probability")
    out = (p < 0) | (p > 1)
    if bool(out.any()):
        i = int(out.nonzero()[0, 0])
        raise JudgeError(
            f"{source} returned {float(p[i])} for pair {i}; expected a value in [0, 1]"
        )
    return p


class PairwiseJudge(ABC):
    """Base class: input validation and the text form; subclasses implement :meth:`_prob`.

    Args:
        tokenizer: the tokenizer of token-id inputs (and of text inputs).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        """Where the judge computes (inputs are moved there)."""
        return torch.device("cpu")

    def _ids(
        self, x: TokenInput, mask: torch.Tensor | None, name: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(x, torch.Tensor):
            check_token_ids(x, self.tokenizer.vocab_size, name)
            m = to_mask(mask, x, name + " mask")
            return x.to(self.device), m.to(self.device)
        if isinstance(x, str) or not all(isinstance(s, str) for s in x):
            raise TypeError(f"{name} must be a token-id tensor or a list of strings")
        if mask is not None:
            raise ValueError(f"a mask for {name} only makes sense with token ids, not text")
        if name == "prompts":  # a prompt the policies could not read is refused, not guessed
            for i, text in enumerate(x):
                self.tokenizer.check_prompt(text, i)
        return self.tokenizer.encode_answers(list(x), device=self.device)

    def prepare(
        self,
        prompts: TokenInput,
        answers_a: TokenInput,
        answers_b: TokenInput,
        prompt_mask: torch.Tensor | None = None,
        mask_a: torch.Tensor | None = None,
        mask_b: torch.Tensor | None = None,
    ) -> PairBatch:
        """Validate inputs and build the :class:`PairBatch` (see :meth:`prob` for the arguments)."""
        p_ids, p_mask = self._ids(prompts, prompt_mask, "prompts")
        a_ids, a_mask = self._ids(answers_a, mask_a, "answers_a")
        b_ids, b_mask = self._ids(answers_b, mask_b, "answers_b")
        sizes = (p_ids.shape[0], a_ids.shape[0], b_ids.shape[0])
        if len(set(sizes)) != 1:
            raise ValueError(
                f"batch sizes differ: prompts {sizes[0]}, answers_a {sizes[1]}, answers_b {sizes[2]}"
            )
        return PairBatch(
            p_ids,
            content_mask(p_ids, p_mask, cut_at_eos=False),
            a_ids,
            content_mask(a_ids, a_mask, cut_at_eos=True),
            b_ids,
            content_mask(b_ids, b_mask, cut_at_eos=True),
        )

    @abstractmethod
    def _prob(self, batch: PairBatch) -> torch.Tensor:
        """``P(a > b | prompt)`` for a validated batch, float ``[B]`` on :attr:`device`."""

    def prob(
        self,
        prompts: TokenInput,
        answers_a: TokenInput,
        answers_b: TokenInput,
        *,
        prompt_mask: torch.Tensor | None = None,
        mask_a: torch.Tensor | None = None,
        mask_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``P(a > b | prompt)`` for a batch.

        Args:
            prompts: ``[B, Lp]`` token ids (padding anywhere; special tokens are ignored) or ``B`` strings.
            answers_a: ``[B, La]`` token ids or ``B`` strings. Only tokens before the first ``<eos>`` count.
            answers_b: ``[B, Lb]`` token ids or ``B`` strings.
            prompt_mask: for token ids, a boolean mask of their shape or lengths ``[B]`` (counting from the
                left); by default every non-``<pad>`` position counts. The same for ``mask_a``/``mask_b``.
            mask_a: mask or lengths of ``answers_a``.
            mask_b: mask or lengths of ``answers_b``.

        Returns:
            float32 ``[B]`` on :attr:`device`; ``prob(x, a, b) + prob(x, b, a) = 1``.

        Raises:
            ValueError: on token ids out of range, shapes that disagree, or a non-finite output.
        """
        batch = self.prepare(prompts, answers_a, answers_b, prompt_mask, mask_a, mask_b)
        with torch.no_grad():
            p = self._prob(batch)
        return check_probabilities(p, len(batch), type(self).__name__)

    def judge(
        self,
        prompts: Sequence[str],
        completions: Sequence[Sequence[str]],
        shuffle_order: bool = True,
        return_scores: bool = False,
        *,
        seed: int | None = None,
    ) -> list[int] | list[float]:
        """Pairwise-judge semantics of TRL's ``BasePairwiseJudge.judge``.

        For every prompt and its pair of completions: the index (0 or 1) of the preferred completion,
        or with ``return_scores`` the probability that the first completion is preferred. Code written
        against that interface (online DPO, Nash-MD and XPO trainers, win-rate callbacks) takes these
        judges unchanged. A tie (probability exactly 1/2) ranks the first completion.

        Args:
            prompts: ``B`` prompts (strings).
            completions: ``B`` pairs ``[c0, c1]`` (lists or tuples) of completions.
            shuffle_order: present each pair in a random order and map the answer back, so a judge
                with a positional bias is not favoured by the caller's order (the probabilities of
                an antisymmetric judge, such as the ground truth, are unchanged).
            return_scores: return ``P(c0 > c1 | prompt)`` instead of indices.
            seed: seed of the shuffle (``None``: fresh entropy).

        Returns:
            ``B`` ints in {0, 1}, or ``B`` floats in [0, 1] with ``return_scores``.

        Raises:
            ValueError: when the numbers of prompts and pairs differ or a pair does not hold two
                strings.
        """
        a, b = self._split_pairs(prompts, completions)
        n = len(a)
        swap = np.random.default_rng(seed).random(n) < 0.5 if shuffle_order else np.zeros(n, bool)
        first = [y if s else x for x, y, s in zip(a, b, swap, strict=True)]
        second = [x if s else y for x, y, s in zip(a, b, swap, strict=True)]
        p = self.prob(list(prompts), first, second).double().cpu().numpy() if n else np.zeros(0)
        p_first = np.where(swap, 1.0 - p, p)
        if return_scores:
            return [float(q) for q in p_first]
        return [0 if q >= 0.5 else 1 for q in p_first]

    def _split_pairs(
        self, prompts: Sequence[str], completions: Sequence[Sequence[str]]
    ) -> tuple[list[str], list[str]]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completion pairs")
        for i, pair in enumerate(completions):
            if isinstance(pair, str) or len(pair) != 2:
                raise ValueError(f"completion pair {i} must hold two completions; got {pair!r}")
            if not all(isinstance(c, str) for c in pair):
                raise ValueError(f"completion pair {i} must hold two strings; got {pair!r}")
        return [pair[0] for pair in completions], [pair[1] for pair in completions]

    def __call__(
        self, prompts: Sequence[str], completion_pairs: Sequence[Sequence[str]]
    ) -> list[float]:
        """The probability form on text: ``P(first completion > second | prompt)`` per pair (what
        :class:`CallableJudge` and the Hugging Face duel expect of a judge function)."""
        a, b = self._split_pairs(prompts, completion_pairs)
        return self.prob(list(prompts), a, b).tolist() if a else []


class CallableJudge(PairwiseJudge):
    """Any text judge ``fn(prompts, completion_pairs) -> probabilities`` behind the judge interface.

    Token-id inputs are decoded with ``tokenizer`` (special tokens and everything after ``<eos>``
    dropped); the callable's output is validated (a NaN or a value outside [0, 1] raises).

    Args:
        fn: the text judge, e.g. a Hugging Face reward model wrapped by the caller.
        tokenizer: decodes token ids.
    """

    def __init__(
        self, fn: Callable[[list[str], list[tuple[str, str]]], object], tokenizer: Tokenizer
    ) -> None:
        super().__init__(tokenizer)
        self.fn = fn

    def _prob(self, batch: PairBatch) -> torch.Tensor:
        dec = self.tokenizer.decode_batch
        prompts = dec(batch.prompt_ids, batch.prompt_mask)
        pairs = list(
            zip(dec(batch.a_ids, batch.a_mask), dec(batch.b_ids, batch.b_mask), strict=True)
        )
        return check_probabilities(self.fn(prompts, pairs), len(batch), f"judge {self.fn!r}")
