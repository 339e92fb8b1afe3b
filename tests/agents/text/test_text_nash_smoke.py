"""Every sub-command of ``benchmarks/text_nash.py`` runs at a tiny budget (issue 23, item 8), into
a temporary results folder (``--results``), in the order their inputs need: ``tune`` writes what
``h2h``, ``floor`` and ``report`` read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
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


def test_mnpo_runs_through_tune_and_a_paired_h2h(bench, tmp_path):
    """Issue 25, item 4: the token MNPO is tuned over ``--histories`` and its head-to-head runs
    under ``--label`` in its own file, paired with the main file's runs, which stays unchanged."""
    res = ["--results", str(tmp_path)]
    bench.main(["tune", "--budget", "256", "--seeds", "1", "--lrs", "1e-3", "--etas", "2",
                "--agents", "nash_mp,online_ipo", "--extra", SMALL, *res])  # fmt: skip
    bench.main(["h2h", "--budget", "256", "--seeds", "1", "--points", "256", "--agents",
                "nash_mp,online_ipo", *res])  # fmt: skip
    main_file = (tmp_path / "text_nash_plain.json").read_bytes()
    # MNPO at batch 16: 8 x 16 = 128 queries per iteration
    bench.main(["tune", "--budget", "256", "--seeds", "1", "--lrs", "1e-3", "--agents", "mnpo",
                "--histories", "1,3", "--extra", SMALL, "--suffix", "_mnpo", *res])  # fmt: skip
    tuned = json.loads((tmp_path / "text_nash_tune_plain_mnpo.json").read_text())
    assert [r["config"] for r in tuned["results"]] == [
        {"lr": 1e-3, "history": h, "inner_steps": 8, "batch_size": 16} for h in (1, 3)
    ]
    assert tuned["commands"][0]["histories"] == "1,3"
    bench.main(["h2h", "--budget", "256", "--seeds", "1", "--points", "256", "--agents", "mnpo",
                "--tuned", "plain_mnpo", "--label", "mnpo", "--start-from", "plain", "--suffix",
                "_mnpo", *res])  # fmt: skip
    assert (tmp_path / "text_nash_plain.json").read_bytes() == main_file
    h2h = json.loads((tmp_path / "text_nash_plain_mnpo.json").read_text())
    assert h2h["raw"]["nash_mp"] == json.loads(main_file)["raw"]["nash_mp"]
    assert h2h["raw"]["mnpo"]["config"] == tuned["best"]["mnpo"]["config"]
    assert h2h["agents"]["mnpo"]["curve"][-1]["queries"] == 256
    # paired with Nash-MP (Nash-MP minus it) and with every other agent (it minus them)
    assert set(h2h["paired_expl_diff"]) == {
        "nash_mp - online_ipo", "nash_mp - mnpo", "mnpo - online_ipo"
    }  # fmt: skip
    pair = h2h["paired_expl_diff"]["mnpo - online_ipo"]
    assert [r["queries"] for r in pair["last"]] == [0, 256]
    cells = np.subtract(
        h2h["raw"]["mnpo"]["test_expl"][-1], h2h["raw"]["online_ipo"]["test_expl"][-1]
    )
    assert pair["last"][-1]["diff"] == pytest.approx(cells.mean(), abs=1e-12)
    bench.main(["report", *res])
    report = (tmp_path / "text_nash.md").read_text()
    assert "## `plain_mnpo`" in report and "mnpo: lrs [0.001], history 1,3, every setting" in report
    assert "| nash_mp - mnpo | 256 |" in report
    assert "| mnpo - online_ipo | 256 |" in report and "a row `a - b` is a minus b" in report
