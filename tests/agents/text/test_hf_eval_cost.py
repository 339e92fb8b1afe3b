"""Evaluation at the cost of a few training steps on ``nlhf/HFTokenDuel-v0``: ``nash_eval: off``
from the command line and from YAML, the final evaluation stopped by SIGTERM with the trained
state kept, estimated exploitability printed with its interval, the sample sizes held to a budget
derived from the training batch, and ``learn``'s progress per judged batch."""

from __future__ import annotations

import os
import re
import signal

import pytest
import yaml

pytest.importorskip("transformers")

import agents  # noqa: E402
from agents.zoo.cli import main  # noqa: E402
from agents.zoo.train import TrainingInterrupted, train_run  # noqa: E402

V = 24


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A reference GPT-2 folder, a random reward-model judge folder and a prompt file."""
    import torch
    import transformers

    from tests.nlhf_envs.text.hf_parts import tiny_gpt2, word_tokenizer

    root = tmp_path_factory.mktemp("hf_eval_parts")
    tok = word_tokenizer(V)
    tiny_gpt2(V, seed=0).save_pretrained(root / "ref")
    tok.save_pretrained(root / "ref")
    config = transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    config.pad_token_id = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        transformers.GPT2ForSequenceClassification(config).save_pretrained(root / "judge")
    tok.save_pretrained(root / "judge")
    (root / "prompts.txt").write_text("\n".join(f"w{10 + i} w{11 + i}" for i in range(8)) + "\n")
    return root


def _env_kwargs(root):
    return {
        "reference": str(root / "ref"),
        "judge": str(root / "judge"),
        "prompts": str(root / "prompts.txt"),
        "heldout_fraction": 0.5,
        "max_prompt_tokens": 4,
        "max_new_tokens": 3,
    }


PARAMS = {
    "batch_size": 4,
    "inner_steps": 1,
    "lr": 0.01,
    "eval_every": 1,
    "eval_prompts": 4,
    "nash_eval_prompts": 2,
    "nash_eval_samples": 4,
}


def _argv(root, logs, params=(), n=16):
    argv = ["train", "--agent", "nash_mp", "--env", "nlhf/HFTokenDuel-v0", "--no-progress"]
    argv += ["--env-kwargs", *(f"{k}:{v}" for k, v in _env_kwargs(root).items())]
    argv += ["--params", *(f"{k}:{v}" for k, v in PARAMS.items()), *params]
    return argv + ["-n", str(n), "--seed", "1", "--log-folder", str(logs)]


def _run(logs):
    (run,) = sorted((logs / "nash_mp").iterdir())
    return run


@pytest.mark.parametrize("word", ["off", "false", "'off'"])
def test_nash_eval_off_from_the_command_line_turns_every_nash_evaluation_off(
    parts, tmp_path, word, capsys
):
    assert main(_argv(parts, tmp_path, [f"nash_eval:{word}"])) == 0
    run = _run(tmp_path)
    assert yaml.safe_load((run / "config.yml").read_text())["config"]["nash_eval"] == "off"
    final = yaml.safe_load((run / "evaluation.yml").read_text())
    assert "eval/win_rate_ref_judge" in final
    assert not [k for k in final if "exploitability" in k or "kl_to_nash" in k]
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "eval/win_rate_ref_judge" in header and "exploitability" not in header
    assert "exploitability" not in capsys.readouterr().out


def test_nash_eval_off_unquoted_in_a_zoo_file(parts, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    entry = "\n".join(f"  {k}: {v}" for k, v in PARAMS.items())
    (conf / "nash_mp.yml").write_text(f"nlhf/HFTokenDuel-v0:\n{entry}\n  nash_eval: off\n")
    argv = _argv(parts, tmp_path / "logs")
    cut = argv.index("--params")
    argv = argv[:cut] + argv[cut + 1 + len(PARAMS) :] + ["--conf-dir", str(conf)]
    assert main(argv) == 0
    final = yaml.safe_load((_run(tmp_path / "logs") / "evaluation.yml").read_text())
    assert "eval/win_rate_ref_judge" in final and "eval/exploitability" not in final


def test_nash_eval_true_is_refused_with_the_reason(parts, tmp_path, capsys):
    assert main(_argv(parts, tmp_path, ["nash_eval:on"])) == 2
    err = capsys.readouterr().err
    assert "nash_eval: got True (YAML reads on, yes and true as a boolean)" in err


def test_train_prints_the_estimated_exploitability_with_its_interval(parts, tmp_path, capsys):
    assert main(_argv(parts, tmp_path)) == 0
    out = capsys.readouterr().out
    final = yaml.safe_load((_run(tmp_path) / "evaluation.yml").read_text())
    lo, hi = final["eval/exploitability_low"], final["eval/exploitability_high"]
    assert lo <= final["eval/exploitability"] <= hi and lo < hi
    line = f"final evaluation: eval/exploitability = {final['eval/exploitability']:.6g}"
    assert f"{line} (95% CI [{lo:.6g}, {hi:.6g}])" in out
    assert re.search(r"trained in [\d.]+ s; final evaluation in [\d.]+ s \(CPU", out)


def test_sigterm_stops_the_final_evaluation_and_resume_evaluates_the_trained_state(parts, tmp_path):
    kw = {"params": dict(PARAMS), "env_kwargs": _env_kwargs(parts), "num_queries": 16, "seed": 1}
    _, whole = train_run("nash_mp", "nlhf/HFTokenDuel-v0", log_folder=tmp_path / "a", **kw)
    seen = []

    def terminate_during_the_estimate(event):
        seen.append(event.task)
        if event.task.startswith("nash estimate") and seen.count(event.task) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal, through train's handler

    with pytest.raises(TrainingInterrupted, match="during the final evaluation") as caught:
        train_run(
            "nash_mp", "nlhf/HFTokenDuel-v0", log_folder=tmp_path / "b",
            progress=terminate_during_the_estimate, **kw,
        )  # fmt: skip
    assert caught.value.evaluating
    cut = caught.value.run_dir
    # the estimate stopped at its first step: no later event of it, no evaluation.yml
    first = next(k for k, t in enumerate(seen) if t.startswith("nash estimate"))
    assert len(seen) == first + 1
    assert (cut / "final.npz").is_file() and not (cut / "evaluation.yml").exists()
    assert agents.load(cut / "final.npz").num_iterations == 2  # trained to the budget
    train_run(None, None, resume=cut, progress=False)
    got = yaml.safe_load((cut / "evaluation.yml").read_text())
    want = yaml.safe_load((whole / "evaluation.yml").read_text())
    assert got == want and "eval/exploitability" in got


def test_the_estimate_is_held_to_a_budget_of_training_batches(parts):
    from agents.registry import resolve_target, user_env_kwargs
    from agents.text.evaluation import ESTIMATE_BUDGET_BATCHES, MIN_SUPPORT, estimate_sizes

    kwargs = _env_kwargs(parts)
    with user_env_kwargs("nlhf/HFTokenDuel-v0", kwargs):
        env = resolve_target("nlhf/HFTokenDuel-v0", kwargs)[1]
    agent = agents.make(
        "online_ipo", env, seed=0, batch_size=16, nash_eval_prompts=16, nash_eval_samples=32
    )
    C = len(env.prompts["heldout"])  # 4 prompts: the split caps the 16 asked for
    n = ESTIMATE_BUDGET_BATCHES * 2 * 16 // (5 * C)
    assert C == 4 and MIN_SUPPORT < n < 32
    assert estimate_sizes(agent, "heldout") == (16, n, 2 * n)
    # the answers it samples, C (n + 2m), fit the budget of training batches of 2 x 16 answers
    assert C * 5 * n <= ESTIMATE_BUDGET_BATCHES * 2 * 16
    small = agents.make("online_ipo", env, seed=0, batch_size=2, nash_eval_samples=32)
    assert estimate_sizes(small, "heldout")[1] == MIN_SUPPORT  # never below the floor
    exact = agents.make(
        "online_ipo", env, seed=0, batch_size=16, nash_eval="estimate", nash_eval_samples=32
    )
    assert estimate_sizes(exact, "heldout") == (16, 32, 64)  # "estimate": the config's sizes


def test_learn_reports_progress_per_judged_batch_with_queries_per_second():
    agent = agents.make(
        "nash_mp", "nlhf/TinyTokenDuel-v0", seed=0, batch_size=4, inner_steps=2, eval_every=0
    )
    events = []
    agent.learn(num_iterations=2, progress=events.append)
    # a Nash-MP iteration at inner_steps 2 judges 4 batches: one event each, one per iteration
    assert [e.done for e in events] == [4, 8, 12, 16, 16, 20, 24, 28, 32, 32]
    assert {e.total for e in events} == {32} and {e.unit for e in events} == {"queries"}
    assert all(e.info["queries_per_s"] > 0 for e in events)
    assert [e.info["iterations"] for e in events][-1] == 2.0
    silent = agents.make(
        "nash_mp", "nlhf/TinyTokenDuel-v0", seed=0, batch_size=4, inner_steps=2, eval_every=0
    )
    silent.learn(num_iterations=2)  # off by default: the same training
    assert [r["game/queries"] for r in silent.history] == [16.0, 32.0]
    assert not hasattr(silent, "_learn_progress") and not hasattr(agent, "_learn_progress")


def test_load_and_eval_rebuild_a_hugging_face_run_s_env_as_resume_does(parts, tmp_path, capsys):
    import torch

    assert main(_argv(parts, tmp_path, n=16)) == 0
    run = _run(tmp_path)
    agent = agents.load(run / "final.npz")  # no game=: the run's config.yml rebuilds the env
    assert agent.backend.kind == "hf" and agent.num_iterations == 2
    assert agent.env.fingerprint() == agents.load(run / "final.npz").env.fingerprint()
    from agents.run_env import hf_env_of_run, run_config_of

    env = hf_env_of_run(run_config_of(run / "final.npz")[1])
    given = agents.load(run / "final.npz", game=env)
    ids = torch.tensor([[3, 10, 11, 4]])
    with torch.no_grad():
        assert torch.equal(agent.model(ids)[0], given.model(ids)[0])
    capsys.readouterr()
    assert main(["eval", str(run), "--n-duels", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{run} vs pi_ref on nlhf/HFTokenDuel-v0: 8 answer pairs" in out
    assert "the 4 prompts of the heldout split" in out and "no ground truth" in out
    assert re.search(r"estimated Nash metrics \(beta = 0\.1\): exploitability \S+ \(95% CI", out)
    # against another opponent the run's env plays the match: its models are loaded once
    from collections import Counter

    from nlhf_envs.text import hf_folders

    loads: Counter = Counter()
    real = hf_folders._load

    def counted(loader, path, *args, **kwargs):
        loads[loader.__name__] += 1
        return real(loader, path, *args, **kwargs)

    hf_folders._load = counted
    try:
        argv = ["eval", str(run), "--opponent", "uniform", "--n-duels", "8", "--no-progress"]
        assert main(argv) == 0
    finally:
        hf_folders._load = real
    assert loads["AutoModelForCausalLM"] == 1 and loads["AutoModelForSequenceClassification"] == 1
    assert "win rate of" in capsys.readouterr().out
    # a checkpoint outside its run folder still needs its env, and says how to give it
    lone = tmp_path / "lone.npz"
    lone.write_bytes((run / "final.npz").read_bytes())
    with pytest.raises(agents.checkpoint.CheckpointError, match="needs its env"):
        agents.load(lone)


def test_export_only_loads_merges_and_saves_and_refuses_a_stale_folder(parts, tmp_path, capsys):
    import shutil
    from collections import Counter

    import torch
    import transformers

    from nlhf_envs.text import hf_folders

    lora = "lora:{rank: 2, alpha: 4, target_modules: [c_attn]}"
    assert main(_argv(parts, tmp_path / "logs", [lora], n=8)) == 0
    run = _run(tmp_path / "logs")
    shutil.copytree(run / "final_hf", tmp_path / "old_hf")  # the adapter after iteration 1
    assert main(["train", "--resume", str(run), "-n", "16", "--no-progress"]) == 0
    loads: Counter = Counter()
    real = hf_folders._load

    def counted(loader, path, *args, **kwargs):
        loads[loader.__name__] += 1
        return real(loader, path, *args, **kwargs)

    hf_folders._load = counted
    try:
        assert main(["export", str(run), str(tmp_path / "merged")]) == 0
    finally:
        hf_folders._load = real
    # the adapter's base and the tokenizer: no judge, no environment, no agent
    assert loads == Counter({"AutoModelForCausalLM": 1, "AutoTokenizer": 1})
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    agent = agents.load(run / "final.npz")
    ids = torch.tensor([[3, 10, 11, 4, 5]])
    with torch.no_grad():
        assert (merged(input_ids=ids).logits.float() - agent.model(ids)[0]).abs().max() <= 1e-5
    # a final_hf/ left behind by an interrupted save is refused, not exported
    shutil.rmtree(run / "final_hf")
    shutil.copytree(tmp_path / "old_hf", run / "final_hf")
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "stale")]) == 2
    assert "final_hf/ does not hold the policy of final.npz" in capsys.readouterr().err
    assert not (tmp_path / "stale").exists()
