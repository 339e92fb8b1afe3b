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


def _interrupted(cmd, delay, sig):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    for trial in range(8):
        logs = tmp_path / f"t{trial}"
        sig = signal.SIGINT if trial % 2 else signal.SIGKILL
        code, err = _interrupted(_cli(*TRAIN, "--log-folder", str(logs)), rng.uniform(0.5, 6), sig)
        assert "Traceback" not in err, err
        run = logs / "nash_mp" / "BiasedRPS-v0_1"
        if sig == signal.SIGINT:
            assert code in (0, 130), err
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
    assert resumed >= 3


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
    base = ["tournament", *parts, "--n-duels", "200000", "--no-progress", "--log-folder", str(logs)]
    subprocess.run(_cli(*base, "--output-dir", str(tmp_path / "ref")), check=True)
    ref = json.loads((tmp_path / "ref" / "tournament.json").read_text())
    rng = np.random.default_rng(7)
    for trial in range(4):
        out = tmp_path / f"t{trial}"
        sig = signal.SIGINT if trial % 2 else signal.SIGKILL
        _, err = _interrupted(_cli(*base, "--output-dir", str(out)), rng.uniform(0.2, 5.0), sig)
        assert "Traceback" not in err, err
        subprocess.run(_cli(*base, "--output-dir", str(out)), check=True)
        got = json.loads((out / "tournament.json").read_text())
        assert got["win_rate"] == ref["win_rate"] and got["duels"] == ref["duels"]
        lines = (out / "matches.jsonl").read_text().splitlines()
        assert all(json.loads(line) for line in lines)
