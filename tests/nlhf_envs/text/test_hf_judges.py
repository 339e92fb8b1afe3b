"""Judges of the Hugging Face token duel: callables, Bradley-Terry reward models, symmetrised pairwise
classifiers, TRL-style judges; every output validated with the judge named."""

from __future__ import annotations

import math
import warnings

import pettingzoo
import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parts import prompts, tiny_gpt2, word_tokenizer  # noqa: E402

from nlhf_envs import registration  # noqa: E402
from nlhf_envs.text.engine import generate  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.hf_judges import (  # noqa: E402
    PairwiseClassifierJudge,
    RewardModelJudge,
    as_text_judge,
)

torch.set_num_threads(1)
X = ["w5 w6", "w7"]
PAIRS = [("w8 w9 w10", "w11"), ("w12", "w13 w14")]


def _seq_cls(vocab: int, pad_id: int, num_labels: int = 1, seed: int = 0):
    config = transformers.GPT2Config(
        vocab_size=vocab, n_layer=1, n_embd=16, n_head=2, n_positions=64, num_labels=num_labels
    )
    config.pad_token_id = pad_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.GPT2ForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def rm():
    """A reward model whose tokenizer has no pad token, so pad = EOS (id 0)."""
    tok = word_tokenizer(100, pad=False)
    assert tok.pad_token_id is None and tok.eos_token_id == 0
    return _seq_cls(100, pad_id=tok.eos_token_id), tok


def _reward_alone(model, tok, text):
    """``r`` of one unpadded text: the score head on the last token's hidden state."""
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        hidden = model.transformer(input_ids=ids).last_hidden_state
        return float(model.score(hidden[:, -1])[0, 0])


def test_reward_model_pools_at_the_last_real_token_also_when_pad_is_eos(rm):
    model, tok = rm
    judge = RewardModelJudge(model, tok, format=lambda x, a: f"{x} {a} <eos>")
    got = judge(X, PAIRS)
    for i, (x, (a, b)) in enumerate(zip(X, PAIRS, strict=True)):
        r_a = _reward_alone(model, tok, f"{x} {a} <eos>")
        r_b = _reward_alone(model, tok, f"{x} {b} <eos>")
        assert float(got[i]) == pytest.approx(1 / (1 + math.exp(r_b - r_a)), abs=1e-6)
    # the model's own pooling (last token != pad) skips the final EOS when pad == EOS
    texts = [f"{x} {a} <eos>" for x, (a, _) in zip(X, PAIRS, strict=True)]
    enc = tok(texts[0])["input_ids"]
    with torch.no_grad():
        own = float(model(input_ids=torch.tensor([enc])).logits[0, 0])
    ours = judge.rewards([X[0]], [PAIRS[0][0]])
    assert abs(own - float(ours[0])) > 1e-3
    assert float(ours[0]) == pytest.approx(_reward_alone(model, tok, texts[0]), abs=1e-5)


def test_reward_model_judge_is_antisymmetric_and_loads_from_a_folder(rm, tmp_path):
    model, tok = rm
    judge = RewardModelJudge(model, tok)
    p = judge(X, PAIRS)
    q = judge(X, [(b, a) for a, b in PAIRS])
    assert torch.allclose(p + q, torch.ones(2, dtype=p.dtype), atol=1e-12)
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    loaded = as_text_judge(tmp_path / "rm")
    assert loaded.name == "RewardModelJudge"
    assert torch.allclose(loaded(X, PAIRS).double(), p, atol=1e-6)


def test_reward_model_and_classifier_refuse_wrong_models(rm):
    _, tok = rm
    with pytest.raises(ValueError, match=r"must have one output \(num_labels=1\); it has 2"):
        RewardModelJudge(_seq_cls(100, 0, num_labels=2), tok)
    with pytest.raises(
        ValueError, match="must be a sequence-classification model .* got GPT2LMHeadModel"
    ):
        RewardModelJudge(tiny_gpt2(100), tok)
    with pytest.raises(ValueError, match="a pairwise classifier model needs its tokenizer"):
        PairwiseClassifierJudge(_seq_cls(100, 0))


def test_pairwise_classifier_is_symmetrised():
    def biased(prompts, a, b):  # prefers the first position, and longer answers
        return [min(1.0, 0.6 + 0.1 * (len(x.split()) - len(y.split()))) for x, y in zip(a, b)]

    judge = PairwiseClassifierJudge(biased)
    p = judge(X, PAIRS)
    # pair 0: f(a, b) = 0.8, f(b, a) = 0.4 -> (0.8 + 1 - 0.4) / 2; pair 1: f = 0.5 and 0.7
    assert p.tolist() == pytest.approx([0.7, 0.4], abs=1e-6)  # float32 checks
    q = judge(X, [(b, a) for a, b in PAIRS])
    assert (p + q).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    with pytest.raises(
        ValueError,
        match=r"pairwise classifier test_pairwise_classifier_is_symmetrised.<locals>.bad returned 2.0 for pair 0",
    ):

        def bad(prompts, a, b):
            return [2.0] * len(a)

        PairwiseClassifierJudge(bad)(X, PAIRS)


def test_pairwise_classifier_model_reads_both_answers(rm):
    _, tok = rm
    model = _seq_cls(100, 0, seed=3)
    judge = PairwiseClassifierJudge(model, tok)
    p = judge(X, PAIRS)
    q = judge(X, [(b, a) for a, b in PAIRS])
    assert torch.allclose(p + q, torch.ones(2, dtype=p.dtype), atol=1e-12)
    f = lambda x, a, b: 1 / (1 + math.exp(-_reward_alone(model, tok, f"{x}\n[A] {a}\n[B] {b}")))  # noqa: E731
    x, (a, b) = X[0], PAIRS[0]
    assert float(p[0]) == pytest.approx((f(x, a, b) + 1 - f(x, b, a)) / 2, abs=1e-6)


class _ScoringTRLJudge:
    """TRL's pairwise interface with scores: prefers the shorter completion."""

    def judge(self, prompts, completions, shuffle_order=True, return_scores=False):
        assert shuffle_order is False
        s = [0.9 if len(c[0]) < len(c[1]) else 0.2 for c in completions]
        return s if return_scores else [0 if v >= 0.5 else 1 for v in s]


class _RankingTRLJudge:
    """TRL's base interface without scores: returns the index of the preferred completion."""

    def __init__(self, ranks):
        self.ranks = ranks

    def judge(self, prompts, completions, shuffle_order=True):
        return self.ranks


def test_trl_style_judges():
    assert as_text_judge(_ScoringTRLJudge())(X, PAIRS).tolist() == pytest.approx([0.2, 0.9])
    assert as_text_judge(_RankingTRLJudge([1, 0]))(X, PAIRS).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="judge _RankingTRLJudge returned rank -1 for pair 1"):
        as_text_judge(_RankingTRLJudge([0, -1]))(X, PAIRS)
    with pytest.raises(ValueError, match="judge must be callable .* got int"):
        as_text_judge(3)


def test_judge_outputs_are_validated_on_every_call_with_the_judge_named():
    def nan_judge(prompts, pairs):
        return [0.5, float("nan")]

    def short_judge(prompts, pairs):
        return [0.5]

    def big_judge(prompts, pairs):
        return torch.tensor([0.5, 1.5])

    with pytest.raises(
        ValueError, match=r"^judge .*nan_judge returned nan for pair 1; expected a probability$"
    ):
        as_text_judge(nan_judge)(X, PAIRS)
    with pytest.raises(
        ValueError, match=r"judge .*short_judge must return 2 probabilities; got shape \(1,\)"
    ):
        as_text_judge(short_judge)(X, PAIRS)
    with pytest.raises(
        ValueError, match=r"judge .*big_judge returned 1.5 for pair 1; expected a value in \[0, 1\]"
    ):
        as_text_judge(big_judge)(X, PAIRS)
    with pytest.raises(ValueError, match=r"judge .*<lambda> must return 2 probabilities"):
        as_text_judge(lambda p, pairs: "yes")(X, PAIRS)
    # in the env: the judge is checked at every payment
    tok, model = word_tokenizer(64), tiny_gpt2(64)
    env = HFTokenDuelEnv(model, tok, lambda p, pairs: [float("nan")], prompts(3), max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"judge .*<lambda> returned nan for pair 0"):
        env.step({"player_0": 5, "player_1": 6})


def test_a_reward_model_judge_plays_through_pettingzoo_make(rm):
    registration.register_all()
    rm_model, rm_tok = rm
    judge = RewardModelJudge(rm_model, rm_tok)
    tok, model = word_tokenizer(100), tiny_gpt2(100)
    env = pettingzoo.make(
        "parallel",
        "nlhf/HFTokenDuel-v0",
        reference=model,
        tokenizer=tok,
        judge=judge,
        prompts=prompts(4),
        max_prompt_tokens=4,
        max_new_tokens=3,
        reward_mode="probability",
    )
    env.reset(seed=0)
    while env.agents:
        _, rewards, _, _, infos = env.step({"player_0": 20, "player_1": 30})
    info = infos["player_0"]
    assert info["answer_0"] == "w20 w20 w20" and info["answer_1"] == "w30 w30 w30"
    expect = judge([info["prompt"]], [("w20 w20 w20", "w30 w30 w30")])
    assert rewards["player_0"] == pytest.approx(float(expect[0]), abs=1e-6)
    assert 0.0 < rewards["player_0"] < 1.0


def test_hf_policy_uses_the_cache_keyword_of_the_installed_transformers():
    model = tiny_gpt2(64)
    ids = torch.tensor([[5, 6, 7], [0, 8, 9]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a deprecated keyword would raise here
        g1 = generate(HFPolicy(model), ids, mask, 5, generator=torch.Generator().manual_seed(0))
    g2 = generate(
        HFPolicy(model), ids, mask, 5, generator=torch.Generator().manual_seed(0), use_cache=False
    )
    assert torch.equal(g1.tokens, g2.tokens)
    assert torch.allclose(g1.log_probs, g2.log_probs, atol=1e-5)
