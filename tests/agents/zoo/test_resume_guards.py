"""`train --resume` never changes a run silently, and trusts no damaged or foreign file (issue 20).

Each test runs real, short NashMP trainings on BiasedRPS and compares the resumed result with an
uninterrupted run's.
"""

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import agents
from agents.nash_mp import NashMP
from agents.zoo import cli
from agents.zoo import train as zoo_train
from agents.zoo.cli import main, train_run

ENV = "nlhf/BiasedRPS-v0"
PARAMS = {"mode": "sampled", "batch_size": 8}
KW = {"params": PARAMS, "num_queries": 208, "progress": False}  # 13 iterations of 16 queries


def _same_agent(a, b):
    np.testing.assert_array_equal(a.log_pi, b.log_pi)
    assert (a.queries_used, a.num_iterations) == (b.queries_used, b.num_iterations)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert a.history == b.history


def _interrupt_at(monkeypatch, iteration, sig=signal.SIGINT):
    """``sig`` to this process in the middle of the given iteration of NashMP."""
    original = NashMP._iteration

    def iteration_with_signal(self):
        if self.num_iterations + 1 == iteration:
            out = original(self)
            os.kill(os.getpid(), sig)
            return out
        return original(self)

    monkeypatch.setattr(NashMP, "_iteration", iteration_with_signal)


def _crash_after(monkeypatch, iterations):
    """A crash (as SIGKILL would leave it: no final.npz) in the iteration after ``iterations``."""
    original = NashMP._iteration

    def crash(self):
        if self.num_iterations == iterations:
            raise RuntimeError("simulated kill")
        return original(self)

    monkeypatch.setattr(NashMP, "_iteration", crash)


def _full(tmp_path, **extra):
    kw = {**KW, **extra}
    agent, run = train_run("nash_mp", ENV, log_folder=tmp_path / "full", **kw)
    return agent, run


def _crashed_run(tmp_path, monkeypatch, iterations, **extra):
    _crash_after(monkeypatch, iterations)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_run("nash_mp", ENV, log_folder=tmp_path / "b", **{**KW, **extra})
    monkeypatch.undo()
    run = tmp_path / "b" / "nash_mp" / "BiasedRPS-v0_1"
    assert not (run / "final.npz").exists()
    return run


def _resume(run, *extra):
    return main(["train", "--resume", str(run), "--no-progress", *extra])


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("nlhf-zoo: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---------------------------------------------------------------------------------- item 2
def test_resume_refuses_a_changed_seed_or_config(tmp_path, capsys):
    _, run = train_run("nash_mp", ENV, log_folder=tmp_path, **KW)
    before = (run / "final.npz").read_bytes()
    capsys.readouterr()
    assert _resume(run, "--seed", "3") == 2
    _one_line_error(capsys, "the run was trained with --seed 0; --seed 3 cannot change it")
    assert _resume(run, "--params", "eta:0.5") == 2
    _one_line_error(capsys, "--params eta:0.5 differs from the run's eta: None (in config.yml)")
    assert _resume(run, "--params", "batch_size:16") == 2
    _one_line_error(capsys, "--params batch_size:16 differs from the run's batch_size: 8")
    assert _resume(run, "--env-kwargs", "seed:4") == 2
    _one_line_error(capsys, "--params env_kwargs.seed:4 differs from the run's env_kwargs.seed")
    assert _resume(run, "--conf-dir", str(tmp_path)) == 2
    _one_line_error(capsys, "--conf-dir does not apply to a resumed run")
    assert _resume(run, "--log-folder", str(tmp_path / "x")) == 2
    _one_line_error(capsys, "--log-folder does not apply to a resumed run")
    assert (run / "final.npz").read_bytes() == before
    # the recorded values themselves are accepted
    assert _resume(run, "--seed", "0", "--params", "mode:sampled", "batch_size:8") == 0
    assert (run / "final.npz").read_bytes() == before  # the budget was reached already


def test_resume_with_n_is_a_new_total_budget_said_on_stderr(tmp_path, capsys):
    longer, _ = train_run("nash_mp", ENV, log_folder=tmp_path / "a", **{**KW, "num_queries": 400})
    _, run = train_run("nash_mp", ENV, log_folder=tmp_path / "b", **KW)
    capsys.readouterr()
    assert _resume(run, "-n", "400") == 0
    err = capsys.readouterr().err
    assert "-n/--num-queries 400 is the run's new total budget (was 208)" in err
    assert yaml.safe_load((run / "config.yml").read_text())["num_queries"] == 400
    _same_agent(agents.load(run / "final.npz"), longer)
    assert "--num-queries" in cli.build_parser()._subparsers._group_actions[0].choices[
        "train"
    ].format_help() and "new total budget" in " ".join(
        cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help().split()
    )


def test_resume_keeps_the_recorded_save_and_eval_frequencies(tmp_path, monkeypatch):
    freq = {"save_freq": 3, "eval_freq": 5}
    _, full_run = _full(tmp_path, **freq)
    _interrupt_at(monkeypatch, 8)
    with pytest.raises(cli.TrainingInterrupted):
        train_run("nash_mp", ENV, log_folder=tmp_path / "b", **KW, **freq)
    monkeypatch.undo()
    run = tmp_path / "b" / "nash_mp" / "BiasedRPS-v0_1"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (full_run / "checkpoints").iterdir())
    assert len(names) == 4  # iterations 3, 6, 9, 12
    with np.load(run / "evaluations.npz") as got, np.load(full_run / "evaluations.npz") as want:
        assert list(got["iterations"]) == [5, 10, 13]  # the last one: the final evaluation
        for key in ("queries", "iterations", "exploitability", "kl_to_nash"):
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-12)


def test_an_evaluation_is_recorded_once_after_a_kill(tmp_path, monkeypatch):
    # checkpoints at 4, 8; evaluations at 2, 4, 6, 8, 10: killed in iteration 11, resumed from 8,
    # the evaluation of iteration 10 comes again and must not be appended twice
    freq = {"save_freq": 4, "eval_freq": 2}
    _, full_run = _full(tmp_path, **freq)
    run = _crashed_run(tmp_path, monkeypatch, 10, **freq)
    with np.load(run / "evaluations.npz") as data:
        assert list(data["iterations"]) == [2, 4, 6, 8, 10]
    assert _resume(run, "--save-freq", "4", "--eval-freq", "2") == 0  # the recorded values
    with np.load(run / "evaluations.npz") as got, np.load(full_run / "evaluations.npz") as want:
        assert list(got["iterations"]) == [2, 4, 6, 8, 10, 12, 13]
        np.testing.assert_allclose(got["exploitability"], want["exploitability"], atol=1e-12)
    np.testing.assert_array_equal(
        agents.load(run / "best_model.npz").log_pi, agents.load(full_run / "best_model.npz").log_pi
    )


def test_a_run_folder_is_held_by_one_train(tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(cli.TrainingInterrupted):
        train_run("nash_mp", ENV, log_folder=tmp_path, **KW)
    monkeypatch.undo()
    run = tmp_path / "nash_mp" / "BiasedRPS-v0_1"
    rows = (run / "metrics.csv").read_text()
    with open(run / ".lock", "a") as held:  # another process holds the folder: refused
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = subprocess.run(
            [sys.executable, "-m", "agents.zoo.cli", "train", "--resume", str(run)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"nlhf-zoo: error: the run folder {run} is in use by another nlhf-zoo train (it holds "
        f"{run / '.lock'}); wait until it finishes\n"
    )
    assert (run / "metrics.csv").read_text() == rows
    # a fresh train holds its folder from its first iteration to its end
    from agents.zoo.runs import RunFolderError, RunLock

    seen = []
    original = NashMP._iteration

    def try_the_lock(self):
        if self.num_iterations == 2:
            with pytest.raises(RunFolderError, match="is in use by another nlhf-zoo train"):
                RunLock(tmp_path / "nash_mp" / "BiasedRPS-v0_2").acquire()
            seen.append(True)
        return original(self)

    monkeypatch.setattr(NashMP, "_iteration", try_the_lock)
    train_run("nash_mp", ENV, log_folder=tmp_path, **KW)
    assert seen == [True]
    RunLock(tmp_path / "nash_mp" / "BiasedRPS-v0_2").acquire().release()  # released at the end


def test_ctrl_c_while_the_logger_is_set_up_leaves_a_resumable_folder(tmp_path, monkeypatch):
    full, _ = _full(tmp_path)
    real = zoo_train._attach_logger

    def slow_logger_with_ctrl_c(agent, tb):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while TensorBoard is imported
        real(agent, tb)

    monkeypatch.setattr(zoo_train, "_attach_logger", slow_logger_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train_run("nash_mp", ENV, log_folder=tmp_path / "b", **KW)
    assert isinstance(stopped.value, cli.TrainingInterrupted), repr(stopped.value)
    assert "interrupted after iteration 0 (0 queries)" in str(stopped.value)
    monkeypatch.undo()
    run = tmp_path / "b" / "nash_mp" / "BiasedRPS-v0_1"
    assert agents.load(run / "final.npz").num_iterations == 0
    assert _resume(run) == 0
    _same_agent(agents.load(run / "final.npz"), full)


def test_a_folder_killed_before_its_first_state_resumes_from_scratch(tmp_path, monkeypatch, capsys):
    full, _ = _full(tmp_path)

    def killed(agent, tb):
        raise RuntimeError("simulated kill during start-up")

    monkeypatch.setattr(zoo_train, "_attach_logger", killed)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_run("nash_mp", ENV, log_folder=tmp_path / "b", **KW)
    monkeypatch.undo()
    run = tmp_path / "b" / "nash_mp" / "BiasedRPS-v0_1"
    names = {p.name for p in run.iterdir()}
    assert {"args.yml", "config.yml"} <= names and not names & {"final.npz", "checkpoints"}
    capsys.readouterr()
    assert _resume(run) == 0
    assert "no saved state yet (stopped during start-up); training from scratch" in (
        capsys.readouterr().err
    )
    _same_agent(agents.load(run / "final.npz"), full)


TRAIN_CLI = ["train", "--agent", "nash_mp", "--env", ENV, "--params", "mode:sampled",
             "batch_size:16", "--num-queries", "24000", "--save-freq", "7", "--no-progress"]  # fmt: skip


def test_sigterm_stops_like_ctrl_c_and_resumes_bit_for_bit(tmp_path):
    ref, _ = train_run(
        "nash_mp", ENV, params={"mode": "sampled", "batch_size": 16}, num_queries=24000,
        save_freq=7, log_folder=tmp_path / "ref", progress=False,
    )  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after train_run
    logs = tmp_path / "logs"
    run = logs / "nash_mp" / "BiasedRPS-v0_1"
    cmd = [sys.executable, "-m", "agents.zoo.cli", *TRAIN_CLI, "--log-folder", str(logs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if (run / "metrics.csv").read_text().count("\n") >= 120:
                break
        except OSError:
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "resumes exactly: nlhf-zoo train --resume" in err
    stopped = agents.load(run / "final.npz")
    assert 0 < stopped.queries_used < 24000
    assert _resume(run) == 0
    _same_agent(agents.load(run / "final.npz"), ref)
    assert (run / "metrics.csv").read_text() == (
        tmp_path / "ref" / "nash_mp" / "BiasedRPS-v0_1" / "metrics.csv"
    ).read_text()


def test_a_missing_conf_dir_is_refused(tmp_path, capsys):
    logs = tmp_path / "logs"
    argv = ["train", "--agent", "nash_mp", "--env", ENV, "-n", "16"]
    argv += ["--conf-dir", str(tmp_path / "typo")]
    assert main([*argv, "--log-folder", str(logs), "--no-progress"]) == 2
    _one_line_error(capsys, f"--conf-dir {tmp_path / 'typo'}: no such folder")
    assert not logs.exists()


def test_resume_refuses_to_write_through_a_link_out_of_the_run(tmp_path, monkeypatch, capsys):
    run = _crashed_run(tmp_path, monkeypatch, 10, save_freq=3)
    outside = tmp_path / "outside"
    shutil.move(run / "checkpoints", outside)
    (run / "checkpoints").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    capsys.readouterr()
    assert _resume(run) == 2
    _one_line_error(
        capsys,
        f"{run / 'checkpoints'} is a symbolic link to {outside}, outside the run folder; "
        "refusing to write through it",
    )
    assert sorted(p.name for p in outside.iterdir()) == before
    assert not (run / "final.npz").exists()


# ---------------------------------------------------------------------------------- item 4
def test_edited_or_duplicated_metric_rows_are_not_taken_as_history(tmp_path, monkeypatch, capsys):
    full, _ = _full(tmp_path, save_freq=3)
    run = _crashed_run(tmp_path, monkeypatch, 10, save_freq=3)  # checkpoint at 9, 10 rows
    csv_path = run / "metrics.csv"
    original = csv_path.read_text()
    lines = original.splitlines(keepends=True)
    edited = lines[3].split(",")
    edited[1] = repr(float(edited[1]) * 2)
    capsys.readouterr()
    for damaged in (
        [*lines[:3], ",".join(edited), *lines[4:]],  # an edited value in row 3
        [*lines[:2], lines[1], *lines[2:]],  # row 1 twice
    ):
        csv_path.write_text("".join(damaged))
        assert _resume(run) == 2
        _one_line_error(
            capsys,
            f"{csv_path}: its first 9 rows are not those nash_mp_144_queries.npz was saved with",
        )
    # rows after the checkpoint's are not relied on: an edit there is overwritten
    csv_path.write_text("".join([*lines[:10], lines[10].replace(",", ",9", 1)]))
    assert _resume(run) == 0
    assert "resuming" not in capsys.readouterr().err
    _same_agent(agents.load(run / "final.npz"), full)
    assert csv_path.read_text() == (tmp_path / "full" / "nash_mp" / "BiasedRPS-v0_1" / "metrics.csv").read_text()  # fmt: skip


def test_another_games_final_npz_is_refused(tmp_path, capsys):
    _, rps = train_run("nash_mp", ENV, log_folder=tmp_path, **{**KW, "num_queries": 80})
    _, uni = train_run("nash_mp", "nlhf/UniformGame-v0", log_folder=tmp_path, num_queries=0,
                       progress=False)  # fmt: skip
    shutil.copy(uni / "final.npz", rps / "final.npz")
    config = (rps / "config.yml").read_text()
    capsys.readouterr()
    assert _resume(rps, "-n", "200") == 2
    err = _one_line_error(capsys, f"{rps / 'final.npz'} was trained on uniform10 (K=10")
    assert f"but {rps / 'config.yml'} configures {ENV}: biased_rps (K=3" in err
    assert "refusing to resume another game's state" in err
    assert (rps / "config.yml").read_text() == config  # the new budget is not recorded either


def test_damaged_run_files_are_one_line_errors(tmp_path, monkeypatch, capsys):
    run = _crashed_run(tmp_path, monkeypatch, 10, save_freq=3, eval_freq=2)
    saved = {name: (run / name).read_bytes() for name in ("config.yml", "metrics.csv")}
    capsys.readouterr()
    (run / "evaluations.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    assert _resume(run) == 2
    _one_line_error(capsys, f"{run / 'evaluations.npz'}: damaged evaluations file (")
    (run / "evaluations.npz").unlink()

    (run / "config.yml").write_bytes(saved["config.yml"].replace(b"nash_mp", b"nash\xff_mp", 1))
    assert _resume(run) == 2
    _one_line_error(capsys, f"{run / 'config.yml'}: not UTF-8 text (byte ")
    for field, value, message in [
        ("num_queries", "lots", "field 'num_queries' must be an integer >= 0; got 'lots'"),
        ("env_kwargs", [1, 2], "field 'env_kwargs' must be a mapping; got [1, 2]"),
    ]:
        config = yaml.safe_load(saved["config.yml"])
        config[field] = value
        (run / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        assert _resume(run) == 2
        _one_line_error(capsys, f"{run / 'config.yml'}: {message}")
    (run / "config.yml").write_bytes(saved["config.yml"])

    lines = saved["metrics.csv"].decode().splitlines(keepends=True)
    cells = lines[2].split(",")
    cells[1] = "abc"
    (run / "metrics.csv").write_text("".join([lines[0], lines[1], ",".join(cells), *lines[3:]]))
    assert _resume(run) == 2
    header = lines[0].split(",")
    _one_line_error(capsys, f"{run / 'metrics.csv'}: line 3, column {header[1]!r}: 'abc' is not")


def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(tmp_path, monkeypatch, capsys):
    full, _ = _full(tmp_path, save_freq=3)
    run = _crashed_run(tmp_path, monkeypatch, 10, save_freq=3)  # checkpoints at 3, 6, 9
    newest = run / "checkpoints" / "nash_mp_144_queries.npz"
    with np.load(newest) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["state/log_pi"] = np.full_like(arrays["state/log_pi"], np.nan)
    with open(newest, "wb") as fh:
        np.savez(fh, **arrays)
    capsys.readouterr()
    assert _resume(run) == 0
    err = capsys.readouterr().err
    assert f"skipping a damaged saved state: {str(newest)!r}: field 'state/log_pi'" in err
    assert f"resuming from {run / 'checkpoints' / 'nash_mp_96_queries.npz'} (iteration 6)" in err
    _same_agent(agents.load(run / "final.npz"), full)


# ------------------------------------------------------------- nothing lost (issue 29, item 2)
def test_an_evaluation_lost_right_after_a_checkpoint_is_made_again_on_resume(
    tmp_path, monkeypatch, capsys
):
    freq = {"save_freq": 4, "eval_freq": 4}
    _, full_run = _full(tmp_path, **freq)
    with np.load(full_run / "evaluations.npz") as data:
        want = {k: data[k].copy() for k in data.files}
    assert list(want["iterations"]) == [4, 8, 12, 13]
    original = zoo_train.Evaluations.record

    def killed_before_the_row(self, agent, m=None):
        if agent.num_iterations == 8:  # the checkpoint of iteration 8 is on disk already
            raise RuntimeError("simulated kill")
        return original(self, agent, m)

    monkeypatch.setattr(zoo_train.Evaluations, "record", killed_before_the_row)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_run("nash_mp", ENV, log_folder=tmp_path / "b", **KW, **freq)
    monkeypatch.undo()
    run = tmp_path / "b" / "nash_mp" / "BiasedRPS-v0_1"
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert names == {"nash_mp_64_queries.npz", "nash_mp_128_queries.npz"}  # iterations 4 and 8
    assert _resume(run) == 0
    with np.load(run / "evaluations.npz") as got:
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-12)

    # the disk full at the same place: one line, nothing saved is damaged, the row comes back
    writes = []
    real_open = zoo_train.atomic_open

    def full_disk(path, mode="w", **kwargs):
        if str(path).endswith("evaluations.npz"):
            writes.append(path)
            if len(writes) == 2:  # iteration 8's row
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, **kwargs)

    monkeypatch.setattr(zoo_train, "atomic_open", full_disk)
    argv = ["train", "--agent", "nash_mp", "--env", ENV, "--params", "mode:sampled",
            "batch_size:8", "-n", "208", "--save-freq", "4", "--eval-freq", "4", "--log-folder",
            str(tmp_path / "c"), "--no-progress"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    _one_line_error(capsys, "no space left on the device (No space left on device)")
    monkeypatch.undo()
    run = tmp_path / "c" / "nash_mp" / "BiasedRPS-v0_1"
    with np.load(run / "evaluations.npz") as data:
        assert list(data["iterations"]) == [4]  # the file of iteration 4, whole
    assert _resume(run) == 0
    with np.load(run / "evaluations.npz") as got:
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-12)


def test_folders_left_by_killed_writes_of_dead_processes_are_cleared(tmp_path):
    # what a SIGKILL leaves while a Hugging Face folder X is written as X.tmp<pid> and put in
    # place by two renames (X -> X.old<pid>, X.tmp<pid> -> X); the slow suite kills real runs
    from agents.zoo.runs import remove_stale_folders

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = proc.pid  # a process that has ended
    live = os.getpid()

    def folder(name, text):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights").write_text(text)

    folder("final_hf", "current")
    folder(f"final_hf.tmp{dead}", "half-written")  # killed while writing: removed
    folder(f"final_hf.tmp{live}", "being written")  # a running writer's: kept
    folder("best_model_hf.old" + str(dead), "previous")  # killed between the renames:
    folder("best_model_hf.tmp" + str(dead), "new")  # the complete new one goes in place
    folder("merged.old" + str(dead), "previous")  # only the moved-aside one: put back
    folder(f"other.tmp{dead}", "x")
    (tmp_path / f"notes.tmp{dead}").write_text("a file, not a folder: kept")
    removed = remove_stale_folders(tmp_path)
    assert sorted(p.name for p in removed) == [
        f"best_model_hf.old{dead}", f"final_hf.tmp{dead}", f"other.tmp{dead}",
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["best_model_hf", "final_hf", f"final_hf.tmp{live}", "merged", f"notes.tmp{dead}"]
    )
    assert (tmp_path / "best_model_hf" / "weights").read_text() == "new"
    assert (tmp_path / "merged" / "weights").read_text() == "previous"
    assert (tmp_path / "final_hf" / "weights").read_text() == "current"
    folder(f"x.tmp{dead}", "x")
    assert remove_stale_folders(tmp_path, "final_hf") == []  # only the named folder's
    assert (tmp_path / f"x.tmp{dead}").is_dir()
