"""Fault injection: random SIGKILL / SIGINT of `train` and `tournament`, then resume and compare.

Every trial kills a real `nlhf-zoo` process at a random moment (start-up, training, saving,
between matches), then resumes it and checks that the result equals the uninterrupted run exactly.
"""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import agents

pytestmark = pytest.mark.slow

TRAIN = ["train", "--agent", "nash_mp", "--env", "nlhf/BiasedRPS-v0", "--params", "mode:sampled",
         "batch_size:16", "--num-queries", "24000", "--save-freq", "7", "--no-progress"]  # fmt: skip


def _cli(*args):
    return [sys.executable, "-m", "nlhf_zoo_cli", *args]  # the console script's entry point


def _lines(path):
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def _interrupted(cmd, sig, delay=0.0, wait_for=None, lines=0):
    """Start ``cmd``, wait until ``wait_for`` has ``lines`` lines (if given) plus ``delay`` s, signal."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while wait_for is not None and _lines(wait_for) < lines and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def test_killed_and_interrupted_training_resumes_bit_for_bit(tmp_path):
    ref_logs = tmp_path / "ref"
    subprocess.run(_cli(*TRAIN, "--log-folder", str(ref_logs)), check=True, capture_output=True)
    ref = agents.load(ref_logs / "nash_mp" / "BiasedRPS-v0_1" / "final.npz")
    ref_csv = (ref_logs / "nash_mp" / "BiasedRPS-v0_1" / "metrics.csv").read_text()
    rng = np.random.default_rng(13)
    resumed = 0
    for trial in range(10):
        logs = tmp_path / f"t{trial}"
        run = logs / "nash_mp" / "BiasedRPS-v0_1"
        sig = signal.SIGINT if trial % 2 else signal.SIGKILL
        cmd = _cli(*TRAIN, "--log-folder", str(logs))
        if trial < 2:  # during start-up
            code, err = _interrupted(cmd, sig, delay=rng.uniform(0.1, 1.5))
        else:  # during training: after a random number of logged iterations, at a random moment
            rows = int(rng.integers(1, 400))
            code, err = _interrupted(
                cmd, sig, rng.uniform(0, 0.05), wait_for=run / "metrics.csv", lines=rows
            )
        assert "Traceback" not in err, err
        if sig == signal.SIGINT:  # 130, or the interpreter's own SIGINT exit during start-up
            assert code in (0, 130, -signal.SIGINT), err
            assert err == "" or err.startswith("nlhf-zoo: interrupted"), err
        if not run.exists():
            continue  # killed before anything was validated and written: nothing to resume
        proc = subprocess.run(
            _cli("train", "--resume", str(run), "--no-progress"), capture_output=True, text=True
        )
        if proc.returncode == 2 and "no readable final.npz or checkpoint" in proc.stderr:
            continue  # killed before the first checkpoint: the run restarts from scratch
        assert proc.returncode == 0, proc.stderr
        final = agents.load(run / "final.npz")
        np.testing.assert_array_equal(final.log_pi, ref.log_pi)
        assert final.history == ref.history
        assert final.rng.bit_generator.state == ref.rng.bit_generator.state
        assert (run / "metrics.csv").read_text() == ref_csv
        assert not list(run.rglob(".tmp-*"))
        resumed += 1
    assert resumed >= 6


def test_killed_tournaments_resume_to_the_same_result(tmp_path):
    logs = tmp_path / "logs"
    for agent in ("nash_mp", "nash_md"):
        subprocess.run(
            _cli("train", "--agent", agent, "--env", "nlhf/BiasedRPS-v0", "--num-queries", "2000",
                 "--log-folder", str(logs), "--no-progress"),
            check=True,
        )  # fmt: skip
    runs = [str(logs / agent / "BiasedRPS-v0_1") for agent in ("nash_mp", "nash_md")]
    parts = [*runs, "pi_ref", "uniform"]
    base = [
        "tournament",
        *parts,
        "--n-duels",
        "2000000",
        "--no-progress",
        "--log-folder",
        str(logs),
    ]
    subprocess.run(_cli(*base, "--output-dir", str(tmp_path / "ref")), check=True)
    ref = json.loads((tmp_path / "ref" / "tournament.json").read_text())
    rng = np.random.default_rng(7)
    for trial in range(5):
        out = tmp_path / f"t{trial}"
        sig = signal.SIGINT if trial % 2 else signal.SIGKILL
        cmd = _cli(*base, "--output-dir", str(out))
        if trial == 0:
            _, err = _interrupted(cmd, sig, delay=rng.uniform(0.1, 1.5))
        else:
            log = out / "matches.jsonl"
            _, err = _interrupted(cmd, sig, rng.uniform(0, 0.2), wait_for=log, lines=trial)
        assert "Traceback" not in err, err
        subprocess.run(_cli(*base, "--output-dir", str(out)), check=True)
        got = json.loads((out / "tournament.json").read_text())
        assert got["win_rate"] == ref["win_rate"] and got["duels"] == ref["duels"]
        lines = (out / "matches.jsonl").read_text().splitlines()
        assert all(json.loads(line) for line in lines)
