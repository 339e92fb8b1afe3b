"""Every sub-command of ``benchmarks/text_nash.py`` runs at a tiny budget (issue 23, item 8), into
a temporary results folder (``--results``), in the order their inputs need: ``tune`` writes what
``h2h``, ``floor`` and ``report`` read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "text_nash.py"
SMALL = '{"batch_size": 16}'


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("text_nash_smoke", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_subcommand_runs_at_a_tiny_budget(bench, tmp_path):
    res = ["--results", str(tmp_path)]
    # Nash-MP (A) at batch 16: 2 x 8 x 16 = 256 queries per iteration
    bench.main(["tune", "--budget", "256", "--seeds", "1", "--lrs", "1e-3", "--etas", "2",
                "--mixtures", "harmonic", "--extra", SMALL, *res])  # fmt: skip
    tuned = json.loads((tmp_path / "text_nash_tune_plain.json").read_text())
    assert set(tuned["best"]) == {"nash_mp", "online_ipo", "nash_md"}
    bench.main(["h2h", "--budget", "256", "--seeds", "1", "--points", "256", *res])
    h2h = json.loads((tmp_path / "text_nash_plain.json").read_text())
    assert h2h["agents"]["nash_mp"]["curve"][-1]["queries"] == 256
    bench.main(["floor", "--seeds", "1", "--points", "0,256", *res])
    floor = json.loads((tmp_path / "text_nash_floor_plain.json").read_text())
    assert [r["queries"] for r in floor["rows"]] == [0, 256]
    assert all(-1.0 <= r["correlation"] <= 1.0 for r in floor["rows"])
    bench.main(["prox", "--seeds", "1", "--config", SMALL, *res])
    assert (tmp_path / "text_nash_prox.md").read_text().count("\n| 0 |") == 2
    bench.main(["designs", "--budget", "256", "--seeds", "1", "--points", "256", "--config",
                SMALL, *res])  # fmt: skip
    designs = json.loads((tmp_path / "text_nash_designs_plain.json").read_text())
    assert [r["label"] for r in designs["rows"]] == ["A_target", "B_extragradient", "C_ema"]
    assert all(r["summary"]["curve"][-1]["queries"] == 256 for r in designs["rows"])
    bench.main(["full", "--agents", "online_ipo", "--seeds", "1", "--points", "0,16", "--tuned",
                "", "--configs", '{"online_ipo": {"batch_size": 16}}', "--prompts", "2",
                "--samples", "4", *res])  # fmt: skip
    full = json.loads((tmp_path / "text_nash_full_TokenDuel-v0.json").read_text())
    assert [r["queries"] for r in full["rows"]] == [0, 16]
    bench.main(["report", *res])
    report = (tmp_path / "text_nash.md").read_text()
    assert "## `plain`" in report and "Full-size world `nlhf/TokenDuel-v0`" in report
    assert (tmp_path / "text_nash_plain.png").stat().st_size > 1000
