"""Edge inputs are rejected, not truncated or coerced; evaluation runs in bounded chunks."""

import numpy as np
import pytest

from nlhf_envs import PreferenceGame, make_game
from nlhf_envs.errors import GameError
from nlhf_envs.matrix_game import PreferenceGameEnv


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_actions": 2.5}, r"num_actions must be an integer >= 2; got 2.5 \(float\)"),
        ({"num_actions": 4.0}, r"num_actions must be an integer >= 2; got 4.0 \(float\)"),
        ({"num_actions": True}, r"num_actions must be an integer >= 2; got True \(bool\)"),
        ({"num_actions": "5"}, r"num_actions must be an integer >= 2; got '5' \(str\)"),
        ({"num_actions": 5, "num_contexts": 1.5}, r"num_contexts must be an integer >= 1"),
        ({"num_actions": 5, "beta": "0.1"}, r"beta must be a real number, not str; got '0.1'"),
        ({"num_actions": 5, "beta": True}, r"beta must be a real number, not bool"),
        ({"num_actions": 20000, "num_contexts": 1}, r"needs a 3.0 GiB preference tensor"),
    ],
)
def test_game_sizes_must_be_integers(kwargs, message):
    with pytest.raises(GameError, match=message):
        make_game("uniform", **kwargs)


def test_numpy_integers_are_accepted():
    g = make_game("uniform", num_actions=np.int64(4), num_contexts=np.int32(2), seed=0)
    assert g.shape == (2, 4)
    assert PreferenceGame(np.full((2, 2), 0.5), beta=np.float32(0.5)).beta == 0.5


@pytest.mark.parametrize(
    "key, value", [("num_rounds", 2.7), ("num_rounds", 0), ("max_cycles", 2.0)]
)
def test_matrix_env_rounds_must_be_integers(key, value):
    with pytest.raises(GameError, match=rf"{key} must be"):
        PreferenceGameEnv("rps", **{key: value})


def test_token_env_rejects_float_and_bool_tokens_and_sizes():
    from nlhf_envs.text.env import TokenDuelEnv

    env = TokenDuelEnv()
    env.reset(seed=0)
    for bad in (5.0, 2.5, True, np.float32(3.0), np.array([1, 2])):
        with pytest.raises(ValueError, match="of player_0 must be an integer token id"):
            env.step({"player_0": bad, "player_1": 5})
    env.step({"player_0": np.int64(5), "player_1": 5})  # numpy integers are fine
    for value in (2.5, 3.0, True):
        with pytest.raises(ValueError, match="max_new_tokens must be an integer at least 1"):
            TokenDuelEnv(max_new_tokens=value)
    with pytest.raises(ValueError, match="max_cycles must be an integer at least 1"):
        TokenDuelEnv(max_cycles=1.5)


def test_text_evaluation_runs_in_bounded_chunks(monkeypatch):
    import agents
    from agents.text import common

    agent = agents.make("online_ipo", "nlhf/TokenDuel-v0", seed=0, batch_size=4, eval_prompts=8)
    whole = agent.evaluate(num_prompts=10)
    sizes = []
    real = agent.engine.sample_prompts

    def spy(n, gen, split="train"):
        sizes.append(n)
        return real(n, gen, split=split)

    monkeypatch.setattr(agent.engine, "sample_prompts", spy)
    monkeypatch.setattr(common, "EVAL_CHUNK", 4)
    chunked = agent.evaluate(num_prompts=10)
    assert sizes == [4, 4, 2]
    assert set(chunked) == set(whole)
    assert 0.0 <= chunked["eval/win_rate_ref_judge"] <= 1.0
