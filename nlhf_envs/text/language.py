"""The language of a world: words, prompts, answer lengths, the demonstrator, as configuration.

A :class:`LanguageConfig` fixes a world's vocabulary, its instruction templates and modifiers (so its
prompts, see :class:`~nlhf_envs.text.prompts.PromptSet`), the answer lengths the prompts ask for and the
words the demonstrator (which the reference policy imitates) uses. :data:`FEATURE_NAMES` names the
features ``phi(x, y)`` of an answer that the annotators score
(:meth:`~nlhf_envs.text.world.World.answer_features`). The registered languages are
:data:`DEFAULT_LANGUAGE` and :data:`TINY_LANGUAGE`.

The default language
--------------------
It has twelve domains (animals, cooking, weather, ...). Each domain has six *topics* (words a prompt
asks about) and fourteen *content* words (words a relevant answer uses). A prompt fills an instruction
template with a topic and a modifier, for example ``"list facts about cats briefly"`` or ``"please
describe storms"``: 10 templates x 72 topics x 6 modifiers = 4320 distinct prompts, of which a fixed 15%
are held out.

The tiny language
-----------------
Two domains, six answer words, 32 prompts (8 held out), answers of at most 3 tokens: 259 possible
answers per prompt, small enough to enumerate.
"""

from __future__ import annotations

from dataclasses import dataclass

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
            suppress every other token except ``<eos>`` (see
            :attr:`~nlhf_envs.text.world.World.suppressed_token_ids`), which keeps the answer set of a
            tiny world enumerable.
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


#: The default language (twelve domains, 4320 prompts, answers of up to 24 tokens).
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

#: The tiny language (two domains, 32 prompts, six answer words, answers of at most 3 tokens).
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
