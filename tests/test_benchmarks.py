"""The benchmark scripts run (on CPU, small settings) and write the tables they promise."""

from __future__ import annotations

import runpy
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> dict:
    return runpy.run_path(str(ROOT / "benchmarks" / name), run_name=name)


def test_gpt2_carries_the_reference_policy_exactly():
    pytest.importorskip("transformers")
    import torch

    from nlhf_envs.text import DuelEngine, load_judge, load_reference_policy
    from nlhf_envs.text.hf import HFPolicy

    gpu = _load("gpu.py")
    ref = load_reference_policy()
    gpt = gpu["gpt2_from_tiny"](ref)
    engine = DuelEngine(load_judge())
    _, ids, mask = engine.sample_prompts(16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = ref(ids, attention_mask=mask)
        theirs, _ = HFPolicy(gpt)(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(theirs[real], ours[real], rtol=1e-5, atol=1e-5)
    tokens = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])
    assert gpu["_answer_tokens"](tokens, 2) == 2 + 4


def test_env_throughput_writes_to_a_bare_file_name(tmp_path, monkeypatch):
    bench = _load("env_throughput.py")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert bench["main"](["--smoke", "--out", "bench_env.md"]) == 0
    text = (tmp_path / "bench_env.md").read_text()
    assert "| native AEC env() steps/s" in text and "regularized_nash" in text


@pytest.mark.slow
def test_gpu_table_runs_on_cpu(tmp_path):
    gpu = _load("gpu.py")
    out = tmp_path / "gpu.md"
    args = ["--device", "cpu", "--batch-sizes", "8", "--rounds", "1", "--mixture-batch", "8"]
    assert gpu["main"]([*args, "--train-queries", "512", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Device: CPU" in text
    for what in (
        "HF `generate` (anchor)",
        "inverse-CDF",
        "mixture",
        "nash_mp",
        "online_ipo",
        "nash_md",
        "`sampler: inverse_cdf`",
    ):
        assert what in text


@pytest.mark.slow
def test_training_against_a_baseline_revision_runs_both_codes():
    import torch

    gpu = _load("gpu.py")
    rows = gpu["training_rows"](torch.device("cpu"), 512, ("online_ipo",), "HEAD", rounds=1)
    assert [r[2] for r in rows][0] == "1.00x" and "code of `HEAD` (anchor)" in rows[0][0]
    assert len(rows) == 3 and "inverse_cdf" in rows[2][0]
    for row in rows[1:]:
        assert row[2].endswith("x") and float(row[2][:-1]) > 0
