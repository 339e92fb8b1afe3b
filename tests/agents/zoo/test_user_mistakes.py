"""Every user mistake on the command line is one line ``nlhf-zoo: error: ...`` (exit status 2),
checked before anything is written: no run folder, no output file, no training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import agents
from agents.config import ConfigError
from agents.omwu import OMWUConfig
from agents.zoo.cli import MAX_DUELS, check_device, main
from agents.zoo.configs import load_yaml, parse_params, resolve
from nlhf_envs.errors import EnvironmentSetupError


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command; assert exit status 2, nothing on stdout and exactly one line on stderr."""
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith("nlhf-zoo: error: ")
    return lines[0][len("nlhf-zoo: error: ") :]


def _train(tmp_path: Path, *extra: str, agent: str = "nash_mp", env: str = "nlhf/RPS-v0"):
    return [
        "train",
        "--agent",
        agent,
        "--env",
        env,
        "-n",
        "512",
        "--log-folder",
        str(tmp_path / "logs"),
        "--no-progress",
        *extra,
    ]


# ------------------------------------------------------------------ agent configs: finite, in range
@pytest.mark.parametrize(
    ("agent", "param", "message"),
    [
        ("nash_mp", "eta:.inf", "eta: must be a finite number; got inf (in --params)"),
        ("sppo", "eta:.inf", "eta: must be a finite number; got inf (in --params)"),
        ("mmd", "lr:-.inf", "lr: must be a finite number; got -inf (in --params)"),
        (
            "omwu",
            "lam:1e6",
            "lam: 1e+06 is out of range for beta = 0.1: OMWU needs 0 < lam < 2 / beta = 20 (the "
            "update scales the logits by 1 - lam beta = -99999 each iteration and overflows); the "
            "default is 0.8333",
        ),
        (
            "egpo",
            "lam:25",
            "lam: 25 is out of range for beta = 0.1: EGPO needs 0 < lam < 2 / beta = 20 (the "
            "update scales the logits by 1 - lam beta = -1.5 each iteration and overflows); the "
            "default is 0.8333",
        ),
        (
            "online_ipo",
            "lam:20",
            "lam: 20 is out of range for beta = 0.1: Online IPO needs 0 < lam < 2 / beta = 20 "
            "(the update scales the logits by 1 - lam beta = -1 each iteration and overflows); "
            "the default is 0.3846",  # beta / (beta^2 + L^2), L = 1/2,
        ),
        (
            "nash_md",
            "eta:100",
            "eta: Nash-MD needs eta_t * beta <= 1 (the mixture exponent 1 - eta_t beta must be "
            ">= 0); got eta_0 = 50 with beta = 0.1",
        ),
    ],
)
def test_bad_step_is_one_line_and_leaves_no_run_folder(capsys, tmp_path, agent, param, message):
    assert _one_line_error(capsys, _train(tmp_path, "--params", param, agent=agent)) == message
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_are_refused_for_every_agent_however_built(value):
    with pytest.raises(ConfigError, match=rf"^lam: must be a finite number; got {value}$"):
        OMWUConfig(lam=value)  # built directly, without build_config
    with pytest.raises(ConfigError, match=r"^lr: must be a finite number; got "):
        agents.make("nash_md", "nlhf/TinyTokenDuel-v0", lr=value)  # a token agent's config
    with pytest.raises(ConfigError, match=r"^eta: must be a finite number; got "):
        agents.make("sppo", "nlhf/RPS-v0", eta=value)


def test_omwu_step_bound_is_where_the_logits_overflow():
    """The bound ``lam beta < 2`` of agents.config.check_regularized_step, on the update itself:
    just inside it the logits stay bounded, just outside they overflow."""
    from agents.updates import omwu_step, softmax

    game = agents.make("omwu", "nlhf/RPS-v0").game
    rng = np.random.default_rng(0)
    l_ref = np.log(game.pi_ref).reshape(1, -1)

    def run(lam: float, steps: int = 20000) -> np.ndarray:
        l = rng.normal(size=(1, 3))
        g_prev = (game.P[0] @ softmax(l)[0])[None]
        with np.errstate(all="ignore"):
            for _ in range(steps):
                g = (game.P[0] @ softmax(l)[0])[None]
                l = omwu_step(l, l_ref, g, g_prev, lam, game.beta)
                g_prev = g
                if not np.all(np.isfinite(l)):
                    break
        return l

    assert np.all(np.abs(run(1.99 / game.beta)) < 1e4)
    assert not np.all(np.isfinite(run(2.05 / game.beta)))
    # the agent accepts the largest such step and trains without a non-finite logit
    agent = agents.make("omwu", "nlhf/RPS-v0", lam=1.99 / game.beta, init="random", seed=0)
    agent.learn(num_iterations=2000)
    assert np.all(np.isfinite(agent.log_pi))


# ------------------------------------------------------------------ device, seeds, folders
def test_device_torch_accepts_but_we_cannot_use_is_refused(capsys, tmp_path):
    with pytest.raises(
        EnvironmentSetupError,
        match=r"^--device 'meta': nlhf-zoo runs on 'cpu' or 'cuda\[:N\]', not on a 'meta' device$",
    ):
        check_device("meta")
    msg = _one_line_error(
        capsys, _train(tmp_path, "--device", "meta", agent="nash_md", env="nlhf/TinyTokenDuel-v0")
    )
    assert msg == "--device 'meta': nlhf-zoo runs on 'cpu' or 'cuda[:N]', not on a 'meta' device"
    assert not (tmp_path / "logs").exists()


def test_seed_beyond_64_bits_is_refused(capsys, tmp_path):
    argv = _train(tmp_path, "--seed", str(2**70), agent="nash_md", env="nlhf/TinyTokenDuel-v0")
    assert _one_line_error(capsys, argv) == (
        "--seed must be an integer <= 9,223,372,036,854,775,807; got 1,180,591,620,717,411,303,424"
    )
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("flag", ["--log-folder", "--tensorboard-log"])
def test_folder_under_a_file_is_refused(capsys, tmp_path, flag):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    argv = _train(tmp_path, flag, str(afile / "sub"))
    assert _one_line_error(capsys, argv) == (
        f"{flag} {afile / 'sub'}: lies under {afile}, which is a file, not a folder"
    )
    assert afile.read_text() == "mine"
    assert not (tmp_path / "logs").exists()


def test_tournament_negative_seed_is_refused(capsys, tmp_path):
    argv = ["tournament", "pi_ref", "uniform", "--seed", "-1", "--output-dir", str(tmp_path / "t")]
    assert _one_line_error(capsys, argv) == "--seed must be an integer >= 0; got -1"
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (
            "nan,0.5,0.5",
            "probability vector 'nan,0.5,0.5': entry 0 is nan; probabilities must be "
            "finite and >= 0",
        ),
        (
            "0.5,inf,0",
            "probability vector '0.5,inf,0': entry 1 is inf; probabilities must be finite and >= 0",
        ),
        (
            "0.5,0.6,-0.1",
            "probability vector '0.5,0.6,-0.1': entry 2 is -0.1; probabilities must "
            "be finite and >= 0",
        ),
        ("0.5,0.6,0.1", "probability vector '0.5,0.6,0.1': sums to 1.2, not 1"),
    ],
)
def test_bad_probability_vector_participant(capsys, tmp_path, vector, message):
    argv = ["tournament", "pi_ref", vector, "--output-dir", str(tmp_path / "t"), "--no-progress"]
    assert _one_line_error(capsys, argv) == message
    assert not (tmp_path / "t").exists()


def test_tournament_output_dir_naming_a_file_is_refused(capsys, tmp_path):
    afile = tmp_path / "results.csv"
    afile.write_text("a,b\n1,2\n")
    argv = ["tournament", "pi_ref", "uniform", "--output-dir", str(afile), "--no-progress"]
    assert _one_line_error(capsys, argv) == f"--output-dir {afile}: is a file, not a folder"
    assert afile.read_text() == "a,b\n1,2\n"


def test_plot_out_naming_an_existing_file_keeps_it(capsys, tmp_path):
    logs = tmp_path / "logs"
    assert main(_train(tmp_path)) == 0
    capsys.readouterr()
    saved = tmp_path / "figure.png"
    saved.write_bytes(b"the user's own figure")
    argv = ["plot", "--env", "nlhf/RPS-v0", "--log-folder", str(logs), "--out", str(saved)]
    assert _one_line_error(capsys, argv) == (
        f"--out {saved}: already exists; remove it or choose another path (nothing is overwritten)"
    )
    assert saved.read_bytes() == b"the user's own figure"
    folder = tmp_path / "figures"
    folder.mkdir()
    argv[-1] = str(folder)
    assert _one_line_error(capsys, argv) == (
        f"--out {folder}: is a folder; give the path of a new file"
    )
    argv[-1] = str(tmp_path / "new.png")  # a new path is written
    assert main(argv) == 0
    assert (tmp_path / "new.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_huge_n_duels_is_refused_before_allocating(capsys, tmp_path):
    argv = ["tournament", "pi_ref", "uniform", "--n-duels", str(10**12)]
    argv += ["--output-dir", str(tmp_path / "t"), "--no-progress"]
    assert _one_line_error(capsys, argv) == (
        f"--n-duels must be an integer <= {MAX_DUELS:,}; got 1,000,000,000,000"
    )
    assert not (tmp_path / "t").exists()
    for argv in (["eval", "pi_ref", "--env", "nlhf/RPS-v0", "--n-duels", str(10**12)],
                 ["eval", "pi_ref", "--env", "nlhf/RPS-v0", "--seed", str(2**70)]):  # fmt: skip
        assert "must be an integer <=" in _one_line_error(capsys, argv)
    from agents import arena

    with pytest.raises(ConfigError, match="num_duels must be at most 10,000,000 per pair"):
        arena.run(["pi_ref", "uniform"], "nlhf/RPS-v0", num_duels=10**12)


# ------------------------------------------------------------------ one notation, validate first
def test_env_kwargs_and_params_read_scientific_notation_alike(capsys, tmp_path):
    assert parse_params(["beta:1e-2", "eta:2E+1", "m:{beta: 5e-2}", "mode:sampled"]) == {
        "beta": 0.01,
        "eta": 20.0,
        "m": {"beta": 0.05},
        "mode": "sampled",
    }
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "nash_mp.yml").write_text("nlhf/UniformGame-v0:\n  env_kwargs: {beta: 2e-2}\n")
    assert load_yaml(conf / "nash_mp.yml")["nlhf/UniformGame-v0"]["env_kwargs"] == {"beta": 0.02}
    entry = resolve("nash_mp", "nlhf/UniformGame-v0", config_dir=conf)
    assert entry.env_kwargs == {"beta": 0.02}
    argv = _train(tmp_path, "--env-kwargs", "beta:1e-2", env="nlhf/UniformGame-v0")
    assert main(argv) == 0
    (run,) = (tmp_path / "logs" / "nash_mp").iterdir()
    assert yaml.safe_load((run / "config.yml").read_text())["env_kwargs"]["beta"] == 0.01


def test_demo_checks_its_arguments_before_training(capsys, tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--n-duels", "0", "--exact-queries", "10", "--num-queries", "2000"]
    argv += ["--output-dir", str(out), "--no-progress"]
    assert _one_line_error(capsys, argv) == "--n-duels must be an integer >= 1; got 0"
    assert not out.exists()


@pytest.mark.parametrize("env", ["nlhf/RPS-v0", "nlhf/TinyTokenDuel-v0"])
def test_agents_make_refuses_a_seed_beyond_64_bits(env):
    import agents
    from nlhf_envs.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"seed must be at most 2\*\*63 - 1; got 1180591620717411303424"
    ):
        agents.make("online_ipo", env, seed=2**70)


def test_plot_names_a_non_numeric_metrics_cell(tmp_path, capsys):
    logs = tmp_path / "logs"
    assert main(_train(tmp_path)) == 0
    capsys.readouterr()
    csv_path = next(logs.glob("nash_mp/RPS-v0_1/metrics.csv"))
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("game/queries")] = "abc"
    csv_path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    message = _one_line_error(capsys, ["plot", "--env", "nlhf/RPS-v0", "--log-folder", str(logs)])
    assert message.endswith(f"{csv_path}: line 2, column 'game/queries': 'abc' is not a number")


# ----------------------------------------------------------------- still tracebacks (issue 29)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("env_kwargs: abc\n", "field 'env_kwargs' must be a mapping; got 'abc'"),
        ("env_kwargs: [1, 2]\n", "field 'env_kwargs' must be a mapping; got [1, 2]"),
        (b"env_kwargs: {}\n# caf\xe9\n", "not UTF-8 text (byte 20: invalid continuation byte)"),
        ("env_kwargs: {a: [\n", "not valid YAML: "),
    ],
)
def test_a_damaged_config_yml_beside_a_participant_is_one_line(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    agents.make("nash_mp", "nlhf/RPS-v0", seed=0).save(run / "final.npz")
    cfg = run / "config.yml"
    text = "agent: nash_mp\nenv_id: nlhf/RPS-v0\n"
    cfg.write_bytes(text.encode() + (content if isinstance(content, bytes) else content.encode()))
    if isinstance(content, bytes):
        message = message.replace("byte 20", f"byte {len(text) + 20}")
    for argv in (["eval", str(run), "--n-duels", "10"],
                 ["tournament", str(run), "pi_ref", "--n-duels", "10", "--output-dir",
                  str(tmp_path / "out")]):  # fmt: skip
        got = _one_line_error(capsys, argv)
        assert got.startswith(f"{cfg}: {message}"), got
    assert not (tmp_path / "out").exists()


def test_ray_without_the_extra_and_a_missing_conf_dir_are_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as without the ray extra: import ray fails
    got = _one_line_error(capsys, ["tournament", "pi_ref", "uniform", "--ray", "--output-dir",
                                   str(tmp_path / "out")])  # fmt: skip
    assert got == "--ray: install the ray extra: pip install 'nlhf-zoo[ray]'"
    assert not (tmp_path / "out").exists()
    missing = tmp_path / "missing"
    assert _one_line_error(capsys, ["list", "--conf-dir", str(missing)]) == (
        f"--conf-dir {missing}: no such folder"
    )  # before: an empty list of zoo configs, exit 0
