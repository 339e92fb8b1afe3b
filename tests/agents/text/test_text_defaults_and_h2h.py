"""Issue 23: the token agents' library defaults improve on pi_ref (slow guard), and the two
benchmarks of the protocol (``text_defaults.py``, ``text_h2h.py``) run end to end at tiny budgets."""

from __future__ import annotations

import json
import runpy
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str) -> dict:
    return runpy.run_path(str(ROOT / "benchmarks" / name), run_name=name)


def test_text_defaults_runs_scores_both_splits_and_refuses_stale_tables(tmp_path):
    bench = _load("text_defaults.py")
    assert bench["enumerable_env_ids"]() == [
        "nlhf/TinyTokenDuel-v0",
        "nlhf/TinyTokenDuel-Cyclic-v0",
        "nlhf/TinyTokenDuel-v1",
        "nlhf/TinyTokenDuel-Cyclic-v1",
    ]
    assert bench["token_agents"]() == ["mnpo", "nash_md", "nash_mp", "online_ipo"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench["main"](["--results", str(tmp_path), "run", "--envs", "nlhf/TinyTokenDuel-v0",
                       "--agents", "online_ipo", "--seeds", "1", "--budget", "128"])  # fmt: skip
        runs = json.loads((tmp_path / "text_defaults.json").read_text())["runs"]
        assert len(runs) == 1 and runs[0]["queries"] == 128
        for split, prompts in (("train", 24), ("heldout", 8)):
            cell = runs[0][split]
            assert cell["prompts"] == prompts
            assert 0 < cell["ref_exploitability"] < 0.1 and cell["exploitability"] > 0
        bench["main"](["--results", str(tmp_path), "report", "--budget", "128"])
        table = (tmp_path / "text_defaults.md").read_text()
        assert "| `nlhf/TinyTokenDuel-v0` | `online_ipo` | 1 |" in table
        # a run with settings other than the defaults cannot make a defaults table
        bench["main"](["--results", str(tmp_path), "run", "--envs", "nlhf/TinyTokenDuel-v0",
                       "--agents", "online_ipo", "--seeds", "1", "--budget", "128",
                       "--params", '{"lr": 0.01}'])  # fmt: skip
        with pytest.raises(SystemExit, match="not made with today's library defaults"):
            bench["main"](["--results", str(tmp_path), "report", "--budget", "128"])


def test_text_h2h_tunes_runs_and_reports_paired_differences(tmp_path):
    pytest.importorskip("optuna")
    bench = _load("text_h2h.py")
    base = ["--results", str(tmp_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("online_ipo", "nash_mp_C"):
            bench["main"]([*base, "tune", "--world", "plain", "--contestants", name,
                           "--trials", "1", "--budget", "512", "--evaluations", "1"])  # fmt: skip
        tuned = json.loads((tmp_path / "text_h2h_tuned.json").read_text())["plain"]
        assert tuned["nash_mp_C"]["best"]["variant"] == "ema"
        assert tuned["online_ipo"]["trials"] == tuned["nash_mp_C"]["trials"] == 1
        bench["main"]([*base, "run", "--world", "plain", "--contestants", "online_ipo,nash_mp_C",
                       "--seeds", "2", "--budget", "512", "--points", "256"])  # fmt: skip
    data = json.loads((tmp_path / "text_h2h_runs.json").read_text())["plain"]
    assert len(data["ref"]["train"]) == 160 and len(data["ref"]["heldout"]) == 64
    assert sorted((r["contestant"], r["seed"]) for r in data["runs"]) == [
        ("nash_mp_C", 1), ("nash_mp_C", 2), ("online_ipo", 1), ("online_ipo", 2)
    ]  # fmt: skip
    assert [row["queries"] for row in data["runs"][0]["curve"]] == [256, 512]
    with pytest.raises(SystemExit, match="tuned at 512 queries, not 1,024"):
        bench["main"]([*base, "run", "--world", "plain", "--contestants", "online_ipo",
                       "--seeds", "1", "--budget", "1024"])  # fmt: skip
    bench["main"]([*base, "report"])
    text = (tmp_path / "text_h2h.md").read_text()
    assert "| nash_mp_C |" in text and "unseen, minus Online IPO (paired)" in text


@pytest.mark.slow
def test_library_defaults_improve_on_pi_ref_on_every_enumerable_world():
    """Item 3's guard (seed 0; the benchmark runs 3 seeds): ``agents.make`` with nothing else and
    50,000 queries ends below pi_ref's exploitability on the trained and on the unseen prompts, for
    every token agent on every registered enumerable token env."""
    import torch

    bench = _load("text_defaults.py")
    torch.set_num_threads(1)
    worse = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for env_id in bench["enumerable_env_ids"]():
            for agent in bench["token_agents"]():
                rec = bench["run_one"](agent, env_id, 0, 50_000)
                for split in ("train", "heldout"):
                    cell = rec[split]
                    if not cell["exploitability"] < cell["ref_exploitability"]:
                        worse.append((env_id, agent, split, cell["exploitability"]))
    assert worse == []
