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


def test_token_games_only_runs_the_named_sections_and_keeps_the_others(tmp_path, one_torch_thread):
    import json

    import numpy as np

    from nlhf_envs.intransitivity import cyclic_share
    from nlhf_envs.text import exact

    bench = _load("token_games.py")
    shipped = json.loads((ROOT / "benchmarks" / "results" / "token_games.json").read_text())
    before = {"judges": shipped["judges"], "seconds": 960.0}
    (tmp_path / "token_games.json").write_text(json.dumps(before))
    tiny, full = "nlhf/TinyTokenDuel-v0", "nlhf/TokenDuel-v1"
    args = ["--only", "estimator,shares", "--env-ids", f"{tiny},{full}", "--share-samples", "4"]
    args += ["--share-prompts", "2", "--ns", "4", "--seeds", "2", "--out", str(tmp_path)]
    assert bench["main"](args) == 0
    r = json.loads((tmp_path / "token_games.json").read_text())
    # the judges section is kept as it was; the two sections that ran are added
    assert r["judges"] == shipped["judges"]
    assert set(r["section_runs"]) == {"shares", "estimator"}
    assert "curves" not in r and "timing" not in r
    # the exact tiny shares under both weightings: all 259 answers, equal or pi_ref weights
    game = exact.exact_game(bench["TokenDuelEnv"](world="tiny"), "heldout")
    s = r["shares"][tiny]
    assert (s["method"], s["answers"], s["prompts"]) == ("exact", 259, 8)
    assert s["uniform"]["judge"] == pytest.approx(np.mean(cyclic_share(game.P)), rel=1e-12)
    pi_ref_share = np.mean(cyclic_share(game.P, game.pi_ref))
    assert s["pi_ref"]["judge"] == pytest.approx(pi_ref_share, rel=1e-12)
    # pi_ref's likely answers are far more transitive than the uniform mix (0.045 vs 0.105)
    assert s["pi_ref"]["judge"] < 0.6 * s["uniform"]["judge"]
    assert r["shares"][full]["method"] == "sampled" and r["shares"][full]["prompts"] == 2
    for weighting in ("uniform", "pi_ref"):
        assert 0.0 <= r["shares"][full][weighting]["ground_truth"] <= 1.0
    # every run of the estimator kept, and the per-row summaries are those of the runs
    assert len(r["estimator"]) == 3  # pi_ref and two drifted policies at one n
    for row in r["estimator"]:
        err = np.array(row["abs_err_exploitability"])
        assert row["runs"] == 2 and err.shape == (2,)
        assert row["max_abs_err_exploitability"] == err.max()
        assert row["within_exploitability"] == int(np.sum(err <= 0.005))
        assert row["covered_exploitability"] == sum(row["covers_exploitability"])
    (pooled,) = r["estimator_by_n"]
    assert (pooled["n"], pooled["runs"]) == (4, 6)
    assert pooled["max_abs_err_exploitability"] == max(
        row["max_abs_err_exploitability"] for row in r["estimator"]
    )
    text = (tmp_path / "token_games.md").read_text()
    assert (
        "| judge, uniform | ground truth, uniform | judge, pi_ref | ground truth, pi_ref |" in text
    )
    assert "## Judge agreement" in text and "an earlier full run" in text
    assert f"| 4 | 6 | {pooled['within_exploitability']} / 6 |" in text
    with pytest.raises(SystemExit):
        bench["main"](["--only", "shares,plots", "--out", str(tmp_path)])


@pytest.mark.slow
def test_hf_eval_cost_runs_the_docs_command_and_reads_its_timings(tmp_path, capsys):
    pytest.importorskip("transformers")
    bench = _load("hf_eval_cost.py")
    assert bench["main"](["--folder", str(tmp_path / "parts"), "--queries", "256"]) == 0
    out = capsys.readouterr().out
    assert "trained nash_mp (256 queries)" in out
    assert "final evaluation: eval/exploitability = " in out and "(95% CI [" in out
    assert "of the training in CPU time" in out
