"""The issue-22 example and benchmark run end to end (slow: each takes tens of seconds)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_lora_example_trains_saves_and_ranks(tmp_path, capsys):
    module = runpy.run_path(str(ROOT / "examples" / "hf_nash_lora.py"), run_name="hf_nash_lora")
    out = tmp_path / "demo"
    args = ["--out", str(out), "--queries", "64", "--batch-size", "8", "--n-duels", "10"]
    assert module["main"](args) == 0
    adapter = next((out / "logs" / "nash_mp").iterdir()) / "final_hf"
    assert (adapter / "adapter_config.json").is_file()
    data = json.loads((out / "tournament" / "tournament.json").read_text())
    assert sorted(data["names"]) == ["nash_mp_lora", "online_ipo", "pi_ref"]
    assert "tournament on nlhf/HFTokenDuel-v0" in capsys.readouterr().out


@pytest.mark.slow
def test_hf_train_benchmark_prints_its_rows(capsys):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "hf_train.py"), run_name="hf_train")
    args = ["--batch", "4", "--iterations", "1", "--rounds", "1", "--gpt2-small", "--quick"]
    assert bench["main"](args) == 0
    out = capsys.readouterr().out
    for name in ("nash_mp", "online_ipo", "nash_md"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        assert all(float(c) > 0 for c in row.strip("| ").split(" | ")[1:])
    for label in ("full fp32", "full bf16", "LoRA r16 fp32", "LoRA r16 bf16"):
        assert f"| {label} |" in out
