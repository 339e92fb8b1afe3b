"""The annotators of a world: populations of Bradley-Terry annotators, as configuration.

A :class:`PopulationConfig` fixes the annotator types (base weights on the answer features
:data:`~nlhf_envs.text.language.FEATURE_NAMES`), how many annotators of each type, the jitter of their
weights and the range of their temperatures; :class:`~nlhf_envs.text.world.World` draws the annotators
from it. The registered populations are :data:`DEFAULT_POPULATION`, :data:`CYCLIC_POPULATION`,
:data:`TINY_POPULATION` and :data:`TINY_CYCLIC_POPULATION`.

The default population has annotators of five types (concision, thoroughness, politeness, format,
instruction following; :data:`ANNOTATORS_PER_TYPE` of each, with jittered weights). The types disagree
(short vs detailed, polite vs terse), so majority preferences among ordinary answers form Condorcet
cycles.

The cyclic populations (:func:`cyclic_population`) put three types in one plane of feature space with
weight vectors at 120 degrees (``w_1 + w_2 + w_3 = 0`` on those features): a linear, transitive part of
the population preference cancels and what is left is mostly cyclic (rock-paper-scissors among long,
polite-and-short and terse answers).
"""

from __future__ import annotations

from dataclasses import dataclass

from nlhf_envs.text.language import WORLD_SEED

#: Base weight of each annotator type of the default world on
#: :data:`~nlhf_envs.text.language.FEATURE_NAMES` (missing: 0).
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
#: Annotators of each type in the default population.
ANNOTATORS_PER_TYPE = 4


@dataclass(frozen=True)
class PopulationConfig:
    """The annotators of a world.

    Attributes:
        name: the population's name.
        seed: seed of the jittered weights and the temperatures.
        types: type name -> base weights on :data:`~nlhf_envs.text.language.FEATURE_NAMES` (missing
            features weigh 0).
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


#: The default population: :data:`ANNOTATORS_PER_TYPE` annotators of each of the five types.
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
