"""No code from a model folder runs, even when a user in a terminal answers "y".

A folder whose ``config.json`` (or ``tokenizer_config.json``) has an ``auto_map`` and a model type
(or tokenizer class) unknown to ``transformers`` makes ``from_pretrained`` ask "Do you wish to run
the custom code? [y/N]" when ``trust_remote_code`` is not given. Every loader of a user's folder
(participants, LoRA adapters and their base models, the reference, the tokenizer, reward-model
judges, ``init_from``) must refuse such a folder with one line naming it, under a pseudo-terminal
that answers ``y`` to any question, and the folder's code must never run (its import writes a
marker file).
"""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import textwrap
import time
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from hf_parts import tiny_gpt2, word_tokenizer  # noqa: E402

V = 64
HERE = Path(__file__).resolve().parent


def _plant(folder: Path, marker: Path, *, model_type: str, tokenizer: bool = False) -> None:
    """Make ``folder`` ask for its own code: an ``auto_map`` to Python files that write ``marker``
    when imported (in ``config.json``, or in ``tokenizer_config.json`` when ``tokenizer``)."""
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    if tokenizer:
        (folder / "tokenization_evil.py").write_text(payload)
        path = folder / "tokenizer_config.json"
        cfg = json.loads(path.read_text())
        cfg["tokenizer_class"] = "EvilTokenizer"
        cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
        path.write_text(json.dumps(cfg))
        return
    (folder / "configuration_evil.py").write_text(
        payload + "from transformers import GPT2Config\n"
        f"class EvilConfig(GPT2Config):\n    model_type = {model_type!r}\n"
    )
    (folder / "modeling_evil.py").write_text(
        payload + "from transformers import GPT2LMHeadModel, GPT2ForSequenceClassification\n"
        "class EvilForCausalLM(GPT2LMHeadModel):\n    pass\n"
        "class EvilForSequenceClassification(GPT2ForSequenceClassification):\n    pass\n"
    )
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        "AutoModelForSequenceClassification": "modeling_evil.EvilForSequenceClassification",
    }
    path.write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A clean reference, judge and prompt file, and one planted folder per loader."""
    import peft

    root = tmp_path_factory.mktemp("folder_code")
    marker = root / "MARKER"
    tok = word_tokenizer(V)
    for name in ("ref", "evil_model", "evil_tok", "evil_base", "known_type"):
        tiny_gpt2(V, seed=0).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    config = transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    config.pad_token_id = 0
    for name in ("judge", "evil_judge"):
        transformers.GPT2ForSequenceClassification(config).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    (root / "prompts.txt").write_text("w10 w11\nw12\n")
    # a LoRA adapter saved over the clean reference, then pointed at a planted base folder
    base = transformers.AutoModelForCausalLM.from_pretrained(root / "ref")
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    lora.save_pretrained(root / "evil_lora")
    cfg_path = root / "evil_lora" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(root / "evil_base")
    cfg_path.write_text(json.dumps(cfg))
    for name in ("evil_model", "evil_judge", "evil_base"):
        _plant(root / name, marker, model_type="evilgpt")
    _plant(root / "evil_tok", marker, model_type="", tokenizer=True)
    # a built-in model type with an auto_map: transformers' own implementation, never the file's
    _plant(root / "known_type", marker, model_type="gpt2")
    return root


def _run_in_terminal(argv: list[str], cwd: Path, timeout: float = 300.0) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, answering ``y`` to every ``[y/N]`` question; returns the
    exit status and everything it printed."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(cwd)
        os.execv(argv[0], argv)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
            if b"[y/N]" in out.rsplit(b"\n", 1)[-1] or b"[y/N]" in data:
                os.write(fd, b"y\n")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    from pathlib import Path
    root = Path(sys.argv[1])
    from nlhf_envs.errors import NlhfError
    from nlhf_envs.text.hf_env import HFTokenDuelEnv
    from nlhf_envs.text.hf_judges import as_text_judge
    from agents.zoo.hf_participants import load_hf_participant

    def env(**kw):
        args = dict(reference=root / "ref", judge=root / "judge", prompts=root / "prompts.txt",
                    max_prompt_tokens=4, max_new_tokens=2)
        args.update(kw)
        return HFTokenDuelEnv(**args)

    cases = {
        "participant": lambda: load_hf_participant(root / "evil_model", "evil"),
        "adapter base": lambda: load_hf_participant(root / "evil_lora", "lora"),
        "reference": lambda: env(reference=root / "evil_model", tokenizer=root / "ref"),
        "tokenizer": lambda: env(tokenizer=root / "evil_tok"),
        "judge": lambda: as_text_judge(root / "evil_judge"),
        "init_from": lambda: __import__("agents").make(
            "online_ipo", env(), init_from=str(root / "evil_lora"), eval_every=0,
            lora={"rank": 2, "target_modules": ["c_attn"]}),
    }
    for name, fn in cases.items():
        try:
            fn()
            print(f"CASE {name}: LOADED")
        except NlhfError as err:
            print(f"CASE {name}: REFUSED {err}")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = load_hf_participant(root / "known_type", "known")
    print(f"CASE known: {type(model).__name__} warned={any('auto_map' in str(w.message) for w in seen)}")
    """
)


def test_no_loader_runs_a_folders_code_under_a_terminal_that_answers_yes(parts, tmp_path):
    script = tmp_path / "try_loaders.py"
    script.write_text(SCRIPT)
    env_root = str(HERE.parents[2])
    code, out = _run_in_terminal([sys.executable, str(script), str(parts)], cwd=Path(env_root))
    assert code == 0, out
    assert not (parts / "MARKER").exists(), out
    lines = {
        line.split(":", 1)[0].removeprefix("CASE "): line.split(":", 1)[1].strip()
        for line in out.splitlines()
        if line.startswith("CASE ")
    }
    expected = {
        "participant": ("evil_model", "config.json"),
        "adapter base": ("evil_base", "config.json"),
        "reference": ("evil_model", "config.json"),
        "tokenizer": ("evil_tok", "tokenizer_config.json"),
        "judge": ("evil_judge", "config.json"),
        "init_from": ("evil_base", "config.json"),
    }
    for case, (folder, file) in expected.items():
        assert lines[case].startswith("REFUSED "), (case, out)
        assert f"{parts / folder} needs its own Python code ({file} has an auto_map" in lines[case]
        assert "nlhf-zoo never runs code from a model folder" in lines[case]
    assert "[y/N]" not in out  # transformers was never left to ask
    assert lines["known"] == "GPT2LMHeadModel warned=True"


def test_the_command_line_refuses_a_planted_participant_in_one_line(parts, tmp_path):
    cli = Path(sys.executable).with_name("nlhf-zoo")
    argv = [str(cli), "tournament", f"evil={parts / 'evil_model'}", "pi_ref",
            "--env", "nlhf/HFTokenDuel-v0", "--env-kwargs", f"reference:{parts / 'ref'}",
            f"judge:{parts / 'judge'}", f"prompts:{parts / 'prompts.txt'}",
            "max_prompt_tokens:4", "max_new_tokens:2", "--n-duels", "4",
            "--output-dir", str(tmp_path / "tour"), "--no-progress"]  # fmt: skip
    code, out = _run_in_terminal(argv, cwd=tmp_path)
    assert code == 2, out
    assert not (parts / "MARKER").exists(), out
    errors = [line for line in out.splitlines() if line.strip()]
    assert len(errors) == 1, out
    assert errors[0].startswith("nlhf-zoo: error: participant 'evil=")
    assert (
        f"{parts / 'evil_model'} needs its own Python code (config.json has an auto_map"
        in errors[0]
    )
    assert not (tmp_path / "tour").exists()
