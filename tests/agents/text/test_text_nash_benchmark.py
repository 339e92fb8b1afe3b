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


def test_bootstrap_interval_covers_the_mean(bench):
    cells = np.random.default_rng(2).normal(1.0, 0.5, (5, 8))
    lo, hi = bench.bootstrap(cells, np.random.default_rng(3))
    assert lo < cells.mean() < hi and hi - lo < 1.0
