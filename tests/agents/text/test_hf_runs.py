"""Hugging Face run folders (issue 22, item 5): ``nlhf-zoo train --env nlhf/HFTokenDuel-v0``
writes the policy as ``save_pretrained`` output next to its checkpoints, plain ``transformers`` /
``peft`` load it, ``--resume`` continues bit for bit, and the folder is a tournament participant."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

import agents  # noqa: E402
from agents.checkpoint import CheckpointError  # noqa: E402
from agents.zoo.cli import main  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

V = 24
W5 = 5


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A reference GPT-2 folder, a reward-model judge folder that rewards w5, and prompts."""
    import transformers

    from tests.nlhf_envs.text.hf_parts import tiny_gpt2, word_tokenizer

    root = tmp_path_factory.mktemp("hf_parts")
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
    prompts = [f"w{10 + i} w{11 + i}" for i in range(6)]
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return root


def _env_kwargs(root):
    return [
        f"reference:{root / 'ref'}",
        f"judge:{root / 'judge'}",
        f"prompts:{root / 'prompts.txt'}",
        "heldout_fraction:0.5",
        "max_prompt_tokens:4",
        "max_new_tokens:3",
    ]


PARAMS = [
    "batch_size:4",
    "inner_steps:1",
    "lr:0.01",
    "eval_every:1",
    "eval_prompts:4",
    "nash_eval_prompts:2",
    "nash_eval_samples:4",
]
LORA = "lora:{rank: 2, alpha: 4, target_modules: [c_attn]}"


def _train(root, logs, n, extra=(), resume=None):
    args = ["train", "--no-progress", "-n", str(n)]
    if resume is None:
        args += ["--agent", "nash_mp", "--env", "nlhf/HFTokenDuel-v0", "--env-kwargs"]
        args += _env_kwargs(root) + ["--params", *PARAMS, *extra]
        args += ["--seed", "1", "--save-freq", "1", "--log-folder", str(logs)]
    else:
        args += ["--resume", str(resume)]
    assert main(args) == 0


def _rows(run):
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [
        {k: v for k, v in r.items() if not k.startswith("time/") or k == "time/iterations"}
        for r in rows
    ]


def _run_dir(logs):
    (run,) = sorted((logs / "nash_mp").iterdir())
    return run


def test_lora_run_folder_loads_outside_nlhf_zoo_and_resumes_bit_for_bit(parts, tmp_path):
    import peft
    import transformers

    _train(parts, tmp_path / "full", 32, [LORA])  # 8 queries per iteration: 4 iterations
    full = _run_dir(tmp_path / "full")
    _train(parts, tmp_path / "cut", 16, [LORA])  # 2 iterations, then resumed to 4
    cut = _run_dir(tmp_path / "cut")
    _train(parts, None, 32, resume=cut)
    assert len(_rows(full)) == 4
    assert _rows(cut) == _rows(full)

    # the adapter folder: plain transformers + peft load it, on the env's reference folder
    folder = full / "final_hf"
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert not list(folder.glob("*.npz")) and not list(folder.glob("*.bin"))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == (parts / "ref").resolve()
    base = transformers.AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    model = peft.PeftModel.from_pretrained(base, folder).eval()
    env = HFTokenDuelEnv(
        reference=parts / "ref", judge=parts / "judge", prompts=parts / "prompts.txt",
        heldout_fraction=0.5, max_prompt_tokens=4, max_new_tokens=3,
    )  # fmt: skip
    agent = agents.load(full / "final.npz", game=env)
    ids = torch.tensor([[3, 10, 11, 4, 5]])
    with torch.no_grad():
        want = agent.model(ids)[0]
        got = model(input_ids=ids).logits.float()
        assert (want - got).abs().max() <= 1e-5
        resumed = agents.load(cut / "final.npz", game=env).model(ids)[0]
    assert torch.equal(resumed, want)  # bit for bit

    # the folder is a tournament participant next to pi_ref
    out = tmp_path / "tour"
    code = main(
        ["tournament", f"lora={folder}", "pi_ref", "--env", "nlhf/HFTokenDuel-v0",
         "--env-kwargs", *_env_kwargs(parts), "--n-duels", "10", "--output-dir", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    data = json.loads((out / "tournament.json").read_text())
    assert sorted(data["names"]) == ["lora", "pi_ref"]
    wr = np.array(data["win_rate"])
    assert wr[0, 1] + wr[1, 0] == pytest.approx(1.0)

    # nlhf-zoo export: the adapter merged into a plain causal LM with the same logits
    assert main(["export", str(full), str(tmp_path / "merged")]) == 0
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    with torch.no_grad():
        assert (merged(input_ids=ids).logits.float() - want).abs().max() <= 1e-5
    assert main(["export", str(full), str(tmp_path / "merged")]) == 2  # never overwritten


def test_full_fine_tuning_run_folder_is_a_plain_causal_lm(parts, tmp_path):
    import transformers

    _train(parts, tmp_path, 16)
    run = _run_dir(tmp_path)
    folder = run / "final_hf"
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(tok) == V
    env = HFTokenDuelEnv(
        reference=parts / "ref", judge=parts / "judge", prompts=parts / "prompts.txt",
        heldout_fraction=0.5, max_prompt_tokens=4, max_new_tokens=3,
    )  # fmt: skip
    agent = agents.load(run / "final.npz", game=env)
    ids = torch.tensor([[3, 10, 11, 4, 5]])
    with torch.no_grad():
        assert torch.equal(agent.model(ids)[0], model(input_ids=ids).logits.float())
        ref = transformers.AutoModelForCausalLM.from_pretrained(parts / "ref")
        assert (ref(input_ids=ids).logits - model(input_ids=ids).logits).abs().max() > 1e-4
    # periodic checkpoints resume too (they carry the policy's weights in the .npz)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.npz"))


def test_hf_checkpoint_needs_its_own_game(parts, tmp_path):
    _train(parts, tmp_path, 8)
    path = _run_dir(tmp_path) / "final.npz"
    assert agents.load(path).num_iterations == 1  # in its run folder: config.yml gives the env
    lone = tmp_path / "lone.npz"
    lone.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="needs its env: agents.load"):
        agents.load(lone)
    other = HFTokenDuelEnv(
        reference=parts / "ref", judge=parts / "judge", prompts=parts / "prompts.txt",
        heldout_fraction=0.5, max_prompt_tokens=4, max_new_tokens=3, beta=0.2,
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="trained on another HFTokenDuel game"):
        agents.load(path, game=other)
