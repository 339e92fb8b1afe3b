"""Judges of the Hugging Face token duel: one text protocol, several real kinds, validated outputs.

The protocol is the library's text judge contract: ``judge(prompts, completion_pairs)`` returns,
for every prompt ``x`` and pair ``(a, b)``, the probability ``P(a > b | x)`` that the first answer is
preferred. Every :class:`~nlhf_envs.text.judging.PairwiseJudge` (the shipped judges, the ground
truth) already follows it. :func:`as_text_judge` turns any of these into a
:class:`ValidatedJudge`:

- any Python callable ``fn(prompts, completion_pairs) -> probabilities``;
- :class:`RewardModelJudge`: a Bradley-Terry reward model (``AutoModelForSequenceClassification``
  with one output and its own tokenizer), ``P(a > b | x) = sigmoid(r(x, a) - r(x, b))``
  (Bradley and Terry, Biometrika 1952; the reward-model form of Ouyang et al. 2022, eq. 1);
- :class:`PairwiseClassifierJudge`: a classifier ``f(x, a, b)`` that reads both answers together,
  symmetrised as ``(f(x, a, b) + 1 - f(x, b, a)) / 2`` (Munos et al. 2024, section 3, need
  ``P(a > b) = 1 - P(b > a)``; the symmetrised form has it whatever ``f``);
- objects with TRL's pairwise-judge interface ``judge(prompts, completions, shuffle_order=...,
  return_scores=...)`` (which :meth:`~nlhf_envs.text.judging.PairwiseJudge.judge` mirrors): scores
  are asked for when the method takes ``return_scores``, otherwise the preferred index ``i`` is read
  as the hard probability ``1 - i``;
- a folder path of a saved sequence-classification model with one output (a reward model).

A :class:`ValidatedJudge` checks every output (one finite number in [0, 1] per pair) and names the
judge in its error. A judge that also has a method ``scores(prompts, answers)`` (one real number
``s(x, y)`` per answer, with ``P(a > b | x) = sigmoid(s(x, a) - s(x, b))``; a
:class:`RewardModelJudge` has it) offers the scores interface (:meth:`ValidatedJudge.scores`):
the Nash estimate (:mod:`nlhf_envs.text.hf_estimate`) then scores every answer once instead of
judging every pair. Answers reach a judge as text: a judge with its own tokenizer re-encodes them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from nlhf_envs.errors import GameError
from nlhf_envs.text.judging import check_probabilities

__all__ = [
    "PairwiseClassifierJudge",
    "RewardModelJudge",
    "TRLJudgeAdapter",
    "ValidatedJudge",
    "as_text_judge",
    "judge_name",
]

Pairs = Sequence[tuple[str, str]] | Sequence[Sequence[str]]


def judge_name(judge: Any) -> str:
    """A short human name of a judge object for error messages."""
    if isinstance(judge, ValidatedJudge):
        return judge.name
    name = getattr(judge, "__qualname__", None) or type(judge).__qualname__
    return str(name)


class ValidatedJudge:
    """A text judge whose every output is checked: one finite probability per pair.

    Args:
        fn: ``fn(prompts, completion_pairs) -> probabilities`` (list, array or tensor).
        name: how errors name the judge (default: its qualified name).
    """

    def __init__(self, fn: Callable[[list[str], list[tuple[str, str]]], Any], name: str) -> None:
        self.fn = fn
        self.name = name

    @property
    def has_scores(self) -> bool:
        """Whether the judge offers the scores interface (:meth:`scores`): one number per
        answer, ``P(a > b | x) = sigmoid(s(x, a) - s(x, b))`` (a :class:`RewardModelJudge` does)."""
        return callable(getattr(self.fn, "scores", None))

    def scores(self, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """The judge's score ``s(x, y)`` of each (prompt, answer), float64 ``[B]`` on the CPU, such
        that ``P(a > b | x) = sigmoid(s(x, a) - s(x, b))``: ``B`` answers cost ``B`` judge calls
        where every pair of them would cost ``B^2``.

        Raises:
            GameError: when the judge has no scores interface (:attr:`has_scores`).
            ValueError: naming the judge, when its output has the wrong shape or a NaN or infinity.
        """
        if not self.has_scores:
            raise GameError(f"judge {self.name} gives pairwise probabilities only (no scores)")
        texts = [str(a) for a in answers]
        if len(prompts) != len(texts):
            raise ValueError(f"got {len(prompts)} prompts but {len(texts)} answers")
        out = self.fn.scores(list(prompts), texts)  # type: ignore[attr-defined]
        try:
            s = torch.as_tensor(
                out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=torch.float64
            )
        except (TypeError, RuntimeError, ValueError) as err:
            raise ValueError(
                f"judge {self.name} must return {len(texts)} scores; got {out!r:.80}"
            ) from err
        if s.dim() != 1 or s.shape[0] != len(texts):
            raise ValueError(
                f"judge {self.name} must return {len(texts)} scores; got shape {tuple(s.shape)}"
            )
        bad = ~torch.isfinite(s)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"judge {self.name} returned the score {float(s[i])} for answer {i}; expected a "
                "finite number"
            )
        return s

    def __call__(self, prompts: Sequence[str], completion_pairs: Pairs) -> torch.Tensor:
        """``P(first > second | prompt)``, float32 ``[B]`` on the CPU.

        Raises:
            ValueError: naming the judge, when its output has the wrong shape, a NaN or infinity,
                or a value outside [0, 1].
        """
        pairs = [(str(a), str(b)) for a, b in completion_pairs]
        if len(prompts) != len(pairs):
            raise ValueError(f"got {len(prompts)} prompts but {len(pairs)} completion pairs")
        out = self.fn(list(prompts), pairs)
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu()
        try:
            return check_probabilities(out, len(pairs), f"judge {self.name}")
        except (TypeError, RuntimeError) as err:  # e.g. a string or ragged nested lists
            raise ValueError(
                f"judge {self.name} must return {len(pairs)} probabilities; got {out!r:.80}"
            ) from err

    def __repr__(self) -> str:
        return f"ValidatedJudge({self.name})"


def _seq_cls_model(model: Any, role: str) -> Any:
    name = type(model).__name__
    if not name.endswith("ForSequenceClassification"):
        raise GameError(
            f"the {role} must be a sequence-classification model "
            f"(AutoModelForSequenceClassification); got {name}"
        )
    labels = int(getattr(model.config, "num_labels", 0))
    if labels != 1:
        raise GameError(f"the {role} {name} must have one output (num_labels=1); it has {labels}")
    return model.eval()


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


@torch.no_grad()
def pooled_scores(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int | None) -> Any:
    """One score per text from a one-output sequence classifier, pooled at the last real token.

    Texts are encoded one by one (the tokenizer's special tokens added) and right-padded; for models
    with a ``score`` head on a decoder (GPT-2, Llama, Qwen, ...) the head is applied to the base
    model's hidden state at the last position where the attention mask is 1. This is right also
    when the pad token equals the EOS token (pooling by ``input_ids != pad_token_id``, as the
    models' own forward does, would skip a final EOS). Other architectures (e.g. BERT-like
    ``classifier`` heads) are called as they are.

    Returns:
        float64 ``[len(texts)]`` tensor.
    """
    rows = [
        tokenizer(t, truncation=max_length is not None, max_length=max_length)["input_ids"]
        for t in texts
    ]
    width = max(1, *(len(r) for r in rows))
    device = next(model.parameters()).device
    ids = torch.full((len(rows), width), _pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    ids, mask = ids.to(device), mask.to(device)
    head = getattr(model, "score", None)
    base = getattr(model, "base_model", None)
    if isinstance(head, torch.nn.Module) and base is not None and base is not model:
        hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
        last = (torch.arange(width, device=device)[None, :] * mask).argmax(-1)
        pooled = hidden[torch.arange(len(rows), device=device), last]
        return head(pooled)[:, 0].double().cpu()
    return model(input_ids=ids, attention_mask=mask).logits[:, 0].double().cpu()


def _default_pair_format(tokenizer: Any) -> Callable[[str, str], str]:
    if getattr(tokenizer, "chat_template", None):

        def chat(prompt: str, answer: str) -> str:
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": answer},
            ]
            return tokenizer.apply_chat_template(messages, tokenize=False)

        return chat
    return lambda prompt, answer: f"{prompt}\n{answer}"


class RewardModelJudge:
    """A Bradley-Terry reward model as a judge: ``P(a > b | x) = sigmoid(r(x, a) - r(x, b))``.

    Args:
        model: an ``AutoModelForSequenceClassification`` with ``num_labels=1`` (``r``), in eval mode.
        tokenizer: the reward model's own tokenizer.
        format: ``format(prompt, answer) -> text`` scored by the model; default the tokenizer's chat
            template (user prompt, assistant answer) when it has one, else ``prompt + "\\n" + answer``.
        max_length: truncate texts to this many tokens (default: no truncation).

    Raises:
        GameError: for a model that is not a one-output sequence classifier.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        format: Callable[[str, str], str] | None = None,
        max_length: int | None = None,
    ) -> None:
        self.model = _seq_cls_model(model, "reward model")
        self.tokenizer = tokenizer
        self.format = format or _default_pair_format(tokenizer)
        self.max_length = max_length
        #: texts per model call of :meth:`scores` (memory stays bounded for any number of answers)
        self.score_batch = 256

    def rewards(self, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """``r(x, y)`` per pair, float64 ``[B]`` (pooled as in :func:`pooled_scores`)."""
        texts = [self.format(p, a) for p, a in zip(prompts, answers, strict=True)]
        return pooled_scores(self.model, self.tokenizer, texts, self.max_length)

    def scores(self, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """The scores interface (:meth:`ValidatedJudge.scores`): the rewards ``r(x, y)``, in
        batches of at most :attr:`score_batch` texts, so that ``P(a > b | x) = sigmoid(r(x, a) -
        r(x, b))`` for every pair of the answers from one model call per answer."""
        out = [
            self.rewards(prompts[i : i + self.score_batch], answers[i : i + self.score_batch])
            for i in range(0, len(answers), self.score_batch)
        ]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def __call__(self, prompts: Sequence[str], completion_pairs: Pairs) -> torch.Tensor:
        """``sigmoid(r(x, a) - r(x, b))`` per pair (both answers scored in one batch)."""
        n = len(completion_pairs)
        if n == 0:
            return torch.zeros(0, dtype=torch.float64)
        answers = [a for a, _ in completion_pairs] + [b for _, b in completion_pairs]
        r = self.rewards(list(prompts) * 2, answers)
        return torch.sigmoid(r[:n] - r[n:])


class PairwiseClassifierJudge:
    """A classifier of ``(x, a, b)`` read together, symmetrised: ``(f(x, a, b) + 1 - f(x, b, a)) / 2``.

    Args:
        classifier: either a callable ``f(prompts, answers_a, answers_b) -> P(a > b)`` or an
            ``AutoModelForSequenceClassification`` with one output, read as ``f = sigmoid(logit)``
            of the text ``format(x, a, b)``.
        tokenizer: the classifier model's tokenizer (required with a model).
        format: ``format(prompt, a, b) -> text`` (models only); default
            ``"{prompt}\\n[A] {a}\\n[B] {b}"``.
        max_length: truncate texts to this many tokens (models only).

    Raises:
        GameError: for a model without its tokenizer or with more than one output.
    """

    def __init__(
        self,
        classifier: Any,
        tokenizer: Any = None,
        *,
        format: Callable[[str, str, str], str] | None = None,
        max_length: int | None = None,
    ) -> None:
        if isinstance(classifier, torch.nn.Module):
            model = _seq_cls_model(classifier, "pairwise classifier")
            if tokenizer is None:
                raise GameError("a pairwise classifier model needs its tokenizer (tokenizer=)")
            fmt = format or (lambda x, a, b: f"{x}\n[A] {a}\n[B] {b}")

            def f(prompts: list[str], a: list[str], b: list[str]) -> torch.Tensor:
                texts = [fmt(*t) for t in zip(prompts, a, b, strict=True)]
                return torch.sigmoid(pooled_scores(model, tokenizer, texts, max_length))

            self.f: Callable[[list[str], list[str], list[str]], Any] = f
            self.model = model  # held for the env's content fingerprint
            self.name = type(model).__name__
        elif callable(classifier):
            self.f = classifier
            self.name = judge_name(classifier)
        else:
            raise GameError(
                "a pairwise classifier must be callable or a sequence-classification model; "
                f"got {type(classifier).__name__}"
            )

    def __call__(self, prompts: Sequence[str], completion_pairs: Pairs) -> torch.Tensor:
        """The symmetrised probability per pair (both orders checked as probabilities)."""
        n = len(completion_pairs)
        if n == 0:
            return torch.zeros(0, dtype=torch.float64)
        a = [p[0] for p in completion_pairs]
        b = [p[1] for p in completion_pairs]
        x = list(prompts)
        src = f"pairwise classifier {self.name}"
        f_ab = check_probabilities(_as_float(self.f(x, a, b)), n, src).double()
        f_ba = check_probabilities(_as_float(self.f(x, b, a)), n, src).double()
        return (f_ab + 1.0 - f_ba) / 2.0


def _as_float(out: Any) -> Any:
    return out.detach().double().cpu() if isinstance(out, torch.Tensor) else out


class TRLJudgeAdapter:
    """An object with TRL's pairwise-judge method ``judge(prompts, completions, shuffle_order,
    return_scores)`` as a text judge.

    Scores (``return_scores=True``, ``shuffle_order=False``) are used when the method takes
    ``return_scores``; otherwise the returned index ``i`` of the preferred completion is read as the
    probability ``1 - i`` (``-1``, TRL's "no verdict", is refused).
    """

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.name = type(obj).__qualname__
        try:
            params = inspect.signature(obj.judge).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            params = {}
        self.scores = "return_scores" in params
        self.shuffle = "shuffle_order" in params

    def __call__(self, prompts: Sequence[str], completion_pairs: Pairs) -> Any:
        """``P(first > second)`` per pair."""
        completions = [[a, b] for a, b in completion_pairs]
        kwargs: dict[str, Any] = {"shuffle_order": False} if self.shuffle else {}
        if self.scores:
            return self.obj.judge(list(prompts), completions, return_scores=True, **kwargs)
        ranks = list(self.obj.judge(list(prompts), completions, **kwargs))
        for i, r in enumerate(ranks):
            if r not in (0, 1):
                raise ValueError(
                    f"judge {self.name} returned rank {r!r} for pair {i}; expected 0 or 1"
                )
        return [1.0 - float(r) for r in ranks]


def _causal_lm_architecture(path: Path) -> str | None:
    """The causal-LM architectures a model folder's ``config.json`` declares, or ``None``."""
    import json

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        archs = json.loads((path / "config.json").read_text(encoding="utf-8"))["architectures"]
        names = [str(a) for a in archs]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no readable list: the loader reports what is wrong
    known = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    causal = [a for a in names if a in known or a.endswith(("ForCausalLM", "LMHeadModel"))]
    return ", ".join(causal) or None


def _load_reward_model(path: Path) -> RewardModelJudge:
    from nlhf_envs.text.hf_folders import load_sequence_classifier, load_tokenizer

    if not path.is_dir():
        raise GameError(f"no judge model folder at {path}")
    causal = _causal_lm_architecture(path)
    if causal is not None:  # it would load as a classifier with a fresh two-output head
        raise GameError(
            f"the judge folder {path} holds a causal language model ({causal}), not a reward "
            "model: a judge folder needs an AutoModelForSequenceClassification with one output "
            "(num_labels=1)"
        )
    model = load_sequence_classifier(path, "the judge")
    tokenizer = load_tokenizer(path, "the judge's tokenizer")
    return RewardModelJudge(model, tokenizer)


def as_text_judge(judge: Any, name: str | None = None) -> ValidatedJudge:
    """Any supported judge as a :class:`ValidatedJudge` (see the module docstring).

    Args:
        judge: a callable text judge (a :class:`~nlhf_envs.text.judging.PairwiseJudge`, a
            :class:`RewardModelJudge`, a :class:`PairwiseClassifierJudge`, a function), an object
            with a TRL-style ``judge`` method, or the folder of a saved reward model.
        name: how errors name it (default: its class or function name).

    Raises:
        GameError: for anything else.
    """
    if isinstance(judge, ValidatedJudge):
        return judge
    if isinstance(judge, (str, os.PathLike)):
        judge = _load_reward_model(Path(judge))
    if callable(judge):
        fn = judge
    elif callable(getattr(judge, "judge", None)):
        fn = TRLJudgeAdapter(judge)
    else:
        raise GameError(
            "judge must be callable (prompts, completion_pairs) -> probabilities, have a TRL-style "
            f"judge() method, or be a reward-model folder; got {type(judge).__name__}"
        )
    return ValidatedJudge(fn, name or judge_name(judge))
