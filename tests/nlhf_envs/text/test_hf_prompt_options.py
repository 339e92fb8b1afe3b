"""``nlhf/HFTokenDuel-v0`` as TRL users expect it: left truncation of long prompts (an option, off
by default), a default held-out split that the agents' periodic evaluation can use, and a judge
folder that holds a causal LM named as such."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parts import length_judge, prompts, tiny_gpt2, word_tokenizer  # noqa: E402

import agents  # noqa: E402
from nlhf_envs.errors import GameError  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.hf_judges import as_text_judge  # noqa: E402
from nlhf_envs.text.hf_prompts import split_prompts  # noqa: E402

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
        "max_prompt_tokens": 3,
        "max_new_tokens": 2,
    }
    kw.update(over)
    return HFTokenDuelEnv(**kw)


class RecordingJudge:
    """A length judge that remembers the prompt texts it was asked about."""

    def __init__(self):
        self.prompts: list[str] = []

    def __call__(self, prompts, pairs):
        self.prompts.extend(prompts)
        return length_judge(prompts, pairs)


# ------------------------------------------------------------------------------- truncation


def test_long_prompts_are_refused_by_default_and_cut_on_the_left_on_request(model):
    long = "w10 w11 w12 w13 w14"
    with pytest.raises(GameError, match=r"^prompt 1 has 5 tokens; max_prompt_tokens is 3 "):
        _env(model, prompts=["w5", long])
    judge = RecordingJudge()
    with pytest.warns(UserWarning) as record:
        env = _env(
            model, prompts=["w5", long, "w6 w7 w8 w9"], prompt_truncation="left", judge=judge
        )
    messages = [str(w.message) for w in record]
    assert messages == [
        "2 of 3 prompts are longer than max_prompt_tokens=3 and were cut to their last 3 tokens "
        "(prompt_truncation='left')"
    ]
    assert env.encode_prompt(long) == [12, 13, 14]  # the last 3 tokens, as TRL keeps them
    assert env.encode_prompt("w6 w7 w8 w9") == [7, 8, 9]
    assert env.encode_prompt("w5") == [5]  # a short prompt is left as it is
    obs, infos = env.reset(seed=0, options={"prompt": long})
    assert obs["player_0"][0][:3].tolist() == [12, 13, 14]
    assert obs["player_0"][1][:3].tolist() == [1, 1, 1]
    assert infos["player_0"]["prompt"] == long  # the judge reads the whole prompt
    while env.agents:
        env.step({a: 1 for a in env.agents})  # <eos> at once
    assert judge.prompts == [long]


def test_truncation_names_its_values_and_refuses_prompts_it_would_merge(model):
    with pytest.raises(GameError) as e:
        _env(model, prompt_truncation="right")
    assert str(e.value) == "prompt_truncation must be one of ('error', 'left'); got 'right'"
    with pytest.raises(GameError) as e:
        _env(model, prompts=["w5 w9 w10 w11", "w6 w9 w10 w11"], prompt_truncation="left")
    assert str(e.value) == (
        "the prompts 'w5 w9 w10 w11' and 'w6 w9 w10 w11' read the same after truncation to "
        "their last 3 tokens; raise max_prompt_tokens"
    )


def test_an_agent_trains_on_the_truncated_prompts(model):
    long = "w20 w21 w22 w23 w24 w25"
    with pytest.warns(UserWarning, match="were cut to their last 3 tokens"):
        env = _env(model, prompts=[long, "w30"], prompt_truncation="left", heldout_fraction=0.0)
    agent = agents.make("online_ipo", env, seed=0, batch_size=4, eval_every=0)
    texts, ids, mask = agent.engine.sample_prompts(8, torch.Generator().manual_seed(0))
    rows = {tuple(r[m].tolist()) for r, m in zip(ids, mask, strict=True)}
    assert rows <= {(23, 24, 25), (30,)} and (23, 24, 25) in rows
    agent.learn(num_iterations=2)
    assert agent.queries_used == 8


# ------------------------------------------------------------------------------- held-out default


@pytest.mark.parametrize("n", [9, 10, 25])
def test_the_default_holds_out_a_tenth_of_ten_or_more_prompts(model, n):
    texts = [f"w{10 + i}" for i in range(n)]
    env = _env(model, prompts=texts)
    expected = split_prompts(texts, 0.1 if n >= 10 else 0.0, 0)
    assert (env.prompts["train"], env.prompts["heldout"]) == expected
    assert len(env.prompts["heldout"]) == {9: 0, 10: 1, 25: 2}[n]
    everything = _env(model, prompts=texts, heldout_fraction=0.0)
    assert everything.prompts["train"] == texts and everything.prompts["heldout"] == []
    given = _env(model, prompts=texts, heldout_prompts=["w60"])  # the default yields to a list
    assert given.prompts["train"] == texts and given.prompts["heldout"] == ["w60"]


def test_an_agent_with_default_settings_evaluates_on_the_default_held_out_prompts(model):
    env = _env(model, prompts=[f"w{10 + i}" for i in range(12)])
    agent = agents.make(
        "online_ipo", env, seed=0, batch_size=4, eval_prompts=4, nash_eval_samples=4,
        nash_eval_prompts=2,
    )  # fmt: skip
    assert agent.config.eval_every == 10  # the library default, not set here
    agent.learn(num_iterations=10)
    row = agent.history[-1]
    assert row["time/iterations"] == 10.0
    assert 0.0 <= row["eval/win_rate_ref_judge"] <= 1.0
    assert "eval/exploitability" in row and "eval/exploitability_trained" in row


# ------------------------------------------------------------------------------- judge folders


def test_a_causal_lm_folder_given_as_judge_is_named_a_causal_lm(model, tmp_path):
    folder = tmp_path / "lm"
    model.save_pretrained(folder)
    word_tokenizer(V).save_pretrained(folder)
    with pytest.raises(GameError) as e:
        as_text_judge(str(folder))
    text = str(e.value)
    assert "\n" not in text
    assert re.fullmatch(
        r"the judge folder .*lm holds a causal language model \(GPT2LMHeadModel\), not a reward "
        r"model: a judge folder needs an AutoModelForSequenceClassification with one output "
        r"\(num_labels=1\)",
        text,
    ), text
    with warnings.catch_warnings(), pytest.raises(GameError, match="holds a causal language"):
        warnings.simplefilter("ignore")
        _env(model, judge=str(folder))
