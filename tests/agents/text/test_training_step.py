"""The training step does TRL's Online DPO work and no more (issue 30, items 3 and 4).

* Online IPO samples both seats in one generate call of ``2 B`` rows; the policy scores the
  ``2 B`` sequences in one forward pass with gradients, the reference in one without; scoring
  computes logits for the answer positions only, generation's first call for the last position
  only; prompts are padded to the batch's longest.
* The weights are stored once: full fine-tuning holds the trainable model and the env's own
  weights as ``pi_ref``; LoRA puts its adapter on the env's weights without touching the env's
  model (two agents on one env each have their own adapter).
* Micro-batches (``gradient_accumulation_steps``) give the whole batch's gradient and statistics
  to 1e-6 for every token agent; gradient checkpointing gives the same results and keeps the KV
  cache during generation.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

import agents  # noqa: E402
from agents.config import ConfigError  # noqa: E402
from agents.text.common import frozen_copy  # noqa: E402
from nlhf_envs.text.engine import token_log_probs  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

TINY = "nlhf/TinyTokenDuel-v0"
LORA = {"rank": 4, "alpha": 8.0, "target_modules": ["c_attn", "c_fc"]}


@pytest.fixture(scope="module")
def hf_env():
    return HFTokenDuelEnv.from_world(TINY)


def _random_env(vocab: int = 24, llama: bool = False, **kwargs):
    """A random tiny GPT-2 (or Llama) env with short prompts under ``max_prompt_tokens=16``."""
    import transformers

    from tests.nlhf_envs.text import hf_parts

    if llama:
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
            bos_token_id=None, eos_token_id=1, pad_token_id=0,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = transformers.LlamaForCausalLM(config).eval()
    else:
        model = hf_parts.tiny_gpt2(vocab)
    prompts = [
        " ".join(f"w{3 + (5 * i + j) % (vocab - 3)}" for j in range(1 + i % 4)) for i in range(8)
    ]
    return HFTokenDuelEnv(
        model, hf_parts.word_tokenizer(vocab), hf_parts.length_judge, prompts,
        heldout_fraction=0.25, max_prompt_tokens=16, max_new_tokens=4, **kwargs,
    )  # fmt: skip


class _Calls:
    """Records ``(rows, columns, logits kept, grad enabled)`` of every call of a policy module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[tuple[int, int, int, bool]] = []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, out):
        ids = args[0] if args else kwargs["input_ids"]
        self.calls.append((ids.shape[0], ids.shape[1], out[0].shape[1], torch.is_grad_enabled()))


# ---------------------------------------------------------------------------------- the step's work


@pytest.mark.parametrize("where", ["native", "hf"])
def test_online_ipo_step_is_one_generate_one_policy_and_one_reference_forward(where, hf_env):
    env = TINY if where == "native" else hf_env
    agent = agents.make("online_ipo", env, seed=0, batch_size=8, eval_every=0)
    policy, reference = _Calls(agent.model), _Calls(agent.reference)
    agent.learn(num_iterations=1)
    b = 8
    # generation: the B prompts once, then every call has the 2 B rows of both seats
    first = policy.calls[0]
    sampled = [c for c in policy.calls[1:] if not c[3]]
    graded = [c for c in policy.calls[1:] if c[3]]
    assert first[0] == b
    assert sampled and all(c[0] == 2 * b for c in sampled)
    if where == "native":  # scoring: ONE forward of the 2 B sequences (prompts repeated)
        assert not first[3] and [c[0] for c in graded] == [2 * b]
        assert [(c[0], c[3]) for c in reference.calls] == [(2 * b, False)]
        return
    # scoring with gradients: generation's prompt pass (made with gradients: PromptPassMemo) is
    # the scoring pass's, whose KV cache is shared by the pair; then the 2 B answers on it
    assert first[3]
    (answers,) = graded
    assert answers[0] == 2 * b
    assert answers[1] < agent.engine.max_new_tokens < first[1] + answers[1]
    # the reference: the prompts, then the answers on their cache, without gradients
    assert [c[:2] + (c[3],) for c in reference.calls] == [
        (b, first[1], False),
        (2 * b, answers[1], False),
    ]
    # logits of the last prompt position only in the prompts' calls
    assert first[2] == reference.calls[0][2] == 1 < first[1] and answers[2] == answers[1]


@pytest.mark.parametrize("where", ["gpt2", "llama", "lora"])
def test_online_ipo_reusing_generations_prompt_pass_trains_as_a_second_prompt_pass(
    where, hf_env, monkeypatch
):
    """Online IPO's scoring pass takes generation's prompt pass (one forward of the prompts per
    step instead of two): the same losses and weights, step after step, as with the prompts run
    again; and none is kept where it could differ (a LoRA dropout) or would not be taken."""
    from agents.text.common import TextAgent

    env = _random_env(llama=True) if where == "llama" else hf_env
    extra = {"lora": LORA} if where == "lora" else {}
    runs, passes = [], []
    for reuse in (True, False):
        if not reuse:
            monkeypatch.setattr(TextAgent, "prompt_pass_memo", lambda self: None)
        agent = agents.make("online_ipo", env, seed=4, batch_size=8, eval_every=0, lr=0.05, **extra)
        start = [p.detach().clone() for p in agent.model.parameters() if p.requires_grad]
        calls = _Calls(agent.model)
        agent.learn(num_iterations=3)
        # the prompts' passes (a LoRA pi_ref runs on the same module: its passes count too)
        passes.append(sum(1 for c in calls.calls if c[2] == 1 and c[0] == 8))
        weights = [p.detach().clone() for p in agent.model.parameters() if p.requires_grad]
        runs.append(([row["loss/ipo"] for row in agent.history], weights))
        monkeypatch.undo()
    assert passes[1] - passes[0] == 3  # one prompt pass fewer per step
    (loss, weights), (loss_again, weights_again) = runs
    assert len(loss) == 3 and loss != [loss[0]] * 3
    torch.testing.assert_close(loss, loss_again, rtol=0, atol=1e-6)
    for w, w_again in zip(weights, weights_again, strict=True):
        torch.testing.assert_close(w, w_again, rtol=0, atol=1e-6)
    assert max(float((w - w0).abs().max()) for w, w0 in zip(weights, start, strict=True)) > 1e-3
    if where == "lora":  # a LoRA dropout acts in scoring, not in sampling: no reuse
        dropped = agents.make(
            "online_ipo", env, seed=4, batch_size=8, eval_every=0,
            lora={**LORA, "dropout": 0.1},
        )  # fmt: skip
        assert dropped.prompt_pass_memo() is None
    micro = agents.make(
        "online_ipo", env, seed=4, batch_size=8, eval_every=0, gradient_accumulation_steps=2,
        **extra,
    )  # fmt: skip
    assert micro.prompt_pass_memo() is None
    assert agents.make("online_ipo", TINY, seed=0).prompt_pass_memo() is None


@pytest.mark.parametrize("where", ["native", "gpt2", "llama", "lora"])
def test_pair_scoring_shares_each_prompt_and_equals_repeated_prompts(where, hf_env):
    """``pair_log_probs`` encodes each prompt once for both answers of a Hugging Face model (a
    KV cache gathered to the 2 B answers; the native model repeats the prompts): the log-probs
    and the gradient equal those of the 2 B full sequences."""
    env = {"native": TINY, "gpt2": hf_env, "llama": None, "lora": hf_env}[where]
    env = _random_env(llama=True) if where == "llama" else env
    extra = {"lora": LORA} if where == "lora" else {}
    agent = agents.make("online_ipo", env, seed=3, batch_size=8, eval_every=0, **extra)
    duel = agent.duel(agent.model)
    assert not torch.equal(duel.y.mask, duel.y2.mask) or not torch.equal(
        duel.y.tokens, duel.y2.tokens
    )
    rows = torch.arange(duel.size).repeat(2)
    answers = torch.cat([duel.y.tokens, duel.y2.tokens]), torch.cat([duel.y.mask, duel.y2.mask])
    params = [p for p in agent.model.parameters() if p.requires_grad]

    def scored(shared: bool, model) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if shared:
            lp = torch.cat(agent.pair_log_probs(model, duel))
        else:
            lp = token_log_probs(model, duel.prompt_ids[rows], duel.prompt_mask[rows], *answers)
        if not lp.requires_grad:
            return lp, []
        weights = torch.linspace(-1.0, 2.0, lp.numel()).reshape(lp.shape)
        return lp.detach(), list(torch.autograd.grad((lp * weights).sum(), params))

    for model in (agent.model, agent.reference):
        (lp, grads), (lp_full, grads_full) = scored(True, model), scored(False, model)
        assert lp.abs().sum() > 1.0 and lp_full[~answers[1]].abs().max() == 0.0
        torch.testing.assert_close(lp, lp_full, rtol=0, atol=2e-5)
        assert len(grads) == len(grads_full) == (len(params) if model is agent.model else 0)
        for g, g_full in zip(grads, grads_full, strict=True):
            torch.testing.assert_close(g, g_full, rtol=1e-4, atol=2e-5)
        assert model is agent.reference or max(g.abs().max() for g in grads) > 1e-3


def test_prompts_are_padded_to_the_batch_longest_and_give_the_same_answers():
    env = _random_env()
    agent = agents.make("online_ipo", env, seed=0, batch_size=8, eval_every=0)
    _, ids, mask = agent.engine.sample_prompts(8, torch.Generator().manual_seed(1))
    longest = int(mask.sum(-1).max())
    assert ids.shape[1] == longest < env.max_prompt_tokens == 16
    assert bool(mask[:, 0].any())  # no column is padding in every row
    # the full-width rows (padded to max_prompt_tokens) sample and score the same answers
    wide_ids = torch.full((8, 16), env.pad_id, dtype=torch.long)
    wide_ids[:, 16 - longest :] = ids
    wide_mask = torch.zeros(8, 16, dtype=torch.bool)
    wide_mask[:, 16 - longest :] = mask
    y = agent.engine.generate(agent.model, ids, mask, torch.Generator().manual_seed(2))
    y_wide = agent.engine.generate(
        agent.model, wide_ids, wide_mask, torch.Generator().manual_seed(2)
    )
    assert torch.equal(y.tokens, y_wide.tokens)
    torch.testing.assert_close(y.log_probs, y_wide.log_probs, rtol=0, atol=1e-6)
    with torch.no_grad():
        a = token_log_probs(agent.model, ids, mask, y.tokens, y.mask)
        b = token_log_probs(agent.model, wide_ids, wide_mask, y.tokens, y.mask)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a, y.log_probs, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------- weights once


def _storages(module: torch.nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()}


def test_full_fine_tuning_holds_the_trainable_model_and_the_env_weights_once():
    env = _random_env()
    ref = env.reference_model
    flags = [p.requires_grad for p in ref.parameters()]
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    agent = agents.make("online_ipo", env, seed=0, batch_size=4, eval_every=0, lr=0.05)
    # pi_ref is the env's weights (same storage), pi_theta one copy of its own
    assert _storages(agent.reference.lm) == _storages(ref)
    assert not _storages(agent.model.lm) & _storages(ref)
    assert all(not p.requires_grad for p in agent.reference.parameters())
    agent.learn(num_iterations=2)
    # the env's model is untouched: same weights, same requires_grad flags, still eval mode
    assert [p.requires_grad for p in ref.parameters()] == flags and not ref.training
    assert all(torch.equal(v, before[k]) for k, v in ref.state_dict().items())
    moved = max((p - q).abs().max() for p, q in zip(agent.model.parameters(), ref.parameters()))
    assert moved > 1e-4


def test_lora_puts_its_adapter_on_the_env_weights_without_touching_the_env_model():
    env = _random_env()
    ref = env.reference_model
    names = [n for n, _ in ref.named_modules()]
    flags = [p.requires_grad for p in ref.parameters()]
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        logits = ref(input_ids=ids).logits.clone()
    cfg = {"batch_size": 4, "eval_every": 0, "lr": 0.05, "lora": LORA}
    first = agents.make("online_ipo", env, seed=0, **cfg)
    second = agents.make("online_ipo", env, seed=1, **cfg)
    for agent in (first, second):  # the base weights are the env's: stored once
        base = {p.untyped_storage().data_ptr() for n, p in agent.model.named_parameters()
                if "lora_" not in n}  # fmt: skip
        assert base == _storages(ref)
    first.learn(num_iterations=2)
    # the env's model has no adapter layers and unchanged flags and outputs
    assert [n for n, _ in ref.named_modules()] == names
    assert [p.requires_grad for p in ref.parameters()] == flags
    with torch.no_grad():
        assert torch.equal(ref(input_ids=ids).logits, logits)
    # each agent has its own adapter: training the first moved it, not the second
    _, pids, pmask = first.engine.sample_prompts(4, torch.Generator().manual_seed(0))
    y = first.engine.generate(first.reference, pids, pmask, torch.Generator().manual_seed(1))
    with torch.no_grad():
        lp = {a: token_log_probs(a.model, pids, pmask, y.tokens, y.mask) for a in (first, second)}
        l_ref = token_log_probs(env.reference, pids, pmask, y.tokens, y.mask)
        l_first_ref = token_log_probs(first.reference, pids, pmask, y.tokens, y.mask)
    assert (lp[first] - l_ref).abs().max() > 1e-3
    assert (lp[second] - l_ref).abs().max() == 0.0  # B = 0: still pi_ref
    assert (l_first_ref - l_ref).abs().max() == 0.0  # pi_ref: the adapter disabled


def test_nash_mp_with_lora_never_writes_the_shared_base(hf_env):
    ref = hf_env.reference_model
    versions = [p._version for p in ref.parameters()]
    agent = agents.make(
        "nash_mp", hf_env, seed=0, batch_size=4, eval_every=0, lr=0.02, inner_steps=1, lora=LORA
    )
    agent.learn(num_iterations=2)
    ema = agents.make(
        "nash_mp", hf_env, seed=0, batch_size=4, eval_every=0, lr=0.02, inner_steps=1,
        variant="ema", lora=LORA,
    )  # fmt: skip
    ema.learn(num_iterations=2)
    assert [p._version for p in ref.parameters()] == versions  # no in-place write at all


def test_mnpo_with_lora_resumes_its_population_from_adapters(hf_env, tmp_path):
    cfg = {"batch_size": 4, "eval_every": 0, "lr": 0.05, "inner_steps": 1, "history": 2}
    agent = agents.make("mnpo", hf_env, seed=0, lora=LORA, **cfg)
    agent.learn(num_iterations=2)
    path = agent.save(tmp_path / "mnpo.npz")
    import numpy as np

    with np.load(path) as arrays:
        stored = [k for k in arrays.files if k.startswith("population/")]
    assert stored and all("lora_" in k for k in stored)  # adapters only, not the base
    back = agents.load(path, game=hf_env)
    _, ids, mask = agent.engine.sample_prompts(4, torch.Generator().manual_seed(0))
    y = agent.engine.generate(agent.model, ids, mask, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for m, n in zip(agent.population, back.population, strict=True):
            a = token_log_probs(m, ids, mask, y.tokens, y.mask)
            b = token_log_probs(n, ids, mask, y.tokens, y.mask)
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- micro-batches


def _grads_and_stats(agent, duel, loss_fn, steps: int):
    agent.config.gradient_accumulation_steps = steps
    grads: list[torch.Tensor] = []

    def step() -> None:  # keep theta: the accumulated gradients as the optimiser sees them
        grads.extend(p.grad.clone() for p in agent.model.parameters() if p.grad is not None)

    agent.optimizer.step = step
    agent._stats = {}
    agent.optimise_duel(duel, loss_fn)
    assert grads and all(p.grad is None for p in agent.model.parameters())  # freed after the step
    return grads, {k: v[-1] for k, v in agent._stats.items()}


def _duel_and_loss(name, agent):
    if name == "nash_mp":
        pi_k = frozen_copy(agent.model)
        return agent.duel(pi_k), lambda d: agent._loss(d, pi_k)
    if name == "nash_md":
        from nlhf_envs.text.engine import GeometricMixture

        return agent.duel(GeometricMixture(agent.model, agent.reference, 0.5)), agent._loss
    if name == "mnpo":
        return agent._sample_pairs(), agent._loss
    return agent.duel(agent.model), agent._loss


@pytest.mark.parametrize("where", ["native", "lora"])
@pytest.mark.parametrize("name", ["online_ipo", "nash_md", "nash_mp", "mnpo"])
def test_micro_batches_give_the_whole_batch_gradient(name, where, hf_env):
    env, extra = (TINY, {}) if where == "native" else (hf_env, {"lora": LORA})
    agent = agents.make(name, env, seed=3, batch_size=8, eval_every=0, grad_clip=None, **extra)
    if name == "mnpo":  # a population that is not pi_theta: every term of the loss acts
        agent.learn(num_iterations=1)
    duel, loss_fn = _duel_and_loss(name, agent)
    whole, stats = _grads_and_stats(agent, duel, loss_fn, 1)
    scale = max(float(g.abs().max()) for g in whole)
    assert scale > 1e-4
    for steps in (2, 8):
        parts, micro_stats = _grads_and_stats(agent, duel, loss_fn, steps)
        assert len(parts) == len(whole)
        # equal to 1e-6 of the gradient's largest entry (float32 sums in another order)
        diff = max(float((g - h).abs().max()) for g, h in zip(parts, whole, strict=True))
        assert diff <= 1e-6 * max(scale, 1.0), (steps, diff, scale)
        assert set(micro_stats) == set(stats)
        for key, value in stats.items():
            assert micro_stats[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_micro_batched_training_runs_equal_whole_batch_runs(hf_env):
    common = {"seed": 4, "batch_size": 8, "eval_every": 2, "eval_prompts": 8}
    one = agents.make("online_ipo", hf_env, **common)
    four = agents.make("online_ipo", hf_env, gradient_accumulation_steps=4, **common)
    one.learn(num_iterations=4)
    four.learn(num_iterations=4)
    assert len(one.history) == len(four.history) == 4
    for a, b in zip(one.history, four.history, strict=True):
        for key, value in a.items():
            # float32 sums in another order, after Adam steps: Adam's first step moves every
            # weight by about lr whatever its gradient's size, so a gradient entry near 0 whose
            # rounding differs moves the next statistics by ~1e-6 (the margins: differences of
            # nearly equal log-probs)
            if not key.startswith("time/"):
                assert b[key] == pytest.approx(value, rel=1e-5, abs=5e-6), key
        if "eval/exploitability" in a:
            assert abs(a["eval/exploitability"] - b["eval/exploitability"]) <= 1e-6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"gradient_accumulation_steps": 0},
            "gradient_accumulation_steps: must be an integer >= 1",
        ),
        ({"gradient_accumulation_steps": 3}, "batch_size: 8 is not a multiple of gradient_accum"),
    ],
)
def test_bad_micro_batch_settings_are_one_line(extra, message):
    with pytest.raises(ConfigError, match=message):
        agents.make("online_ipo", TINY, batch_size=8, **extra)


# ---------------------------------------------------------------------------------- checkpointing


class _MLPCalls:
    """Sequence lengths seen by a decoder layer's MLP, with or without gradients (its hooks fire
    in the backward pass's recomputation too: transformers checkpoints the layer's ``forward``)."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        self.calls: list[tuple[int, bool]] = []
        mlp.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls.append((args[0].shape[1], torch.is_grad_enabled()))


@pytest.mark.parametrize("llama", [False, True])
@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_recomputes_layers_with_the_same_results(llama, lora):
    env = _random_env(llama=llama)
    targets = ["q_proj", "v_proj"] if llama else ["c_attn"]
    extra = {"lora": {**LORA, "target_modules": targets}} if lora else {}
    common = {"seed": 2, "batch_size": 4, "eval_every": 0, "lr": 0.05, **extra}
    plain = agents.make("nash_md", env, **common)
    ckpt = agents.make("nash_md", env, gradient_checkpointing=True, **common)
    lm = ckpt.model.lm.get_base_model() if lora else ckpt.model.lm
    layer = lm.model.layers[0] if llama else lm.transformer.h[0]
    seen = _MLPCalls(layer.mlp)
    plain.learn(num_iterations=3)
    ckpt.learn(num_iterations=3)
    for a, b in zip(plain.history, ckpt.history, strict=True):
        for key, value in a.items():
            if not key.startswith("time/"):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    for p, q in zip(plain.model.parameters(), ckpt.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    graded = [n for n, g in seen.calls if g]
    # the training forward runs each layer twice (forward, then recomputed in the backward)
    assert len(graded) == 2 * 3 and graded[0::2] == graded[1::2]
    # generation feeds one token at a time on the KV cache (length 1 after the prompt's call)
    assert 1 in [n for n, g in seen.calls if not g]
    assert not layer.training  # marked for the training forward only


def test_gradient_checkpointing_needs_a_hugging_face_model():
    with pytest.raises(ConfigError, match="gradient_checkpointing: is for Hugging Face causal LMs"):
        agents.make("online_ipo", TINY, gradient_checkpointing=True)


@pytest.mark.parametrize("where", ["native", "hf"])
def test_nash_md_samples_both_seats_in_one_call_from_the_right_policies(where, hf_env):
    """pi_theta runs once per token on the 2 B rows, pi_ref on the mixture's B rows; each seat's
    sampling log-probs are its own policy's (pi_theta, the geometric mixture) on its answers."""
    from nlhf_envs.text.engine import GeometricMixture

    env = TINY if where == "native" else hf_env
    agent = agents.make("nash_md", env, seed=0, batch_size=8, eval_every=0, lr=0.05)
    agent.learn(num_iterations=2)  # pi_theta away from pi_ref
    policy, reference = _Calls(agent.model), _Calls(agent.reference)
    mixture = GeometricMixture(agent.model, agent.reference, 0.5)
    _, ids, mask = agent.engine.sample_prompts(8, torch.Generator().manual_seed(0))
    y, y2 = agent.engine.generate_pair(
        agent.model, mixture, ids, mask, torch.Generator().manual_seed(1), joint=True
    )
    assert {c[0] for c in policy.calls} == {16} and {c[0] for c in reference.calls} == {8}
    with torch.no_grad():
        lp_theta = token_log_probs(agent.model, ids, mask, y.tokens, y.mask)
        lp_mix = token_log_probs(mixture, ids, mask, y2.tokens, y2.mask)
    torch.testing.assert_close(y.log_probs, lp_theta, rtol=0, atol=1e-5)
    torch.testing.assert_close(y2.log_probs, lp_mix, rtol=0, atol=1e-5)
    assert (
        lp_theta.sum(-1) - token_log_probs(agent.reference, ids, mask, y.tokens, y.mask).sum(-1)
    ).abs().max() > 1e-3


def test_lora_dropout_acts_in_training_only_and_the_env_model_keeps_its_dropout():
    env = _random_env()
    rates = [m.p for m in env.reference_model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and max(rates) > 0  # GPT-2's own dropout (eval mode: inactive)
    lora = {**LORA, "target_modules": ["c_attn"], "dropout": 0.5}
    agent = agents.make("online_ipo", env, seed=0, batch_size=4, eval_every=0, lr=0.05, lora=lora)
    agent.learn(num_iterations=2)  # B != 0: the adapter's dropout changes the output
    ids = torch.tensor([[5, 6, 7, 8]])
    first, _ = agent.model(ids)
    second, _ = agent.model(ids)
    assert (first - second).abs().max() > 1e-6  # the adapter's dropout, in training mode
    agent.model.eval()
    with torch.no_grad():
        assert torch.equal(agent.model(ids)[0], agent.model(ids)[0])
    agent.model.train()
    base = [m.p for n, m in agent.model.lm.named_modules()
            if isinstance(m, torch.nn.Dropout) and "lora_" not in n]  # fmt: skip
    assert base and max(base) == 0.0  # the agent's base dropout is off
    assert [m.p for m in env.reference_model.modules() if isinstance(m, torch.nn.Dropout)] == rates


def test_shards_with_prompts_of_different_widths_make_one_batch():
    """Each shard's prompts are padded to its own longest; the shards of one process are
    left-padded to a common width before they are joined (the data-parallel layout)."""
    env = _random_env()
    for seed in range(20):  # a seed whose two shards draw prompts of different widths
        agent = agents.make("online_ipo", env, seed=seed, batch_size=4, shards=2, eval_every=0)
        draws = [agent.engine.sample_prompts(2, agent.prompt_generator(s))[1:] for s in (0, 1)]
        if draws[0][0].shape[1] != draws[1][0].shape[1]:
            break
    else:
        pytest.fail("no seed gave shards of different prompt widths")
    duel = agent.duel(agent.model)
    assert duel.prompt_ids.shape == (4, max(d[0].shape[1] for d in draws))
    rows = [(ids[i][mask[i]], mask[i].sum()) for ids, mask in draws for i in range(2)]
    for i, (tokens, length) in enumerate(rows):
        assert torch.equal(duel.prompt_ids[i][duel.prompt_mask[i]], tokens)
        assert int(duel.prompt_mask[i].sum()) == int(length)
    agent.learn(num_iterations=1)
    assert agent.history[-1]["loss/ipo"] > 0


@pytest.mark.parametrize("where", ["native", "gpt2", "llama", "lora"])
def test_self_play_generation_encodes_each_prompt_once_with_the_same_samples(where, hf_env):
    """``generate(prompt_rows=)``: the prompts' pass runs on the B distinct prompts and its
    cache is gathered to the 2 B rows; the samples and log-probs equal those of the prompts
    repeated (same generator seed), and a policy without a gatherable cache falls back."""
    env = {"native": TINY, "gpt2": hf_env, "llama": None, "lora": hf_env}[where]
    env = _random_env(llama=True) if where == "llama" else env
    extra = {"lora": LORA} if where == "lora" else {}
    agent = agents.make("online_ipo", env, seed=5, batch_size=8, eval_every=0, **extra)
    if where == "lora":
        agent.learn(num_iterations=1)  # an adapter that acts
    eng = agent.engine
    _, ids, mask = eng.sample_prompts(8, torch.Generator().manual_seed(2))
    rows = torch.arange(8).repeat(2)

    def sample(policy, **kw):
        return eng.generate(policy, ids, mask, torch.Generator().manual_seed(9), **kw)

    calls = _Calls(agent.model)
    shared = sample(agent.model, prompt_rows=rows)
    assert calls.calls[0][:2] == (8, ids.shape[1])  # the prompts' pass: the B prompts
    calls.handle.remove()
    full = eng.generate(agent.model, ids[rows], mask[rows], torch.Generator().manual_seed(9))
    assert shared.tokens.shape[0] == 16 and torch.equal(shared.tokens, full.tokens)
    assert torch.equal(shared.mask, full.mask) and shared.lengths.float().mean() > 1.0
    torch.testing.assert_close(shared.log_probs, full.log_probs, rtol=0, atol=1e-5)

    class Opaque:  # a cache of a kind select_cache_rows does not know
        def __init__(self, inner):
            self.inner = inner

    def opaque(input_ids, attention_mask=None, past_key_values=None):
        past = None if past_key_values is None else past_key_values.inner
        logits, cache = agent.model(input_ids, attention_mask, past)
        return logits, Opaque(cache)

    fallback = sample(opaque, prompt_rows=rows)
    assert torch.equal(fallback.tokens, full.tokens)


def test_adam_runs_fused_on_hugging_face_models_and_a_per_tensor_checkpoint_resumes_fused(
    hf_env, tmp_path
):
    """Adam's fused kernel is the default for Hugging Face models on the CPU: the same update as
    the per-tensor loop (up to float rounding; one step, since Adam's normalisation amplifies
    rounding of the next gradients' entries near 0), and a checkpoint saved by the per-tensor
    loop resumes with the fused kernel and the same moments. The native tiny models keep the
    per-tensor loop (their shipped results reproduce to the digit)."""
    assert agents.make("online_ipo", TINY, seed=1).optimizer.param_groups[0]["fused"] is None
    lora = agents.make("online_ipo", hf_env, seed=1, lora=LORA)
    assert lora.optimizer.param_groups[0]["fused"] is True  # the adapter's weights
    env = hf_env
    cfg = {"batch_size": 4, "eval_every": 0, "lr": 0.01}
    fused = agents.make("online_ipo", env, seed=1, **cfg)
    loop = agents.make("online_ipo", env, seed=1, **cfg)
    assert fused.optimizer.param_groups[0]["fused"] is True
    loop.optimizer.param_groups[0]["fused"] = None  # the per-tensor loop
    fused.learn(num_iterations=1)
    loop.learn(num_iterations=1)
    params = zip(fused.model.parameters(), loop.model.parameters(), strict=True)
    moved = 0.0
    for (a, b), r in zip(params, fused.reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        moved = max(moved, float((a - r).detach().abs().max()))
    assert moved > 5e-3  # Adam's first step: about lr for every weight with a gradient
    back = agents.load(loop.save(tmp_path / "loop.npz"), game=env)
    assert back.optimizer.param_groups[0]["fused"] is True
    for p, q in zip(
        loop.optimizer.param_groups[0]["params"],
        back.optimizer.param_groups[0]["params"],
        strict=True,
    ):
        a, b = loop.optimizer.state[p], back.optimizer.state[q]
        assert float(a["step"]) == float(b["step"]) == 1.0
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
