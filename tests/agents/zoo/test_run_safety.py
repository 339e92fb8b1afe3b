"""No silent wrong results: interrupted and resumed runs, failed runs, folders, one-line errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import agents
from agents.nash_mp import NashMP
from agents.zoo import cli, runs
from agents.zoo.cli import main, train_run
from nlhf_envs.errors import ConfigError


def _run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "agents.zoo.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _same_agent(a, b):
    np.testing.assert_array_equal(a.log_pi, b.log_pi)
    assert (a.queries_used, a.num_iterations) == (b.queries_used, b.num_iterations)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert a.act_rng.bit_generator.state == b.act_rng.bit_generator.state
    assert a.history == b.history


def _interrupt_at(monkeypatch, iteration):
    """SIGINT to this process in the middle of the given iteration of NashMP."""
    original = NashMP._iteration

    def iteration_with_ctrl_c(self):
        if self.num_iterations + 1 == iteration:
            half = original(self)  # the signal arrives between two halves of the work
            os.kill(os.getpid(), signal.SIGINT)
            return half
        return original(self)

    monkeypatch.setattr(NashMP, "_iteration", iteration_with_ctrl_c)


def test_ctrl_c_in_learn_leaves_a_consistent_agent(monkeypatch):
    from agents.base import LearningInterrupted
    from nlhf_envs import make_game

    def make():
        return agents.make("nash_mp", make_game("biased_rps"), seed=1, batch_size=8)

    full = make().learn(num_queries=400)
    _interrupt_at(monkeypatch, 9)
    agent = make()
    with pytest.raises(LearningInterrupted, match="after iteration 9"):
        agent.learn(num_queries=400)
    assert agent.num_iterations == 9 and len(agent.history) == 9
    monkeypatch.undo()
    agent.learn(num_queries=400 - agent.queries_used)
    _same_agent(agent, full)


KW = {"params": {"mode": "sampled", "batch_size": 8}, "num_queries": 200, "progress": False}


def test_ctrl_c_stops_at_an_iteration_boundary_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    full, _ = train_run("nash_mp", "nlhf/BiasedRPS-v0", log_folder=tmp_path / "a", **KW)
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(cli.TrainingInterrupted, match=r"after iteration 5 .*--resume"):
        train_run("nash_mp", "nlhf/BiasedRPS-v0", log_folder=tmp_path / "b", **KW)
    run = tmp_path / "b" / "nash_mp" / "BiasedRPS-v0_1"
    saved = agents.load(run / "final.npz")
    assert saved.num_iterations == 5 and len(saved.history) == 5
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 5
    monkeypatch.undo()
    resumed, run_dir = train_run(None, None, resume=run, progress=False)
    assert run_dir == run
    _same_agent(resumed, full)
    _same_agent(agents.load(run / "final.npz"), full)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert (
        rows
        == (tmp_path / "a" / "nash_mp" / "BiasedRPS-v0_1" / "metrics.csv").read_text().splitlines()
    )


def test_resume_from_the_latest_checkpoint_when_final_is_missing(tmp_path, monkeypatch):
    full, _ = train_run("nash_mp", "nlhf/BiasedRPS-v0", log_folder=tmp_path / "a", **KW)

    def crash(self):
        if self.num_iterations == 7:
            raise RuntimeError("simulated crash in iteration 8")
        return NashMP.__dict__["_orig"](self)

    monkeypatch.setattr(NashMP, "_orig", NashMP._iteration, raising=False)
    monkeypatch.setattr(NashMP, "_iteration", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run("nash_mp", "nlhf/BiasedRPS-v0", log_folder=tmp_path / "b", save_freq=3, **KW)
    run = tmp_path / "b" / "nash_mp" / "BiasedRPS-v0_1"
    assert not (run / "final.npz").exists()  # a state caught mid-iteration is never saved
    # a killed run keeps its metrics: 7 rows were appended before the crash
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 7
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _same_agent(agents.load(run / "final.npz"), full)


def test_periodic_checkpoints_do_not_repeat_the_history(tmp_path):
    train_run(
        "nash_mp",
        "nlhf/BiasedRPS-v0",
        log_folder=tmp_path,
        save_freq=1,
        params={"mode": "exact"},
        num_queries=120,
        progress=False,
    )
    ckpts = sorted((tmp_path / "nash_mp" / "BiasedRPS-v0_1" / "checkpoints").glob("*.npz"))
    sizes = {p.stat().st_size for p in ckpts}
    assert len(ckpts) == 60 and max(sizes) - min(sizes) <= 16  # the first as large as the last


def test_failed_runs_leave_nothing_behind(tmp_path):
    logs = tmp_path / "logs"
    bad = [
        (["--env", "nlhf/Bogus-v0"], "unknown game or env 'nlhf/Bogus-v0'"),
        (["--env", "nlhf/RPS-v0", "--params", "env_kwargs:{bogus: 1}"], "takes no argument"),
        (["--env", "nlhf/RPS-v0", "--seed", "-1"], "--seed must be an integer >= 0; got -1"),
        (["--env", "nlhf/RPS-v0", "--num-queries", "-5"], "--num-queries must be an integer"),
        (["--env", "nlhf/RPS-v0", "--save-freq", "0"], "--save-freq must be an integer >= 1"),
        (
            ["--env", "nlhf/UniformGame-v0", "--params", "env_kwargs:{num_actions: 100000}"],
            "num_actions=100000 with 1 context(s) needs a 74.5 GiB preference tensor",
        ),
        (
            ["--env", "nlhf/UniformGame-v0", "--params", "env_kwargs:{num_actions: 2.5}"],
            "num_actions must be an integer >= 2; got 2.5",
        ),
    ]
    for args, message in bad:
        proc = _run_cli("train", "--agent", "nash_mp", *args, "--log-folder", str(logs))
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not logs.exists()
    # the numbering is not shifted either
    assert main(["train", "--agent", "nash_mp", "--env", "nlhf/RPS-v0", "--num-queries", "512",
                 "--log-folder", str(logs), "--no-progress"]) == 0  # fmt: skip
    assert [p.name for p in (logs / "nash_mp").iterdir()] == ["RPS-v0_1"]


def test_unavailable_device_is_one_line(tmp_path):
    proc = _run_cli(
        "train", "--agent", "online_ipo", "--env", "nlhf/TokenDuel-v0", "--device", "cuda:97",
        "--log-folder", str(tmp_path / "logs"),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--device 'cuda:97' is not available on this machine" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "logs").exists()


def test_run_folders_are_reserved_exclusively(tmp_path, monkeypatch):
    taken = []
    real = runs.next_run_number

    def racing(root, prefix):
        n = real(root, prefix)
        if not taken:  # another process creates the same folder between scan and mkdir
            (Path(root) / f"{prefix}_{n}").mkdir()
            taken.append(n)
        return n

    monkeypatch.setattr(runs, "next_run_number", racing)
    path = runs.make_run_dir(tmp_path, "RPS-v0")
    assert path.name == "RPS-v0_2" and taken == [1]
    assert runs.make_run_dir(tmp_path, "RPS-v0").name == "RPS-v0_3"


def test_concurrent_train_runs_get_distinct_folders(tmp_path):
    cmd = [sys.executable, "-m", "agents.zoo.cli", "train", "--agent", "nash_mp", "--env",
           "nlhf/RPS-v0", "--num-queries", "512", "--log-folder", str(tmp_path), "--no-progress"]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    names = sorted(p.name for p in (tmp_path / "nash_mp").iterdir())
    assert names == ["RPS-v0_1", "RPS-v0_2", "RPS-v0_3"]
    for name in names:
        assert (tmp_path / "nash_mp" / name / "final.npz").exists()


def _train(logs, *extra):
    args = ["train", "--agent", "nash_mp", "--env", "nlhf/BiasedRPS-v0", "--log-folder", str(logs)]
    assert main([*args, "--no-progress", *extra]) == 0


def test_tournament_resume_sees_a_changed_participant(tmp_path, capsys):
    logs, T = tmp_path / "logs", tmp_path / "T"
    _train(logs, "--num-queries", "0")
    _train(logs, "--params", "mode:exact", "--num-queries", "300")
    run1, run2 = (logs / "nash_mp" / f"BiasedRPS-v0_{i}" for i in (1, 2))
    base = ["--n-duels", "400", "--no-progress", "--log-folder", str(logs)]
    assert main(["tournament", str(run1), "pi_ref", "uniform", "--output-dir", str(T), *base]) == 0
    assert main(["tournament", str(run2), "pi_ref", "uniform", "--output-dir", str(T), *base]) == 0
    resumed = json.loads((T / "tournament.json").read_text())
    fresh_dir = tmp_path / "fresh"
    argv = ["tournament", str(run2), "pi_ref", "uniform", "--output-dir", str(fresh_dir), *base]
    assert main(argv) == 0
    fresh = json.loads((fresh_dir / "tournament.json").read_text())
    assert resumed["win_rate"] == fresh["win_rate"]
    assert resumed["env_id"] == "nlhf/BiasedRPS-v0"
    # trained on BiasedRPS: a tournament on UniformGame is refused in one line
    capsys.readouterr()
    argv = ["tournament", str(run2), "pi_ref", "--env", "nlhf/UniformGame-v0", *base]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "participant 'nash_mp' was trained on biased_rps (K=3" in err
    assert "but nlhf/UniformGame-v0 plays uniform10" in err and err.count("\n") == 1
    assert not (logs / "tournaments").exists()
    # tournaments without --output-dir never share a folder
    assert main(["tournament", str(run2), "pi_ref", *base]) == 0
    assert main(["tournament", str(run2), "pi_ref", *base]) == 0
    assert sorted(p.name for p in (logs / "tournaments").iterdir()) == [
        "BiasedRPS-v0_1",
        "BiasedRPS-v0_2",
    ]


def test_library_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    argv = ["tournament", "pi_ref", "uniform", "--env", "nlhf/Nope-v0", "--no-progress"]
    assert main([*argv, "--log-folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "nlhf-zoo: error: unknown environment id 'nlhf/Nope-v0'; registered: "
        + ", ".join(__import__("nlhf_envs").registered_ids())
        + "\n"
    )
    for env, kwarg, message in [
        ("nlhf/RPS-v0", "num_rounds:2.7", "num_rounds must be an integer >= 1; got 2.7"),
        ("nlhf/TokenDuel-v0", "max_new_tokens:0", "max_new_tokens must be an integer at least 1"),
    ]:
        argv = ["tournament", "pi_ref", "uniform", "--env", env, "--env-kwargs", kwarg]
        assert main([*argv, "--log-folder", str(tmp_path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError):  # --debug shows the library error's traceback
        main(["train", "--agent", "nash_mp", "--env", "nlhf/RPS-v0", "--seed", "-1", "--debug"])

    def bug(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(cli, "_cmd_list", bug)
    monkeypatch.setattr(cli, "build_parser", _parser_with(bug))
    with pytest.raises(ValueError, match="an internal bug"):
        main(["list"])


def _parser_with(fn):
    real = cli.build_parser

    def build():
        parser = real()
        for action in parser._subparsers._group_actions:
            action.choices["list"].set_defaults(func=fn)
        return parser

    return build


def test_eval_refuses_participants_of_different_games(tmp_path, capsys):
    logs = tmp_path / "logs"
    _train(logs, "--num-queries", "0")
    argv = ["train", "--agent", "nash_mp", "--env", "nlhf/UniformGame-v0", "--num-queries", "0"]
    assert main([*argv, "--log-folder", str(logs), "--no-progress"]) == 0
    rps, uniform = logs / "nash_mp" / "BiasedRPS-v0_1", logs / "nash_mp" / "UniformGame-v0_1"
    capsys.readouterr()
    assert main(["eval", str(rps), "--opponent", str(uniform), "--n-duels", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "nlhf-zoo: error: participants were trained on different games: 'agent' on biased_rps "
        "(K=3, contexts=1, beta=0.1, fingerprint "
    )
    assert "'opponent' on uniform10 (K=10" in err and err.count("\n") == 1
    # the agent's own game is played and recorded by default
    assert main(["eval", str(rps), "--n-duels", "100"]) == 0
    assert "vs pi_ref on nlhf/BiasedRPS-v0: " in capsys.readouterr().out
