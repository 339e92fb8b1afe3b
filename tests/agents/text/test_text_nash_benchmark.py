"""The statistics of ``benchmarks/text_nash.py`` (issue 11's head-to-head on Nash metrics)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "text_nash.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("text_nash_bench", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_result_tags_and_protocols(bench):
    assert bench.tag("plain") == "plain"
    assert bench.tag("cyclic", "heldout") == "heldout_cyclic"
    assert bench.tag("cyclic", "nash", 0.03) == "cyclic_beta0.03"
    # the Nash protocol trains on every prompt, the generalisation protocol on the train prompts
    assert bench.PROTOCOLS == {"nash": "all", "heldout": "train"}


def _raw(seeds, cells, avg):
    return {"seeds": seeds, "queries": [0, 4096], "test_expl": cells, "average_test_expl": avg}


def test_paired_differences_use_the_same_cells(bench):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.1, (5, 8))  # (seeds, prompts)
    mp = _raw([100, 101, 102, 103, 104], [base.tolist(), (base + 0.01).tolist()], base.tolist())
    other = _raw([100, 101, 102, 103, 104], [base.tolist(), base.tolist()], (base + 0.02).tolist())
    lone = _raw([100, 101], [base[:2].tolist()] * 2, base[:2].tolist())
    out = bench.paired({"nash_mp": mp, "other": other, "lone": lone}, np.random.default_rng(1))
    assert set(out) == {"nash_mp - other"}  # other seeds: not paired
    first, last = out["nash_mp - other"]["last"]
    assert first["diff"] == 0.0 and first["ci"] == (0.0, 0.0)
    # a constant difference has a zero-width interval however the cells vary
    assert last["diff"] == pytest.approx(0.01) and last["ci"] == pytest.approx((0.01, 0.01))
    avg = out["nash_mp - other"]["average"]
    assert avg["diff"] == pytest.approx(-0.02) and avg["ci"] == pytest.approx((-0.02, -0.02))


def test_evaluations_at_other_budgets_are_not_paired(bench):
    # an agent run to a smaller budget (or other points): only the budgets both reached pair up
    cells = np.random.default_rng(0).uniform(0.0, 0.1, (5, 8)).tolist()
    seeds = [100, 101, 102, 103, 104]
    mp = {"seeds": seeds, "queries": [0, 4096, 8192], "test_expl": [cells] * 3,
          "average_test_expl": cells}  # fmt: skip
    short = {"seeds": seeds, "queries": [0, 4121, 12331], "test_expl": [cells] * 3,
             "average_test_expl": cells}  # fmt: skip
    out = bench.paired({"nash_mp": mp, "short": short}, np.random.default_rng(1))
    pair = out["nash_mp - short"]
    assert [r["queries"] for r in pair["last"]] == [0, 4096]  # 4121 ~ 4096; 12331 != 8192
    assert pair["average"] is None  # the average iterates belong to other budgets
    assert bench.same_budget(4096, 4121) and not bench.same_budget(8192, 12331)


def test_bootstrap_interval_covers_the_mean(bench):
    cells = np.random.default_rng(2).normal(1.0, 0.5, (5, 8))
    lo, hi = bench.bootstrap(cells, np.random.default_rng(3))
    assert lo < cells.mean() < hi and hi - lo < 1.0


def test_full_runs_the_tuned_settings_and_reports_them(bench, tmp_path, monkeypatch):
    import json
    import shutil

    shutil.copy(bench.RESULTS / "text_nash_tune_plain.json", tmp_path)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.main(["full", "--env", "nlhf/TinyTokenDuel-v0", "--agents", "online_ipo", "--seeds", "1",
                "--points", "256,0", "--prompts", "3", "--samples", "4"])  # fmt: skip
    out = json.loads((tmp_path / "text_nash_full_TinyTokenDuel-v0.json").read_text())
    tuned = json.loads((tmp_path / "text_nash_tune_plain.json").read_text())["best"]
    assert out["tuned_from"] == "plain" and out["samples"] == 4 and out["prompts"] == 3
    assert [r["queries"] for r in out["rows"]] == [0, 256]  # points sorted; 0 is pi_ref
    for r in out["rows"]:
        assert r["config"] == tuned["online_ipo"]["config"]
        assert r["eval/exploitability_low"] <= r["eval/exploitability"]
        assert r["eval/exploitability"] <= r["eval/exploitability_high"]
    lines = "\n".join(bench._full_lines(out))
    assert "| online_ipo | `{'lr': 0.0003}` | 256 |" in lines and "n = 4" in lines


def test_a_labelled_variant_file_holds_the_main_runs_unchanged(bench, tmp_path, monkeypatch):
    import json
    import shutil

    shutil.copy(bench.RESULTS / "text_nash_tune_plain.json", tmp_path)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "ceiling", lambda *a, **k: [])  # the tabular run is not under test
    common = ["h2h", "--world", "plain", "--agents", "online_ipo", "--budget", "256", "--seeds", "1",
              "--points", "256"]  # fmt: skip
    bench.main(common)
    main = (tmp_path / "text_nash_plain.json").read_text()
    bench.main([*common, "--label", "again", "--start-from", "plain", "--suffix", "_v"])
    assert (tmp_path / "text_nash_plain.json").read_text() == main  # the main file is untouched
    raw = json.loads((tmp_path / "text_nash_plain_v.json").read_text())["raw"]
    assert set(raw) == {"online_ipo", "again"}
    # the same seed and setting under another label: the same run, cell for cell (seeded)
    assert raw["again"]["test_expl"] == raw["online_ipo"]["test_expl"]
    assert raw["again"]["config"] == {"lr": 0.0003}
    with pytest.raises(SystemExit, match="--label names the results of one agent"):
        bench.main([*common[:4], "online_ipo,nash_md", *common[5:], "--label", "x"])


def test_a_missing_result_file_is_named(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match=r"text_nash_tune_nowhere\.json does not exist"):
        bench.main(["full", "--env", "nlhf/TinyTokenDuel-v0", "--tuned", "nowhere"])
