"""The reference LM (KV cache, padding, log-probs), the learned judge and their checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlhf_envs.text import load_judge, load_reference_policy, world
from nlhf_envs.text.engine import GeometricMixture, generate, sequence_log_probs, token_log_probs
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.models import (
    Judge,
    LMConfig,
    PreferenceNet,
    TinyCausalLM,
    save_checkpoint,
)
from nlhf_envs.text.models import (
    load_judge as load_judge_at,
)
from nlhf_envs.text.train import TrainConfig, evaluate_judge, sample_pairs, train_reference

torch.set_num_threads(1)
TOK = world.default_tokenizer()


@pytest.fixture(scope="module")
def ref() -> TinyCausalLM:
    return load_reference_policy()


@pytest.fixture(scope="module")
def judge() -> Judge:
    return load_judge()


def _prompts(n: int, seed: int = 0, split: str = "train"):
    texts = world.PROMPTS.sample(n, np.random.default_rng(seed), split)
    return TOK.encode_prompts(texts, world.PROMPT_LEN)


def test_kv_cache_generation_equals_full_recomputation(ref):
    ids, mask = _prompts(16)
    g1 = generate(ref, ids, mask, 24, generator=torch.Generator().manual_seed(3))
    g2 = generate(ref, ids, mask, 24, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(g1.tokens, g2.tokens)
    assert torch.allclose(g1.log_probs, g2.log_probs, atol=1e-5)


def test_generation_log_probs_equal_the_teacher_forced_ones(ref):
    ids, mask = _prompts(16, seed=1)
    g = generate(ref, ids, mask, 24, generator=torch.Generator().manual_seed(0))
    lp = token_log_probs(ref, ids, mask, g.tokens, g.mask)
    assert torch.allclose(lp, g.log_probs, atol=1e-5)
    assert torch.allclose(
        sequence_log_probs(ref, ids, mask, g.tokens, g.mask), g.log_probs.sum(-1), atol=1e-4
    )
    # The mask covers the answer up to and including its first <eos>, then padding.
    ended = g.lengths < 24
    last = g.tokens.gather(1, (g.lengths - 1).clamp(min=0)[:, None])[:, 0]
    assert (last[ended] == TOK.eos_id).all()
    assert (g.tokens[~g.mask] == TOK.pad_id).all()
    assert torch.equal(g.mask.sum(-1), g.lengths)


def test_left_padding_does_not_change_the_logits(ref):
    ids, mask = TOK.encode_prompts(["describe cats"], 12)
    short_ids, short_mask = TOK.encode_prompts(["describe cats"], 4)
    la, _ = ref(ids, attention_mask=mask)
    lb, _ = ref(short_ids, attention_mask=short_mask)
    assert torch.allclose(la[:, -1], lb[:, -1], atol=1e-5)


def test_reference_policy_writes_on_topic_answers(ref):
    ids, mask = _prompts(200, seed=2, split="heldout")
    g = generate(ref, ids, mask, 24, generator=torch.Generator().manual_seed(0))
    doms = [world.parse_prompt(r[m].tolist()).domain for r, m in zip(ids, mask, strict=True)]
    rel = []
    for i, d in enumerate(doms):
        words = [t for t in g.tokens[i][g.mask[i]].tolist() if t >= 5]
        in_dom = [world._DOMAIN_OF[t] == d for t in words]
        rel.append(np.mean(in_dom) if words else 0.0)
    # Demonstrations use 55-95% domain words; random words would give about 6%.
    assert np.mean(rel) > 0.4
    assert (g.lengths < 24).float().mean() > 0.8  # most answers end with <eos>


def test_geometric_mixture_endpoints_and_closed_form(ref):
    other = TinyCausalLM(LMConfig())
    ids, mask = _prompts(4)
    lp_ref = torch.log_softmax(ref(ids, attention_mask=mask)[0], -1)
    lp_oth = torch.log_softmax(other(ids, attention_mask=mask)[0], -1)
    for c in (0.0, 0.3, 1.0):
        mix = torch.log_softmax(GeometricMixture(other, ref, c)(ids, attention_mask=mask)[0], -1)
        expect = torch.log_softmax((1 - c) * lp_oth + c * lp_ref, -1)
        assert torch.allclose(mix, expect, atol=1e-5)
    mixture = GeometricMixture(other, ref, 0.4)
    g1 = generate(mixture, ids, mask, 12, generator=torch.Generator().manual_seed(5))
    g2 = generate(
        mixture, ids, mask, 12, generator=torch.Generator().manual_seed(5), use_cache=False
    )
    assert torch.equal(g1.tokens, g2.tokens)
    with pytest.raises(ValueError, match=r"mixture coefficient must lie in \[0, 1\], got 1.5"):
        GeometricMixture(other, ref, 1.5)


def test_judge_is_antisymmetric_for_any_weights(judge):
    rng = np.random.default_rng(4)
    prompts = world.PROMPTS.sample(32, rng)
    a = [world.demonstrate(p, rng) for p in prompts]
    b = [world.random_answer(rng) for _ in prompts]
    for j in (judge, Judge(PreferenceNet())):
        pab, pba = j.prob(prompts, a, b), j.prob(prompts, b, a)
        assert torch.allclose(pab + pba, torch.ones(32), atol=1e-6)
        assert torch.allclose(j.prob(prompts, a, a), torch.full((32,), 0.5), atol=1e-6)


def test_shipped_judge_agrees_with_the_population_on_heldout_prompts(judge, ref):
    # The v0 judge on the pair distribution it was trained on (demonstrations, pi_ref, perturbed).
    on_distribution = [
        ("demonstrator", "reference"),
        ("reference", "reference"),
        ("perturbed", "demonstrator"),
        ("reference", "perturbed"),
    ]
    w = world.DEFAULT_WORLD
    pairs = sample_pairs(
        3000, np.random.default_rng(123), w, ref, [], "heldout", 123, source_pairs=on_distribution
    )
    m = evaluate_judge(judge, pairs, w)
    # Shipped figure (20k pairs): see nlhf_envs/text/assets/default/metrics_v0.json and docs/games/token-duel.md.
    assert m["judge/agreement_confident"] >= 0.85
    assert m["judge/ece"] < 0.05
    assert m["judge/brier"] < m["judge/brier_floor"] + 0.05


def test_judge_text_and_token_forms_agree(judge):
    prompts = ["describe cats", "list facts about rain"]
    a, b = ["cats fur paws .", "- rain - clouds"], ["whatever", "rain ."]
    p_text = judge.prob(prompts, a, b)
    ids, mask = TOK.encode_prompts(prompts, 12)
    a_ids, a_mask = TOK.encode_answers(a, 24, add_eos=True)
    b_ids, b_mask = TOK.encode_answers(b, 24, add_eos=True)
    p_ids = judge.prob(ids, a_ids, b_ids, prompt_mask=mask, mask_a=a_mask, mask_b=b_mask)
    assert torch.allclose(p_text, p_ids, atol=1e-6)
    assert judge(prompts, list(zip(a, b, strict=True))) == pytest.approx(p_text.tolist(), abs=1e-6)


def test_checkpoint_round_trip_is_atomic_and_checks_the_kind(tmp_path, judge):
    path = tmp_path / "j.pt"
    save_checkpoint(path, "judge", judge.net, {"note": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["j.pt"]  # no temporary file left behind
    again = load_judge_at(path)
    x = (["describe cats"], ["cats fur ."], ["sure"])
    assert torch.equal(again.prob(*x), judge.prob(*x))
    with pytest.raises(ValueError, match="holds a 'judge' checkpoint, not 'reference_lm'"):
        load_reference_policy(path)
    with pytest.raises(FileNotFoundError, match="python -m nlhf_envs.text.train"):
        load_judge_at(tmp_path / "missing.pt")


def test_training_is_reproducible_from_the_seed():
    cfg = TrainConfig(demos=200, lm_steps=3, lm_batch=8, seed=7)
    m1, _ = train_reference(cfg)
    m2, _ = train_reference(cfg)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    state = torch.get_rng_state()
    train_reference(cfg)
    assert torch.equal(state, torch.get_rng_state())  # global torch RNG untouched


def test_ground_truth_and_judge_share_the_interface(judge):
    gt = ground_truth()
    args = (["describe cats"], ["cats fur paws tail ."], [""])
    assert float(gt.prob(*args)[0]) > 0.9 and float(judge.prob(*args)[0]) > 0.9


def test_a_judge_with_nan_weights_raises_instead_of_paying():
    net = PreferenceNet()
    with torch.no_grad():
        net.pair_mlp[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="Judge returned nan for pair 0; expected a probability"):
        Judge(net).prob(["describe cats"], ["cats"], ["fur"])
