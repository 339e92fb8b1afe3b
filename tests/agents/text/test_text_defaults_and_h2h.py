"""Issues 23 and 32: the token agents' library defaults improve on pi_ref (slow guard), and the two
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


def test_text_h2h_tunes_with_two_seeds_runs_the_budgets_and_reports_both_generalisations(
    tmp_path,
):
    """Issue 32: the class protocol end to end at tiny budgets. Tuning counts finished trials and
    trains two seeds per trial; a run scores the three report splits at every budget; an ablation
    runs at the settings of the contestant it ablates; the report has the unseen-classes and
    unseen-wording columns, the budgets table and the plot."""
    pytest.importorskip("optuna")
    bench = _load("text_h2h.py")
    base = ["--results", str(tmp_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench["main"]([*base, "tune", "--world", "plain", "--contestants", "online_ipo,nash_prox",
                       "--trials", "2", "--startup", "1", "--budget", "512",
                       "--evaluations", "1"])  # fmt: skip
        tuned = json.loads((tmp_path / "text_h2h_tuned.json").read_text())["plain"]
        for name in ("online_ipo", "nash_prox"):
            rec = tuned[name]
            assert rec["finished"] == 2 and rec["random_startup"] == 1
            assert rec["tune_seeds"] == [1000, 1001] and len(rec["objective_per_seed"]) == 2
            assert rec["objective"] == pytest.approx(sum(rec["objective_per_seed"]) / 2)
            assert sum(t["state"] == "COMPLETE" for t in rec["trials"]) == 2
        assert {"eta", "inner_steps", "lr"} <= set(tuned["nash_prox"]["search"])
        # the MNPO ablation runs at MNPO's settings: none tuned yet is a clear stop
        with pytest.raises(SystemExit, match="no tuned settings of mnpo for plain"):
            bench["main"]([*base, "run", "--world", "plain", "--contestants", "mnpo_h1",
                           "--seeds", "1", "--budget", "512"])  # fmt: skip
        with pytest.raises(SystemExit, match="tuned at 512 queries, not 1,024"):
            bench["main"]([*base, "run", "--world", "plain", "--contestants", "online_ipo",
                           "--seeds", "1", "--budget", "1024"])  # fmt: skip
        bench["main"]([*base, "run", "--world", "plain", "--contestants", "online_ipo,nash_prox",
                       "--seeds", "2", "--budget", "768", "--tuned-at", "512",
                       "--points", "256,512"])  # fmt: skip
    data = json.loads((tmp_path / "text_h2h_runs.json").read_text())["plain"]
    assert {k: len(v) for k, v in data["ref"].items()} == {"trained": 79, "wording": 35,
                                                             "classes": 96}  # fmt: skip
    assert sorted((r["contestant"], r["seed"]) for r in data["runs"]) == [
        ("nash_prox", 1), ("nash_prox", 2), ("online_ipo", 1), ("online_ipo", 2)
    ]  # fmt: skip
    assert [row["queries"] for row in data["runs"][0]["curve"]] == [256, 512, 768]
    bench["main"]([*base, "report"])
    text = (tmp_path / "text_h2h.md").read_text()
    assert "| Nash Prox (frozen anchor) |" in text and "classes, minus Online IPO |" in text
    assert "[start:plain_budgets]" in text and "- 768 queries: " in text
    assert (tmp_path / "text_h2h_plain.png").stat().st_size > 10_000


def _defaults_run(tmp_path, envs: dict[str, dict[str, int]]) -> list[dict]:
    """``text_defaults.py run`` of online_ipo at 128 queries on ``envs`` (env id -> prompts per
    report column), checked column by column; returns the runs."""
    bench = _load("text_defaults.py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench["main"](["--results", str(tmp_path), "run", "--envs", ",".join(envs),
                       "--agents", "online_ipo", "--seeds", "1", "--budget", "128"])  # fmt: skip
    runs = json.loads((tmp_path / "text_defaults.json").read_text())["runs"]
    assert len(runs) == len(envs) and {r["queries"] for r in runs} == {128}
    for r in runs:
        assert {c for c in ("trained", "wording", "classes") if c in r} == set(envs[r["env"]])
        for col, n in envs[r["env"]].items():
            cell = r[col]
            assert cell["prompts"] == n
            assert 0 < cell["ref_exploitability"] < 0.1 and cell["exploitability"] > 0
    bench["main"](["--results", str(tmp_path), "report", "--budget", "128"])
    return runs


def test_text_defaults_runs_scores_both_splits_and_refuses_stale_tables(tmp_path):
    bench = _load("text_defaults.py")
    assert bench["enumerable_env_ids"]() == [
        "nlhf/TinyTokenDuel-v0",
        "nlhf/TinyTokenDuel-Cyclic-v0",
        "nlhf/TinyTokenDuel-v1",
        "nlhf/TinyTokenDuel-Cyclic-v1",
    ]
    assert bench["token_agents"]() == ["mnpo", "nash_md", "nash_mp", "nash_prox", "online_ipo"]
    assert bench["protocol_of"]("nlhf/TinyTokenDuel-v1") == "classes"
    assert bench["protocol_of"]("nlhf/TinyTokenDuel-v0") == "fixed"
    _defaults_run(tmp_path, {"nlhf/TinyTokenDuel-v0": {"trained": 24, "wording": 8}})
    table = (tmp_path / "text_defaults.md").read_text()
    assert "| `nlhf/TinyTokenDuel-v0` | `online_ipo` | 1 |" in table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a run with settings other than the defaults cannot make a defaults table
        bench["main"](["--results", str(tmp_path), "run", "--envs", "nlhf/TinyTokenDuel-v0",
                       "--agents", "online_ipo", "--seeds", "1", "--budget", "128",
                       "--params", '{"lr": 0.01}'])  # fmt: skip
        with pytest.raises(SystemExit, match="not made with today's library defaults"):
            bench["main"](["--results", str(tmp_path), "report", "--budget", "128"])


@pytest.mark.slow
def test_text_defaults_reports_unseen_classes_on_the_256_prompt_worlds(tmp_path):
    """The 256-prompt world trains on the classes trained on and reports three columns (slow: its
    exact games on 242 prompts take a minute or two on one core)."""
    _defaults_run(tmp_path, {"nlhf/TinyTokenDuel-v1": {"trained": 79, "wording": 35,
                                                        "classes": 96}})  # fmt: skip
    table = (tmp_path / "text_defaults.md").read_text()
    row = next(x for x in table.splitlines() if "`nlhf/TinyTokenDuel-v1` | `online_ipo`" in x)
    assert row.count("(0.0") == 3  # pi_ref on trained prompts, unseen wording, unseen classes


def test_the_two_level_bootstrap_counts_seeds_and_prompts():
    """The crossed bootstrap's interval has the width of the mean's spread over both sources:
    cells a_s + b_p (seed effects of sd 1 over 10 seeds, prompt effects of sd 2 over 40 prompts)
    give a standard error near sqrt(1/10 + 4/40) = 0.45 (the bootstrap's own: 0.95 of it, its
    n - 1 correction), while resampling seeds alone sees 0.30 of it."""
    import numpy as np

    bench = _load("text_h2h.py")
    rng = np.random.default_rng(0)
    widths, seeds_only = [], []
    for rep in range(20):
        a = rng.standard_normal(10)
        b = 2 * rng.standard_normal(40)
        cells = a[:, None] + b[None, :]
        lo, hi = bench["two_level_bootstrap"](cells, seed=rep)
        widths.append((hi - lo) / (2 * 1.96))
        means = cells.mean(1)
        boot = [means[rng.integers(10, size=10)].mean() for _ in range(2000)]
        seeds_only.append(np.std(boot))
    se = np.sqrt(1 / 10 + 4 / 40)
    assert 0.8 * se < np.mean(widths) < 1.05 * se
    assert np.mean(seeds_only) < 0.8 * np.mean(widths)
    assert bench["two_level_bootstrap"](np.full((4, 7), 0.3)) == pytest.approx((0.3, 0.3))


@pytest.mark.slow
def test_library_defaults_improve_on_pi_ref_on_every_enumerable_world():
    """Item 3's guard (seed 0; the benchmark runs 3 seeds): ``agents.make`` with nothing else and
    50,000 queries ends below pi_ref's exploitability on the trained prompts and on unseen wording,
    for every token agent on every registered enumerable token env. Unseen classes are reported, not
    guarded: on the cyclic 256-prompt world, where a held-out class is a new game only for the judge,
    the defaults of Nash-MP (0.0220) and Nash-MD (0.0192) end above pi_ref's 0.0189 at seed 0."""
    import torch

    bench = _load("text_defaults.py")
    torch.set_num_threads(1)
    worse = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for env_id in bench["enumerable_env_ids"]():
            for agent in bench["token_agents"]():
                rec = bench["run_one"](agent, env_id, 0, 50_000)
                for col in ("trained", "wording"):
                    cell = rec.get(col)
                    if cell is not None and not cell["exploitability"] < cell["ref_exploitability"]:
                        worse.append((env_id, agent, col, cell["exploitability"]))
    assert worse == []
