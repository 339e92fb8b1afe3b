"""``nlhf-zoo train`` on several processes (issue 31, items 1-3): ``torchrun --nproc_per_node 2
-m nlhf_zoo_cli train ...`` on two CPU (``gloo``) processes trains ONE run (one folder, written by
the first process) equal to one process with ``shards: 2``: weights and training statistics to
1e-6 under DDP, 1e-5 under FSDP (``distributed: fsdp``, whose ``final_hf/`` is a plain
``save_pretrained`` folder); ``--resume`` continues it exactly. The game is ``nlhf/HFTokenDuel-v0`` on the tiny world's GPT-2 export."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("transformers")

from agents.zoo.cli import main  # noqa: E402
from tests.agents.zoo.dist_parts import env_kwargs, tiny_world_parts  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
PARAMS = [
    "batch_size:8",
    # plain SGD: Adam divides each gradient by its running size, so a coordinate whose gradient
    # is zero up to rounding (the key biases) moves by +-lr on either side: noise, not a difference
    "optimizer:sgd",
    "lr:0.01",
    "eval_every:1",
    "eval_prompts:4",
    "nash_eval_prompts:2",
    "nash_eval_samples:4",
    "gradient_accumulation_steps:2",  # DDP's no_sync / FSDP's deferred reduce-scatter
]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny_world_parts(tmp_path_factory.mktemp("tiny_hf"))


def _args(parts, logs, n, agent, extra=(), resume=None):
    args = ["train", "--no-progress", "-n", str(n)]
    if resume is not None:
        return [*args, "--resume", str(resume)]
    return [
        *args, "--agent", agent, "--env", "nlhf/HFTokenDuel-v0", "--env-kwargs",
        *env_kwargs(parts), "--seed", "1", "--save-freq", "2", "--eval-freq", "2",
        "--log-folder", str(logs), "--params", *PARAMS, *extra,
    ]  # fmt: skip


def _torchrun(args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), "-m", "nlhf_zoo_cli", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _run_dir(logs, agent):
    (run,) = sorted((logs / agent).iterdir())  # ONE run folder
    return run


def _rows(run):
    with open(run / "metrics.csv") as fh:
        return [
            {k: float(v) for k, v in r.items() if v and not k.startswith("time/")}
            | {"time/iterations": float(r["time/iterations"])}
            for r in csv.DictReader(fh)
        ]


def _files(run):
    return sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file() and "tb" not in p.parts and p.name != ".lock"
    )


def _weights(folder):
    from safetensors.numpy import load_file

    name = "adapter_model" if (folder / "adapter_config.json").is_file() else "model"
    return load_file(str(folder / f"{name}.safetensors"))


def _next_token_probs(folder):
    """The saved policy's next-token probabilities on every prefix of a fixed batch of token
    sequences (what the policy is; weights that do not change it, such as the key biases, whose
    gradient is zero and which Adam moves by rounding noise, are not compared)."""
    import torch
    import transformers

    if (folder / "adapter_config.json").is_file():  # a LoRA run: the adapter on its base
        from peft import AutoPeftModelForCausalLM

        lm = AutoPeftModelForCausalLM.from_pretrained(folder).eval()
    else:
        lm = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(
        0, lm.config.vocab_size, (16, 10), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        return torch.softmax(
            lm(ids, attention_mask=torch.ones_like(ids)).logits.float(), -1
        ).numpy()


#: the estimated evaluation metrics (a few samples per prompt, their intervals) magnify float
#: rounding of the weights by about 100: they are compared at this relative tolerance
ESTIMATE_TOL = 1e-4


def _close(a, b, key, tol):
    tol = ESTIMATE_TOL if key.startswith("eval/") else tol
    assert abs(a - b) <= tol * max(1.0, abs(a)), (key, a, b)


def _assert_same_run(one, many, tol):
    assert _files(one) == _files(many)
    rows_one, rows_many = _rows(one), _rows(many)
    assert len(rows_one) == len(rows_many)
    for a, b in zip(rows_one, rows_many, strict=True):
        assert set(a) == set(b)
        for key in a:
            _close(a[key], b[key], key, tol)
    final_one = yaml.safe_load((one / "evaluation.yml").read_text())
    final_many = yaml.safe_load((many / "evaluation.yml").read_text())
    assert set(final_one) == set(final_many)
    for key, value in final_one.items():
        _close(value, final_many[key], key, tol)
    for name in ("final_hf", "best_model_hf"):  # plain save_pretrained folders
        w_one, w_many = _weights(one / name), _weights(many / name)
        assert set(w_one) == set(w_many)
        for key, value in w_one.items():
            np.testing.assert_allclose(w_many[key], value, rtol=0, atol=tol, err_msg=key)
        np.testing.assert_allclose(
            _next_token_probs(many / name), _next_token_probs(one / name), atol=tol
        )
    with np.load(one / "evaluations.npz") as a, np.load(many / "evaluations.npz") as b:
        for key in a.files:
            np.testing.assert_allclose(b[key], a[key], rtol=ESTIMATE_TOL, atol=tol)


LORA = "lora:{rank: 2, alpha: 4, target_modules: [c_attn]}"


@pytest.mark.slow
@pytest.mark.parametrize(("agent", "extra", "tol"), [
    ("online_ipo", ["distributed:ddp"], 1e-6),
    ("nash_md", ["distributed:fsdp"], 1e-5),
    # DDP of a LoRA adapter (its weights only) under activation checkpointing
    ("nash_mp", [LORA, "gradient_checkpointing:true", "inner_steps:1"], 1e-6),
], ids=["online_ipo-ddp", "nash_md-fsdp", "nash_mp-lora-ddp"])  # fmt: skip
def test_torchrun_train_on_two_processes_is_one_process_with_two_shards(
    parts, tmp_path, monkeypatch, capfd, agent, extra, tol
):
    logs_one, logs_two = tmp_path / "one", tmp_path / "two"
    assert main(_args(parts, logs_one, 32, agent, extra=[*extra, "shards:2"])) == 0
    proc = _torchrun(_args(parts, logs_two, 32, agent, extra=extra))  # shards: the 2 processes
    assert proc.stdout.count(f"trained {agent} (32 queries)") == 1  # the first process prints
    one, two = _run_dir(logs_one, agent), _run_dir(logs_two, agent)
    _assert_same_run(one, two, tol)
    moved = np.abs(_next_token_probs(two / "final_hf") - _next_token_probs(parts / "ref")).max()
    assert moved > 1e-3  # it trained: the equality is not that of two untouched copies
    # --resume on two processes (launched by `nlhf-zoo train --nproc 2`, which relaunches the
    # command under torchrun) continues the run as one process continues its own
    assert main(_args(parts, None, 48, agent, resume=one)) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)
    capfd.readouterr()
    assert main([*_args(parts, None, 48, agent, resume=two), "--nproc", "2"]) == 0
    assert capfd.readouterr().out.count(f"resumed {agent} (48 queries)") == 1
    assert _rows(two)[-1]["game/queries"] == 48
    _assert_same_run(one, two, tol)


@pytest.mark.slow
def test_torchrun_train_refuses_in_one_line_and_writes_nothing(parts, tmp_path):
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nlhf_zoo_cli", *_args(parts, logs, 32, "online_ipo", extra=["shards:3"])]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nlhf-zoo: error:")]
    assert errors == ["nlhf-zoo: error: batch_size: 8 is not a multiple of shards: 3 (in --params)"]
    assert "[rank0]" not in proc.stderr and "[rank1]" not in proc.stderr  # no worker traceback
    assert "exitcode  : 2" in proc.stderr  # the first process's status (the other: 0, or stopped)
    assert "SIGABRT" not in proc.stderr  # both left the process group in order
    assert not logs.exists()  # nothing written
