"""Prompts the policies cannot read are refused with the words named, never silently guessed."""

import warnings

import pettingzoo
import pytest

import nlhf_envs  # noqa: F401  (registers the ids)
from nlhf_envs.text.ground_truth import ground_truth
from nlhf_envs.text.tokenizer import UNK
from nlhf_envs.text.world import get_world


def test_unknown_words_are_named_everywhere_a_prompt_enters():
    env = pettingzoo.make("parallel", "nlhf/TokenDuel-v0", render_mode="ansi")
    with pytest.raises(ValueError, match="outside the vocabulary: 'unicorns', 'klingon'"):
        env.reset(seed=0, options={"prompt": "describe unicorns in klingon"})
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        env.reset(seed=0, options={"prompt": "   "})
    with pytest.raises(TypeError, match="prompt 0 must be a string; got int"):
        env.reset(seed=0, options={"prompt": 3})
    with pytest.raises(ValueError, match="outside the vocabulary: 'unicorns'"):
        ground_truth().prob(["describe unicorns"], ["cats fur"], ["cats"])
    with pytest.raises(TypeError, match="not one string"):
        get_world("default").tokenizer.encode_prompts("describe cats", 12)


def test_unk_mode_maps_unknown_words_with_a_warning_and_render_shows_what_is_read():
    tok = get_world("default").tokenizer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = tok.encode_prompts(["Describe UNICORNS"], 12, unknown="unk")
    assert "read as <unk>: 'unicorns'" in str(caught[0].message)
    row = ids[0][mask[0]].tolist()
    assert row[2] == UNK and len(row) == 4  # <bos> describe <unk> <sep>
    env = pettingzoo.make("parallel", "nlhf/TokenDuel-v0", render_mode="ansi")
    env.reset(seed=0, options={"prompt": "Describe CATS"})
    assert env.render().splitlines()[0] == "prompt   : describe cats"
