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


# ------------------------------------------------------------ one prompt, one split (issue 29)
def test_repeated_prompts_are_kept_once_and_never_in_two_splits(model):
    repeated = TEXTS + TEXTS[:4] + [TEXTS[0]]  # 15 prompts, 10 distinct
    for seed in range(5):
        with pytest.warns(UserWarning, match=r"repeated prompts dropped \(5 of the training "):
            env = _env(model, prompts=repeated, heldout_fraction=0.3, split_seed=seed)
        train, held = env.prompts["train"], env.prompts["heldout"]
        assert not set(train) & set(held)  # before: a repeat could land in both
        assert sorted(train + held) == sorted(TEXTS) and len(held) == 3
    with pytest.warns(UserWarning, match=r"\(2 of the held-out prompts\)"):
        env = _env(
            model, prompts=TEXTS[:6], heldout_prompts=[TEXTS[7], TEXTS[7], TEXTS[8], TEXTS[8]]
        )
    assert env.prompts["heldout"] == [TEXTS[7], TEXTS[8]]
    # held-out prompts that are also training prompts: held-out metrics would be on trained ones
    with pytest.raises(
        GameError,
        match=r"^2 of the held-out prompts are also training prompts \(first: held-out prompt 1 "
        r"= training prompt 3, 'w13 w23'\); a prompt may be in one set only",
    ):
        _env(model, prompts=TEXTS[:6], heldout_prompts=[TEXTS[8], TEXTS[3], TEXTS[5]])
    convs = [[{"role": "user", "content": t}] for t in TEXTS[:3]]
    tok = word_tokenizer(V, chat_template=TEMPLATE)
    with pytest.raises(GameError, match="1 of the held-out prompts are also training prompts"):
        _env(model, tokenizer=tok, prompts=convs, heldout_prompts=[convs[2]])


def test_validation_prompts_are_a_third_disjoint_set(model):
    env = _env(model, heldout_fraction=0.2, validation_fraction=0.25, split_seed=3)
    train, held, val = (env.prompts[k] for k in ("train", "heldout", "validation"))
    assert (len(train), len(held), len(val)) == (6, 2, 2)
    assert sorted(train + held + val) == sorted(TEXTS)
    assert env.prompts["all"] == train + held  # reset never draws a validation prompt
    assert env.prompts == _env(model, heldout_fraction=0.2, validation_fraction=0.25,
                               split_seed=3).prompts  # fmt: skip
    assert _env(model).prompts["validation"] == []
    # the validation prompts change the game's fingerprint; none: as before
    assert env.fingerprint() != _env(model, heldout_fraction=0.2, split_seed=3).fingerprint()
    explicit = _env(model, prompts=TEXTS[:6], validation_prompts=TEXTS[6:])
    assert explicit.prompts["validation"] == TEXTS[6:]
    with pytest.raises(GameError, match="2 of the validation prompts are also training prompts"):
        _env(model, prompts=TEXTS[:6], validation_prompts=TEXTS[4:8])
    with pytest.raises(GameError, match="1 of the validation prompts are also held-out prompts"):
        _env(model, prompts=TEXTS[:6], heldout_prompts=TEXTS[6:8], validation_prompts=[TEXTS[7]])
    with pytest.raises(GameError, match="pass validation_prompts or validation_fraction, not"):
        _env(model, validation_prompts=TEXTS[:1], validation_fraction=0.5)
    with pytest.raises(GameError, match=r"^validation_fraction must lie in \[0, 1\); got 1.5$"):
        _env(model, validation_fraction=1.5)


def test_prompt_files_bom_encoding_size_and_unknown_words(model, tmp_path, monkeypatch):
    from nlhf_envs.text import hf_prompts

    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join(TEXTS).encode())
    assert load_prompts(bom) == TEXTS  # before: the first prompt began with U+FEFF
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "w10 w20"}\n')
    assert load_prompts(jsonl) == ["w10 w20"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("w10 caf\xe9\n".encode("latin-1"))
    with pytest.raises(
        GameError, match=rf"^prompt file {latin} is not UTF-8 text \(byte 7: invalid "
    ):
        load_prompts(latin)
    # one line longer than a prompt may be: refused before it is tokenized
    long = tmp_path / "long.txt"
    long.write_text("w10\n" + "w11 " * (2**18) + "w12\n")
    with pytest.raises(
        GameError, match=rf"^prompt 1 of {long} has 1,048,579 characters; a prompt may have at "
        r"most 1,048,576 \(MAX_PROMPT_CHARS\)$"
    ):  # fmt: skip
        load_prompts(long)
    monkeypatch.setattr(hf_prompts, "MAX_PROMPT_FILE_BYTES", 64)  # the 256 MiB limit, scaled
    big = tmp_path / "big.txt"
    big.write_text("\n".join(TEXTS))
    with pytest.raises(GameError, match=rf"^prompt file {big} has 79 bytes; a prompt file may "):
        load_prompts(big)
    monkeypatch.undo()
    # words the tokenizer does not know are counted, not read silently as <unk>
    with pytest.warns(UserWarning) as seen:
        env = _env(model, prompts=TEXTS[:4] + ["w10 hello world", "w11 <unk>"],
                   heldout_prompts=["bonjour w12"])  # fmt: skip
    (warning,) = [w for w in seen if "does not know" in str(w.message)]
    assert str(warning.message) == (
        "2 of 7 prompts hold words the tokenizer does not know (3 tokens read as <unk>; first: "
        "train prompt 4, 'w10 hello world'): the model cannot read them"
    )
    assert env.encode_prompt("w10 hello world") == [10, 2, 2]
