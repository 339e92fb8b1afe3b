"""Small Hugging Face folders that would exhaust resources, or that torch or tokenizers refuse,
are one line each (issue 29, item 2): a ``config.json`` declaring far more parameters than the
weight files hold is refused before the model is built; a pickled ``.bin`` with more than weights
and a malformed ``tokenizer.json`` are named, never a traceback."""

from __future__ import annotations

import argparse
import json
import time

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from hf_parts import tiny_gpt2, word_tokenizer  # noqa: E402

from nlhf_envs.errors import ConfigError, GameError  # noqa: E402
from nlhf_envs.text.hf_folders import (  # noqa: E402
    declared_parameters,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
)

V = 24


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_the_declared_size_is_counted_exactly_on_the_meta_device():
    auto_lm = transformers.AutoModelForCausalLM
    gpt2 = tiny_gpt2(V)
    assert declared_parameters(gpt2.config, auto_lm) == _count(gpt2) == 4720
    for layers in (3, 7):  # counted from 1- and 2-layer copies: exact for any depth
        cfg = transformers.LlamaConfig(
            vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=2,
        )  # fmt: skip
        assert declared_parameters(cfg, auto_lm) == _count(transformers.LlamaForCausalLM(cfg))
    cfg = transformers.GPT2Config(vocab_size=V, n_layer=5, n_embd=8, n_head=2, num_labels=1)
    assert declared_parameters(cfg, transformers.AutoModelForSequenceClassification) == _count(
        transformers.GPT2ForSequenceClassification(cfg)
    )


def test_a_config_declaring_a_huge_model_beside_small_weights_is_refused(tmp_path, capsys):
    from agents.zoo.cli import main

    folder = tmp_path / "deep"
    tiny_gpt2(V).save_pretrained(folder)
    word_tokenizer(V).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["n_layer"] = 100_000  # before: still loading after 18 minutes
    (folder / "config.json").write_text(json.dumps(cfg))
    size = (folder / "model.safetensors").stat().st_size
    start = time.perf_counter()
    with pytest.raises(
        GameError,
        match=rf"^the reference: {folder}/config.json declares a model of 328,001,440 "
        rf"parameters, but the folder's weight files hold {size:,} bytes \(at most "
        rf"{2 * size:,} parameters\): refusing to build it",
    ):
        load_causal_lm(folder, "the reference")
    assert time.perf_counter() - start < 60  # (a bound far above the ~0.1 s it takes)
    # the judge's loader and a tournament participant alike
    judge = tmp_path / "judge"
    config = transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    transformers.GPT2ForSequenceClassification(config).save_pretrained(judge)
    cfg = json.loads((judge / "config.json").read_text())
    cfg["n_embd"] = 8 * 4096
    (judge / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="declares a model of .* parameters, but the folder"):
        load_sequence_classifier(judge, "the judge", ConfigError)
    capsys.readouterr()
    code = main(["eval", str(folder), "--opponent", "pi_ref", "--env", "nlhf/TinyTokenDuel-v0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "declares a model of 328,001,440" in err, err


def test_pickled_weights_and_malformed_tokenizers_are_one_line(tmp_path):
    folder = tmp_path / "pickled"
    model = tiny_gpt2(V)
    model.config.save_pretrained(folder)
    state = dict(model.state_dict())
    state["extra"] = argparse.Namespace(a=1)  # not a tensor: torch's weights-only load refuses
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(
        GameError,
        match=rf"^participant 'p': {folder} holds a pickled torch file with more than weights, "
        r"which torch's weights-only loader refuses \(.*Unsupported global: GLOBAL "
        r"argparse.Namespace.*\); nothing in it was run: save the model with safetensors$",
    ):
        load_causal_lm(folder, "participant 'p'")
    tok = tmp_path / "tok"
    word_tokenizer(V).save_pretrained(tok)
    (tok / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": [],
                                                    "model": {"type": "Nope"}}))  # fmt: skip
    with pytest.raises(
        GameError, match=rf"^the tokenizer: cannot load a tokenizer from {tok}: data did not match"
    ):
        load_tokenizer(tok)
