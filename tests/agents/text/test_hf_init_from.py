"""Starting from a model that is not ``pi_ref`` (``init_from``; TRL's ``model`` next to its
``ref_model``): a previous run's ``final_hf/`` (full model or adapter) or any causal-LM folder (an
SFT model), fine-tuned fully or under a LoRA adapter, with ``pi_ref`` the env's reference; and the
bad folders (issue 22, item 9), each a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

import agents  # noqa: E402
from agents.config import ConfigError  # noqa: E402
from nlhf_envs.text.engine import token_log_probs  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

V = 24
LORA = {"rank": 2, "alpha": 4.0, "target_modules": ["c_attn"]}
CFG = {"batch_size": 4, "eval_every": 0, "lr": 0.02, "inner_steps": 1}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two reference folders (seeds 0 and 1) and, trained on the first, a LoRA and a full run."""
    from tests.nlhf_envs.text.hf_parts import length_judge, tiny_gpt2, word_tokenizer

    root = tmp_path_factory.mktemp("init_from")
    tok = word_tokenizer(V)
    for name, seed in (("ref", 0), ("other", 1)):
        tiny_gpt2(V, seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    prompts = [f"w{10 + i} w{11 + i}" for i in range(6)]

    def env(ref):
        return HFTokenDuelEnv(
            reference=root / ref, judge=length_judge, prompts=prompts, max_new_tokens=3
        )

    for name, extra in (("lora", {"lora": LORA}), ("full", {})):
        agent = agents.make("nash_mp", env("ref"), seed=0, **CFG, **extra)
        agent.learn(num_iterations=2)
        agent.save(root / f"{name}.npz")
    return root, env


def _lp(policy, ids):
    answer = torch.tensor([[5, 6, 1]])
    with torch.no_grad():
        return token_log_probs(
            policy,
            ids,
            torch.ones_like(ids, dtype=torch.bool),
            answer,
            torch.ones_like(answer, dtype=torch.bool),
        )


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_init_from_starts_at_the_saved_policy_with_the_env_reference(made, kind):
    root, env = made
    extra = {"lora": LORA} if kind == "lora" else {}
    e = env("ref")
    saved = agents.load(root / f"{kind}.npz", game=e)
    fresh = agents.make("nash_mp", e, seed=5, init_from=str(root / f"{kind}_hf"), **CFG, **extra)
    plain = agents.make("nash_mp", e, seed=5, **CFG, **extra)
    ids = torch.tensor([[10, 11]])
    assert torch.allclose(_lp(fresh.model, ids), _lp(saved.model, ids), atol=1e-6)
    assert (_lp(fresh.model, ids) - _lp(plain.model, ids)).abs().max() > 1e-4
    assert torch.equal(_lp(fresh.reference, ids), _lp(plain.reference, ids))  # pi_ref unchanged
    fresh.learn(num_iterations=1)


def _storages(module):
    return {p.untyped_storage().data_ptr() for p in module.parameters()}


def test_an_adapter_on_another_base_starts_there_and_keeps_the_env_reference(made):
    root, env = made
    e = env("other")
    saved = agents.load(root / "lora.npz", game=env("ref"))  # trained on "ref"
    fresh = agents.make("nash_mp", e, seed=5, init_from=str(root / "lora_hf"), lora=LORA, **CFG)
    plain = agents.make("nash_mp", e, seed=5, lora=LORA, **CFG)
    ids = torch.tensor([[10, 11]])
    # pi_theta: the adapter on its own base ("ref"); pi_ref: the env's reference ("other")
    assert torch.allclose(_lp(fresh.model, ids), _lp(saved.model, ids), atol=1e-6)
    assert torch.equal(_lp(fresh.reference, ids), _lp(plain.reference, ids))
    assert (_lp(fresh.reference, ids) - _lp(fresh.model, ids)).abs().max() > 1e-4
    assert _storages(fresh.reference.lm) == _storages(e.reference_model)  # stored once
    fresh.learn(num_iterations=1)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_a_separate_starting_model_with_the_env_reference(made, kind, tmp_path):
    """An SFT model that is not pi_ref (here the "other" random GPT-2): pi_theta starts at it,
    fully trainable or under a fresh adapter; pi_ref is the env's reference; each model's weights
    are stored once; the saved adapter names the starting model as its base."""
    root, env = made
    e = env("ref")
    extra = {"lora": LORA} if kind == "lora" else {}
    agent = agents.make("nash_mp", e, seed=5, init_from=str(root / "other"), **CFG, **extra)
    plain = agents.make("nash_mp", e, seed=5, **CFG, **extra)
    sft = env("other").reference  # the starting model, as a policy
    ids = torch.tensor([[10, 11]])
    assert torch.allclose(_lp(agent.model, ids), _lp(sft, ids), atol=1e-6)
    assert torch.equal(_lp(agent.reference, ids), _lp(plain.reference, ids))
    assert (_lp(agent.model, ids) - _lp(agent.reference, ids)).abs().max() > 1e-4
    assert _storages(agent.reference.lm) == _storages(e.reference_model)
    assert not _storages(agent.model.lm) & _storages(e.reference_model)
    agent.learn(num_iterations=2)
    assert (_lp(agent.model, ids) - _lp(sft, ids)).abs().max() > 1e-5  # it trained
    path = agent.save(tmp_path / "run.npz")
    if kind == "lora":
        import json

        config = json.loads((tmp_path / "run_hf" / "adapter_config.json").read_text())
        assert Path(config["base_model_name_or_path"]) == (root / "other").resolve()
        # the folder plays as a participant on the base it records (the starting model's weights)
        from agents.zoo.hf_participants import load_hf_participant

        played = load_hf_participant(tmp_path / "run_hf", "run")
        assert torch.allclose(_lp(HFPolicy(played), ids), _lp(agent.model, ids), atol=1e-6)
    back = agents.load(path, game=e)
    assert torch.equal(_lp(back.model, ids), _lp(agent.model, ids))
    assert torch.equal(_lp(back.reference, ids), _lp(agent.reference, ids))


def test_lora_on_a_previous_full_run_starts_at_that_model(made):
    root, env = made
    e = env("ref")
    full = agents.load(root / "full.npz", game=e)
    agent = agents.make("nash_mp", e, seed=5, init_from=str(root / "full_hf"), lora=LORA, **CFG)
    ids = torch.tensor([[10, 11]])
    assert torch.allclose(_lp(agent.model, ids), _lp(full.model, ids), atol=1e-6)
    assert torch.equal(_lp(agent.reference, ids), _lp(e.reference, ids))


@pytest.fixture(scope="module")
def odd_models(made):
    """A model with fewer tokens than the env's tokenizer, and one saved with another tokenizer."""
    from tests.nlhf_envs.text.hf_parts import tiny_gpt2, word_tokenizer

    root, _ = made
    tiny_gpt2(V - 4).save_pretrained(root / "small")
    tiny_gpt2(V + 2).save_pretrained(root / "retok")
    word_tokenizer(V + 2).save_pretrained(root / "retok")
    return root


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("small", "the model in .*small scores 20 tokens; the env's tokenizer has 24"),
        ("retok", "the tokenizer saved in .*retok is not the env's"),
    ],
)
def test_a_starting_model_that_cannot_play_the_env_tokens_is_one_line(
    made, odd_models, folder, message
):
    root, env = made
    with pytest.raises(ConfigError, match=message) as err:
        agents.make("nash_mp", env("ref"), init_from=str(odd_models / folder), **CFG)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("folder", "extra", "message"),
    [
        ("lora_hf", {}, "holds a LoRA adapter; give the lora block it was trained with"),
        ("lora_hf", {"lora": {**LORA, "rank": 3}}, "does not fit the lora block"),
        ("nowhere", {}, "is not a saved model or adapter folder"),
    ],
)
def test_bad_init_folders(made, folder, extra, message):
    root, env = made
    with pytest.raises(ConfigError, match=message):
        agents.make("nash_mp", env("ref"), init_from=str(root / folder), **CFG, **extra)
