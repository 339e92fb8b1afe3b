"""The settings of ``examples/hf_nash_lora.py`` show what LoRA Nash-MP does (slow: two runs of
4,096 queries): on the example's reference, whose weights have standard deviation 0.3, it raises
the judge's win rate against ``pi_ref``; on the same model at GPT-2's initial scale (0.02) the
adapter moves almost nothing, the reason the example does not use that scale."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402

import agents  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def _judge_win_rate(example, reference) -> float:
    from hf_token_duel import build_tokenizer

    from nlhf_envs.text.hf_env import HFTokenDuelEnv
    from nlhf_envs.text.hf_judges import RewardModelJudge

    tok = build_tokenizer()
    env = HFTokenDuelEnv(
        reference=reference,
        tokenizer=tok,
        judge=RewardModelJudge(example["build_judge"](), tok),
        prompts=[f"w{10 + i} w{40 + i}" for i in range(32)],
        heldout_fraction=0.25,
        max_prompt_tokens=4,
        max_new_tokens=4,
        beta=0.05,
    )
    agent = agents.make(
        "nash_mp",
        env,
        seed=0,
        batch_size=16,
        mode="probability",
        inner_steps=4,
        lr=3.0e-3,
        lora={"rank": 8, "alpha": 16},
        eval_every=0,
        nash_eval="off",
    )  # the settings of examples/hf_nash_lora.py
    agent.learn(num_queries=4096)
    return agent.evaluate(num_prompts=512)["eval/win_rate_ref_judge"]


@pytest.mark.slow
def test_lora_nash_mp_beats_pi_ref_on_the_example_reference_only(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    example = runpy.run_path(str(ROOT / "examples" / "hf_nash_lora.py"), run_name="example")
    reference = example["build_reference"](0)
    assert reference.config.initializer_range == 0.3
    assert _judge_win_rate(example, reference) > 0.56
    config = reference.config.to_dict() | {"initializer_range": 0.02}
    torch.manual_seed(0)
    gpt2_scale = type(reference)(type(reference.config)(**config)).eval()
    assert _judge_win_rate(example, gpt2_scale) < 0.53
