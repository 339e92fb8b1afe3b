"""Language worlds: vocabulary, prompts, demonstrators and a population of annotators, as configuration.

A *world* is a :class:`WorldConfig`: a :class:`LanguageConfig` (words, prompts, answer length, the
demonstrator the reference policy imitates) and a :class:`PopulationConfig` (the annotators who judge).
:class:`World` builds everything a world needs from its config; :func:`get_world` returns the registered
worlds by name (:data:`WORLD_NAMES`):

================== ========================================================================================
world              what it is
================== ========================================================================================
``default``        twelve domains, 317 tokens, 4320 prompts (15% held out), answers of up to 24 tokens;
                   20 annotators of five types (``nlhf/TokenDuel-v0``, ``nlhf/TokenDuel-v1``)
``default-cyclic`` the same language; three annotator types whose preferences cancel to first order, so
                   majorities cycle (``nlhf/TokenDuel-Cyclic-v0``)
``tiny``           two domains, six answer words, 32 prompts (8 held out), answers of at most 3 tokens:
                   259 possible answers per prompt, small enough to enumerate (``nlhf/TinyTokenDuel-v0``)
``tiny-cyclic``    the tiny language with the cyclic population (``nlhf/TinyTokenDuel-Cyclic-v0``)
================== ========================================================================================

The default world
-----------------
It has twelve domains (animals, cooking, weather, ...). Each domain has six *topics* (words a prompt
asks about) and fourteen *content* words (words a relevant answer uses). A prompt fills an instruction
template with a topic and a modifier, for example ``"list facts about cats briefly"`` or ``"please
describe storms"``: 10 templates x 72 topics x 6 modifiers = 4320 distinct prompts, of which a fixed 15%
are held out.

The ground truth is a population of annotators of several types (default: concision, thoroughness,
politeness, format, instruction following; four of each, with jittered weights). Annotator ``k`` scores
an answer ``y`` to prompt ``x`` linearly in a feature vector, ``s_k(x, y) = w_k . phi(x, y)`` (see
:meth:`World.answer_features`), and votes by a Bradley-Terry rule with its own temperature ``tau_k``:

    P_k(y > y' | x) = sigmoid(tau_k (s_k(x, y) - s_k(x, y'))).

The population preference is the mean, ``P*(y > y' | x) = (1/K) sum_k P_k(y > y' | x)``. Every
``P_k`` is transitive, but their mean is not: the types disagree (short vs detailed, polite vs terse),
so majority preferences among ordinary answers form Condorcet cycles. Votes are sharp (temperatures in
[6, 12]), so ``P*`` is close to the fraction of annotators who prefer ``y``.

The cyclic populations put three types in one plane of feature space with weight vectors at 120 degrees
(``w_1 + w_2 + w_3 = 0`` on those features): a linear, transitive part of ``P*`` cancels and what is left
is mostly cyclic (rock-paper-scissors among long, polite-and-short and terse answers).

Everything is fixed by the configs' seeds; sampling functions take an explicit
``numpy.random.Generator``. The module-level names (:data:`PROMPTS`, :func:`demonstrate`,
:func:`population_prob`, ...) are those of the default world.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nlhf_envs.text.tokenizer import EOS, SPECIAL_TOKENS, Tokenizer

#: Seed of everything fixed in the default world (annotator weights, the held-out split).
WORLD_SEED = 20250524
#: Fraction of prompts held out from every training set (default world).
HELDOUT_FRACTION = 0.15
#: Width of a prompt for the models: ``<bos>``, at most ten words, ``<sep>``, left-padded.
PROMPT_LEN = 12
#: Default longest answer, ``<eos>`` included.
MAX_NEW_TOKENS = 24

#: domain -> (topics, content words)
DOMAINS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "animals": (
        ("cats", "dogs", "horses", "rabbits", "parrots", "wolves"),
        (
            "fur",
            "paws",
            "tail",
            "feathers",
            "wings",
            "hunt",
            "pack",
            "pet",
            "wild",
            "farm",
            "meat",
            "grass",
            "loyal",
            "claws",
        ),
    ),
    "cooking": (
        ("bread", "soup", "pasta", "cake", "rice", "salad"),
        (
            "flour",
            "oven",
            "bake",
            "boil",
            "salt",
            "pepper",
            "butter",
            "sugar",
            "fresh",
            "recipe",
            "spicy",
            "sweet",
            "knife",
            "pan",
        ),
    ),
    "weather": (
        ("rain", "snow", "storms", "wind", "fog", "heat"),
        (
            "clouds",
            "cold",
            "warm",
            "humid",
            "thunder",
            "lightning",
            "forecast",
            "sky",
            "wet",
            "ice",
            "season",
            "sunny",
            "breeze",
            "temperature",
        ),
    ),
    "music": (
        ("guitar", "piano", "drums", "jazz", "opera", "violin"),
        (
            "melody",
            "rhythm",
            "chord",
            "song",
            "band",
            "concert",
            "notes",
            "tempo",
            "loud",
            "soft",
            "tune",
            "sing",
            "stage",
            "harmony",
        ),
    ),
    "sports": (
        ("soccer", "tennis", "chess", "running", "swimming", "boxing"),
        (
            "team",
            "goal",
            "score",
            "match",
            "coach",
            "win",
            "train",
            "ball",
            "court",
            "field",
            "speed",
            "medal",
            "player",
            "league",
        ),
    ),
    "travel": (
        ("trains", "airports", "hotels", "maps", "beaches", "mountains"),
        (
            "ticket",
            "journey",
            "luggage",
            "passport",
            "route",
            "tourist",
            "guide",
            "trip",
            "flight",
            "station",
            "view",
            "hike",
            "visit",
            "border",
        ),
    ),
    "space": (
        ("planets", "stars", "moon", "rockets", "comets", "galaxies"),
        (
            "orbit",
            "gravity",
            "telescope",
            "astronaut",
            "light",
            "dark",
            "vacuum",
            "launch",
            "crater",
            "solar",
            "distant",
            "mass",
            "universe",
            "satellite",
        ),
    ),
    "computers": (
        ("keyboards", "servers", "software", "networks", "databases", "robots"),
        (
            "code",
            "data",
            "memory",
            "chip",
            "screen",
            "program",
            "bug",
            "internet",
            "fast",
            "storage",
            "signal",
            "logic",
            "algorithm",
            "cloud",
        ),
    ),
    "gardening": (
        ("roses", "tomatoes", "trees", "herbs", "tulips", "lawns"),
        (
            "soil",
            "seeds",
            "water",
            "sun",
            "roots",
            "leaves",
            "prune",
            "compost",
            "bloom",
            "grow",
            "garden",
            "shade",
            "weeds",
            "harvest",
        ),
    ),
    "health": (
        ("sleep", "exercise", "vitamins", "teeth", "stress", "diet"),
        (
            "doctor",
            "rest",
            "muscles",
            "heart",
            "habits",
            "calm",
            "energy",
            "protein",
            "brush",
            "walk",
            "breathe",
            "healthy",
            "routine",
            "balance",
        ),
    ),
    "history": (
        ("castles", "empires", "pyramids", "knights", "ships", "kings"),
        (
            "ancient",
            "war",
            "battle",
            "stone",
            "crown",
            "trade",
            "century",
            "ruler",
            "army",
            "build",
            "old",
            "legend",
            "power",
            "sword",
        ),
    ),
    "ocean": (
        ("whales", "sharks", "coral", "waves", "tides", "dolphins"),
        (
            "reef",
            "deep",
            "swim",
            "fins",
            "current",
            "shore",
            "blue",
            "plankton",
            "marine",
            "dive",
            "sand",
            "tropical",
            "depth",
            "pod",
        ),
    ),
}

#: Instruction templates: (text with ``{t}``, asks for a list, requested length class).
TEMPLATES: tuple[tuple[str, bool, str], ...] = (
    ("describe {t}", False, "normal"),
    ("tell me about {t}", False, "normal"),
    ("what do you know about {t}", False, "normal"),
    ("list facts about {t}", True, "normal"),
    ("give a list of words for {t}", True, "normal"),
    ("list the key points on {t}", True, "normal"),
    ("explain {t} in one sentence", False, "short"),
    ("write a short note on {t}", False, "short"),
    ("write a detailed answer on {t}", False, "long"),
    ("give a detailed list on {t}", True, "long"),
)
#: Modifiers: (prefix, suffix).
MODIFIERS: tuple[tuple[str, str], ...] = (
    ("", ""),
    ("please", ""),
    ("", "briefly"),
    ("", "in detail"),
    ("", "politely"),
    ("now", ""),
)
#: Ideal answer length (words) per requested length class.
IDEAL_LENGTH = {"short": 4.0, "normal": 9.0, "long": 16.0}
POLITE_WORDS: tuple[str, ...] = ("sure", "thanks", "glad", "happy", "help", "kindly", "welcome")
RUDE_WORDS: tuple[str, ...] = ("whatever", "obviously", "ugh", "boring", "duh")
FILLER_WORDS: tuple[str, ...] = (
    "the",
    "is",
    "are",
    "and",
    "very",
    "really",
    "it",
    "they",
    "some",
    "many",
    "good",
    "nice",
    "thing",
    "stuff",
    "maybe",
    "so",
    "also",
    "with",
    "can",
    "has",
)
FORMAT_WORDS: tuple[str, ...] = (".", ",", "-", "!")
OTHER_WORDS: tuple[str, ...] = ("to", "not", "no", "yes")

_OPENERS: tuple[tuple[str, ...], ...] = (
    ("sure",),
    ("happy", "to", "help"),
    ("glad", "to", "help"),
    ("thanks",),
    ("kindly",),
)

FEATURE_NAMES: tuple[str, ...] = (
    "relevance",  # fraction of words from the prompt's domain
    "topic_mention",  # 1 if the prompt's topic word appears
    "off_topic",  # fraction of words from other domains
    "length",  # words / 10
    "coverage",  # min(distinct domain words, 10) / 10
    "politeness",  # min(polite words, 2)
    "rudeness",  # min(rude words, 2)
    "repetition",  # 1 - distinct / words
    "format_ok",  # list prompt: at least two "-" and no "."; else: ends with "." and no "-"
    "length_deviation",  # min(|words - ideal| / ideal, 2)
    "empty",  # 1 if no words
    "requested_politeness",  # politeness when the prompt asks for it, else 0
    "filler",  # fraction of filler words
)
NUM_FEATURES = len(FEATURE_NAMES)

#: Base weight of each annotator type of the default world on :data:`FEATURE_NAMES` (missing: 0).
ANNOTATOR_TYPES: dict[str, dict[str, float]] = {
    "concise": {"length": -3.0, "relevance": 2.0, "off_topic": -2.0, "empty": -5.0},
    "thorough": {"coverage": 4.0, "length": 1.0, "repetition": -2.0, "empty": -5.0},
    "polite": {
        "politeness": 2.5,
        "rudeness": -3.0,
        "requested_politeness": 1.0,
        "relevance": 1.0,
        "empty": -5.0,
    },
    "format": {"format_ok": 3.0, "relevance": 1.0, "filler": -1.5, "empty": -5.0},
    "instructions": {
        "length_deviation": -2.5,
        "format_ok": 1.0,
        "relevance": 2.0,
        "topic_mention": 0.5,
        "empty": -5.0,
    },
}
ANNOTATORS_PER_TYPE = 4


# ------------------------------------------------------------------------------------------ configs


@dataclass(frozen=True)
class LanguageConfig:
    """The language of a world: words, prompts, answer lengths and the demonstrator.

    Attributes:
        name: the language's name (its reference policy is trained once per language).
        seed: seed of the held-out split.
        domains: domain name -> (topic words, content words); a word belongs to one domain.
        templates: instruction templates ``(text with {t}, asks for a list, length class)``.
        modifiers: ``(prefix, suffix)`` added to every template.
        ideal_length: length class (``"short"``, ``"normal"``, ``"long"``) -> ideal answer length in
            words.
        polite_words: words the politeness feature counts.
        rude_words: words the rudeness feature counts.
        filler_words: words the filler feature counts (template words that are filler words are not
            prompt words).
        format_words: punctuation words (``"-"`` makes lists, ``"."`` ends sentences).
        other_words: further words of the vocabulary.
        polite_openers: the demonstrator's polite openings.
        heldout_fraction: fraction of prompts held out from every training set (the ``"heldout"``
            split: results are reported on it, nothing is trained or tuned on it).
        validation_fraction: fraction of prompts in the ``"validation"`` split (disjoint from the
            training and held-out prompts: tuning objectives score it); ``0``: the language has no
            validation split (the 32-prompt ``tiny`` language).
        prompt_len: width of a prompt for the models (``<bos>`` and ``<sep>`` included).
        max_new_tokens: the longest answer, ``<eos>`` included.
        answer_words: the words an answer may use (``None``: every word). Language models of the world
            suppress every other token except ``<eos>`` (see :attr:`World.suppressed_token_ids`), which
            keeps the answer set of a tiny world enumerable.
    """

    name: str
    seed: int
    domains: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    templates: tuple[tuple[str, bool, str], ...]
    modifiers: tuple[tuple[str, str], ...]
    ideal_length: dict[str, float]
    polite_words: tuple[str, ...] = ()
    rude_words: tuple[str, ...] = ()
    filler_words: tuple[str, ...] = ()
    format_words: tuple[str, ...] = ()
    other_words: tuple[str, ...] = ()
    polite_openers: tuple[tuple[str, ...], ...] = ()
    heldout_fraction: float = 0.15
    validation_fraction: float = 0.0
    prompt_len: int = 12
    max_new_tokens: int = 24
    answer_words: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PopulationConfig:
    """The annotators of a world.

    Attributes:
        name: the population's name.
        seed: seed of the jittered weights and the temperatures.
        types: type name -> base weights on :data:`FEATURE_NAMES` (missing features weigh 0).
        per_type: annotators of each type.
        weight_jitter: each weight is multiplied by ``exp(weight_jitter * N(0, 1))``.
        temperature_range: temperatures ``tau_k`` are uniform on this interval.
    """

    name: str
    seed: int
    types: dict[str, dict[str, float]]
    per_type: int = 4
    weight_jitter: float = 0.25
    temperature_range: tuple[float, float] = (6.0, 12.0)


@dataclass(frozen=True)
class WorldConfig:
    """A world: a language, a population of annotators and the KL strength of its game.

    Attributes:
        name: the world's name (:func:`get_world`).
        language: its :class:`LanguageConfig`.
        population: its :class:`PopulationConfig`.
        beta: default KL regularisation of the world's game (the envs' ``beta``).
        description: one line for listings.
    """

    name: str
    language: LanguageConfig
    population: PopulationConfig
    beta: float = 0.1
    description: str = ""

    def to_dict(self) -> dict:
        """The config as plain JSON types (a language without a validation split omits
        ``validation_fraction``, so the worlds registered before it existed keep their fingerprints)."""
        out = json.loads(json.dumps(asdict(self)))
        if not out["language"]["validation_fraction"]:
            del out["language"]["validation_fraction"]
        return out


DEFAULT_LANGUAGE = LanguageConfig(
    name="default",
    seed=WORLD_SEED,
    domains=DOMAINS,
    templates=TEMPLATES,
    modifiers=MODIFIERS,
    ideal_length=IDEAL_LENGTH,
    polite_words=POLITE_WORDS,
    rude_words=RUDE_WORDS,
    filler_words=FILLER_WORDS,
    format_words=FORMAT_WORDS,
    other_words=OTHER_WORDS,
    polite_openers=_OPENERS,
    heldout_fraction=HELDOUT_FRACTION,
    prompt_len=PROMPT_LEN,
    max_new_tokens=MAX_NEW_TOKENS,
)

DEFAULT_POPULATION = PopulationConfig(
    name="default", seed=WORLD_SEED + 1, types=ANNOTATOR_TYPES, per_type=ANNOTATORS_PER_TYPE
)


def cyclic_population(name: str, seed: int, length_weight: float) -> PopulationConfig:
    """Three annotator types at 120 degrees in the plane of (length, politeness): thorough
    (``+2a`` length), polite-and-brief and terse (``-a`` length, politeness ``+-2.6``); the linear parts
    cancel to first order, so majorities cycle. A small shared relevance term. ``a`` is
    ``length_weight``, scaled to the language's answer lengths."""
    a = float(length_weight)
    return PopulationConfig(
        name=name,
        seed=seed,
        types={
            "thorough": {"length": 2.0 * a, "relevance": 0.3, "empty": -5.0},
            "polite_brief": {"length": -a, "politeness": 2.6, "relevance": 0.3, "empty": -5.0},
            "terse": {"length": -a, "politeness": -2.6, "relevance": 0.3, "empty": -5.0},
        },
        per_type=4,
        weight_jitter=0.1,
        temperature_range=(8.0, 12.0),
    )


#: The cyclic population of the default language (answers of up to 23 words).
CYCLIC_POPULATION = cyclic_population("cyclic", WORLD_SEED + 11, 1.5)

TINY_LANGUAGE = LanguageConfig(
    name="tiny",
    seed=WORLD_SEED + 100,
    domains={
        "animals": (("cats", "dogs"), ("fur", "paws")),
        "weather": (("rain", "snow"), ("wet", "cold")),
    },
    templates=(
        ("describe {t}", False, "normal"),
        ("tell me about {t}", False, "normal"),
        ("a short note on {t}", False, "short"),
        ("a detailed note on {t}", False, "long"),
    ),
    modifiers=(("", ""), ("please", "")),
    ideal_length={"short": 1.0, "normal": 2.0, "long": 3.0},
    polite_words=("sure",),
    format_words=(".",),
    polite_openers=(("sure",),),
    heldout_fraction=0.25,
    prompt_len=8,
    max_new_tokens=3,
    answer_words=("fur", "paws", "wet", "cold", "sure", "."),
)

#: The tiny world's population: the five default types, re-weighted for answers of at most 3 words.
TINY_POPULATION = PopulationConfig(
    name="tiny",
    seed=WORLD_SEED + 101,
    types={
        "concise": {"length": -10.0, "relevance": 2.0, "off_topic": -2.0, "empty": -5.0},
        "thorough": {"coverage": 10.0, "length": 3.0, "repetition": -2.0, "empty": -5.0},
        "polite": {"politeness": 2.5, "requested_politeness": 1.0, "relevance": 1.0, "empty": -5.0},
        "format": {"format_ok": 3.0, "relevance": 1.0, "empty": -5.0},
        "instructions": {
            "length_deviation": -2.5,
            "format_ok": 1.0,
            "relevance": 2.0,
            "empty": -5.0,
        },
    },
)

#: The cyclic population of the tiny language (answers of up to 3 words).
TINY_CYCLIC_POPULATION = cyclic_population("tiny-cyclic", WORLD_SEED + 111, 5.0)

#: The tiny answer alphabet (six words, answers of at most 3 tokens: 259 answers) with 256 prompts:
#: eight topics per domain and four modifiers (politeness, brevity, detail), split 160 train, 32
#: validation and 64 held out, so that held-out prompts are new combinations of words seen in
#: training and generalisation can be measured exactly.
TINY_WIDE_LANGUAGE = LanguageConfig(
    name="tiny-wide",
    seed=WORLD_SEED + 200,
    domains={
        "animals": (
            ("cats", "dogs", "birds", "horses", "rabbits", "cows", "goats", "sheep"),
            ("fur", "paws"),
        ),
        "weather": (
            ("rain", "snow", "wind", "fog", "hail", "storms", "clouds", "frost"),
            ("wet", "cold"),
        ),
    },
    templates=TINY_LANGUAGE.templates,
    modifiers=(("", ""), ("please", ""), ("", "briefly"), ("please", "in detail")),
    ideal_length=TINY_LANGUAGE.ideal_length,
    polite_words=TINY_LANGUAGE.polite_words,
    format_words=TINY_LANGUAGE.format_words,
    polite_openers=TINY_LANGUAGE.polite_openers,
    heldout_fraction=0.25,
    validation_fraction=0.125,
    prompt_len=10,
    max_new_tokens=3,
    answer_words=TINY_LANGUAGE.answer_words,
)

#: The registered worlds by name.
WORLD_CONFIGS: dict[str, WorldConfig] = {
    "default": WorldConfig(
        "default", DEFAULT_LANGUAGE, DEFAULT_POPULATION, description="the default language world"
    ),
    "default-cyclic": WorldConfig(
        "default-cyclic",
        DEFAULT_LANGUAGE,
        CYCLIC_POPULATION,
        description="the default language judged by a cyclic population",
    ),
    "tiny": WorldConfig(
        "tiny", TINY_LANGUAGE, TINY_POPULATION, description="an enumerable world (259 answers)"
    ),
    "tiny-cyclic": WorldConfig(
        "tiny-cyclic",
        TINY_LANGUAGE,
        TINY_CYCLIC_POPULATION,
        description="the enumerable world judged by a cyclic population",
    ),
    "tiny-wide": WorldConfig(
        "tiny-wide",
        TINY_WIDE_LANGUAGE,
        TINY_POPULATION,
        description="the enumerable world with 256 prompts (160 train, 32 validation, 64 held out)",
    ),
    "tiny-wide-cyclic": WorldConfig(
        "tiny-wide-cyclic",
        TINY_WIDE_LANGUAGE,
        TINY_CYCLIC_POPULATION,
        description="the 256-prompt enumerable world judged by a cyclic population",
    ),
}
WORLD_NAMES: tuple[str, ...] = tuple(WORLD_CONFIGS)


# --------------------------------------------------------------------------------------------- prompts


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


# ------------------------------------------------------------------------------------------ the world


def _dedup(words: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(words))


class World:
    """Everything a world needs, built from its :class:`WorldConfig`.

    Attributes:
        config: the config.
        name: ``config.name``.
        language: ``config.language``; ``population``: ``config.population``.
        words: the ordinary words, in id order (ids start after the special tokens).
        tokenizer: the world's :class:`~nlhf_envs.text.tokenizer.Tokenizer`.
        prompts: the :class:`PromptSet`.
        prompt_len: prompt width for the models; ``max_new_tokens``: the longest answer.
        answer_token_ids: token ids an answer may contain, ``<eos>`` first.
        suppressed_token_ids: every other token id (language models of the world never emit them).
        annotator_weights: ``[K, NUM_FEATURES]``; ``annotator_temperatures``: ``[K]``;
        annotator_kinds: the type of every annotator.
    """

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        self.name = config.name
        lang = self.language = config.language
        self.population = config.population
        self.beta = float(config.beta)
        self.prompt_len = int(lang.prompt_len)
        self.max_new_tokens = int(lang.max_new_tokens)
        filler = set(lang.filler_words)
        prompt_words = _dedup(
            [
                w
                for text, _, _ in lang.templates
                for w in text.replace("{t}", "").split()
                if w not in filler
            ]
            + [w for prefix, suffix in lang.modifiers for w in f"{prefix} {suffix}".split()]
        )
        domain_words = [w for topics, content in lang.domains.values() for w in topics + content]
        if len(set(domain_words)) != len(domain_words):
            raise ValueError(f"world {config.name!r}: a word belongs to two domains")
        words = list(domain_words)
        words += [w for w in prompt_words if w not in words]
        words += list(lang.polite_words) + list(lang.rude_words) + list(lang.filler_words)
        words += list(lang.format_words) + list(lang.other_words)
        self.words: tuple[str, ...] = _dedup(words)
        self.tokenizer = Tokenizer(self.words)
        tok = self.tokenizer
        self.vocab_size = tok.vocab_size
        self.prompts = PromptSet(lang)
        longest = max(len(t.split()) for t in self.prompts.texts) + 2
        if longest > self.prompt_len:
            raise ValueError(
                f"world {config.name!r}: a prompt needs {longest} tokens; prompt_len is "
                f"{self.prompt_len}"
            )
        self._domain_names = tuple(lang.domains)
        self.domain_of = np.full(self.vocab_size, -1, dtype=np.int64)
        self.is_topic = np.zeros(self.vocab_size, dtype=bool)
        for d, (topics, content) in enumerate(lang.domains.values()):
            for w in topics + content:
                self.domain_of[tok.token_id(w)] = d
            for w in topics:
                self.is_topic[tok.token_id(w)] = True
        self._polite_ids = frozenset(tok.token_id(w) for w in lang.polite_words)
        self._rude_ids = frozenset(tok.token_id(w) for w in lang.rude_words)
        self._filler_ids = frozenset(tok.token_id(w) for w in lang.filler_words)
        self._dash, self._dot = tok.token_id("-"), tok.token_id(".")
        if lang.answer_words is None:
            answer_ids = [EOS] + list(range(len(SPECIAL_TOKENS), self.vocab_size))
        else:
            unknown = [w for w in lang.answer_words if w not in self.words]
            if unknown:
                raise ValueError(f"world {config.name!r}: answer words {unknown} are not words")
            answer_ids = [EOS] + [tok.token_id(w) for w in lang.answer_words]
        self.answer_token_ids: tuple[int, ...] = tuple(answer_ids)
        self.suppressed_token_ids: tuple[int, ...] = (
            ()
            if lang.answer_words is None
            else tuple(i for i in range(self.vocab_size) if i not in set(answer_ids))
        )
        self._answer_words = [self.tokenizer.vocab[i] for i in answer_ids[1:]]
        pop = self.population
        rng = np.random.default_rng(pop.seed)
        weights, temps, kinds = [], [], []
        for kind, base in pop.types.items():
            unknown = sorted(set(base) - set(FEATURE_NAMES))
            if unknown:
                raise ValueError(f"population {pop.name!r}: unknown features {unknown}")
            w0 = np.array([base.get(f, 0.0) for f in FEATURE_NAMES])
            for _ in range(pop.per_type):
                weights.append(w0 * np.exp(pop.weight_jitter * rng.standard_normal(NUM_FEATURES)))
                temps.append(rng.uniform(*pop.temperature_range))
                kinds.append(kind)
        self.annotator_weights = np.array(weights)
        self.annotator_temperatures = np.array(temps)
        self.annotator_kinds: tuple[str, ...] = tuple(kinds)
        self.num_annotators = len(kinds)

    def __repr__(self) -> str:
        return (
            f"World({self.name!r}: {self.vocab_size} tokens, {len(self.prompts)} prompts, "
            f"{self.num_annotators} annotators)"
        )

    @property
    def fingerprint(self) -> str:
        """A short hash of the world's config (two worlds with the same fingerprint are the same)."""
        text = json.dumps(self.config.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ prompts
    def parse_prompt(self, ids: Sequence[int]) -> PromptSpec:
        """Read a prompt (token ids; special tokens ignored) the way every annotator does.

        The first topic word fixes the domain; "list" asks for a list; "one sentence", "short" and
        "briefly" ask for a short answer, "detail"/"detailed" for a long one (a modifier overrides
        the template); "please"/"politely" ask for politeness. Works for any token sequence.
        """
        n_special = len(SPECIAL_TOKENS)
        words = [self.tokenizer.vocab[i] for i in ids if int(i) >= n_special]
        topic_id, domain = -1, -1
        for i in ids:
            if self.is_topic[int(i)]:
                topic_id, domain = int(i), int(self.domain_of[int(i)])
                break
        length = "normal"
        if "short" in words or ("one" in words and "sentence" in words):
            length = "short"
        if "detailed" in words:
            length = "long"
        if "briefly" in words:
            length = "short"
        elif "detail" in words:
            length = "long"
        return PromptSpec(
            domain=domain,
            topic_id=topic_id,
            wants_list="list" in words,
            ideal_length=float(self.language.ideal_length[length]),
            polite_request="please" in words or "politely" in words,
        )

    # ------------------------------------------------------------------ answer samplers
    def demonstrate(self, prompt: str, rng: np.random.Generator) -> str:
        """A demonstration answer: the kind of text the reference policy is trained to imitate.

        Demonstrations are on topic most of the time but vary in length, politeness, format and
        care, so that the reference policy covers answers every annotator type likes. Only answer
        words are used; the answer has at most ``max_new_tokens - 1`` words (room for ``<eos>``).
        """
        lang = self.language
        spec = self.parse_prompt(self.tokenizer.encode(prompt))
        domain = spec.domain if spec.domain >= 0 else int(rng.integers(len(lang.domains)))
        topics, content = lang.domains[self._domain_names[domain]]
        topic = self.tokenizer.vocab[spec.topic_id] if spec.topic_id >= 0 else topics[0]
        content = tuple(w for w in content if self._allowed(w))
        words: list[str] = []
        if rng.random() < (0.6 if spec.polite_request else 0.25):
            if lang.polite_openers:
                words += list(lang.polite_openers[int(rng.integers(len(lang.polite_openers)))])
        elif rng.random() < 0.05 and lang.rude_words:
            words.append(str(rng.choice(lang.rude_words)))
        target = spec.ideal_length * float(np.exp(rng.normal(0.0, 0.45)))
        n_items = int(np.clip(round(target), 1, 18))
        as_list = rng.random() < (0.75 if spec.wants_list else 0.1) and self._allowed("-")
        body: list[str] = []
        if rng.random() < 0.7 and self._allowed(topic):
            body.append(topic)
        p_content = float(rng.uniform(0.55, 0.95))
        careful = rng.random() < 0.5  # careful writers do not repeat content words
        unused = list(rng.permutation(content))
        filler = tuple(w for w in lang.filler_words if self._allowed(w))
        while len(body) < n_items:
            u = rng.random()
            if body and u < 0.06:
                body.append(str(rng.choice(body)))  # a repetition
            elif u < 0.06 + p_content or not filler:
                body.append(str(unused.pop() if careful and unused else rng.choice(content)))
            elif u < 0.97:
                body.append(str(rng.choice(filler)))
            else:
                other = int(rng.integers(len(lang.domains)))
                others = [w for w in lang.domains[self._domain_names[other]][1] if self._allowed(w)]
                body.append(str(rng.choice(others)))
        if as_list:
            for w in body:
                words += ["-", w]
        else:
            words += body
            if rng.random() < 0.7 and self._allowed("."):
                words.append(".")
        return " ".join(words[: self.max_new_tokens - 1])

    def _allowed(self, word: str) -> bool:
        return self.language.answer_words is None or word in self.language.answer_words

    def perturb(self, answer: str, rng: np.random.Generator, strength: int | None = None) -> str:
        """Apply ``strength`` random edits (drop, duplicate, insert a random word, swap, truncate)."""
        words = answer.split()
        n_edits = int(rng.integers(1, 5)) if strength is None else strength
        for _ in range(n_edits):
            op = int(rng.integers(5))
            if op == 0 and words:
                del words[int(rng.integers(len(words)))]
            elif op == 1 and words:
                i = int(rng.integers(len(words)))
                words.insert(i, words[i])
            elif op == 2:
                words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(self._answer_words)))
            elif op == 3 and len(words) > 1:
                i, j = rng.choice(len(words), 2, replace=False)
                words[i], words[j] = words[j], words[i]
            elif op == 4 and words:
                words = words[: int(rng.integers(len(words) + 1))]
        return " ".join(words[: self.max_new_tokens - 1])

    def random_answer(self, rng: np.random.Generator, max_len: int | None = None) -> str:
        """Uniformly random answer words, of a uniformly random length in ``[0, max_len]``
        (default ``max_new_tokens - 1``)."""
        max_len = self.max_new_tokens - 1 if max_len is None else max_len
        n = int(rng.integers(max_len + 1))
        return " ".join(str(w) for w in rng.choice(self._answer_words, n))

    # ------------------------------------------------------------------ annotators
    def answer_features(self, prompt: PromptSpec, answer: Sequence[int]) -> np.ndarray:
        """Feature vector ``phi(x, y)`` (see :data:`FEATURE_NAMES`) of answer token ids.

        Special tokens are ignored, and so is everything after the first ``<eos>``.
        """
        n_special = len(SPECIAL_TOKENS)
        words: list[int] = []
        for t in answer:
            t = int(t)
            if t == EOS:
                break
            if t >= n_special:
                words.append(t)
        phi = np.zeros(NUM_FEATURES)
        n = len(words)
        if n == 0:
            phi[9] = 1.0
            phi[10] = 1.0
            return phi
        doms = self.domain_of[words]
        in_domain = doms == prompt.domain if prompt.domain >= 0 else np.zeros(n, dtype=bool)
        polite = sum(t in self._polite_ids for t in words)
        phi[0] = in_domain.mean()
        phi[1] = float(prompt.topic_id in words)
        phi[2] = ((doms >= 0) & ~in_domain).mean()
        phi[3] = n / 10.0
        phi[4] = min(len({t for t, d in zip(words, in_domain, strict=True) if d}), 10) / 10.0
        phi[5] = min(polite, 2)
        phi[6] = min(sum(t in self._rude_ids for t in words), 2)
        phi[7] = 1.0 - len(set(words)) / n
        if prompt.wants_list:
            phi[8] = float(words.count(self._dash) >= 2 and self._dot not in words)
        else:
            phi[8] = float(words[-1] == self._dot and self._dash not in words)
        phi[9] = min(abs(n - prompt.ideal_length) / prompt.ideal_length, 2.0)
        phi[10] = 0.0
        phi[11] = phi[5] if prompt.polite_request else 0.0
        phi[12] = float(np.mean([t in self._filler_ids for t in words]))
        return phi

    def annotator_scores(self, features: np.ndarray) -> np.ndarray:
        """Scores ``s_k`` of every annotator, ``[..., K]``, from features ``[..., NUM_FEATURES]``."""
        return features @ self.annotator_weights.T

    def annotator_probs(self, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
        """Per-annotator ``P_k(a > b | x)``, shape ``[..., K]``."""
        diff = self.annotator_scores(features_a) - self.annotator_scores(features_b)
        return 1.0 / (1.0 + np.exp(-self.annotator_temperatures * diff))

    def population_prob(self, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
        """``P*(a > b | x)``: the mean of the annotators' probabilities, shape ``[...]``."""
        return self.annotator_probs(features_a, features_b).mean(axis=-1)

    def sample_votes(
        self,
        features_a: np.ndarray,
        features_b: np.ndarray,
        num_votes: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Votes of ``num_votes`` annotators drawn at random per pair: 1 when ``a`` wins,
        ``[N, num_votes]``."""
        probs = self.annotator_probs(features_a, features_b)  # [N, K]
        who = rng.integers(self.num_annotators, size=(probs.shape[0], num_votes))
        p = np.take_along_axis(probs, who, axis=1)
        return (rng.random(p.shape) < p).astype(np.float64)


_WORLDS: dict[str, World] = {}


def get_world(world: str | World | None = None) -> World:
    """The registered world ``world`` (a name of :data:`WORLD_NAMES`; ``None``: ``"default"``), built
    once; a :class:`World` is returned as it is.

    Raises:
        ValueError: for an unknown name.
    """
    if isinstance(world, World):
        return world
    name = "default" if world is None else world
    if name not in WORLD_CONFIGS:
        raise ValueError(f"unknown world {name!r}; registered worlds: {', '.join(WORLD_NAMES)}")
    if name not in _WORLDS:
        _WORLDS[name] = World(WORLD_CONFIGS[name])
    return _WORLDS[name]


# ------------------------------------------------------------------ the default world, module level

DEFAULT_WORLD = get_world("default")
WORDS: tuple[str, ...] = DEFAULT_WORLD.words
VOCAB_SIZE = DEFAULT_WORLD.vocab_size
PROMPTS = DEFAULT_WORLD.prompts
NUM_ANNOTATORS = DEFAULT_WORLD.num_annotators
ANNOTATOR_WEIGHTS = DEFAULT_WORLD.annotator_weights
ANNOTATOR_TEMPERATURES = DEFAULT_WORLD.annotator_temperatures
ANNOTATOR_KINDS = DEFAULT_WORLD.annotator_kinds
_DOMAIN_OF = DEFAULT_WORLD.domain_of
parse_prompt = DEFAULT_WORLD.parse_prompt
demonstrate = DEFAULT_WORLD.demonstrate
perturb = DEFAULT_WORLD.perturb
random_answer = DEFAULT_WORLD.random_answer
answer_features = DEFAULT_WORLD.answer_features
annotator_scores = DEFAULT_WORLD.annotator_scores
annotator_probs = DEFAULT_WORLD.annotator_probs
population_prob = DEFAULT_WORLD.population_prob
sample_votes = DEFAULT_WORLD.sample_votes


def default_tokenizer() -> Tokenizer:
    """The tokenizer of the default world (special tokens, then :data:`WORDS`)."""
    return DEFAULT_WORLD.tokenizer
