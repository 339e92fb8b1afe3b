"""``agents.make`` keeps the library defaults and says when the zoo has tuned settings;
``agents.zoo.make`` builds the agent with them (issue 23, item 3)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

import agents
from agents import ZooSettingsAvailable
from agents.zoo import make as zoo_make
from agents.zoo import resolve

#: ``nlhf/SkewGaussian-v0``'s own number of actions (its zoo entry asks for 100)
DEFAULT_ACTIONS = 10


def test_defaults_say_where_the_tuned_settings_are():
    hint = r"agents\.zoo\.make\('nash_mp', 'nlhf/SkewGaussian-v0'\) builds the agent with them"
    with pytest.warns(ZooSettingsAvailable, match=hint):
        agent = agents.make("nash_mp", "nlhf/SkewGaussian-v0")
    assert agent.game.P.shape[-1] == DEFAULT_ACTIONS  # the env's own default, not the entry's 100
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZooSettingsAvailable)
        agents.make("nash_mp", "nlhf/UniformGame-v0", eta=0.1)  # the user chose settings
        agents.make("nash_mp", "uniform")  # a family name has no zoo entry
        agents.make("nash_mp", "nlhf/DiscGame-v0")  # an id without an entry of its own


def test_zoo_make_uses_the_entry():
    entry = resolve("nash_mp", "nlhf/SkewGaussian-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZooSettingsAvailable)
        agent = zoo_make("nash_mp", "nlhf/SkewGaussian-v0", seed=3)
    assert entry.env_kwargs == {"num_actions": 100, "seed": 0}
    assert agent.game.P.shape[-1] == 100  # the entry's env_kwargs
    assert dataclasses.asdict(agent.config) == dataclasses.asdict(entry.config)
    over = zoo_make("nash_mp", "nlhf/SkewGaussian-v0", params={"eta": 0.05})
    assert over.config.eta == 0.05 and over.config.batch_size == entry.config.batch_size
