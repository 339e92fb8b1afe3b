"""The judges follow TRL's ``BasePairwiseJudge.judge`` contract, checked against exact probabilities.

Contract (TRL's pairwise judges): ``judge(prompts, completions, shuffle_order=True,
return_scores=False)`` returns, per prompt, the index (0 or 1) of the preferred completion of its pair;
with ``return_scores=True`` the probability that the first completion is preferred.
"""

import numpy as np
import pytest

from nlhf_envs.text import world
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.models import load_judge


def _pairs(n: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    prompts = world.PROMPTS.sample(n, rng)
    good = [world.demonstrate(p, rng) for p in prompts]
    bad = [world.perturb(x, rng) for x in good]
    flip = rng.random(n) < 0.5  # the better answer sits first in about half the pairs
    pairs = [[b, g] if f else [g, b] for g, b, f in zip(good, bad, flip, strict=True)]
    return prompts, pairs


def winner_rate(judge, prompts, pairs) -> float:
    """Code written against TRL's interface: the fraction of pairs whose first completion wins."""
    ranks = judge.judge(prompts, pairs)
    return sum(r == 0 for r in ranks) / len(ranks)


@pytest.mark.parametrize("make", [ground_truth, load_judge], ids=["ground_truth", "judge"])
def test_ranks_and_scores_follow_the_pairwise_contract(make):
    judge = make()
    prompts, pairs = _pairs()
    p = judge.prob(prompts, [a for a, _ in pairs], [b for _, b in pairs]).double().numpy()
    scores = judge.judge(prompts, pairs, shuffle_order=False, return_scores=True)
    assert isinstance(scores, list) and all(isinstance(s, float) for s in scores)
    np.testing.assert_allclose(scores, p, atol=1e-6)
    ranks = judge.judge(prompts, pairs, shuffle_order=False)
    assert all(isinstance(r, int) for r in ranks)
    assert ranks == [0 if q >= 0.5 else 1 for q in p]
    # tuples work as pairs (TRL's trainers pass zip(...) pairs); reversing every pair flips the ranks
    # wherever the judge is not indifferent
    rev = judge.judge(prompts, [(b, a) for a, b in pairs], shuffle_order=False)
    decided = np.abs(p - 0.5) > 1e-6
    assert decided.sum() > 40
    assert all(r + s == 1 for r, s, d in zip(ranks, rev, decided, strict=True) if d)
    assert 0.0 < winner_rate(judge, prompts, pairs) < 1.0


def test_shuffling_keeps_the_answers_of_an_antisymmetric_judge():
    truth = ground_truth()
    prompts, pairs = _pairs(64, seed=1)
    plain = truth.judge(prompts, pairs, shuffle_order=False, return_scores=True)
    for seed in range(3):
        shuffled = truth.judge(prompts, pairs, shuffle_order=True, return_scores=True, seed=seed)
        np.testing.assert_allclose(shuffled, plain, atol=1e-6)
        assert truth.judge(prompts, pairs, seed=seed) == truth.judge(
            prompts, pairs, shuffle_order=False
        )


def test_identical_completions_tie_to_the_first_and_bad_pairs_are_named():
    truth = ground_truth()
    assert truth.judge(["describe cats"], [["cats fur paws .", "cats fur paws ."]]) == [0]
    assert truth.judge(
        ["describe cats"], [["cats fur paws .", "cats fur paws ."]], return_scores=True
    ) == [pytest.approx(0.5)]
    with pytest.raises(ValueError, match="got 2 prompts but 1 completion pairs"):
        truth.judge(["a", "b"], [["x", "y"]])
    with pytest.raises(ValueError, match="completion pair 0 must hold two completions"):
        truth.judge(["describe cats"], [["x", "y", "z"]])
    with pytest.raises(ValueError, match="completion pair 0 must hold two strings"):
        truth.judge(["describe cats"], [["x", 3]])
