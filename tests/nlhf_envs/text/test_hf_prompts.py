"""Prompt sets of ``nlhf/HFTokenDuel-v0``: lists, files, datasets, conversations, splits."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from hf_parts import length_judge, tiny_gpt2, word_tokenizer  # noqa: E402

from nlhf_envs.errors import GameError  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.hf_prompts import load_prompts, split_prompts  # noqa: E402

torch.set_num_threads(1)
V = 64
TEXTS = [f"w{10 + i} w{20 + i}" for i in range(10)]
TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}w4{% endif %}"
)


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2(V)


def _env(model, **over):
    kw = {
        "reference": model,
        "tokenizer": word_tokenizer(V),
        "judge": length_judge,
        "prompts": TEXTS,
        "max_prompt_tokens": 6,
        "max_new_tokens": 2,
    }
    kw.update(over)
    return HFTokenDuelEnv(**kw)


def test_every_prompt_source_gives_the_same_prompts(tmp_path):
    datasets = pytest.importorskip("datasets")
    txt = tmp_path / "p.txt"
    txt.write_text("\n".join(TEXTS[:3]) + "\n\n" + "\n".join(TEXTS[3:]) + "\n")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"prompt": t, "id": i}) + "\n" for i, t in enumerate(TEXTS))
    )
    js = tmp_path / "p.json"
    js.write_text(json.dumps([{"prompt": t} for t in TEXTS]))
    js2 = tmp_path / "q.json"
    js2.write_text(json.dumps({"prompts": [{"prompt": t} for t in TEXTS]}))
    ds = datasets.Dataset.from_dict({"prompt": TEXTS, "other": list(range(10))})
    for source in (TEXTS, tuple(TEXTS), txt, str(jsonl), js, js2, ds):
        assert load_prompts(source) == TEXTS, source
    with pytest.raises(
        GameError, match=r"^the dataset has no 'prompt' column \(columns: \['text'\]\)$"
    ):
        load_prompts(datasets.Dataset.from_dict({"text": TEXTS}))
    dd = datasets.DatasetDict({"train": ds})
    with pytest.raises(GameError, match=r"got a dataset with splits \['train'\]; pass one split"):
        load_prompts(dd)


def test_conversational_prompts_from_a_dataset_use_the_chat_template(model):
    datasets = pytest.importorskip("datasets")
    convs = [
        [{"role": "user", "content": "w10 w11"}],
        [{"role": "system", "content": "w5"}, {"role": "user", "content": "w12"}],
    ]
    ds = datasets.Dataset.from_dict({"prompt": convs})
    tok = word_tokenizer(V, chat_template=TEMPLATE)
    env = _env(model, tokenizer=tok, prompts=ds, system_prompt="w3")
    assert env.use_chat_template
    assert env.encode_prompt(convs[0]) == [3, 10, 11, 4]  # system prompt added, then w4
    assert env.encode_prompt(convs[1]) == [5, 12, 4]  # its own system message is kept
    assert env.encode_prompt("w13") == [3, 13, 4]  # a plain prompt becomes a user message
    obs, infos = env.reset(options={"prompt": convs[0]})
    assert obs["player_0"][0, :6].tolist() == [0, 0, 3, 10, 11, 4]
    assert infos["player_0"]["prompt"] == "user: w10 w11"  # what the judge reads
    # chat_template=False: plain prompts are read as text, with the system prompt before them
    plain = _env(model, tokenizer=tok, chat_template=False, system_prompt="w3")
    assert plain.encode_prompt("w13") == [3, 13]


def test_heldout_split_is_deterministic_and_disjoint(model):
    train, held = split_prompts(TEXTS, 0.3, seed=0)
    assert (train, held) == split_prompts(TEXTS, 0.3, seed=0)
    assert len(held) == 3 and len(train) == 7
    assert sorted(train + held) == sorted(TEXTS) and not set(train) & set(held)
    assert [t for t in TEXTS if t in train] == train  # original order kept
    other = [split_prompts(TEXTS, 0.3, seed=s)[1] for s in range(1, 6)]
    assert any(h != held for h in other)
    assert split_prompts(TEXTS, 0.0) == (TEXTS, [])
    assert len(split_prompts(TEXTS, 0.01)[1]) == 1  # a positive fraction holds out at least one
    env = _env(model, heldout_fraction=0.3, prompt_split="heldout")
    assert env.prompts["heldout"] == held and env.prompts["train"] == train
    seen = {env.reset(seed=s)[1]["player_0"]["prompt"] for s in range(40)}
    assert seen == set(held)
    env_train = _env(model, heldout_fraction=0.3)
    seen = {env_train.reset(seed=s)[1]["player_0"]["prompt"] for s in range(60)}
    assert seen == set(train)
    explicit = _env(model, prompts=TEXTS[:4], heldout_prompts=TEXTS[4:], prompt_split="all")
    assert explicit.prompts["all"] == TEXTS
    with pytest.raises(GameError, match="pass heldout_prompts or heldout_fraction, not both"):
        _env(model, heldout_prompts=TEXTS[:2], heldout_fraction=0.5)
