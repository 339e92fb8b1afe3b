"""Data-parallel processes (issue 22, item 4): two ``gloo`` processes under ``torchrun`` train the
same policy as one process with the same global batch (``shards=2``), to 1e-6 on the exact Nash
metrics, for Nash-MP, Online IPO and Nash-MD; the checkpoint is written once and resumes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import agents  # noqa: E402
from agents.config import ConfigError  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "examples" / "hf_data_parallel.py"
NAMES = ("nash_mp", "online_ipo", "nash_md")


def _example():
    spec = importlib.util.spec_from_file_location("hf_data_parallel", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    out, save = tmp_path / "dp.json", tmp_path / "ckpt"
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(SCRIPT), "--agent", *NAMES, "--iterations", "8", "--batch-size", "8",
        "--out", str(out), "--save", str(save),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env_vars, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("on 2 process(es)") == len(NAMES)  # printed by the first process only
    dp = json.loads(out.read_text())
    env = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    module = _example()
    for name in NAMES:
        one = module.train(name, env, iterations=8, batch_size=8, shards=2, seed=0)
        assert len(dp[name]) == len(one.history) == 8
        for row_dp, row_one in zip(dp[name], one.history, strict=True):
            assert set(row_dp) == set(row_one)
            for key in ("eval/exploitability", "eval/kl_to_nash"):
                assert abs(row_dp[key] - row_one[key]) <= 1e-6, (name, key)
            for key, value in row_one.items():
                if not key.startswith("time/"):
                    assert row_dp[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (name, key)
        assert dp[name][-1]["game/queries"] == one.queries_used  # counted globally
        # the checkpoint of the 2-process run, written once, resumes in one process
        resumed = agents.load(save / f"{name}.npz", game=env)
        assert resumed.num_iterations == 8 and resumed.queries_used == one.queries_used
        resumed.learn(num_iterations=1)
        one.learn(num_iterations=1)
        for key in ("eval/exploitability", "eval/kl_to_nash"):
            assert abs(resumed.history[-1][key] - one.history[-1][key]) <= 1e-6
    assert sorted(p.name for p in save.iterdir()) == sorted(
        [f"{n}.npz" for n in NAMES] + [f"{n}_hf" for n in NAMES]
    )


def test_one_shard_is_the_unsharded_run_and_two_shards_differ():
    env = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    module = _example()
    plain = agents.make("online_ipo", env, seed=0, batch_size=8, eval_every=1, eval_prompts=8)
    plain.learn(num_iterations=2)
    one = module.train("online_ipo", env, iterations=2, batch_size=8, shards=1, seed=0)
    two = module.train("online_ipo", env, iterations=2, batch_size=8, shards=2, seed=0)
    assert [r["eval/kl_to_nash"] for r in one.history] == [
        r["eval/kl_to_nash"] for r in plain.history
    ]
    assert not np.allclose(
        [r["eval/kl_to_nash"] for r in two.history], [r["eval/kl_to_nash"] for r in one.history]
    )


def test_shards_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"batch_size: 6 is not a multiple of shards: 4"):
        agents.make("nash_md", "nlhf/TinyTokenDuel-v0", batch_size=6, shards=4)
    with pytest.raises(ConfigError, match=r"shards: must be an integer >= 1"):
        agents.make("nash_md", "nlhf/TinyTokenDuel-v0", shards=0)
