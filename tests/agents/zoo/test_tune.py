"""``nlhf-zoo tune`` (issue 23, item 6): Optuna studies with TPE, median pruning on the evaluation
curve, a shared storage file that resumes, and a winning zoo snippet with its provenance."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna", reason="the 'tune' extra (Optuna) is not installed")

import optuna  # noqa: E402

from agents.config import ConfigError  # noqa: E402
from agents.zoo import resolve  # noqa: E402
from agents.zoo.cli import main  # noqa: E402
from agents.zoo.tune import storage_url, to_yaml, tune  # noqa: E402

ENV = "nlhf/BiasedRPS-v0"
DAY = datetime.date(2026, 12, 6)


def test_trials_prune_resume_and_write_a_zoo_entry(tmp_path):
    db = tmp_path / "study.db"
    kw = dict(budget=2048, storage=db, pruner_startup_trials=1, today=DAY)
    # the theory's step first, then a step 4x too small: behind the first at every evaluation
    first = tune("nash_mp", ENV, n_trials=3, enqueue=[{"eta": 0.2}, {"eta": 0.05}], **kw)
    assert (first.n_complete, first.n_pruned, first.new_trials) == (2, 1, 3)
    study = optuna.load_study(study_name=first.study_name, storage=storage_url(db))
    states = [t.state for t in study.trials]
    assert states[1] == optuna.trial.TrialState.PRUNED
    assert study.trials[1].params == {"eta": 0.05}
    assert len(study.trials[1].intermediate_values) < 4  # stopped before the budget's end
    # the study resumes from the file: the total is n_trials, only the missing trial runs
    again = tune("nash_mp", ENV, n_trials=4, **kw)
    assert again.new_trials == 1 and again.n_complete + again.n_pruned == 4
    assert tune("nash_mp", ENV, n_trials=4, **kw).new_trials == 0
    # the snippet is valid YAML with its provenance and loads as a zoo entry
    text = again.yaml
    assert text.startswith(
        "# nlhf-zoo tune: study 'nash_mp:nlhf/BiasedRPS-v0:2048q:seed0' (file study.db), "
    )
    assert str(tmp_path) not in text  # the provenance names the study file, not its folder
    assert "budget 2,048 queries per trial" in text and "date 2026-12-06" in text
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "nash_mp.yml").write_text(text)
    entry = resolve("nash_mp", ENV, config_dir=conf)
    assert entry.num_queries == 2048
    assert entry.config.mode == "sampled" and entry.config.batch_size == 256
    assert entry.config.eta == pytest.approx(again.best_params["eta"], rel=1e-5)
    assert isinstance(yaml.safe_load(text)[ENV]["eta"], float)
    # the same study name with other settings is refused, naming the difference
    with pytest.raises(
        ConfigError, match=r"was run with other settings \(budget: 2048, not 1024\)"
    ):
        tune("nash_mp", ENV, n_trials=4, study_name=again.study_name, budget=1024, storage=db)


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="below one iteration of nash_mp"):
        tune("nash_mp", ENV, n_trials=1, budget=100)
    with pytest.raises(ConfigError, match="--storage postgresql://x: expected a file path"):
        tune("nash_mp", ENV, n_trials=1, budget=1024, storage="postgresql://x")
    with pytest.raises(ConfigError, match="validation split: expected 'validation' or 'train'"):
        tune("nash_mp", ENV, n_trials=1, budget=1024, validation_split="heldout")
    # the 32-prompt tiny world has no validation prompts: refused before any trial, not guessed
    with pytest.raises(
        ConfigError, match="world 'tiny' has no 'validation' prompts to tune on; pass "
        "validation_split='train'"
    ):  # fmt: skip
        tune("online_ipo", "nlhf/TinyTokenDuel-v0", n_trials=1, budget=256)
    kept = tmp_path / "kept.yml"
    kept.write_text("mine\n")
    argv = ["tune", "--agent", "nash_mp", "--env", ENV, "--n-trials", "1", "-n", "1024",
            "--output", str(kept)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"nlhf-zoo: error: --output {kept}: exists (nothing is overwritten); give the path of a "
        "new file\n"
    )
    assert kept.read_text() == "mine\n"


def test_cli_tunes_a_token_agent_and_writes_the_snippet(tmp_path, capsys):
    out = tmp_path / "tuned.yml"
    argv = ["tune", "--agent", "online_ipo", "--env", "nlhf/TinyTokenDuel-v1", "--n-trials", "2",
            "-n", "256", "--params", "batch_size:64", "--n-evaluations", "2",
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == out.read_text()
    assert "2 new trial(s); 2 complete, 0 pruned" in captured.err
    data = yaml.safe_load(out.read_text())["nlhf/TinyTokenDuel-v1"]
    assert data["batch_size"] == 64 and data["num_queries"] == 256
    assert 3e-5 <= data["lr"] <= 3e-3
    assert "exact exploitability on the 'validation' prompts" in out.read_text()


def test_yaml_floats_are_read_as_floats_by_every_parser():
    text = to_yaml("x", {"lr": 3e-4, "eta": 0.2, "big": 2.5e6, "n": 3, "kw": {"a": 1}}, ["c"])
    assert text == "# c\nx:\n  lr: 3.0e-4\n  eta: 0.2\n  big: 2.5e+6\n  n: 3\n  kw: {a: 1}\n"
    assert yaml.safe_load(text)["x"] == {
        "lr": 3e-4,
        "eta": 0.2,
        "big": 2.5e6,
        "n": 3,
        "kw": {"a": 1},
    }


def test_two_processes_create_one_new_study_file_at_once(tmp_path):
    # Optuna's SQLite storage creates its schema on first use; two processes doing it at the
    # same moment failed with a unique-constraint error before the storage lock
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "shared.db"
    code = (
        "import sys; from agents.zoo.tune import tune; "
        "r = tune('nash_mp', 'nlhf/BiasedRPS-v0', n_trials=1, budget=1024, storage=sys.argv[1], "
        "n_evaluations=1); print(r.n_complete + r.n_pruned)"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**__import__("os").environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(db)], env=env, cwd=root,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-500:] for _, err in outs]
    # one study: the second process found the first's finished trial (or both ran one)
    study = optuna.load_study(
        study_name="nash_mp:nlhf/BiasedRPS-v0:1024q:seed0", storage=storage_url(db)
    )
    assert 1 <= len(study.trials) <= 2


# ------------------------------------------------------- nothing lost, nothing repeated (issue 29)
_KILL_IN_TRIAL = """
import os, signal, sys
import agents.zoo.tune as t
def stop(*args, **kwargs):  # in the middle of the trial's first evaluation
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
t.validation_exploitability = stop
t.tune("nash_mp", "nlhf/BiasedRPS-v0", n_trials=4, budget=1024, n_evaluations=1,
       storage=sys.argv[1])
"""


def _subprocess(code, *args, **popen):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], env=env, cwd=root,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def _trials(db, name="nash_mp:nlhf/BiasedRPS-v0:1024q:seed0"):
    return optuna.load_study(study_name=name, storage=storage_url(db)).trials


def test_an_interrupted_and_resumed_study_chooses_what_an_uninterrupted_one_chooses(tmp_path):
    kw = dict(budget=1024, n_evaluations=1, today=DAY)
    whole = tune("nash_mp", ENV, n_trials=4, storage=tmp_path / "whole.db", **kw)
    db = tmp_path / "cut.db"
    first = tune("nash_mp", ENV, n_trials=2, storage=db, **kw)
    assert first.new_trials == 2
    # the third trial is stopped twice: SIGTERM (the process marks it failed itself), then
    # SIGKILL (it stays RUNNING until the next process finds that no process holds it)
    for sig in ("SIGTERM", "SIGKILL"):
        proc = _subprocess(_KILL_IN_TRIAL, db, sig)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode != 0, err
    states = [t.state.name for t in _trials(db)]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "RUNNING"]
    again = tune("nash_mp", ENV, n_trials=4, storage=db, **kw)
    trials = _trials(db)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 + ["FAIL"] * 2 + ["COMPLETE"] * 2
    assert again.new_trials == 2 and again.n_complete == 4
    # the search went on where it stopped: trial for trial what the uninterrupted study drew
    done = [t.params["eta"] for t in trials if t.state.name == "COMPLETE"]
    assert done == [t.params["eta"] for t in _trials(tmp_path / "whole.db")]
    assert len(set(done)) == 4  # no finished suggestion is drawn again
    assert again.best_params == whole.best_params and again.entry == whole.entry
    assert again.best_value == whole.best_value
    assert not (tmp_path / "cut.db.tune").exists()  # the claims of dead processes are cleared


_SHARE = """
import sys
from agents.zoo.tune import tune
r = tune("nash_mp", "nlhf/BiasedRPS-v0", n_trials=6, budget=1024, n_evaluations=1,
         storage=sys.argv[1], poll_seconds=0.1)
print(r.n_complete + r.n_pruned, r.best_number, r.new_trials)
"""


def test_two_processes_on_one_study_finish_exactly_n_trials_without_repeats(tmp_path):
    db = tmp_path / "shared.db"
    tune("nash_mp", ENV, n_trials=1, budget=1024, n_evaluations=1, storage=db)  # the schema
    procs = [_subprocess(_SHARE, db) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-500:] for _, err in outs]
    trials = _trials(db)
    assert [t.state.name for t in trials].count("RUNNING") == 0
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6  # not 7: a trial starts only while finished + running < 6
    etas = [t.params["eta"] for t in finished]
    assert len(set(etas)) == 6  # the processes draw different settings
    reports = [out.split() for out, _ in outs]
    assert reports[0][:2] == reports[1][:2] and reports[0][0] == "6"  # the same whole study
    assert int(reports[0][2]) + int(reports[1][2]) == 5


def test_a_storage_that_is_not_a_study_is_refused_and_kept(tmp_path, capsys):
    import sqlite3

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE orders (id INTEGER)")
    other_bytes = other.read_bytes()
    study = tmp_path / "study.db"
    tune("nash_mp", ENV, n_trials=1, budget=1024, n_evaluations=1, storage=study)
    damaged = tmp_path / "damaged.db"
    data = bytearray(study.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page overwritten
    damaged.write_bytes(bytes(data))
    cases = [
        (notes, f"--storage {notes}: not a SQLite study file (it holds other data); nothing was "
                "written to it"),
        (other, f"--storage {other}: a SQLite database that is not an Optuna study (tables "
                "orders); nothing was written to it"),
        (damaged, f"--storage {damaged}: damaged SQLite file ("),
    ]  # fmt: skip
    for path, message in cases:
        argv = ["tune", "--agent", "nash_mp", "--env", ENV, "--n-trials", "1", "-n", "1024",
                "--storage", str(path)]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"nlhf-zoo: error: {message}") and err.count("\n") == 1, err
    assert notes.read_text() == "my notes\n" and other.read_bytes() == other_bytes
    assert damaged.read_bytes() == bytes(data)
    # bytes flipped anywhere after the header: the study runs, or one line names the file
    import random
    import shutil

    for seed in range(5):
        rng = random.Random(seed)
        flipped = bytearray(study.read_bytes())
        for _ in range(20 if seed % 2 else 200):
            flipped[rng.randrange(4096, len(flipped))] ^= 0xFF
        damaged.write_bytes(bytes(flipped))
        shutil.rmtree(tmp_path / "damaged.db.tune", ignore_errors=True)
        argv = ["tune", "--agent", "nash_mp", "--env", ENV, "--n-trials", "2", "-n", "1024",
                "--n-evaluations", "1", "--storage", str(damaged)]  # fmt: skip
        code = main(argv)  # never a traceback
        err = capsys.readouterr().err
        assert code in (0, 2)
        if code == 2:
            assert (
                err.startswith(f"nlhf-zoo: error: --storage {damaged}: ") and err.count("\n") == 1
            ), err


def test_tune_on_your_own_hugging_face_model_scores_its_validation_prompts(tmp_path, capsys):
    # issue 29, item 3: a zoo entry on nlhf/HFTokenDuel-v0 with --env-kwargs; the objective is
    # the estimated exploitability (estimate_hf_nash_metrics) on the env's validation prompts
    pytest.importorskip("transformers")
    import sys

    import torch
    import transformers

    import agents
    from agents.zoo.tune import validation_exploitability

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nlhf_envs" / "text"))
    from hf_parts import tiny_gpt2, word_tokenizer

    tok = word_tokenizer(24)
    tiny_gpt2(24, seed=0).save_pretrained(tmp_path / "ref")
    tok.save_pretrained(tmp_path / "ref")
    config = transformers.GPT2Config(vocab_size=24, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    config.pad_token_id = 0
    torch.manual_seed(0)
    transformers.GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    (tmp_path / "prompts.txt").write_text("\n".join(f"w{10 + i} w{11 + i}" for i in range(8)))
    conf = tmp_path / "conf"
    conf.mkdir()
    kwargs = {"reference": str(tmp_path / "ref"), "judge": str(tmp_path / "judge"),
              "prompts": str(tmp_path / "prompts.txt"), "heldout_fraction": 0.25,
              "max_prompt_tokens": 4, "max_new_tokens": 3}  # fmt: skip
    entry = {"batch_size": 4, "nash_eval_prompts": 2, "nash_eval_samples": 4, "eval_every": 0,
             "num_queries": 16, "env_kwargs": kwargs}  # fmt: skip
    (conf / "online_ipo.yml").write_text(yaml.safe_dump({"nlhf/HFTokenDuel-v0": entry}))
    argv = ["tune", "--agent", "online_ipo", "--env", "nlhf/HFTokenDuel-v0", "--conf-dir",
            str(conf), "--n-trials", "2", "--n-evaluations", "2"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2  # no validation prompts: refused before any trial, with the way out
    err = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading bars
    assert (
        err.startswith(
            "nlhf-zoo: error: this nlhf/HFTokenDuel-v0 env has no 'validation' prompts to tune on; "
        )
        and "give it validation prompts (env_kwargs validation_prompts or validation_fraction)"
        in err
    )
    # scoring the training prompts (an optimisation objective) crashed after the first trial:
    # "HFTokenDuelEnv has no ground truth and its own pi_ref"
    assert main([*argv[:-4], "--n-trials", "1", "--n-evaluations", "1", "--validation-split",
                 "train"]) == 0  # fmt: skip
    assert "estimated exploitability on the 'train' prompts" in capsys.readouterr().out
    db = tmp_path / "hf.db"
    assert main([*argv, "--env-kwargs", "validation_fraction:0.34", "--storage", str(db)]) == 0
    captured = capsys.readouterr()
    assert "2 new trial(s); 2 complete, 0 pruned" in captured.err
    assert "objective: estimated exploitability on the 'validation' prompts" in captured.out
    got = yaml.safe_load(captured.out)["nlhf/HFTokenDuel-v0"]
    assert got["env_kwargs"] == {**kwargs, "validation_fraction": 0.34}
    # the objective is that estimate, recomputed here for the winning setting
    study = optuna.load_study(study_name="online_ipo:nlhf/HFTokenDuel-v0:16q:seed0",
                              storage=storage_url(db))  # fmt: skip
    cfg = {k: v for k, v in got.items() if k not in ("num_queries", "env_kwargs")}
    cfg.update(study.best_trial.user_attrs["settings"])  # the exact lr, not the snippet's digits
    agent = agents.make(
        "online_ipo", "nlhf/HFTokenDuel-v0", seed=0, env_kwargs=got["env_kwargs"], **cfg
    )
    assert len(agent.env.prompts["validation"]) == 2
    agent.learn(num_queries=16)
    assert validation_exploitability(agent, "validation") == pytest.approx(
        study.best_value, rel=1e-6, abs=1e-9
    )


def test_progress_reports_every_finished_trial_with_the_best_value(tmp_path):
    """Issue 30, item 5: ``tune(progress=...)`` reports the study's finished trials after each
    trial (a resumed study starts from the trials it already holds) with the best value so far."""
    db = tmp_path / "study.db"
    kw = dict(budget=1024, storage=db, pruner_startup_trials=5, today=DAY)
    events = []
    first = tune("nash_mp", ENV, n_trials=2, progress=events.append, **kw)
    assert [(e.task, e.done, e.total, e.unit) for e in events] == [
        ("tune", 1, 2, "trials"),
        ("tune", 2, 2, "trials"),
    ]
    study = optuna.load_study(study_name=first.study_name, storage=storage_url(db))
    values = [t.value for t in study.trials]
    assert events[0].info["best"] == pytest.approx(values[0], abs=0.0)
    assert events[1].info["best"] == pytest.approx(min(values), abs=0.0)
    events.clear()
    tune("nash_mp", ENV, n_trials=3, progress=events.append, **kw)
    assert [e.done for e in events] == [2, 3]  # the two stored trials, then the new one
