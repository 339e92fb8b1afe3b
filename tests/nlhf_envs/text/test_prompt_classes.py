"""The class split mode of the prompt sets (issue 32, item 1): whole ground-truth classes held out,
beside the fixed splits, which it leaves unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from nlhf_envs.text.exact import (
    answer_tensors,
    enumerate_answers,
    preference_matrix,
    resolve_setting,
)
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.world import World, WorldConfig, get_world

SPLITS = ("seen_train", "seen_heldout", "unseen_validation", "unseen_heldout")


@pytest.mark.parametrize("name", ["tiny-wide", "tiny-wide-cyclic"])
def test_the_256_prompt_worlds_hold_out_two_classes_for_the_report_and_one_for_tuning(name):
    world = get_world(name)
    prompts = world.prompts
    cs = prompts.class_split()
    assert len(cs.classes) == 6  # 2 domains x 3 lengths; no list prompts
    # one held-out class per domain for the report (animals short, weather long), one for tuning
    # (animals normal: three kinds leave room for one), drawn with a fixed seed
    assert cs.heldout_classes == ((0, False, 1.0), (1, False, 3.0))
    assert cs.validation_classes == ((0, False, 2.0),)
    sizes = {s: len(prompts.indices(s)) for s in SPLITS}
    assert sizes == {
        "seen_train": 79,
        "seen_heldout": 35,
        "unseen_validation": 32,
        "unseen_heldout": 96,
    }
    sets = {s: set(prompts.indices(s).tolist()) for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not sets[a] & sets[b], (a, b)
    assert sets["seen_train"] <= set(prompts.indices("train").tolist())
    assert sets["seen_heldout"] <= set(prompts.indices("heldout").tolist())
    label = [world.prompt_class(t) for t in prompts.texts]
    unseen = set(cs.heldout_classes) | set(cs.validation_classes)
    # the trained prompts hold no unseen class, and every prompt of an unseen class is held out
    assert all(label[i] not in unseen for i in sets["seen_train"] | sets["seen_heldout"])
    assert {i for i, c in enumerate(label) if c in cs.heldout_classes} == sets["unseen_heldout"]
    assert {i for i, c in enumerate(label) if c in cs.validation_classes} == sets[
        "unseen_validation"
    ]
    # every unseen class is a new combination: its domain and its kind are each trained on
    trained = {label[i] for i in sets["seen_train"]}
    for domain, *kind in cs.heldout_classes + cs.validation_classes:
        assert any(c[0] == domain for c in trained)
        assert any(c[0] != domain and list(c[1:]) == kind for c in trained)
    # deterministic: a fresh build of the world draws the same split
    again = World(world.config).prompts.class_split()
    assert again.heldout_classes == cs.heldout_classes
    np.testing.assert_array_equal(again.unseen_heldout, cs.unseen_heldout)


def test_the_class_split_leaves_the_fixed_splits_and_the_fingerprints_unchanged():
    """Old ids keep their behaviour: the same fixed splits and world fingerprints as before the
    class split existed (values recorded from the code before it)."""
    world = get_world("tiny-wide")
    assert world.fingerprint == "3191c42d06d915a3"
    assert get_world("tiny-wide-cyclic").fingerprint == "0ffa13d2212bbb5d"
    assert [len(world.prompts.indices(s)) for s in ("train", "validation", "heldout")] == [
        160,
        32,
        64,
    ]
    assert world.prompts.indices("heldout")[:5].tolist() == [8, 11, 12, 15, 19]
    assert world.prompts.indices("validation")[:5].tolist() == [0, 10, 17, 20, 37]


def _gaps(env_id: str, payer: str, per_class: int = 3) -> tuple[float, float]:
    """The largest difference of the payer's preferences over all 259 x 259 answer pairs between
    two prompts of one class, and the smallest between prompts of two classes (``per_class``
    prompts of each class: the first ones in the world's order)."""
    setting = resolve_setting(env_id)
    world = setting.world
    judge = setting.judge if payer == "judge" else ground_truth(world)
    label = [world.prompt_class(t) for t in world.prompts.texts]
    rows: dict[tuple, list[int]] = {}
    for i, c in enumerate(label):
        if len(rows.setdefault(c, [])) < per_class:
            rows[c].append(i)
    answers = answer_tensors(enumerate_answers(env_id), setting.max_new_tokens)
    ids, mask = world.tokenizer.encode_prompts(list(world.prompts.texts), world.prompt_len)
    P = {
        i: preference_matrix(judge, world, ids[i : i + 1], mask[i : i + 1], answers)
        for r in rows.values()
        for i in r
    }
    within = max(np.abs(P[i] - P[r[0]]).max() for r in rows.values() for i in r)
    keys = sorted(rows)
    between = min(
        np.abs(P[rows[a][0]] - P[rows[b][0]]).max()
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
    )
    return float(within), float(between)


def test_prompts_of_one_class_are_one_game_for_the_plain_annotators():
    """What makes a class: on the plain 256-prompt world the ground truth's preferences are the
    same for the prompts of a class to 1e-3 (a polite request is the only difference, and it moves
    them by 4.5e-4) and differ between classes by 0.19 at least. On the cyclic world the
    annotators see only the domain (one game per domain, exactly), and the learned judge, which
    pays, differs between prompts of one class by more than 0.1: there the class split tests
    generalisation in the judge's game, not to a new game of the annotators."""
    within, between = _gaps("nlhf/TinyTokenDuel-v1", "ground_truth")
    assert within < 1e-3 and between > 0.19
    within, between = _gaps("nlhf/TinyTokenDuel-Cyclic-v1", "ground_truth")
    assert within < 1e-12 and between < 1e-12  # two classes of one domain: the same game
    within, _ = _gaps("nlhf/TinyTokenDuel-Cyclic-v1", "judge")
    assert within > 0.1


def test_an_env_trains_on_the_seen_classes_only():
    import pettingzoo

    import nlhf_envs  # noqa: F401  (registers the ids)

    env = pettingzoo.make("parallel", "nlhf/TinyTokenDuel-v1", prompt_split="seen_train")
    world = get_world("tiny-wide")
    allowed = set(world.prompts.indices("seen_train").tolist())
    assert set(env.prompt_pool.tolist()) == allowed
    held = set(world.prompts.class_split().heldout_classes)
    for seed in range(20):
        _, infos = env.reset(seed=seed)
        assert world.prompt_class(infos["player_0"]["prompt"]) not in held


def test_a_language_without_enough_classes_is_refused_in_one_line():
    prompts = get_world("default").prompts
    with pytest.raises(
        ValueError, match="needs at least 13 prompt kinds present in each of its 12"
    ):
        prompts.indices("unseen_heldout")
    assert not prompts.has_split("seen_train")
    assert prompts.has_split("train")
    tiny = WorldConfig("x", get_world("tiny-wide").language, get_world("tiny-wide").population)
    from nlhf_envs.text.prompts import PromptSet

    bare = PromptSet(tiny.language)  # built without the world: no classes to split by
    with pytest.raises(ValueError, match="built without their ground-truth classes"):
        bare.class_split()
