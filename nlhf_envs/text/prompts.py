"""The prompts of a world: what a prompt asks for (:class:`PromptSpec`) and all prompts of a language
with their fixed train / validation / held-out splits (:class:`PromptSet`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlhf_envs.text.language import DEFAULT_LANGUAGE, LanguageConfig


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for, as the annotators read it.

    Attributes:
        domain: index into the language's domains, or -1 when the prompt names no topic.
        topic_id: token id of the topic word, or -1.
        wants_list: the prompt asks for a list (``- item - item``) rather than a sentence ending in ``.``.
        ideal_length: the answer length (words) the prompt asks for.
        polite_request: the prompt says "please" or "politely".
    """

    domain: int
    topic_id: int
    wants_list: bool
    ideal_length: float
    polite_request: bool


class PromptSet:
    """All prompts of a language and its fixed splits.

    One protocol for every figure: agents train on ``"train"``; tuning scores ``"validation"``
    (languages that have one; disjoint from the other two); results are reported on ``"train"``
    (optimisation: the prompts trained on) and ``"heldout"`` (generalisation: prompts no agent, tuner or
    shipped model was trained on). ``"all"`` is every prompt.

    Attributes:
        texts: every prompt, in a fixed order (template, then domain and topic, then modifier).
        train_indices: indices of training prompts.
        validation_indices: indices of validation prompts (empty when the language has none).
        heldout_indices: indices of held-out prompts (never used to train the shipped models).
    """

    #: the split names, in the order of :meth:`indices`
    SPLITS: tuple[str, ...] = ("train", "validation", "heldout", "all")

    def __init__(self, language: LanguageConfig = DEFAULT_LANGUAGE) -> None:
        texts = []
        for template, _, _ in language.templates:
            for topics, _ in language.domains.values():
                for topic in topics:
                    for prefix, suffix in language.modifiers:
                        texts.append(
                            " ".join(filter(None, (prefix, template.format(t=topic), suffix)))
                        )
        self.texts: tuple[str, ...] = tuple(texts)
        self.language_name = language.name
        perm = np.random.default_rng(language.seed).permutation(len(texts))
        n_held = int(round(language.heldout_fraction * len(texts)))
        n_val = int(round(language.validation_fraction * len(texts)))
        self.heldout_indices = np.sort(perm[:n_held])
        self.validation_indices = np.sort(perm[n_held : n_held + n_val])
        self.train_indices = np.sort(perm[n_held + n_val :])

    def __len__(self) -> int:
        return len(self.texts)

    def indices(self, split: str) -> np.ndarray:
        """Indices of ``split``: ``"train"``, ``"validation"``, ``"heldout"`` or ``"all"``.

        Raises:
            ValueError: for an unknown split, or ``"validation"`` on a language without one.
        """
        if split == "train":
            return self.train_indices
        if split == "heldout":
            return self.heldout_indices
        if split == "validation":
            if len(self.validation_indices) == 0:
                raise ValueError(
                    f"language {self.language_name!r} has no validation prompts (its "
                    f"{len(self.texts)} prompts are {len(self.train_indices)} train and "
                    f"{len(self.heldout_indices)} held out); score 'train' instead and say so, or "
                    "use a world with a validation split (nlhf/TinyTokenDuel-v1)"
                )
            return self.validation_indices
        if split == "all":
            return np.arange(len(self.texts))
        raise ValueError(
            f"unknown split {split!r}; expected 'train', 'validation', 'heldout' or 'all'"
        )

    def has_split(self, split: str) -> bool:
        """Whether ``split`` names a non-empty split of this prompt set."""
        return split in self.SPLITS and (split != "validation" or len(self.validation_indices) > 0)

    def sample(self, n: int, rng: np.random.Generator, split: str = "train") -> list[str]:
        """``n`` prompts drawn uniformly (with replacement) from ``split``."""
        idx = self.indices(split)
        return [self.texts[i] for i in rng.choice(idx, size=n)]
