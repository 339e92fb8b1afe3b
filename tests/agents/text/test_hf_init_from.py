"""Starting from a saved Hugging Face folder (``init_from``), and the bad folders of issue 22,
item 9: an adapter whose base model is not the env's reference is a one-line error."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

import agents  # noqa: E402
from agents.config import ConfigError  # noqa: E402
from nlhf_envs.text.engine import token_log_probs  # noqa: E402
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


def test_adapter_of_another_base_model_is_one_line(made):
    root, env = made
    with pytest.raises(ConfigError) as err:
        agents.make("nash_mp", env("other"), init_from=str(root / "lora_hf"), lora=LORA, **CFG)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("init_from: the adapter's base model ")
    assert msg.endswith("is not the env's reference model (its weights differ)")


@pytest.mark.parametrize(
    ("folder", "extra", "message"),
    [
        ("lora_hf", {}, "holds a LoRA adapter; give the lora block it was trained with"),
        ("full_hf", {"lora": LORA}, "holds a full model, but with a lora block pi_ref is"),
        ("lora_hf", {"lora": {**LORA, "rank": 3}}, "does not fit the lora block"),
        ("nowhere", {}, "is not a saved model or adapter folder"),
    ],
)
def test_bad_init_folders(made, folder, extra, message):
    root, env = made
    with pytest.raises(ConfigError, match=message):
        agents.make("nash_mp", env("ref"), init_from=str(root / folder), **CFG, **extra)
