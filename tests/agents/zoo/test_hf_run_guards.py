"""Runs on ``nlhf/HFTokenDuel-v0`` lose nothing and play nothing they were not trained on
(issue 29, item 2): a judge returning NaN stops ``train`` as Ctrl-C does, a changed part of the
game is named on ``--resume``, a LoRA adapter refuses a base model that changed, and folders left
by a killed ``final_hf/`` write or ``export`` are cleared on the next resume or export."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

import agents  # noqa: E402
from agents.zoo.cli import main  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
V = 24
W5 = 5


@pytest.fixture()
def parts(tmp_path):
    """A reference GPT-2 folder, a reward-model judge folder that rewards w5, and prompts (a
    fresh copy per test: the tests replace them)."""
    import transformers

    sys.path.insert(0, str(ROOT / "tests" / "nlhf_envs" / "text"))
    from hf_parts import tiny_gpt2, word_tokenizer

    root = tmp_path / "parts"
    tok = word_tokenizer(V)
    tiny_gpt2(V, seed=0).save_pretrained(root / "ref")
    tok.save_pretrained(root / "ref")
    config = transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    config.pad_token_id = 0
    rm = transformers.GPT2ForSequenceClassification(config)
    with torch.no_grad():
        for p in rm.parameters():
            p.zero_()
        rm.transformer.wte.weight[W5, 0] = 5.0
        rm.transformer.ln_f.weight.fill_(1.0)
        rm.score.weight[0, 0] = 3.0
    rm.save_pretrained(root / "judge")
    tok.save_pretrained(root / "judge")
    (root / "prompts.txt").write_text("\n".join(f"w{10 + i} w{11 + i}" for i in range(6)) + "\n")
    return root


def _args(root, logs, n, lora=False):
    args = ["train", "--no-progress", "-n", str(n), "--agent", "nash_mp", "--env",
            "nlhf/HFTokenDuel-v0", "--env-kwargs", f"reference:{root / 'ref'}",
            f"judge:{root / 'judge'}", f"prompts:{root / 'prompts.txt'}", "heldout_fraction:0.5",
            "max_prompt_tokens:4", "max_new_tokens:3", "--params", "batch_size:4",
            "inner_steps:1", "lr:0.01", "eval_every:0", "nash_eval_prompts:2",
            "nash_eval_samples:4", "--seed", "1", "--log-folder", str(logs)]  # fmt: skip
    if lora:
        args.insert(args.index("--seed"), "lora:{rank: 2, alpha: 4, target_modules: [c_attn]}")
    return args


def _run(logs):
    (run,) = sorted((logs / "nash_mp").iterdir())
    return run


def _rows(run):
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _one_line(capsys):
    err = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading bars
    assert err.startswith("nlhf-zoo: error: "), err
    return err


def _env(root):
    return HFTokenDuelEnv(
        reference=root / "ref", judge=root / "judge", prompts=root / "prompts.txt",
        heldout_fraction=0.5, max_prompt_tokens=4, max_new_tokens=3,
    )  # fmt: skip


def test_a_judge_returning_nan_stops_train_like_ctrl_c_with_the_state_saved(
    parts, tmp_path, monkeypatch, capsys
):
    from nlhf_envs.text.hf_judges import RewardModelJudge

    assert main(_args(parts, tmp_path / "two", 16)) == 0  # 2 iterations of 8 queries
    assert main(_args(parts, tmp_path / "four", 32)) == 0
    real, calls = RewardModelJudge.__call__, []

    def nan_in_iteration_three(self, prompts, pairs):  # 2 judged duels per Nash-MP iteration
        calls.append(len(pairs))
        out = real(self, prompts, pairs)
        return (
            out * float("nan") if len(calls) == 6 else out
        )  # the second half-step: after an update

    monkeypatch.setattr(RewardModelJudge, "__call__", nan_in_iteration_three)
    capsys.readouterr()
    assert main(_args(parts, tmp_path / "cut", 32)) == 2
    err = _one_line(capsys)
    run = _run(tmp_path / "cut")
    assert err == (
        "nlhf-zoo: error: judge RewardModelJudge returned nan for pair 0; expected a probability "
        f"(env_kwargs judge: {parts / 'judge'}); the run stopped after iteration 2 (16 queries), saved in "
        f"{run / 'final.npz'} (nlhf-zoo train --resume {run} continues it)"
    ), err
    monkeypatch.undo()
    # final.npz is the state after iteration 2, as the 2-iteration run left it (not the half-done
    # third iteration), and --resume finishes the run exactly as the uninterrupted one
    env = _env(parts)
    saved = agents.load(run / "final.npz", game=env)
    two = agents.load(_run(tmp_path / "two") / "final.npz", game=env)
    assert (saved.num_iterations, saved.queries_used) == (2, 16)
    for a, b in zip(saved.model.parameters(), two.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(saved.shard_rngs[0].get_state(), two.shard_rngs[0].get_state())
    assert _rows(run) == _rows(_run(tmp_path / "two"))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _rows(run) == _rows(_run(tmp_path / "four"))
    done = agents.load(run / "final.npz", game=env)
    full = agents.load(_run(tmp_path / "four") / "final.npz", game=env)
    for a, b in zip(done.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_names_the_part_of_the_game_that_changed(parts, tmp_path, capsys):
    import shutil

    sys.path.insert(0, str(ROOT / "tests" / "nlhf_envs" / "text"))
    from hf_parts import tiny_gpt2

    assert main(_args(parts, tmp_path, 8)) == 0
    run = _run(tmp_path)
    import yaml

    record = yaml.safe_load((run / "game.yml").read_text())
    assert record["parts"] == _env(parts).part_fingerprints()
    assert record["fingerprint"] == _env(parts).fingerprint()
    before = (run / "final.npz").read_bytes()
    saved = {name: (parts / name).read_bytes() for name in ("prompts.txt",)}
    # the prompt file edited
    (parts / "prompts.txt").write_text("w20 w21\nw22 w23\nw12 w13\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "-n", "16", "--no-progress"]) == 2
    err = _one_line(capsys)
    assert err.startswith(
        f"nlhf-zoo: error: --resume {run}: the prompts (prompts: {parts / 'prompts.txt'}) changed "
        "since the run started (fingerprint "
    ) and err.endswith(
        f"recorded in {run / 'game.yml'}): the run trained on the old one; restore it, or start "
        "a new run to train on the new one"
    ), err
    (parts / "prompts.txt").write_bytes(saved["prompts.txt"])
    # the judge folder replaced
    shutil.copytree(parts / "judge", tmp_path / "judge_kept")
    import transformers

    rm = transformers.AutoModelForSequenceClassification.from_pretrained(parts / "judge")
    with torch.no_grad():
        rm.score.weight.mul_(2.0)
    rm.save_pretrained(parts / "judge")
    assert main(["train", "--resume", str(run), "-n", "16", "--no-progress"]) == 2
    assert f"the judge (judge: {parts / 'judge'}) changed since the run started" in _one_line(
        capsys
    )
    shutil.rmtree(parts / "judge")
    shutil.copytree(tmp_path / "judge_kept", parts / "judge")
    # a run from before game.yml: the saved state's fingerprint names the change, never "damaged"
    (run / "game.yml").unlink()
    tiny_gpt2(V, seed=3).save_pretrained(parts / "ref")
    assert main(["train", "--resume", str(run), "-n", "16", "--no-progress"]) == 2
    err = _one_line(capsys)
    assert err.startswith(
        f"nlhf-zoo: error: --resume {run}: the game changed since {run / 'final.npz'} was saved "
        "(the reference model, tokenizer, judge, prompts or settings; fingerprint "
    ), err
    assert (run / "final.npz").read_bytes() == before  # nothing was written


def test_a_lora_adapter_refuses_a_base_model_that_changed(parts, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tests" / "nlhf_envs" / "text"))
    from hf_parts import tiny_gpt2

    assert main(_args(parts, tmp_path / "logs", 8, lora=True)) == 0
    folder = _run(tmp_path / "logs") / "final_hf"
    kwargs = ["--env-kwargs", f"reference:{parts / 'ref'}", f"judge:{parts / 'judge'}",
              f"prompts:{parts / 'prompts.txt'}", "heldout_fraction:0.5", "max_prompt_tokens:4",
              "max_new_tokens:3"]  # fmt: skip
    tour = ["tournament", f"lora={folder}", "pi_ref", "--env", "nlhf/HFTokenDuel-v0", *kwargs,
            "--n-duels", "4", "--no-progress"]  # fmt: skip
    assert main([*tour, "--output-dir", str(tmp_path / "t1")]) == 0
    # the base (the reference folder) replaced by another model of the same shapes: before, the
    # adapter played on it and an untrained model was ranked
    old = agents.load(_run(tmp_path / "logs") / "final.npz", game=_env(parts)).env.fingerprint()
    tiny_gpt2(V, seed=7).save_pretrained(parts / "ref")
    capsys.readouterr()
    assert main([*tour, "--output-dir", str(tmp_path / "t2")]) == 2
    err = _one_line(capsys)
    assert (
        err.startswith(
            f"nlhf-zoo: error: participant 'lora={folder}': the adapter {folder} was trained on the "
            f"base model {(parts / 'ref').resolve()} with weights fingerprint "
        )
        and "refusing to play the adapter on another base" in err
    ), err
    assert old != _env(parts).fingerprint()


_KILLED_WRITE = """
import os, signal, sys
import agents.text.backend as backend
from agents.zoo.cli import main
real = backend.replace_folder
def killed(tmp, folder):
    if sys.argv[1] == "between":  # between the two renames: the old folder moved aside
        folder.rename(folder.with_name(folder.name + ".old" + str(os.getpid())))
    os.kill(os.getpid(), signal.SIGKILL)
backend.replace_folder = killed
main(sys.argv[2:])
"""


def _killed(*argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITE, *argv], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.slow  # three processes killed by SIGKILL, each loading transformers (~90 s)
def test_folders_of_killed_writes_are_cleared_on_resume_and_export(parts, tmp_path, capsys):
    import json

    assert main(_args(parts, tmp_path / "logs", 8, lora=True)) == 0
    run = _run(tmp_path / "logs")
    adapter = (run / "final_hf" / "adapter_model.safetensors").read_bytes()
    # killed while writing final_hf/ (the new folder complete, not yet in place)
    _killed("inside", "train", "--resume", str(run), "-n", "16", "--no-progress")
    (first,) = [p.name for p in run.iterdir() if p.name.startswith("final_hf.")]
    assert first.startswith("final_hf.tmp") and (run / "final_hf").is_dir()
    # the next resume clears it, and is killed between the renames: final_hf/ itself is gone
    _killed("between", "train", "--resume", str(run), "-n", "24", "--no-progress")
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("final_hf"))
    assert len(names) == 2 and first not in names and not (run / "final_hf").exists()
    assert names[0].startswith("final_hf.old") and names[1].startswith("final_hf.tmp")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "-n", "32", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("left by a write that was killed") == 1, err  # .tmp was complete: in place
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("final_hf")) == ["final_hf"]
    assert json.loads((run / "final_hf" / "nlhf_base.json").read_text())["base_model"] == str(
        (parts / "ref").resolve()
    )
    assert (run / "final_hf" / "adapter_model.safetensors").read_bytes() != adapter
    # nlhf-zoo export killed while writing OUT: the next export clears OUT.tmp<pid> and writes
    out = tmp_path / "merged"
    _killed("inside", "export", str(run), str(out))
    (left,) = [p.name for p in tmp_path.iterdir() if p.name.startswith("merged")]
    assert left.startswith("merged.tmp") and not out.exists()
    assert main(["export", str(run), str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("merged")) == ["merged"]
    assert (out / "config.json").is_file()


def test_a_judge_failing_with_a_state_too_large_to_keep_resumes_from_the_newest_checkpoint(
    parts, tmp_path, monkeypatch, capsys
):
    """Above ``BOUNDARY_MAX_BYTES`` (full fine-tuning of a real model) the trainable state is not
    copied at every iteration: a failing judge stops the run without a new ``final.npz``, names
    the newest periodic checkpoint, and ``--resume`` from it finishes as the uninterrupted run."""
    from agents.zoo import train as zoo_train
    from nlhf_envs.text.hf_judges import RewardModelJudge

    assert main(_args(parts, tmp_path / "four", 32)) == 0
    real, calls = RewardModelJudge.__call__, []

    def nan_in_iteration_four(self, prompts, pairs):  # 2 judged duels per Nash-MP iteration
        calls.append(len(pairs))
        out = real(self, prompts, pairs)
        return out * float("nan") if len(calls) == 8 else out

    monkeypatch.setattr(RewardModelJudge, "__call__", nan_in_iteration_four)
    monkeypatch.setattr(zoo_train, "BOUNDARY_MAX_BYTES", 0)  # nothing is small enough to keep
    copies = []
    monkeypatch.setattr(
        zoo_train._Boundary, "restore", lambda self, agent: copies.append(agent) or agent
    )
    capsys.readouterr()
    args = _args(parts, tmp_path / "cut", 32)
    assert main(args[:1] + ["--save-freq", "2"] + args[1:]) == 2
    err = _one_line(capsys)
    run = _run(tmp_path / "cut")
    (ckpt,) = sorted((run / "checkpoints").glob("*.npz"))  # after iteration 2
    assert err.endswith(
        f"the run stopped; its trainable state is larger than 0 MiB and was not kept at every "
        f"iteration, so its newest saved state is {ckpt} (nlhf-zoo train --resume {run} "
        "continues it)"
    ), err
    assert not (run / "final.npz").exists() and copies == []  # nothing half-done was saved
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert _rows(run) == _rows(_run(tmp_path / "four"))
    env = _env(parts)
    done = agents.load(run / "final.npz", game=env)
    full = agents.load(_run(tmp_path / "four") / "final.npz", game=env)
    for a, b in zip(done.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_run_without_held_out_prompts_skips_its_final_evaluation_in_one_notice(
    parts, tmp_path, capsys
):
    """``heldout_fraction: 0`` (every prompt trained on) and ``eval_every: 0``: the run finishes
    (before: a traceback in the final evaluation, which reads held-out prompts) and says why it
    did not evaluate."""
    import yaml

    args = [
        a.replace("heldout_fraction:0.5", "heldout_fraction:0.0")
        for a in _args(parts, tmp_path, 16)
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert (
        "nlhf-zoo: the env has no held-out prompts (heldout_fraction: 0), so the final evaluation "
        "(on held-out prompts) is skipped"
    ) in err
    assert "Traceback" not in err
    run = _run(tmp_path)
    assert yaml.safe_load((run / "evaluation.yml").read_text()) == {"queries": 16, "iterations": 2}
