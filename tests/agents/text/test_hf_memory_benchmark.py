"""``benchmarks/hf_memory.py`` runs (small settings) and counts the weight copies exactly."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_memory_benchmark_writes_its_table(tmp_path):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "hf_memory.py"), run_name="hf_memory")
    out = tmp_path / "hf_memory.md"
    assert bench["main"](["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("Device: CPU")
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines()[4:]}
    assert len(rows) == 9
    # weights copies: full fine-tuning holds one trainable copy, LoRA only its adapter
    assert all(float(r[5]) == 1.0 for name, r in rows.items() if name.startswith("full"))
    assert all(0.0 < float(r[5]) < 0.5 for name, r in rows.items() if name.startswith("LoRA"))
