"""Where a tournament's ranking is printed, it says what Nash averaging ranks: the README's
tournament puts the pure strategy ``paper`` first and the demo's puts SPPO first, both exploitable
in the regularised game (the ranking is of the participants' duels, not of exploitability)."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from agents import arena
from agents.arena.report import NASH_AVERAGING_NOTE
from agents.zoo.demo import _ranking_note
from nlhf_envs import make_game
from nlhf_envs.solvers import exploitability


def test_the_readme_tournament_explains_why_a_pure_strategy_tops_it(tmp_path):
    game = make_game("biased_rps", beta=0.1)
    with pytest.warns(agents.ZooSettingsAvailable):
        agent = agents.make("nash_mp", "nlhf/BiasedRPS-v0", seed=0)
    agent.learn(num_queries=2_000)
    result = arena.run(
        {"nash_mp": agent, "pi_ref": "pi_ref", "paper": [0.0, 1.0, 0.0]},
        "nlhf/BiasedRPS-v0",
        num_duels=200,
        seed=0,
        out_dir=tmp_path / "tournament",
    )
    names = result.names
    assert names[int(np.argmax(result.nash_score))] == "paper"  # the whole Nash mass
    assert result.nash[names.index("paper")] == pytest.approx(1.0, abs=1e-9)
    expl = dict(zip(names, result.exploitability, strict=True))
    assert expl["paper"] == pytest.approx(
        exploitability(game, np.array([0.0, 1.0, 0.0])), abs=1e-12
    )
    assert expl["paper"] == pytest.approx(0.1004, abs=1e-4)
    assert abs(expl["nash_mp"]) < 1e-9  # pi*_beta itself, ranked second
    text = result.to_markdown()
    assert (
        "Nash averaging on the exact meta-game (every policy is known). " + NASH_AVERAGING_NOTE
    ) in text
    assert NASH_AVERAGING_NOTE in (tmp_path / "tournament" / "tournament.md").read_text()
    assert "It is not exploitability in the game" in NASH_AVERAGING_NOTE


def test_the_demo_names_the_least_exploitable_participant_beside_the_top_one():
    note = _ranking_note(["nash_md", "sppo", "pi_ref"], [9.87e-06, 0.29, 0.0404], "sppo")
    assert note.startswith(
        "Top Nash-averaged participant: sppo (exploitability 2.90e-01); the least exploitable is "
        "nash_md (9.87e-06). The two rankings answer different questions: Nash averaging ranks by "
        "the unregularised duels among these participants"
    )
    assert "SPPO has no pi_ref anchor" in note
    same = _ranking_note(["nash_md", "sppo"], [1e-5, 0.29], "nash_md")
    assert same.startswith("Top Nash-averaged participant: nash_md (exploitability 1.00e-05). ")
    assert "least exploitable" not in same
    assert _ranking_note(["a", "b"], [None, None], "a") == "Top Nash-averaged participant: a."


def test_rounding_below_zero_is_printed_as_zero_exploitability():
    """Exploitability is >= 0; a float rounding just below zero (the exact Nash of a game) prints
    as 0, while a clearly negative value (a bug to see) is printed as it is."""
    import numpy as np

    from agents.arena.report import TournamentResult

    n = 3
    res = TournamentResult(
        names=["a", "b", "c"], win_rate=np.full((n, n), 0.5), ci_low=np.zeros((n, n)),
        ci_high=np.ones((n, n)), duels=np.ones((n, n)), nash=np.full(n, 1 / 3),
        nash_score=np.zeros(n), elo=np.zeros(n), intransitive=False,
        exploitability=[-5.55e-17, None, -0.25], env_id="nlhf/RPS-v0", seed=0,
    )  # fmt: skip
    rows = {line.split("|")[2].strip(): line for line in res.to_markdown().splitlines()[2:5]}
    assert rows["a"].rstrip().endswith("| 0.00e+00 |")
    assert rows["b"].rstrip().endswith("| - |")
    assert rows["c"].rstrip().endswith("| -2.50e-01 |")
