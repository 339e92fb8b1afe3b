"""A small language world: vocabulary, prompts, demonstrators and a population of annotators.

The world has twelve domains (animals, cooking, weather, ...). Each domain has six *topics* (words a
prompt asks about) and fourteen *content* words (words a relevant answer uses). A prompt fills an
instruction template with a topic and a modifier, for example ``"list facts about cats briefly"`` or
``"please describe storms"``: 10 templates x 72 topics x 6 modifiers = 4320 distinct prompts, of which a
fixed 15% (:data:`HELDOUT_FRACTION`) are held out.

The ground truth is a population of :data:`NUM_ANNOTATORS` annotators of five types (concision,
thoroughness, politeness, format, instruction following), four of each, with jittered weights. Annotator ``k`` scores an answer
``y`` to prompt ``x`` linearly in a feature vector, ``s_k(x, y) = w_k . phi(x, y)`` (see
:func:`answer_features`), and votes by a Bradley-Terry rule with its own temperature ``tau_k``:

    P_k(y > y' | x) = sigmoid(tau_k (s_k(x, y) - s_k(x, y'))).

The population preference is the mean, ``P*(y > y' | x) = (1/K) sum_k P_k(y > y' | x)``. Every
``P_k`` is transitive, but their mean is not: the types disagree (short vs detailed, polite vs terse),
so majority preferences among ordinary answers form Condorcet cycles. Votes are sharp (temperatures in
[6, 12]), so ``P*`` is close to the fraction of annotators who prefer ``y``; with five types a majority
cycle can have every edge up to 3/5.

Everything here is fixed by :data:`WORLD_SEED`; sampling functions take an explicit
``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nlhf_envs.text.tokenizer import SPECIAL_TOKENS, Tokenizer

#: Seed of everything fixed in the world (annotator weights, the held-out split).
WORLD_SEED = 20250524
#: Fraction of prompts held out from every training set.
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
_PROMPT_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        w
        for text, _, _ in TEMPLATES
        for w in text.replace("{t}", "").split()
        if w not in FILLER_WORDS
    )
) + ("please", "briefly", "detail", "politely", "now")


def _build_words() -> tuple[str, ...]:
    words: list[str] = []
    for topics, content in DOMAINS.values():
        words += list(topics) + list(content)
    words += [w for w in _PROMPT_WORDS if w not in words]
    words += list(POLITE_WORDS) + list(RUDE_WORDS) + list(FILLER_WORDS) + list(FORMAT_WORDS)
    words += list(OTHER_WORDS)
    return tuple(dict.fromkeys(words))


WORDS: tuple[str, ...] = _build_words()
_all_domain_words = [w for topics, content in DOMAINS.values() for w in topics + content]
assert len(set(_all_domain_words)) == len(_all_domain_words), "a word belongs to two domains"
assert len(WORDS) == len(set(WORDS))


def default_tokenizer() -> Tokenizer:
    """The tokenizer of the world (special tokens, then :data:`WORDS`)."""
    return Tokenizer(WORDS)


_TOK = default_tokenizer()
VOCAB_SIZE = _TOK.vocab_size
_DOMAIN_NAMES = tuple(DOMAINS)
#: token id -> domain index (or -1)
_DOMAIN_OF = np.full(VOCAB_SIZE, -1, dtype=np.int64)
#: token id -> is a topic word
_IS_TOPIC = np.zeros(VOCAB_SIZE, dtype=bool)
for _d, (_topics, _content) in enumerate(DOMAINS.values()):
    for _w in _topics + _content:
        _DOMAIN_OF[_TOK.token_id(_w)] = _d
    for _w in _topics:
        _IS_TOPIC[_TOK.token_id(_w)] = True
_POLITE_IDS = frozenset(_TOK.token_id(w) for w in POLITE_WORDS)
_RUDE_IDS = frozenset(_TOK.token_id(w) for w in RUDE_WORDS)
_FILLER_IDS = frozenset(_TOK.token_id(w) for w in FILLER_WORDS)
_DASH, _DOT = _TOK.token_id("-"), _TOK.token_id(".")
_NUM_SPECIAL = len(SPECIAL_TOKENS)


# --------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for, as the annotators read it.

    Attributes:
        domain: index into :data:`DOMAINS`, or -1 when the prompt names no topic.
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


def parse_prompt(ids: Sequence[int]) -> PromptSpec:
    """Read a prompt (token ids; special tokens ignored) the way every annotator does.

    The first topic word fixes the domain; "list" asks for a list; "one sentence", "short" and
    "briefly" ask for a short answer, "detail"/"detailed" for a long one (a modifier overrides the
    template); "please"/"politely" ask for politeness. Works for any token sequence.
    """
    words = [_TOK.vocab[i] for i in ids if int(i) >= _NUM_SPECIAL]
    topic_id, domain = -1, -1
    for i in ids:
        if _IS_TOPIC[int(i)]:
            topic_id, domain = int(i), int(_DOMAIN_OF[int(i)])
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
        ideal_length=IDEAL_LENGTH[length],
        polite_request="please" in words or "politely" in words,
    )


class PromptSet:
    """All prompts of the world and the fixed train / held-out split.

    Attributes:
        texts: every prompt, in a fixed order.
        train_indices: indices of training prompts.
        heldout_indices: indices of held-out prompts (never used to train the shipped models).
    """

    def __init__(self) -> None:
        texts = []
        for template, _, _ in TEMPLATES:
            for topics, _ in DOMAINS.values():
                for topic in topics:
                    for prefix, suffix in MODIFIERS:
                        texts.append(
                            " ".join(filter(None, (prefix, template.format(t=topic), suffix)))
                        )
        self.texts: tuple[str, ...] = tuple(texts)
        perm = np.random.default_rng(WORLD_SEED).permutation(len(texts))
        n_held = int(round(HELDOUT_FRACTION * len(texts)))
        self.heldout_indices = np.sort(perm[:n_held])
        self.train_indices = np.sort(perm[n_held:])

    def __len__(self) -> int:
        return len(self.texts)

    def indices(self, split: str) -> np.ndarray:
        """Indices of ``split``: ``"train"``, ``"heldout"`` or ``"all"``."""
        if split == "train":
            return self.train_indices
        if split == "heldout":
            return self.heldout_indices
        if split == "all":
            return np.arange(len(self.texts))
        raise ValueError(f"unknown split {split!r}; expected 'train', 'heldout' or 'all'")

    def sample(self, n: int, rng: np.random.Generator, split: str = "train") -> list[str]:
        """``n`` prompts drawn uniformly (with replacement) from ``split``."""
        idx = self.indices(split)
        return [self.texts[i] for i in rng.choice(idx, size=n)]


PROMPTS = PromptSet()


# ------------------------------------------------------------------------------------ answer samplers


def demonstrate(prompt: str, rng: np.random.Generator) -> str:
    """A demonstration answer: the kind of text the reference policy is trained to imitate.

    Demonstrations are on topic most of the time but vary in length, politeness, format and care, so
    that the reference policy covers answers every annotator type likes.
    """
    spec = parse_prompt(_TOK.encode(prompt))
    domain = spec.domain if spec.domain >= 0 else int(rng.integers(len(DOMAINS)))
    topics, content = DOMAINS[_DOMAIN_NAMES[domain]]
    topic = _TOK.vocab[spec.topic_id] if spec.topic_id >= 0 else topics[0]
    words: list[str] = []
    if rng.random() < (0.6 if spec.polite_request else 0.25):
        words += _polite_opener(rng)
    elif rng.random() < 0.05:
        words.append(str(rng.choice(RUDE_WORDS)))
    target = spec.ideal_length * float(np.exp(rng.normal(0.0, 0.45)))
    n_items = int(np.clip(round(target), 1, 18))
    as_list = rng.random() < (0.75 if spec.wants_list else 0.1)
    body: list[str] = []
    if rng.random() < 0.7:
        body.append(topic)
    p_content = float(rng.uniform(0.55, 0.95))
    careful = rng.random() < 0.5  # careful writers do not repeat content words
    unused = list(rng.permutation(content))
    while len(body) < n_items:
        u = rng.random()
        if body and u < 0.06:
            body.append(str(rng.choice(body)))  # a repetition
        elif u < 0.06 + p_content:
            body.append(str(unused.pop() if careful and unused else rng.choice(content)))
        elif u < 0.97:
            body.append(str(rng.choice(FILLER_WORDS)))
        else:
            other = int(rng.integers(len(DOMAINS)))
            body.append(str(rng.choice(DOMAINS[_DOMAIN_NAMES[other]][1])))
    if as_list:
        for w in body:
            words += ["-", w]
    else:
        words += body
        if rng.random() < 0.7:
            words.append(".")
    return " ".join(words[: MAX_NEW_TOKENS - 1])


def _polite_opener(rng: np.random.Generator) -> list[str]:
    openers = (["sure"], ["happy", "to", "help"], ["glad", "to", "help"], ["thanks"], ["kindly"])
    return list(openers[int(rng.integers(len(openers)))])


def perturb(answer: str, rng: np.random.Generator, strength: int | None = None) -> str:
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
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(WORDS)))
        elif op == 3 and len(words) > 1:
            i, j = rng.choice(len(words), 2, replace=False)
            words[i], words[j] = words[j], words[i]
        elif op == 4 and words:
            words = words[: int(rng.integers(len(words) + 1))]
    return " ".join(words[: MAX_NEW_TOKENS - 1])


def random_answer(rng: np.random.Generator, max_len: int = MAX_NEW_TOKENS - 1) -> str:
    """Uniformly random words, of a uniformly random length in ``[0, max_len]``."""
    n = int(rng.integers(max_len + 1))
    return " ".join(str(w) for w in rng.choice(WORDS, n))


# ------------------------------------------------------------------------------------- annotators

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

#: Base weight of each annotator type on :data:`FEATURE_NAMES` (missing features weigh 0).
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
NUM_ANNOTATORS = ANNOTATORS_PER_TYPE * len(ANNOTATOR_TYPES)


def _annotator_parameters() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    rng = np.random.default_rng(WORLD_SEED + 1)
    weights, temps, kinds = [], [], []
    for kind, base in ANNOTATOR_TYPES.items():
        w0 = np.array([base.get(f, 0.0) for f in FEATURE_NAMES])
        for _ in range(ANNOTATORS_PER_TYPE):
            weights.append(w0 * np.exp(0.25 * rng.standard_normal(NUM_FEATURES)))
            temps.append(rng.uniform(6.0, 12.0))
            kinds.append(kind)
    return np.array(weights), np.array(temps), tuple(kinds)


#: ``[K, NUM_FEATURES]`` weights, ``[K]`` temperatures and the type of every annotator.
ANNOTATOR_WEIGHTS, ANNOTATOR_TEMPERATURES, ANNOTATOR_KINDS = _annotator_parameters()


def answer_features(prompt: PromptSpec, answer: Sequence[int]) -> np.ndarray:
    """Feature vector ``phi(x, y)`` (see :data:`FEATURE_NAMES`) of answer token ids.

    Special tokens are ignored, and so is everything after the first ``<eos>``.
    """
    words: list[int] = []
    for t in answer:
        t = int(t)
        if t == 2:  # <eos>
            break
        if t >= _NUM_SPECIAL:
            words.append(t)
    phi = np.zeros(NUM_FEATURES)
    n = len(words)
    if n == 0:
        phi[3] = 0.0
        phi[9] = 1.0
        phi[10] = 1.0
        phi[8] = 0.0
        return phi
    doms = _DOMAIN_OF[words]
    in_domain = doms == prompt.domain if prompt.domain >= 0 else np.zeros(n, dtype=bool)
    polite = sum(t in _POLITE_IDS for t in words)
    phi[0] = in_domain.mean()
    phi[1] = float(prompt.topic_id in words)
    phi[2] = ((doms >= 0) & ~in_domain).mean()
    phi[3] = n / 10.0
    phi[4] = min(len({t for t, d in zip(words, in_domain, strict=True) if d}), 10) / 10.0
    phi[5] = min(polite, 2)
    phi[6] = min(sum(t in _RUDE_IDS for t in words), 2)
    phi[7] = 1.0 - len(set(words)) / n
    if prompt.wants_list:
        phi[8] = float(words.count(_DASH) >= 2 and _DOT not in words)
    else:
        phi[8] = float(words[-1] == _DOT and _DASH not in words)
    phi[9] = min(abs(n - prompt.ideal_length) / prompt.ideal_length, 2.0)
    phi[10] = 0.0
    phi[11] = phi[5] if prompt.polite_request else 0.0
    phi[12] = float(np.mean([t in _FILLER_IDS for t in words]))
    return phi


def annotator_scores(features: np.ndarray) -> np.ndarray:
    """Scores ``s_k`` of every annotator, ``[..., K]``, from features ``[..., NUM_FEATURES]``."""
    return features @ ANNOTATOR_WEIGHTS.T


def annotator_probs(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """Per-annotator ``P_k(a > b | x)``, shape ``[..., K]``."""
    diff = annotator_scores(features_a) - annotator_scores(features_b)
    return 1.0 / (1.0 + np.exp(-ANNOTATOR_TEMPERATURES * diff))


def population_prob(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """``P*(a > b | x)``: the mean of the annotators' probabilities, shape ``[...]``."""
    return annotator_probs(features_a, features_b).mean(axis=-1)


def sample_votes(
    features_a: np.ndarray, features_b: np.ndarray, num_votes: int, rng: np.random.Generator
) -> np.ndarray:
    """Votes of ``num_votes`` annotators drawn at random per pair: 1 when ``a`` wins, ``[N, num_votes]``."""
    probs = annotator_probs(features_a, features_b)  # [N, K]
    who = rng.integers(NUM_ANNOTATORS, size=(probs.shape[0], num_votes))
    p = np.take_along_axis(probs, who, axis=1)
    return (rng.random(p.shape) < p).astype(np.float64)
