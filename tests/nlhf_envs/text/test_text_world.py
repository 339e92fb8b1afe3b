"""The language world: tokenizer, prompts, ground-truth annotators and the judge interface's checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nlhf_envs.text import world
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.judging import CallableJudge

torch.set_num_threads(1)
TOK = world.default_tokenizer()


def test_vocabulary_size_and_round_trip():
    assert 300 <= TOK.vocab_size <= 500
    text = "sure - fur - paws ."
    assert TOK.decode(TOK.encode(text)) == text
    assert TOK.encode("Cats ZEBRA") == [TOK.token_id("cats"), TOK.unk_id]
    with pytest.raises(ValueError, match=r"token id 999 out of range \[0, 317\)"):
        TOK.decode([999])


def test_prompt_layout_is_left_padded_with_bos_and_sep():
    ids, mask = TOK.encode_prompts(["describe cats", "list facts about bread briefly"], 12)
    assert ids.shape == (2, 12)
    assert ids[0].tolist()[-4:] == [TOK.bos_id, TOK.token_id("describe"), TOK.token_id("cats"), 3]
    assert mask[0].sum() == 4 and not mask[0, :8].any()
    with pytest.raises(ValueError, match="needs 13 tokens"):
        TOK.encode_prompts([" ".join(["cats"] * 11)], 12)


def test_prompts_are_thousands_with_a_disjoint_heldout_split():
    p = world.PROMPTS
    assert len(p) == len(set(p.texts)) == 4320
    assert len(set(p.train_indices) & set(p.heldout_indices)) == 0
    assert len(p.heldout_indices) == round(0.15 * len(p))
    assert max(len(t.split()) for t in p.texts) + 2 <= world.PROMPT_LEN


def test_parse_prompt_reads_the_instruction():
    spec = world.parse_prompt(TOK.encode("please give a list of words for cats briefly"))
    assert spec.wants_list and spec.polite_request and spec.ideal_length == 4.0
    assert spec.topic_id == TOK.token_id("cats")
    assert world.parse_prompt(TOK.encode("write a detailed answer on rain")).ideal_length == 16.0


def test_ground_truth_is_antisymmetric_and_half_on_ties():
    gt = ground_truth()
    rng = np.random.default_rng(0)
    prompts = world.PROMPTS.sample(64, rng)
    a = [world.demonstrate(p, rng) for p in prompts]
    b = [world.perturb(x, rng) for x in a]
    pab, pba = gt.prob(prompts, a, b), gt.prob(prompts, b, a)
    assert torch.allclose(pab + pba, torch.ones(64), atol=1e-6)
    assert torch.allclose(gt.prob(prompts, a, a), torch.full((64,), 0.5))
    assert gt(prompts[:2], list(zip(a[:2], b[:2], strict=True))) == pytest.approx(pab[:2].tolist())


def test_ground_truth_prefers_a_relevant_answer_to_an_empty_or_off_topic_one():
    gt = ground_truth()
    p = gt.prob(["describe cats"] * 2, ["cats fur paws tail ."] * 2, ["", "orbit gravity moon ."])
    assert (p > 0.95).all()


def _cycles(P: np.ndarray) -> list[tuple[float, tuple[int, int, int]]]:
    out = []
    for i, j, k in itertools.combinations(range(P.shape[0]), 3):
        for a, b, c in ((i, j, k), (i, k, j)):
            m = min(P[a, b], P[b, c], P[c, a])
            if m > 0.5:
                out.append((m, (a, b, c)))
    return out


def _answer_set(prompt: str, rng: np.random.Generator) -> list[str]:
    demos = [world.demonstrate(prompt, rng) for _ in range(8)]
    return demos + [world.perturb(world.demonstrate(prompt, rng), rng) for _ in range(4)]


def test_population_is_intransitive_while_every_annotator_is_transitive():
    rng = np.random.default_rng(1)
    with_cycle, strong, n_prompts = 0, 0, 40
    for prompt in world.PROMPTS.sample(n_prompts, rng, "heldout"):
        spec = world.parse_prompt(TOK.encode(prompt))
        feats = np.array(
            [world.answer_features(spec, TOK.encode(a)) for a in _answer_set(prompt, rng)]
        )
        P = world.population_prob(feats[:, None], feats[None, :])
        cycles = _cycles(P)
        with_cycle += bool(cycles)
        strong += any(m > 0.55 for m, _ in cycles)
        # Each annotator is Bradley-Terry, hence transitive: no cycle in any P_k.
        per = world.annotator_probs(feats[:, None], feats[None, :])
        for k in range(0, world.NUM_ANNOTATORS, 5):
            assert not _cycles(per[..., k])
    # Measured: 33/40 prompts have a majority cycle among 12 sampled answers, 24/40 with every edge > 0.55.
    assert with_cycle >= 0.6 * n_prompts
    assert strong >= 0.4 * n_prompts


def test_a_condorcet_triple_from_sampled_answers():
    # Three demonstrations found by the sampling test above: each beats the next by a majority.
    prompt = "write a short note on beaches politely"
    answers = [
        "glad to help beaches guide view the journey nice station .",
        "kindly beaches route luggage station",
        "thanks fresh journey border tourist .",
    ]
    gt = ground_truth()
    p = [float(gt.prob([prompt], [answers[i]], [answers[(i + 1) % 3]])[0]) for i in range(3)]
    assert min(p) > 0.55, p


def test_votes_match_probabilities_on_average():
    gt = ground_truth()
    prompts = ["describe cats"] * 2
    a, b = ["cats fur paws ."] * 2, ["sure cats ."] * 2
    votes = gt.votes(prompts, a, b, 4000, np.random.default_rng(0))
    p = float(gt.prob(prompts, a, b)[0])
    assert abs(float(votes.mean()) - p) < 4 * math.sqrt(p * (1 - p) / 8000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"answers_a": torch.tensor([[5, 317]])},
            r"answers_a contains token id 317 at position \(0, 1\); ids must lie in \[0, 317\)",
        ),
        ({"answers_a": torch.tensor([[5, -1]])}, r"token id -1"),
        (
            {"answers_a": torch.tensor([5, 6])},
            r"answers_a must have shape \[batch, length\]; got shape \(2,\)",
        ),
        ({"answers_a": torch.tensor([[5.0, 6.0]])}, "integer token ids"),
        (
            {"mask_a": torch.ones(1, 3, dtype=torch.bool)},
            r"must have the shape of its token ids, \(1, 2\); got \(1, 3\)",
        ),
        ({"mask_a": torch.tensor([3])}, r"length outside \[0, 2\]"),
        (
            {"answers_b": torch.tensor([[5, 6], [7, 8]])},
            "batch sizes differ: prompts 1, answers_a 1, answers_b 2",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    args = {
        "prompts": torch.tensor([[1, 10, 3]]),
        "answers_a": torch.tensor([[5, 6]]),
        "answers_b": torch.tensor([[7, 8]]),
    }
    masks = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("mask")}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ground_truth().prob(args["prompts"], args["answers_a"], args["answers_b"], **masks)


def test_lengths_and_masks_select_the_same_tokens():
    gt = ground_truth()
    prompts = TOK.encode_answers(["describe cats"])[0]
    a = torch.tensor([[TOK.token_id("cats"), TOK.token_id("fur"), TOK.token_id("."), 50]])
    b = torch.tensor([[TOK.token_id("sure"), 0, 0, 0]])
    by_len = gt.prob(prompts, a, b, mask_a=torch.tensor([3]), mask_b=torch.tensor([1]))
    by_text = gt.prob(["describe cats"], ["cats fur ."], ["sure"])
    assert torch.allclose(by_len, by_text)
    # Everything after the first <eos> is ignored.
    a_eos = torch.tensor([[TOK.token_id("cats"), TOK.token_id("fur"), TOK.token_id("."), 2, 50]])
    assert torch.allclose(gt.prob(prompts, a_eos, b), by_text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "returned nan for pair 1"),
        (1.5, r"returned 1.5 for pair 1; expected a value in \[0, 1\]"),
    ],
)
def test_a_text_judge_returning_nan_or_out_of_range_is_an_error(value, message):
    judge = CallableJudge(lambda prompts, pairs: [0.5, value], TOK)
    with pytest.raises(ValueError, match=message):
        judge.prob(["describe cats"] * 2, ["cats", "fur"], ["paws", "tail"])
    short = CallableJudge(lambda prompts, pairs: [0.5], TOK)
    with pytest.raises(ValueError, match=r"must return 2 probabilities; got shape \(1,\)"):
        short.prob(["describe cats"] * 2, ["cats", "fur"], ["paws", "tail"])
