"""LoRA on the Hugging Face path (issue 22, item 2): ``pi_ref`` is the adapter model with its
adapter disabled (exactly the base model), Nash-MD's geometric mixture uses it, Nash-MP's frozen
``pi_k`` is a copy of the adapter over the shared base, and bad blocks get one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("peft")

import agents  # noqa: E402
from agents.config import ConfigError  # noqa: E402
from agents.text.backend import AdapterDisabled, _merged_weight, merged_lora  # noqa: E402
from agents.text.common import frozen_copy  # noqa: E402
from nlhf_envs.text.engine import GeometricMixture, generate, token_log_probs  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

LORA = {"rank": 4, "alpha": 8.0, "target_modules": ["c_attn", "c_fc"]}
CONFIG = {"batch_size": 8, "eval_every": 0, "lr": 2e-2, "lora": LORA}


@pytest.fixture(scope="module")
def hf_env():
    return HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")


def _base(env):
    """The env's reference model as a policy (the base the adapter sits on)."""
    return HFPolicy(
        env.reference_model,
        num_tokens=env.vocab_size,
        suppress_tokens=env.reference.suppress_mask.nonzero().flatten().tolist(),
    )


def _batch(agent, n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    _, ids, mask = agent.engine.sample_prompts(n, gen)
    y = agent.engine.generate(agent.model, ids, mask, gen)
    return ids, mask, y


def test_lora_trains_only_the_adapter_and_starts_at_pi_ref(hf_env):
    agent = agents.make("online_ipo", hf_env, seed=0, **CONFIG)
    lm = agent.model.lm
    assert type(lm).__name__ == "PeftModelForCausalLM"
    trained = {id(p) for g in agent.optimizer.param_groups for p in g["params"]}
    names = [n for n, p in lm.named_parameters() if id(p) in trained]
    assert names and all("lora_" in n for n in names)
    assert all(not p.requires_grad for n, p in lm.named_parameters() if "lora_" not in n)
    ids, mask, y = _batch(agent)
    with torch.no_grad():
        lp = token_log_probs(agent.model, ids, mask, y.tokens, y.mask)
        lb = token_log_probs(_base(hf_env), ids, mask, y.tokens, y.mask)
    assert (lp - lb).abs().max() == 0.0  # B = 0: the fresh adapter is pi_ref


def test_pi_ref_is_the_base_model_exactly_after_training(hf_env):
    agent = agents.make("nash_md", hf_env, seed=0, **CONFIG)
    agent.learn(num_iterations=4)
    assert isinstance(agent.reference, AdapterDisabled)
    ids, mask, y = _batch(agent, seed=1)
    with torch.no_grad():
        l_ref = token_log_probs(agent.reference, ids, mask, y.tokens, y.mask)
        l_base = token_log_probs(_base(hf_env), ids, mask, y.tokens, y.mask)
        l_pi = token_log_probs(agent.model, ids, mask, y.tokens, y.mask)
        # the trap: get_base_model() keeps the LoRA layers active
        trap = HFPolicy(agent.model.lm.get_base_model(), num_tokens=hf_env.vocab_size)
        l_trap = token_log_probs(trap, ids, mask, y.tokens, y.mask)
    assert (l_ref - l_base).abs().max() == 0.0
    assert (l_pi - l_base).abs().max() > 1e-3  # the adapter has moved pi_theta
    assert (l_trap - l_base).abs().max() > 1e-3
    # the adapter is enabled again after each reference call
    with torch.no_grad():
        assert torch.equal(token_log_probs(agent.model, ids, mask, y.tokens, y.mask), l_pi)


def test_nash_md_mixture_uses_the_adapter_disabled_reference(hf_env):
    agent = agents.make("nash_md", hf_env, seed=0, **CONFIG)
    agent.learn(num_iterations=4)
    ids, mask, _ = _batch(agent, seed=2)
    base = _base(hf_env)
    with torch.no_grad():
        mix = GeometricMixture(agent.model, agent.reference, 0.5)
        logits, _ = mix(ids, attention_mask=mask)
        lp, _ = agent.model(ids, attention_mask=mask)
        lb, _ = base(ids, attention_mask=mask)
        want = 0.5 * F.log_softmax(lp.float(), -1) + 0.5 * F.log_softmax(lb.float(), -1)
        assert (logits - want)[mask].abs().max() <= 1e-6
    # c = 1: the KV-cached mixture samples the base model's answers with its log-probs
    gen = torch.Generator().manual_seed(4)
    y2 = agent.engine.generate(GeometricMixture(agent.model, agent.reference, 1.0), ids, mask, gen)
    with torch.no_grad():
        lb_y2 = token_log_probs(base, ids, mask, y2.tokens, y2.mask)
    assert (y2.log_probs - lb_y2).abs().max() <= 1e-5


def test_nash_mp_frozen_pi_k_copies_the_adapter_and_shares_the_base(hf_env):
    agent = agents.make("nash_mp", hf_env, seed=0, inner_steps=2, **CONFIG)
    agent.learn(num_iterations=1)
    pi_k = frozen_copy(agent.model)
    base_p = dict(agent.model.lm.named_parameters())
    twin_p = dict(pi_k.lm.named_parameters())
    for name, p in base_p.items():
        if "lora_" in name:
            assert twin_p[name] is not p and torch.equal(twin_p[name], p)
            assert not twin_p[name].requires_grad
        else:
            assert twin_p[name] is p  # the frozen base is shared, not copied
    ids, mask, y = _batch(agent, seed=3)
    with torch.no_grad():
        before = token_log_probs(pi_k, ids, mask, y.tokens, y.mask)
        assert torch.equal(before, token_log_probs(agent.model, ids, mask, y.tokens, y.mask))
    agent.learn(num_iterations=2)  # two more iterations move pi_theta, not the snapshot
    assert all(p.requires_grad for n, p in agent.model.lm.named_parameters() if "lora_" in n)
    with torch.no_grad():
        after = token_log_probs(pi_k, ids, mask, y.tokens, y.mask)
        moved = token_log_probs(agent.model, ids, mask, y.tokens, y.mask)
    assert torch.equal(before, after)
    assert (moved - before).abs().max() > 1e-4


def test_absent_target_module_is_one_line(hf_env):
    with pytest.raises(ConfigError) as err:
        agents.make("nash_mp", hf_env, lora={"target_modules": ["q_proj"]})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("lora.target_modules: 'q_proj' match no module of GPT2LMHeadModel")
    assert "c_attn" in msg


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"rank": 0}, "lora.rank: must be an integer >= 1; got 0"),
        ({"dropout": 1.0}, "lora.dropout: must lie in [0, 1); got 1.0"),
        ({"size": 3}, "lora: unknown config key(s) 'size' for LoraSettings"),
        ("c_attn", "lora: expected a mapping of LoraSettings fields; got 'c_attn'"),
    ],
)
def test_bad_lora_blocks(hf_env, block, message):
    with pytest.raises(ConfigError) as err:
        agents.make("online_ipo", hf_env, lora=block)
    assert str(err.value).startswith(message)


def test_lora_on_the_native_model_is_refused():
    with pytest.raises(ConfigError, match="lora: LoRA adapters need a Hugging Face causal LM"):
        agents.make("online_ipo", "nlhf/TinyTokenDuel-v0", lora={"rank": 2})


def test_export_merged_writes_a_plain_causal_lm_and_keeps_the_adapter(hf_env, tmp_path):
    import transformers

    from agents.text.backend import export_merged

    agent = agents.make("online_ipo", hf_env, seed=0, **CONFIG)
    agent.learn(num_iterations=3)
    ids = torch.tensor([[1, 5, 6, 7, 3]])
    with torch.no_grad():
        before = agent.model.lm(input_ids=ids).logits
    folder = export_merged(agent, tmp_path / "merged")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not (folder / "adapter_config.json").exists()
    merged = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - before).abs().max() <= 1e-5
        assert torch.equal(agent.model.lm(input_ids=ids).logits, before)  # adapter kept
        base = hf_env.reference_model(input_ids=ids).logits
    assert (before - base).abs().max() > 1e-3


def _adapter(agent):
    return {k: v for k, v in agent.model.lm.state_dict().items() if "lora_" in k}


def test_a_peft_lora_config_and_trl_names_build_the_same_adapter(hf_env):
    import peft
    import yaml

    from agents.config import config_to_dict

    ours = agents.make("online_ipo", hf_env, seed=0, **CONFIG)
    base = {k: v for k, v in CONFIG.items() if k != "lora"}
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_fc", "c_attn"], task_type="CAUSAL_LM"
    )
    block = yaml.safe_load(
        "lora: {r: 4, lora_alpha: 8.0, lora_dropout: 0.0, target_modules: [c_attn, c_fc]}"
    )
    for lora in (config, block["lora"]):
        agent = agents.make("online_ipo", hf_env, seed=0, lora=lora, **base)
        assert agent.config.lora == ours.config.lora
        assert config_to_dict(agent.config)["lora"] == {
            "rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["c_attn", "c_fc"],
            "merge_for_sampling": True,
        }  # fmt: skip
        mine, theirs = _adapter(ours), _adapter(agent)
        assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            lambda peft: peft.LoraConfig(
                r=4, target_modules=["c_attn"], modules_to_save=["lm_head"]
            ),
            "lora: the peft.LoraConfig field modules_to_save=['lm_head'] is not supported",
        ),
        (
            lambda peft: peft.LoraConfig(r=4, target_modules=["c_attn"], use_dora=True),
            "lora: the peft.LoraConfig field use_dora=True is not supported",
        ),
        (
            lambda peft: peft.LoraConfig(r=4, target_modules=".*attn"),
            "lora: the peft.LoraConfig target_modules '.*attn' is a pattern",
        ),
        (lambda peft: {"r": 4, "rank": 4}, "lora: 'r' and 'rank' name the same setting"),
        (lambda peft: {"lora_alpha": 0.0}, "lora.alpha: must be > 0; got 0.0"),
    ],
)
def test_unsupported_lora_configs_are_one_line(hf_env, block, message):
    import peft

    with pytest.raises(ConfigError) as err:
        agents.make("online_ipo", hf_env, lora=block(peft))
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_the_reference_switches_the_adapter_layers_as_disable_adapter_does(hf_env):
    agent = agents.make("online_ipo", hf_env, seed=0, **CONFIG)
    agent.learn(num_iterations=2)
    ref = agent.reference
    layers = ref._adapter_layers()
    n_layer = hf_env.reference_model.config.n_layer
    assert len(layers) == 2 * n_layer  # c_attn and c_fc of every block
    ids, mask, y = _batch(agent, seed=5)
    lm = agent.model.lm
    with torch.no_grad():
        fast = token_log_probs(ref, ids, mask, y.tokens, y.mask)
        with lm.disable_adapter():  # peft's own context
            slow = token_log_probs(agent.model, ids, mask, y.tokens, y.mask)
        on = token_log_probs(agent.model, ids, mask, y.tokens, y.mask)
    assert torch.equal(fast, slow)
    assert (on - fast).abs().max() > 1e-3  # the adapter is on again after the call
    assert not any(layer.disable_adapters for layer in layers)
    lora = [p for n, p in lm.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    # adapters already disabled by the caller: peft's context, which leaves them disabled
    with torch.no_grad(), lm.disable_adapter():
        inside = token_log_probs(ref, ids, mask, y.tokens, y.mask)
        assert all(layer.disable_adapters for layer in layers)
    assert torch.equal(inside, fast)


def test_the_reference_finds_the_adapter_layers_again_after_an_adapter_is_added(hf_env):
    import peft

    agent = agents.make("online_ipo", hf_env, seed=0, **CONFIG)
    ref, lm = agent.reference, agent.model.lm
    n_layer = hf_env.reference_model.config.n_layer
    assert len(ref._adapter_layers()) == 2 * n_layer
    # a second adapter on other modules: its layers are switched too (the same base model)
    lm.add_adapter("other", peft.LoraConfig(r=2, target_modules=["c_proj"], fan_in_fan_out=True))
    assert len(ref._adapter_layers()) == 2 * n_layer + 2 * n_layer  # c_proj of attn and mlp
    ids, mask, y = _batch(agent, seed=6)
    with torch.no_grad():
        l_ref = token_log_probs(ref, ids, mask, y.tokens, y.mask)
        l_base = token_log_probs(_base(hf_env), ids, mask, y.tokens, y.mask)
    assert (l_ref - l_base).abs().max() == 0.0


def test_sampling_merges_the_adapter_and_draws_the_same_answers(hf_env):
    agent = agents.make("nash_md", hf_env, seed=0, **CONFIG)
    agent.learn(num_iterations=3)  # the adapter has moved
    model, eng = agent.model, agent.engine
    layers = agent.reference._adapter_layers()
    ids, mask, _ = _batch(agent, seed=7)
    model.eval()  # as the engine samples (a layer in training mode takes peft's path: dropout)
    with torch.no_grad():
        plain, _ = model(ids, attention_mask=mask)
        base, _ = agent.reference(ids, attention_mask=mask)
        with merged_lora([model]):
            assert all("forward" in vars(layer) for layer in layers)  # c_attn and c_fc (Conv1D)
            merged, _ = model(ids, attention_mask=mask)
            base_in, _ = agent.reference(ids, attention_mask=mask)  # adapters off: peft's path
        with torch.enable_grad(), merged_lora([model]):
            graded, _ = model(ids, attention_mask=mask)  # gradients on: peft's path
    model.train()
    assert not any("forward" in vars(layer) for layer in layers)
    assert (merged - plain)[mask].abs().max() <= 1e-4 and (merged - plain).abs().max() > 0
    assert torch.equal(base_in, base) and torch.equal(graded, plain)
    # the merged weight (one addmm) is peft's W + get_delta_weight, as F.linear takes it
    with torch.no_grad():
        for layer in layers:
            name, w = layer.active_adapters[0], layer.base_layer.weight
            base_w = w.t() if layer.fan_in_fan_out else w
            delta = layer.get_delta_weight(name)
            peft_w = base_w + (delta.t() if layer.fan_in_fan_out else delta)
            ours = _merged_weight(layer, name)
            assert (peft_w - base_w).abs().max() > 1e-4  # the adapter has moved
            assert ours.shape == base_w.shape and (ours - peft_w).abs().max() <= 1e-6
    # the engine samples with the merge: the same answers as peft's path, log-probs to 1e-5
    for policy in (model, GeometricMixture(model, agent.reference, 0.5)):
        gen_a, gen_b = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
        a = eng.generate(policy, ids, mask, gen_a)
        model.eval()
        with torch.no_grad():
            b = generate(
                policy, ids, mask, eng.max_new_tokens, generator=gen_b, eos_id=eng.eos_id,
                sampler=eng.sampler,
            )  # fmt: skip
        model.train()
        assert torch.equal(a.tokens, b.tokens)
        assert (a.log_probs - b.log_probs).abs().max() <= 1e-5


def test_merge_for_sampling_off_samples_through_peft_with_no_merged_copy(hf_env, monkeypatch):
    import agents.text.backend as backend

    made = []
    real = backend._merged_weight
    monkeypatch.setattr(backend, "_merged_weight", lambda *a: made.append(1) or real(*a))
    runs = {}
    for merge in (True, False):
        lora = {**LORA, "merge_for_sampling": merge}
        agent = agents.make("online_ipo", hf_env, seed=0, **{**CONFIG, "lora": lora})
        assert agent.model.merge_for_sampling is merge
        agent.learn(num_iterations=2)
        made_before = len(made)
        ids, mask, y = _batch(agent, seed=9)
        runs[merge] = (y, len(made) - made_before)
        n_layers = len(agent.reference._adapter_layers())
    # merged: one weight per adapted layer and sampling call; off: none, and the same answers
    # (peft's three products instead of one: log-probs to 1e-5)
    assert runs[True][1] == n_layers and runs[False][1] == 0
    assert torch.equal(runs[True][0].tokens, runs[False][0].tokens)
    assert (runs[True][0].log_probs - runs[False][0].log_probs).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="merge_for_sampling"):
        agents.make(
            "online_ipo",
            hf_env,
            seed=0,
            **{**CONFIG, "lora": {**LORA, "merge_for_sampling": "yes"}},
        )


def test_policy_modes_are_those_of_eval_then_train_on_each_adapter_layer(hf_env):
    agent = agents.make(
        "online_ipo", hf_env, seed=0, **{**CONFIG, "lora": {**LORA, "dropout": 0.1}}
    )
    policy = agent.model

    def modes():
        return [(name, m.training) for name, m in policy.lm.named_modules()]

    def expected(mode):  # the specification, walk by walk
        policy.lm.eval()
        if mode:
            for m in policy.lm.modules():
                if hasattr(m, "lora_dropout") and hasattr(m, "base_layer"):
                    m.train()
                    m.base_layer.eval()
        return modes()

    for mode in (True, False, True):
        policy.train(mode)
        got = modes()
        assert policy.training is mode and got == expected(mode)
        on = {name for name, training in got if training}
        # in training: the adapters' own parts (dropout p = 0.1 acts), never a base layer
        assert bool(on) is mode and not any("base_layer" in name for name in on)
        assert all(".lora_" in name or name.endswith(("c_attn", "c_fc")) for name in on)
