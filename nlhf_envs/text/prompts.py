"""The prompts of a world: what a prompt asks for (:class:`PromptSpec`) and all prompts of a language
with their fixed train / validation / held-out splits (:class:`PromptSet`), and the class split mode
that holds out whole ground-truth classes of prompts (:meth:`PromptSet.class_split`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
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


@dataclass(frozen=True)
class ClassSplit:
    """The class split of a prompt set (:meth:`PromptSet.class_split`).

    A prompt's *class* is what it asks the answer to be (:func:`prompt_class`): its domain and its
    *kind* (a list or not, the ideal length). The split holds out one class per domain for the report
    (``"unseen_heldout"``) and, where enough kinds exist, another for tuning
    (``"unseen_validation"``); every held-out kind is trained on in the other domains, so an unseen
    class is a new combination of a domain and a kind that were each seen in training.

    Attributes:
        classes: every class, sorted (``(domain, wants_list, ideal_length)``).
        heldout_classes: the classes of ``"unseen_heldout"`` (one per domain).
        validation_classes: the classes of ``"unseen_validation"``.
        seen_train: indices of the ``"train"`` prompts of every other class (trained on).
        seen_heldout: indices of the ``"heldout"`` prompts of those classes (unseen wording).
        unseen_validation: indices of every prompt of the validation classes (tuning).
        unseen_heldout: indices of every prompt of the held-out classes (unseen classes).
    """

    classes: tuple[tuple, ...]
    heldout_classes: tuple[tuple, ...]
    validation_classes: tuple[tuple, ...]
    seen_train: np.ndarray
    seen_heldout: np.ndarray
    unseen_validation: np.ndarray
    unseen_heldout: np.ndarray


def prompt_class(spec: PromptSpec) -> tuple[int, bool, float]:
    """The class of a prompt: ``(domain, wants_list, ideal_length)``, what it asks the answer to be.

    The annotators read a prompt only through its :class:`PromptSpec`; the topic word reaches them
    only when an answer repeats it (``topic_mention``), and a polite request only through the
    politeness of the answer. On the tiny worlds, whose answers never contain a topic word, the
    prompts of one class are one game for the plain annotators (a polite request moves their
    preferences by less than 0.001; ``tests/nlhf_envs/text/test_prompt_classes.py``), so the class
    is what is held out whole; the wording (topic, politeness, template) is what varies within it.
    """
    return int(spec.domain), bool(spec.wants_list), float(spec.ideal_length)


class PromptSet:
    """All prompts of a language and its fixed splits.

    One protocol for every figure: agents train on ``"train"``; tuning scores ``"validation"``
    (languages that have one; disjoint from the other two); results are reported on ``"train"``
    (optimisation: the prompts trained on) and ``"heldout"`` (generalisation: prompts no agent, tuner or
    shipped model was trained on). ``"all"`` is every prompt.

    The *class split mode* (:meth:`class_split`; languages whose prompt set knows its classes, i.e.
    built by a :class:`~nlhf_envs.text.world.World`) adds four splits that hold out whole
    ground-truth classes: agents train on ``"seen_train"``, tuning scores ``"unseen_validation"``,
    results are reported on ``"seen_train"`` (optimisation), ``"seen_heldout"`` (unseen wording of
    classes trained on) and ``"unseen_heldout"`` (classes never trained or tuned on). The first four
    splits, and everything built on them, are unchanged by it.

    Attributes:
        texts: every prompt, in a fixed order (template, then domain and topic, then modifier).
        train_indices: indices of training prompts.
        validation_indices: indices of validation prompts (empty when the language has none).
        heldout_indices: indices of held-out prompts (never used to train the shipped models).
    """

    #: the split names of the fixed splits, in the order of :meth:`indices`
    SPLITS: tuple[str, ...] = ("train", "validation", "heldout", "all")
    #: the split names of the class split mode (:meth:`class_split`)
    CLASS_SPLITS: tuple[str, ...] = (
        "seen_train",
        "seen_heldout",
        "unseen_validation",
        "unseen_heldout",
    )

    def __init__(
        self,
        language: LanguageConfig = DEFAULT_LANGUAGE,
        classify: Callable[[str], Hashable] | None = None,
    ) -> None:
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
        self._language_seed = int(language.seed)
        self._classify = classify
        self._class_split: ClassSplit | None = None

    def class_split(self) -> ClassSplit:
        """The class split of this prompt set (see :class:`ClassSplit`), built once.

        The kinds present in every domain are shuffled with a generator of their own (the language's
        seed and a stream of its own, so the fixed splits and every world's fingerprint are
        unchanged). With ``D`` domains and ``n`` such kinds, domain ``d`` holds out the class of
        kind ``d`` for the report (``d < D``) and, when ``D + d < n``, the class of kind ``D + d``
        for tuning. Each kind is held out in one domain at most, so every held-out class is a new
        combination of a domain and a kind that are each trained on elsewhere.

        Raises:
            ValueError: when the prompt set cannot classify its prompts, or a domain would keep no
                kind to train on (fewer than ``D + 1`` kinds in every domain, or fewer than 3).
        """
        if self._class_split is not None:
            return self._class_split
        if self._classify is None:
            raise ValueError(
                f"the prompts of language {self.language_name!r} were built without their "
                "ground-truth classes: use the world's prompt set (World.prompts) for the class split"
            )
        labels = [tuple(self._classify(t)) for t in self.texts]
        classes = tuple(sorted(set(labels)))
        domains = sorted({c[0] for c in classes if c[0] >= 0})
        kinds_of = {d: {c[1:] for c in classes if c[0] == d} for d in domains}
        common = sorted(set.intersection(*kinds_of.values())) if domains else []
        n_dom = len(domains)
        if n_dom == 0 or len(common) < max(3, n_dom + 1):
            raise ValueError(
                f"language {self.language_name!r}: the class split needs at least "
                f"{max(3, n_dom + 1)} prompt kinds present in each of its {n_dom} domain(s), so "
                f"that every domain keeps one to train on; it has {len(common)}"
            )
        rng = np.random.default_rng([self._language_seed, 1])
        order = [common[i] for i in rng.permutation(len(common))]
        held = tuple((d, *order[i]) for i, d in enumerate(domains))
        val = tuple((d, *order[n_dom + i]) for i, d in enumerate(domains) if n_dom + i < len(order))
        is_held = np.array([lab in held for lab in labels])
        is_val = np.array([lab in val for lab in labels])
        seen = ~(is_held | is_val)
        in_train = np.isin(np.arange(len(labels)), self.train_indices)
        in_heldout = np.isin(np.arange(len(labels)), self.heldout_indices)
        self._class_split = ClassSplit(
            classes=classes,
            heldout_classes=held,
            validation_classes=val,
            seen_train=np.flatnonzero(seen & in_train),
            seen_heldout=np.flatnonzero(seen & in_heldout),
            unseen_validation=np.flatnonzero(is_val),
            unseen_heldout=np.flatnonzero(is_held),
        )
        return self._class_split

    def __len__(self) -> int:
        return len(self.texts)

    def indices(self, split: str) -> np.ndarray:
        """Indices of ``split``: ``"train"``, ``"validation"``, ``"heldout"``, ``"all"``, or a split
        of the class split mode (:data:`CLASS_SPLITS`, :meth:`class_split`).

        Raises:
            ValueError: for an unknown split, ``"validation"`` on a language without one, or a class
                split on a prompt set that cannot build it.
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
        if split in self.CLASS_SPLITS:
            return getattr(self.class_split(), split)
        raise ValueError(
            f"unknown split {split!r}; expected 'train', 'validation', 'heldout' or 'all', or a "
            f"split of the class split mode: {', '.join(map(repr, self.CLASS_SPLITS))}"
        )

    def has_split(self, split: str) -> bool:
        """Whether ``split`` names a non-empty split of this prompt set."""
        if split in self.CLASS_SPLITS:
            try:
                return len(self.indices(split)) > 0
            except ValueError:
                return False
        return split in self.SPLITS and (split != "validation" or len(self.validation_indices) > 0)

    def sample(self, n: int, rng: np.random.Generator, split: str = "train") -> list[str]:
        """``n`` prompts drawn uniformly (with replacement) from ``split``."""
        idx = self.indices(split)
        return [self.texts[i] for i in rng.choice(idx, size=n)]
