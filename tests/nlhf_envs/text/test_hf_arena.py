"""Tournaments on ``nlhf/HFTokenDuel-v0``: ``transformers`` models, ``pi_ref`` and ``uniform`` as
participants of :func:`agents.arena.run`, and saved model folders from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from hf_parts import tiny_gpt2, word_tokenizer  # noqa: E402

from agents import arena  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402

torch.set_num_threads(1)
V = 64
W5 = 5


def w5_judge(prompts, pairs):
    """Prefers the answer with more ``w5`` words: ``sigmoid(2 (count_a - count_b))``."""
    return [
        1.0 / (1.0 + np.exp(-2.0 * (a.split().count("w5") - b.split().count("w5"))))
        for a, b in pairs
    ]


def _env_kwargs(model, tok):
    return {
        "reference": model,
        "tokenizer": tok,
        "judge": w5_judge,
        "prompts": ["w10 w11", "w12", "w13 w14 w15"],
        "max_prompt_tokens": 4,
        "max_new_tokens": 3,
    }


def test_arena_ranks_transformers_models_and_pi_ref():
    tok, ref = word_tokenizer(V), tiny_gpt2(V, seed=0)
    # writes only w5: the judge's favourite
    w5_writer = HFPolicy(tiny_gpt2(V, seed=1), suppress_tokens=[t for t in range(V) if t != W5])
    result = arena.run(
        {
            "w5_writer": w5_writer,
            "other_model": tiny_gpt2(V, seed=2),
            "pi_ref": "pi_ref",
            "uniform": "uniform",
        },
        "nlhf/HFTokenDuel-v0",
        env_kwargs=_env_kwargs(ref, tok),
        num_duels=30,
        seed=0,
    )
    names = result.names
    i = names.index("w5_writer")
    for j, other in enumerate(names):
        if j != i:
            assert result.win_rate[i, j] > 0.8, (other, result.win_rate[i, j])
            assert result.ci_low[i, j] > 0.5
    off = ~np.eye(4, dtype=bool)
    assert np.allclose((result.win_rate + result.win_rate.T)[off], 1.0, atol=1e-12)
    # the same seed gives the same tournament
    again = arena.run(
        {
            "w5_writer": w5_writer,
            "other_model": tiny_gpt2(V, seed=2),
            "pi_ref": "pi_ref",
            "uniform": "uniform",
        },
        "nlhf/HFTokenDuel-v0",
        env_kwargs=_env_kwargs(ref, tok),
        num_duels=30,
        seed=0,
    )
    assert np.array_equal(result.win_rate, again.win_rate)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders of a reference, a w5-writing model, another model, a reward-model judge that
    rewards w5, and a prompt file."""
    import transformers

    tmp_path = tmp_path_factory.mktemp("hf_folders")
    tok = word_tokenizer(V)
    for name, seed in (("ref", 0), ("model_a", 1), ("model_b", 2)):
        model = tiny_gpt2(V, seed=seed)
        if name == "model_a":  # a plain GPT-2 folder whose model always writes w5
            with torch.no_grad():
                model.transformer.ln_f.weight.zero_()
                model.transformer.ln_f.bias.zero_()
                model.transformer.ln_f.bias[0] = 10.0
                model.transformer.wte.weight[:, 0] = 0.0
                model.transformer.wte.weight[W5, 0] = 10.0  # logit 100 for w5, 0 for the rest
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    config = transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    config.pad_token_id = 0
    rm = transformers.GPT2ForSequenceClassification(config)
    with torch.no_grad():
        for p in rm.parameters():
            p.zero_()
        rm.transformer.wte.weight[W5, 0] = 5.0  # the last token's first feature ...
        rm.transformer.ln_f.weight.fill_(1.0)
        rm.score.weight[0, 0] = 3.0  # ... is the reward (about 8 for w5, 0 for other tokens)
    rm.save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ("w10 w11", "w12", "w13 w14"))
    )
    return tmp_path


def _env_args(folder):
    return [
        "--env",
        "nlhf/HFTokenDuel-v0",
        "--env-kwargs",
        f"reference:{folder / 'ref'}",
        f"judge:{folder / 'judge'}",
        f"prompts:{folder / 'prompts.jsonl'}",
        "max_prompt_tokens:4",
        "max_new_tokens:2",
    ]


def test_tournament_command_ranks_saved_hf_models_and_pi_ref(saved, tmp_path, capsys):
    from agents.zoo.cli import main

    out = tmp_path / "tour"
    code = main(
        ["tournament", f"a={saved / 'model_a'}", f"b={saved / 'model_b'}", "pi_ref"]
        + _env_args(saved)
        + ["--n-duels", "20", "--output-dir", str(out), "--no-progress"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "tournament on nlhf/HFTokenDuel-v0" in text
    data = json.loads((out / "tournament.json").read_text())
    assert sorted(data["names"]) == ["a", "b", "pi_ref"]
    wr = np.array(data["win_rate"])
    off = ~np.eye(3, dtype=bool)
    assert np.all((wr[off] >= 0) & (wr[off] <= 1))
    assert np.allclose((wr + wr.T)[off], 1.0, atol=1e-9)
    a = data["names"].index("a")
    assert all(wr[a, j] >= 0.9 for j in range(3) if j != a)  # the w5 writer wins
    assert "| 1 | a |" in text  # ranked first


def test_eval_command_takes_a_saved_hf_model_against_pi_ref(saved, capsys):
    from agents.zoo.cli import main

    args = ["eval", str(saved / "model_a")] + _env_args(saved) + ["--n-duels", "20"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"win rate of {saved / 'model_a'} vs pi_ref on nlhf/HFTokenDuel-v0: 1.0000" in out
    assert (
        main(
            ["eval", str(saved / "model_b"), "--opponent", str(saved / "model_a")]
            + _env_args(saved)
            + ["--n-duels", "10"]
        )
        == 0
    )
    assert "0.0000 (95% CI [0.0000," in capsys.readouterr().out


def test_peft_adapter_folders_are_participants(tmp_path):
    peft = pytest.importorskip("peft")
    import transformers

    from agents.zoo.hf_participants import load_hf_participant
    from nlhf_envs.errors import ConfigError

    base_dir, lora_dir = tmp_path / "base", tmp_path / "lora"
    tiny_gpt2(V, seed=4).save_pretrained(base_dir)
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    config = peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    lora = peft.get_peft_model(base, config)
    lora.save_pretrained(lora_dir)  # a fresh adapter: B = 0, so exactly the base model
    ids = torch.tensor([[5, 6, 7]])
    loaded = load_hf_participant(lora_dir, "lora")
    plain = load_hf_participant(base_dir, "base")
    assert type(loaded).__name__ == "PeftModelForCausalLM"
    with torch.no_grad():
        assert torch.equal(HFPolicy(loaded)(ids)[0], HFPolicy(plain)(ids)[0])
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    lora.save_pretrained(lora_dir)
    trained = load_hf_participant(lora_dir, "lora")
    with torch.no_grad():
        diff = (HFPolicy(trained)(ids)[0] - HFPolicy(plain)(ids)[0]).abs().max()
    assert diff > 1e-3
    assert load_hf_participant(tmp_path, "x") is None  # not a model folder: the zoo's checkpoints
    cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "gpt2"
    (lora_dir / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ConfigError,
        match=r"^participant 'lora': the adapter's base model 'gpt2' is not a local folder \(nothing is downloaded\)$",
    ):
        load_hf_participant(lora_dir, "lora")
    seq = tmp_path / "seq"
    transformers.GPT2ForSequenceClassification(
        transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2)
    ).save_pretrained(seq)
    with pytest.raises(
        ConfigError,
        match=r"^participant 'seq': .*seq holds a GPT2ForSequenceClassification, not a causal LM$",
    ):
        load_hf_participant(seq, "seq")


@pytest.mark.slow
def test_the_example_script_runs_end_to_end(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "examples" / "hf_token_duel.py"
    spec = importlib.util.spec_from_file_location("hf_token_duel_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path / "demo"), "--n-duels", "10"]) == 0
    data = json.loads((tmp_path / "demo" / "tournament" / "tournament.json").read_text())
    a = data["names"].index("model_a")
    assert all(data["win_rate"][a][j] == 1.0 for j in range(3) if j != a)


def test_a_changed_judge_folder_replays_the_logged_matches(saved, tmp_path, capsys):
    """The resume key holds the env's content fingerprint: the same paths with another judge's
    weights replay every match instead of reusing the log (and the same files reuse all)."""
    import shutil

    import transformers

    from agents.zoo.cli import main

    folder = tmp_path / "parts"
    shutil.copytree(saved, folder, ignore=shutil.ignore_patterns("tour*"))
    out = tmp_path / "tour"
    argv = ["tournament", f"a={folder / 'model_a'}", "pi_ref", *_env_args(folder),
            "--n-duels", "20", "--output-dir", str(out), "--no-progress"]  # fmt: skip
    summaries = []
    for change in (False, False, True):
        if change:  # the judge now prefers every token but w5
            rm = transformers.GPT2ForSequenceClassification.from_pretrained(folder / "judge")
            with torch.no_grad():
                rm.score.weight.neg_()
            rm.save_pretrained(folder / "judge")
        assert main(argv) == 0
        summaries.append(
            next(line for line in capsys.readouterr().out.splitlines() if "reused" in line)
        )
    assert summaries[0].startswith("1 of 1 matches played, 0 reused")
    assert summaries[1].startswith("0 of 1 matches played, 1 reused")
    assert summaries[2].startswith("1 of 1 matches played, 0 reused")
