"""The zoo configs and the nlhf-zoo command line end to end on a tiny budget."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import agents
from agents import zoo
from agents.config import ConfigError
from agents.zoo.cli import main

CONF = Path(zoo.default_config_dir())


def test_every_zoo_file_loads_and_builds_every_entry():
    files = sorted(CONF.glob("*.yml"))
    assert {p.stem for p in files} >= {
        "nash_mp",
        "online_ipo",
        "nash_md",
        "mmd",
        "egpo",
        "inpo",
        "sppo",
        "omwu",
    }
    for path in files:
        data = zoo.load_yaml(path)
        assert "default" in data, path
        for env_id in data:
            if env_id == "default":
                continue
            if path.stem not in agents.available("text") and env_id == "nlhf/TokenDuel-v0":
                continue
            entry = zoo.resolve(path.stem, env_id)
            assert dataclasses.is_dataclass(entry.config)
            assert entry.num_queries or entry.num_iterations


def test_precedence_defaults_yaml_params(tmp_path):
    (tmp_path / "nash_mp.yml").write_text(
        "default:\n  batch_size: 64\n  eta: 0.05\n  num_queries: 100\n"
        "nlhf/RPS-v0:\n  eta: 0.1\n  env_kwargs: {beta: 0.2}\n"
    )
    e = zoo.resolve("nash_mp", "nlhf/RPS-v0", config_dir=tmp_path)
    assert (e.config.batch_size, e.config.eta, e.config.mode) == (64, 0.1, "exact")
    assert e.env_kwargs == {"beta": 0.2} and e.num_queries == 100
    e = zoo.resolve("nash_mp", "nlhf/RPS-v0", config_dir=tmp_path, params={"eta": 0.3})
    assert e.config.eta == 0.3
    e = zoo.resolve("nash_mp", "nlhf/Cyclic-v0", config_dir=tmp_path)
    assert e.config.eta == 0.05


def test_config_errors_name_key_and_file(tmp_path):
    (tmp_path / "nash_mp.yml").write_text("default:\n  etta: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key\(s\) 'etta'.*nash_mp.yml \[default\]"
    ):
        zoo.resolve("nash_mp", "nlhf/RPS-v0", config_dir=tmp_path)
    (tmp_path / "nash_mp.yml").write_text("nlhf/RPS-v0:\n  eta: 3e-4\n")  # YAML 1.2 float
    assert zoo.resolve("nash_mp", "nlhf/RPS-v0", config_dir=str(tmp_path)).config.eta == 3e-4
    (tmp_path / "nash_mp.yml").write_text("nlhf/RPS-v0:\n  eta: fast\n")
    with pytest.raises(ConfigError, match=r"eta: expected a float; got 'fast'.*nlhf/RPS-v0"):
        zoo.resolve("nash_mp", "nlhf/RPS-v0", config_dir=tmp_path)
    (tmp_path / "nash_mp.yml").write_text("default:\n  num_queries: lots\n")
    with pytest.raises(ConfigError, match=r"num_queries must be int; got 'lots'"):
        zoo.resolve("nash_mp", "nlhf/RPS-v0", config_dir=tmp_path)
    (tmp_path / "nash_mp.yml").write_text("default: [1, 2]\n")
    with pytest.raises(ConfigError, match="entry 'default' must be a mapping"):
        zoo.resolve("nash_mp", "nlhf/RPS-v0", config_dir=tmp_path)
    with pytest.raises(ConfigError, match="--params item 'eta0.1' must look like key:value"):
        zoo.parse_params(["eta0.1"])
    assert zoo.parse_params(["eta:0.2", "mode:sampled", "env_kwargs:{num_actions: 5}"]) == {
        "eta": 0.2,
        "mode": "sampled",
        "env_kwargs": {"num_actions": 5},
    }


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "agents.zoo.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_user_errors_are_one_line():
    for args, message in [
        (["train", "--agent", "nash_mpp", "--env", "nlhf/RPS-v0"], "unknown agent 'nash_mpp'"),
        (
            ["train", "--agent", "nash_mp", "--env", "nlhf/RPSS-v0"],
            "unknown game or env 'nlhf/RPSS-v0'",
        ),
        (
            ["train", "--agent", "nash_mp", "--env", "nlhf/RPS-v0", "--params", "etaa:1"],
            "unknown config key(s) 'etaa'",
        ),
        (["eval", "missing.npz"], "expected pi_ref, uniform, zoo:AGENT, a probability vector"),
    ]:
        proc = _run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0


def test_cli_end_to_end(tmp_path, capsys):
    logs = tmp_path / "logs"
    base = ["--log-folder", str(logs), "--no-progress"]
    assert (
        main(
            [
                "train",
                "--agent",
                "nash_mp",
                "--env",
                "nlhf/BiasedRPS-v0",
                "--num-queries",
                "60",
                "--params",
                "mode:exact",
                "--save-freq",
                "10",
                *base,
            ]
        )
        == 0
    )
    run = logs / "nash_mp" / "BiasedRPS-v0_1"
    for name in ("config.yml", "args.yml", "final.npz", "metrics.csv"):
        assert (run / name).exists(), name
    assert len(list((run / "checkpoints").glob("*.npz"))) == 3
    assert list((run / "tb").rglob("events.out.tfevents*"))
    assert "mode: exact" in (run / "config.yml").read_text()
    # a second run gets the next number
    assert (
        main(
            [
                "train",
                "--agent",
                "nash_md",
                "--env",
                "nlhf/BiasedRPS-v0",
                "--num-queries",
                "2000",
                *base,
            ]
        )
        == 0
    )
    assert (logs / "nash_md" / "BiasedRPS-v0_1" / "final.npz").exists()
    agent = agents.load(run / "final.npz")
    assert agent.history[-1]["game/exploitability"] < 1e-6
    capsys.readouterr()

    assert main(["eval", str(run), "--n-duels", "500", "--log-folder", str(logs)]) == 0
    out = capsys.readouterr().out
    assert "win rate of" in out and "exact exploitability Expl_beta = " in out

    tdir = tmp_path / "tour"
    assert (
        main(
            [
                "tournament",
                f"mp={run}",
                str(logs / "nash_md" / "BiasedRPS-v0_1"),
                "pi_ref",
                "uniform",
                "--env",
                "nlhf/BiasedRPS-v0",
                "--n-duels",
                "300",
                "--output-dir",
                str(tdir),
                *base,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| rank | participant |" in out and "mp" in out
    for name in (
        "tournament.md",
        "win_rates.csv",
        "tournament.json",
        "heatmap.png",
        "matches.jsonl",
    ):
        assert (tdir / name).exists(), name

    png = tmp_path / "plot.png"
    assert (
        main(["plot", "--env", "nlhf/BiasedRPS-v0", "--log-folder", str(logs), "--out", str(png)])
        == 0
    )
    assert png.stat().st_size > 1000
    assert main(["list"]) == 0
    assert "nash_mp: default, nlhf/RPS-v0" in capsys.readouterr().out


def test_demo_small_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--num-queries", "20000", "--exact-queries", "120", "--n-duels", "200"]
    assert main([*args, "--output-dir", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Top Nash-averaged participant" in text
    assert "The two rankings answer different questions" in text
    for name in ("kl_exact.png", "exploitability_sampled.png", "tournament/heatmap.png"):
        assert (out / name).stat().st_size > 1000, name
    # the exact-oracle phase shows the headline: Nash-MP's KL after 120 queries is below 1e-6
    import csv

    rows = list(
        csv.DictReader(open(next((out / "logs" / "exact" / "nash_mp").glob("*/metrics.csv"))))
    )
    assert float(rows[-1]["game/kl_to_nash"]) < 1e-6


@pytest.mark.slow  # about 75 s on 2 idle cores
def test_convergence_subcommand_quick(tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(["convergence", "--quick", "--no-plots", "--no-stochastic", "--out", str(out)]) == 0
    text = (out / "convergence.md").read_text()
    assert "nash_mp" in text


def test_cli_tournament_takes_sb3_zip_models_and_probability_vectors(tmp_path, capsys):
    import gymnasium
    from stable_baselines3 import PPO

    env = gymnasium.make("nlhf/BiasedRPS-SingleSeat-v0")
    PPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0).learn(64).save(tmp_path / "ppo_rps")
    out = str(tmp_path / "t")
    args = ["tournament", str(tmp_path / "ppo_rps.zip"), "paper=0,1,0", "[0.2,0.3,0.5]", "pi_ref",
            "--env", "nlhf/BiasedRPS-v0", "--n-duels", "50", "--output-dir", out, "--no-progress"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    for name in ("| ppo_rps |", "| paper |", "| policy |", "| pi_ref |"):
        assert name in text
    assert main(["tournament", "0.5,x", "pi_ref", "--env", "nlhf/RPS-v0", "--no-progress"]) == 2
    assert "a probability vector (0.2,0.3,0.5)" in capsys.readouterr().err


def test_train_follows_rl_zoo_conventions(tmp_path, capsys):
    """-n, --env-kwargs, --eval-freq (evaluations.npz, best_model.npz), lr:1e-3 as a float, the
    budget actually used in config.yml and a final evaluation."""
    import numpy as np
    import yaml

    import agents

    logs = tmp_path / "logs"
    args = ["train", "--agent", "nash_mp", "--env", "nlhf/MatrixGame-v0", "-n", "600",
            "--env-kwargs", "game:biased_rps", "--params", "eta:2e-1", "mode:sampled",
            "batch_size:64", "--eval-freq", "2", "--log-folder", str(logs), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    run = logs / "nash_mp" / "MatrixGame-v0_1"
    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["num_queries"] == 600 and config["config"]["eta"] == 0.2
    assert config["env_kwargs"] == {"game": "biased_rps"}
    ev = np.load(run / "evaluations.npz")
    final = agents.load(run / "final.npz")
    assert ev["queries"][-1] == final.queries_used and ev["iterations"][-1] == final.num_iterations
    assert np.all(np.diff(ev["iterations"]) > 0) and len(ev["iterations"]) >= 2
    best = agents.load(run / "best_model.npz")
    # the best model is the least exploitable evaluated state, and evaluations are exact
    assert best.metrics()["game/exploitability"] == pytest.approx(ev["exploitability"].min())
    i = int(np.argmin(ev["exploitability"]))
    assert best.num_iterations == ev["iterations"][i]
    report = yaml.safe_load((run / "evaluation.yml").read_text())
    assert report["game/exploitability"] == pytest.approx(final.metrics()["game/exploitability"])
    assert f"final evaluation: game/exploitability = {report['game/exploitability']:.6g}" in out


def test_plot_defaults_per_env_kind_and_skips_runs_without_the_metric(tmp_path, capsys):
    logs = tmp_path / "logs"
    assert main(["train", "--agent", "nash_mp", "--env", "nlhf/RPS-v0", "-n", "512",
                 "--log-folder", str(logs), "--no-progress"]) == 0  # fmt: skip
    other = logs / "sppo" / "RPS-v0_1"
    other.mkdir(parents=True)
    (other / "metrics.csv").write_text("game/queries,policy/entropy\n1,1.0\n2,0.9\n")
    capsys.readouterr()
    assert main(["plot", "--env", "nlhf/RPS-v0", "--log-folder", str(logs)]) == 0
    captured = capsys.readouterr()
    assert "skipping sppo/RPS-v0_1: no game/exploitability" in captured.err
    assert (logs / "RPS-v0_game_exploitability.png").stat().st_size > 1000
    args = ["plot", "--env", "nlhf/RPS-v0", "--log-folder", str(logs), "--metric", "eval/nothing"]
    assert main(args) == 2
    assert "no run under" in capsys.readouterr().err
