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
    label, _, ratio = rows[0]
    assert ratio == "1.00x" and "code of the baseline revision (anchor)" in label
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


# ------------------------------------------------------------------ benchmarks/hf_vs_trl.py

TRL_ABSENT = "TRL is an optional dependency of benchmarks/hf_vs_trl.py only (not installed here)"


def _trl_bench_parts(bench: dict, lora: bool, prompt_words: int = 5):
    """The benchmark's tiny parts with prompts of ``prompt_words`` words each and a causal LM
    that never emits EOS: its output rows are scaled by 1000 and EOS's row is zero, so each
    row's largest logit is about 100 above EOS's (every answer runs to the last token)."""
    import torch

    setup = bench["Setup"](shape="tiny", lora=lora, batch=2, new_tokens=4, prompts=6,
                           prompt_words=(prompt_words, prompt_words))  # fmt: skip
    parts = bench["build_parts"](setup)
    with torch.no_grad():
        head = parts.model.get_output_embeddings().weight
        head.mul_(1000.0)
        head[parts.tokenizer.eos_token_id] = 0.0
    return setup, parts


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_hf_vs_trl_counts_the_work_of_nlhf_zoo_steps(lora, one_torch_thread):
    pytest.importorskip("peft")
    bench = _load("hf_vs_trl.py")
    setup, parts = _trl_bench_parts(bench, lora)
    b, n, p = setup.batch, setup.new_tokens, parts.max_prompt_tokens
    assert p == 5  # every prompt is 5 words, one token each
    res = bench["measure_side"]("ours", setup, 2, parts=parts)
    # the run: two iterations of batch_size queries, every answer n tokens long
    assert res["queries"] == 2 * b and res["answer_length"] == n
    assert len(res["steps_work"]) == 2 and res["steps_work"][0] == res["steps_work"][1]
    work = res["work"]
    # 2b answers per step, generated in calls of n sampled tokens (one forward per token)
    assert sum(rows for rows, _ in work["generate"]) == 2 * b
    assert all(tokens == n for _, tokens in work["generate"])
    assert work["generated_tokens"] == 2 * b * n
    # the policy (with gradient) and the reference (without) each encode the b prompts once,
    # then score the 2b answers on that cache (every answer token but the last as input); the
    # policy's prompts' pass is generation's, made with gradient
    for key in ("policy_forwards", "reference_forwards"):
        assert work[key] == [[b, p], [2 * b, n - 1]], key
    # one reward-model call scores the 2b texts "prompt + answer": the prompt's last word and
    # the answer's first are one unknown word, so p + n - 1 tokens
    assert work["reward_calls"] == [[2 * b, p + n - 1]]
    # the base weights: the user's model plus at most a frozen reference and a trainable copy
    # (LoRA: the adapter's base, shared by the reference)
    assert (1 if lora else 2) <= res["copies"] <= (2 if lora else 3)


def test_median_interval_takes_the_order_statistics_of_the_binomial_coverage():
    bench = _load("hf_vs_trl.py")
    # n = 11: P(Bin(11, 1/2) <= 2) = (1 + 11 + 55) / 2048, so ranks 3 and 9 cover 93.46%;
    # ranks 4 and 8 would cover 1 - 2 * 232 / 2048 = 77.3% < 90%
    values = [0.9, 0.7, 0.75, 0.8, 0.72, 0.78, 0.85, 0.74, 0.79, 0.76, 0.81]
    lo, hi, cov = bench["median_interval"](values)
    assert (lo, hi) == (0.74, 0.81) and cov == pytest.approx(1 - 2 * 67 / 2048, abs=1e-12)
    assert bench["median_interval"]([2.0, 1.0, 3.0, 5.0])[2] == pytest.approx(0.875)  # the range
    assert bench["median_interval"](values, level=0.7)[:2] == (0.75, 0.8)  # ranks 4 and 8
    with pytest.raises(ValueError, match="at least one value"):
        bench["median_interval"]([])


def test_base_weight_copies_counts_distinct_storages():
    peft = pytest.importorskip("peft")
    import copy

    bench = _load("hf_vs_trl.py")
    setup = bench["Setup"](shape="tiny")
    model = bench["build_parts"](setup).model
    cls, shape = type(model), (131, 32)  # a vocabulary no other test's model has
    model.resize_token_embeddings(131)
    assert bench["base_weight_copies"](cls, shape) == 1
    twin = copy.deepcopy(model)
    assert bench["base_weight_copies"](cls, shape) == 2
    config = peft.LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    wrapped = peft.get_peft_model(twin, config)  # in place: the same base weights
    frozen = {id(p): p for p in wrapped.parameters() if not p.requires_grad}
    shared = copy.deepcopy(wrapped, frozen)  # a copy sharing the frozen base weights
    assert bench["base_weight_copies"](cls, shape) == 2
    del twin, wrapped, shared, frozen  # (deepcopy keeps what it copied in its memo)
    assert bench["base_weight_copies"](cls, shape) == 1


def test_hf_vs_trl_refuses_without_trl_in_one_line(monkeypatch, capsys, tmp_path):
    bench = _load("hf_vs_trl.py")
    monkeypatch.setitem(__import__("sys").modules, "trl", None)  # as if not installed
    assert bench["main"](["--shapes", "tiny", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hf_vs_trl: error: TRL is not installed")
    assert "--ours-only" in err[0] and not list(tmp_path.iterdir())


def test_hf_vs_trl_ours_only_writes_its_tables(tmp_path, one_torch_thread):
    pytest.importorskip("peft")
    import json
    import statistics

    bench = _load("hf_vs_trl.py")
    args = ["--ours-only", "--no-memory", "--shapes", "tiny", "--rounds", "2", "--warmup", "1"]
    args += ["--batch", "2", "--new-tokens", "3", "--out", str(tmp_path), "--name", "t"]
    assert bench["main"](args) == 0
    result = json.loads((tmp_path / "t.json").read_text())
    assert [(r["shape"], r["mode"]) for r in result["rows"]] == [("tiny", "full"), ("tiny", "LoRA")]
    for row in result["rows"]:
        assert len(row["time"]["ours_s"]) == 2 and all(s > 0 for s in row["time"]["ours_s"])
        assert row["time"]["trl_s"] == [] and row["time"]["ratios"] == []
    assert result["machine"]["torch_threads"] == 1 and result["versions"]["torch"]
    assert result["command"].startswith("python benchmarks/hf_vs_trl.py --ours-only")
    text = (tmp_path / "t.md").read_text()
    for row in result["rows"]:  # nlhf-zoo's median seconds per step; TRL's columns empty
        size = bench["parameter_count"](row["parameters"])
        ours = statistics.median(row["time"]["ours_s"])
        assert f"| tiny ({size}) | {row['mode']} | {ours:.3f} | n/a | n/a | n/a |" in text


@pytest.mark.slow
def test_hf_vs_trl_measures_memory_in_a_process_per_side(tmp_path, one_torch_thread):
    pytest.importorskip("peft")
    import json

    bench = _load("hf_vs_trl.py")
    args = ["--ours-only", "--shapes", "tiny", "--modes", "full", "--rounds", "1"]
    args += ["--batch", "2", "--new-tokens", "3", "--memory-steps", "1", "--out", str(tmp_path)]
    assert bench["main"](args) == 0
    (row,) = json.loads((tmp_path / "hf_vs_trl.json").read_text())["rows"]
    ours = row["memory"]["ours"]
    assert ours["peak_kib"] >= ours["baseline_kib"] > 0
    assert ours["queries"] == 2 and ours["work"]["generated_tokens"] <= 2 * 2 * 3
    assert 2 <= ours["copies"] <= 3


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_hf_vs_trl_counts_the_work_of_trl_steps(lora, one_torch_thread):
    pytest.importorskip("trl", reason=TRL_ABSENT)
    bench = _load("hf_vs_trl.py")
    setup, parts = _trl_bench_parts(bench, lora)
    b, n, p = setup.batch, setup.new_tokens, parts.max_prompt_tokens
    res = bench["measure_side"]("trl", setup, 2, parts=parts)
    assert res["queries"] == 2 * b
    work = res["work"]
    # TRL 1.16: one generate call of 2b answers, one policy and one reference forward of 2b
    # sequences (prompt and answer), one reward-model call of 2b texts
    assert work["generate"] == [[2 * b, n]] and work["generated_tokens"] == 2 * b * n
    assert work["policy_forwards"] == [[2 * b, p + n]]
    assert work["reference_forwards"] == [[2 * b, p + n]]
    assert work["reward_calls"] == [[2 * b, p + n - 1]]
    assert res["copies"] == (1 if lora else 2)


def test_gpu_trl_section_says_why_it_did_not_run_without_trl(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "trl", None)  # as if not installed
    gpu = _load("gpu.py")
    out = tmp_path / "g.md"
    assert gpu["main"](["--device", "cpu", "--quick", "--trl-only", "--out", str(out)]) == 0
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith("| nlhf-zoo")]
    assert len(rows) == 1 and "| not run: TRL is not installed" in rows[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.md"]
    with pytest.raises(SystemExit):  # the README block is the whole table, not this section
        gpu["main"](["--trl-only", "--readme", str(tmp_path / "README.md")])


@pytest.mark.slow
def test_gpu_trl_section_runs_the_comparison_on_cpu(tmp_path):
    pytest.importorskip("trl", reason=TRL_ABSENT)
    import json

    gpu = _load("gpu.py")
    out = tmp_path / "g.md"
    args = ["--device", "cpu", "--quick", "--trl-only", "--rounds", "1", "--trl-new-tokens", "4"]
    assert gpu["main"]([*args, "--out", str(out)]) == 0
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith("| nlhf-zoo")]
    assert len(rows) == 4  # full and LoRA: time and peak memory
    assert all("tiny" in r and "bf16" in r and r.rstrip(" |").endswith("x") for r in rows)
    result = json.loads((tmp_path / "hf_vs_trl_cpu.json").read_text())
    assert result["settings"]["precision"] == "bf16" and len(result["rows"]) == 2
    for row in result["rows"]:  # TRL's work: one generate call of 2 x 8 answers of 4 tokens
        assert row["memory"]["trl"]["work"]["generate"] == [[16, 4]]


@pytest.mark.slow
def test_hf_eval_cost_runs_the_docs_command_and_reads_its_timings(tmp_path, capsys):
    pytest.importorskip("transformers")
    bench = _load("hf_eval_cost.py")
    assert bench["main"](["--folder", str(tmp_path / "parts"), "--queries", "256"]) == 0
    out = capsys.readouterr().out
    assert "trained nash_mp (256 queries)" in out
    assert "final evaluation: eval/exploitability = " in out and "(95% CI [" in out
    assert "of the training in CPU time" in out


def test_gpu_process_rows_say_why_they_did_not_run_without_two_cuda_devices(monkeypatch):
    import torch

    gpu = _load("gpu.py")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    rows = gpu["process_rows"](torch.device("cuda"), 64, 4, False, 1)
    assert [(r[1], r[2]) for r in rows] == [
        ("not run: needs 1 CUDA devices", ""),
        ("not run: needs 2 CUDA devices", ""),
        ("not run: needs 2 CUDA devices", ""),
    ]  # nothing launched, no figure claimed
    assert rows[1][0].endswith(
        "GPT-2 small on nlhf/HFTokenDuel-v0, online_ipo full fine-tuning, global B = 64, 2 processes, DDP"
    )


@pytest.mark.slow  # three torchrun launches of two CPU processes (about 50 s)
def test_gpu_process_rows_run_on_two_cpu_processes(tmp_path):
    pytest.importorskip("transformers")
    gpu = _load("gpu.py")
    out = tmp_path / "gpu.md"
    args = ["--device", "cpu", "--quick", "--processes-only", "--out", str(out)]
    assert gpu["main"](args) == 0
    rows = [line for line in out.read_text().splitlines() if "online_ipo full fine-tuning" in line]
    assert len(rows) == 3 and all("iterations/s" in r for r in rows), rows
    assert "2 processes, DDP" in rows[1] and "2 processes, FSDP" in rows[2]
