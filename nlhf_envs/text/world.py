"""Language worlds: a language, a population of annotators and the game's KL strength, and everything
built from them.

A *world* is a :class:`WorldConfig`: a :class:`~nlhf_envs.text.language.LanguageConfig` (words,
prompts, answer length, the demonstrator the reference policy imitates; :mod:`nlhf_envs.text.language`)
and a :class:`~nlhf_envs.text.annotators.PopulationConfig` (the annotators who judge;
:mod:`nlhf_envs.text.annotators`). :class:`World` builds everything a world needs from its config (the
tokenizer, the :class:`~nlhf_envs.text.prompts.PromptSet` of :mod:`nlhf_envs.text.prompts`, the
demonstrator, the answer features and the annotators); :func:`get_world` returns the registered
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
``tiny-wide``      the tiny answers (259) with 256 prompts: 160 train, 32 validation, 64 held out, so
                   generalisation to unseen prompts is measured exactly (``nlhf/TinyTokenDuel-v1``)
``tiny-wide-``     the 256-prompt language with the tiny cyclic population
``cyclic``         (``nlhf/TinyTokenDuel-Cyclic-v1``)
================== ========================================================================================

The ground truth
----------------
The ground truth is a population of annotators of several types (default: concision, thoroughness,
politeness, format, instruction following; four of each, with jittered weights). Annotator ``k`` scores
an answer ``y`` to prompt ``x`` linearly in a feature vector, ``s_k(x, y) = w_k . phi(x, y)`` (see
:meth:`World.answer_features`), and votes by a Bradley-Terry rule with its own temperature ``tau_k``:

    P_k(y > y' | x) = sigmoid(tau_k (s_k(x, y) - s_k(x, y'))).

The population preference is the mean, ``P*(y > y' | x) = (1/K) sum_k P_k(y > y' | x)``. Every
``P_k`` is transitive, but their mean is not: the types disagree (short vs detailed, polite vs terse),
so majority preferences among ordinary answers form Condorcet cycles. Votes are sharp (temperatures in
[6, 12]), so ``P*`` is close to the fraction of annotators who prefer ``y``.

The cyclic populations (:func:`~nlhf_envs.text.annotators.cyclic_population`) are mostly cyclic by
construction.

Everything is fixed by the configs' seeds; sampling functions take an explicit
``numpy.random.Generator``. The module-level names (:data:`PROMPTS`, :func:`demonstrate`,
:func:`population_prob`, ...) are those of the default world. Every name of
:mod:`nlhf_envs.text.language`, :mod:`nlhf_envs.text.annotators` and :mod:`nlhf_envs.text.prompts`
is importable from this module too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nlhf_envs.text.annotators import (  # noqa: F401 (re-exported)
    ANNOTATOR_TYPES,
    ANNOTATORS_PER_TYPE,
    CYCLIC_POPULATION,
    DEFAULT_POPULATION,
    TINY_CYCLIC_POPULATION,
    TINY_POPULATION,
    PopulationConfig,
    cyclic_population,
)
from nlhf_envs.text.language import (  # noqa: F401 (re-exported)
    _OPENERS,
    DEFAULT_LANGUAGE,
    DOMAINS,
    FEATURE_NAMES,
    FILLER_WORDS,
    FORMAT_WORDS,
    HELDOUT_FRACTION,
    IDEAL_LENGTH,
    MAX_NEW_TOKENS,
    MODIFIERS,
    NUM_FEATURES,
    OTHER_WORDS,
    POLITE_WORDS,
    PROMPT_LEN,
    RUDE_WORDS,
    TEMPLATES,
    TINY_LANGUAGE,
    TINY_WIDE_LANGUAGE,
    WORLD_SEED,
    LanguageConfig,
)
from nlhf_envs.text.prompts import ClassSplit, PromptSet, PromptSpec, prompt_class  # noqa: F401
from nlhf_envs.text.tokenizer import EOS, SPECIAL_TOKENS, Tokenizer


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
        self.prompts = PromptSet(lang, classify=self.prompt_class)
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
    def prompt_class(self, prompt: str) -> tuple[int, bool, float]:
        """The class of a prompt text (:func:`~nlhf_envs.text.prompts.prompt_class` of
        :meth:`parse_prompt`), the unit the class split holds out."""
        return prompt_class(self.parse_prompt(self.tokenizer.encode(prompt)))

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
