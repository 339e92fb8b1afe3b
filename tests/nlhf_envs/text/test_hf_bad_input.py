"""Bad input to ``nlhf/HFTokenDuel-v0`` (issue 21, item 8): each a one-line error naming the problem,
or a documented, warned fallback (pad = EOS)."""

from __future__ import annotations

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parts import length_judge, prompts, tiny_gpt2, word_tokenizer  # noqa: E402

from nlhf_envs.errors import GameError  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402

torch.set_num_threads(1)
V = 64


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2(V)


def _env(model, **over):
    kw = {
        "reference": model,
        "tokenizer": word_tokenizer(V),
        "judge": length_judge,
        "prompts": prompts(4),
        "max_prompt_tokens": 5,
        "max_new_tokens": 3,
    }
    kw.update(over)
    return HFTokenDuelEnv(**kw)


def _one_line(excinfo, message):
    text = str(excinfo.value)
    assert "\n" not in text
    assert re.fullmatch(message, text), text


def test_a_tokenizer_without_pad_token_pads_with_eos_and_warns(model):
    tok = word_tokenizer(V, pad=False)  # <eos> is id 0 here
    with pytest.warns(
        UserWarning,
        match=r"^the tokenizer has no pad token; padding observations "
        r"with its eos token \(id 0\)$",
    ):
        env = _env(model, tokenizer=tok)
    obs, _ = env.reset(options={"prompt": "w9"})
    assert obs["player_0"][0].tolist() == [0, 0, 0, 0, 9, 0, 0, 0]
    assert obs["player_0"][1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]


def test_a_tokenizer_without_eos_is_refused(model):
    tok = word_tokenizer(V)
    tok.eos_token = None
    with pytest.raises(GameError) as e:
        _env(model, tokenizer=tok)
    _one_line(e, "the tokenizer has no eos token, so answers could not end")


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(model):
    with pytest.raises(GameError) as e:
        _env(model, tokenizer=word_tokenizer(V + 36))
    _one_line(e, "the tokenizer has 100 tokens but the reference model's vocabulary has 64")


def test_a_model_that_is_not_a_causal_lm_is_refused(tmp_path):
    config = transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=16, n_head=2, num_labels=1)
    classifier = transformers.GPT2ForSequenceClassification(config)
    with pytest.raises(GameError) as e:
        _env(classifier)
    _one_line(
        e,
        r"the reference GPT2ForSequenceClassification is not a causal language model "
        r"\(AutoModelForCausalLM\)",
    )
    classifier.save_pretrained(tmp_path / "cls")
    with pytest.raises(GameError) as e:
        _env(str(tmp_path / "cls"))
    _one_line(
        e,
        rf"the reference GPT2ForSequenceClassification saved in {re.escape(str(tmp_path / 'cls'))} "
        r"is not a causal language model \(AutoModelForCausalLM\)",
    )
    with pytest.raises(GameError) as e:
        _env(str(tmp_path / "missing"))
    _one_line(e, f"no reference model folder at {re.escape(str(tmp_path / 'missing'))}")
    with pytest.raises(GameError) as e:
        _env(None)
    _one_line(e, r"HFTokenDuel needs reference= \(a causal LM or the folder of one\)")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["w5", "w6", "  "], "prompt 2 is empty"),
        (["w5", 7], "prompt 1 must be a string or a list of messages; got int"),
        ([], "the prompt set is empty"),
        (
            "w5 w6",
            r"no prompt file at w5 w6 \(prompts takes a list, a .txt/.jsonl/.json file or a "
            r"datasets.Dataset\)",
        ),
        (
            [[{"role": "user"}]],
            r"prompt 0: message 0 must be a dict with 'role' and 'content'; got \{'role': 'user'\}",
        ),
    ],
)
def test_empty_or_non_string_prompts_are_refused(model, bad, message):
    with pytest.raises(GameError) as e:
        _env(model, prompts=bad)
    _one_line(e, message)


def test_a_prompt_longer_than_max_prompt_tokens_is_refused(model):
    with pytest.raises(GameError) as e:
        _env(model, prompts=["w5", "w5 w6 w7 w8 w9 w10 w11"])
    _one_line(e, r"prompt 1 has 7 tokens; max_prompt_tokens is 5 \(prompt_truncation='left' .*\)")
    env = _env(model)
    with pytest.raises(GameError) as e:
        env.reset(options={"prompt": "w5 w6 w7 w8 w9 w10"})
    _one_line(e, r"prompt 0 has 6 tokens; max_prompt_tokens is 5 \(prompt_truncation='left' .*\)")


def test_a_prompt_file_without_a_prompt_field_is_refused(model, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "w5"}) + "\n" + json.dumps({"text": "w6"}) + "\n")
    with pytest.raises(GameError) as e:
        _env(model, prompts=path)
    _one_line(e, rf"{re.escape(str(path))}: record 2 has no 'prompt' field \(it has \['text'\]\)")
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"question": "w5"}]))
    with pytest.raises(GameError) as e:
        _env(model, prompts=path)
    _one_line(
        e, rf"{re.escape(str(path))}: record 0 has no 'prompt' field \(it has \['question'\]\)"
    )
    path = tmp_path / "prompts.csv"
    path.write_text("prompt\nw5\n")
    with pytest.raises(GameError) as e:
        _env(model, prompts=path)
    _one_line(
        e, rf"prompt file {re.escape(str(path))} must end in .txt, .jsonl or .json; got '.csv'"
    )
    with pytest.raises(GameError) as e:
        _env(model, prompts=tmp_path / "none.txt")
    _one_line(e, rf"no prompt file at {re.escape(str(tmp_path / 'none.txt'))} \(prompts takes .*")


def test_a_judge_that_returns_nan_or_the_wrong_shape_is_named(model):
    def two_judge(prompts, pairs):
        return [0.5, 0.5]

    for judge, message in (
        (
            lambda p, pairs: [float("nan")],
            r"judge .*<lambda> returned nan for pair 0; expected a probability",
        ),
        (two_judge, r"judge .*two_judge must return 1 probabilities; got shape \(2,\)"),
    ):
        env = _env(model, judge=judge, max_new_tokens=1)
        env.reset(seed=0)
        with pytest.raises(ValueError) as e:
            env.step({"player_0": 5, "player_1": 6})
        _one_line(e, message)
    with pytest.raises(GameError) as e:
        _env(model, judge=None)
    _one_line(e, r"HFTokenDuel needs judge= \(see nlhf_envs.text.hf_judges\)")


def test_a_chat_template_requested_where_none_exists_is_refused(model):
    with pytest.raises(GameError) as e:
        _env(model, chat_template=True)
    _one_line(e, "chat_template=True but the tokenizer has no chat template")
    with pytest.raises(GameError) as e:
        _env(model, prompts=["w5", [{"role": "user", "content": "w6"}]])
    _one_line(
        e,
        r"prompt 1 is a conversation but the tokenizer has no chat template "
        r"\(or chat_template=False\)",
    )
    with pytest.raises(GameError) as e:
        _env(model, chat_template="yes")
    _one_line(e, "chat_template must be 'auto', True or False; got 'yes'")


def test_other_bad_arguments(model):
    cases = [
        (
            {"tokenizer": None},
            r"tokenizer= is needed when reference is a model object \(or pass "
            r"the model's folder\)",
        ),
        ({"allowed_token_ids": [5, 6]}, "allowed_token_ids must contain the eos token id 1"),
        (
            {"allowed_token_ids": [1, 64]},
            r"allowed_token_ids \[64\] lie outside the tokenizer's "
            r"\[0, 64\)",
        ),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer at least 1, got 0"),
        ({"beta": -1.0}, "beta must be a positive number, got -1.0"),
        ({"heldout_fraction": 1.0}, r"heldout_fraction must lie in \[0, 1\); got 1.0"),
        ({"prompt_split": "heldout"}, "prompt_split='heldout' has no prompts"),
        (
            {"reward_mode": "bogus"},
            "unknown reward mode 'bogus'; expected one of outcome, centered, probability",
        ),
    ]
    for over, message in cases:
        with pytest.raises(ValueError) as e:
            _env(model, **over)
        _one_line(e, message)
