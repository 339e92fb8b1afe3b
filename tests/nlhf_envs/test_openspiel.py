"""OpenSpiel interop (extra ``openspiel``): conversions both ways, checked with OpenSpiel's own tools.

Relations asserted (``nlhf_envs/openspiel.py``):

* ``from_pyspiel``: ``P = 1/2 + (R - c/2) / (2 s)``, ``s = max |R - c/2|`` by default, so
  ``matrix_rps`` / ``matrix_brps`` are the zoo's ``rps`` / ``biased_rps`` bit for bit;
* ``to_pyspiel``: row payoffs ``2 s (P_x - 1/2)``, column payoffs their negatives, so OpenSpiel's
  exploitability (NashConv / 2) of a policy played by both seats is
  ``2 s * unregularized_exploitability`` (to 1e-9; equal for the default ``s = 1/2``);
* alpha-rank of a tournament's win-rate matrix agrees with our Nash averaging on who is on top of a
  transitive meta-game, and both are uniform on the rock-paper-scissors meta-game.
"""

from __future__ import annotations

import doctest
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pyspiel = pytest.importorskip(
    "pyspiel", reason="needs the openspiel extra: pip install 'nlhf-zoo[openspiel]'"
)

from open_spiel.python.algorithms import exploitability as os_exploitability  # noqa: E402
from open_spiel.python.policy import TabularPolicy  # noqa: E402

from nlhf_envs import make_game  # noqa: E402
from nlhf_envs.errors import GameError  # noqa: E402
from nlhf_envs.game import PreferenceGame  # noqa: E402
from nlhf_envs.openspiel import OpenSpielGameError, preference_matrix, to_pyspiel  # noqa: E402
from nlhf_envs.solvers import nash_lp, unregularized_exploitability  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def openspiel_exploitability(spiel_game, pi: np.ndarray) -> tuple[float, float, float]:
    """OpenSpiel's exploitability of ``pi`` played by both seats: (Python, C++, Python NashConv).

    OpenSpiel's best responses need a turn-based game; the simultaneous matrix game becomes one with
    ``pyspiel.convert_to_turn_based`` (one information state per player)."""
    turn_based = pyspiel.convert_to_turn_based(spiel_game)
    policy = TabularPolicy(turn_based)
    policy.action_probability_array[:] = pi
    python = os_exploitability.exploitability(turn_based, policy)
    nash_conv = os_exploitability.nash_conv(turn_based, policy)
    as_dict = {state: list(enumerate(map(float, pi))) for state in policy.state_lookup}
    return float(python), float(pyspiel.exploitability(turn_based, as_dict)), float(nash_conv)


def policies(game: PreferenceGame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    K = game.num_actions
    return {
        "nash_lp": nash_lp(game),
        "uniform": np.full(K, 1.0 / K),
        "biased": np.arange(1.0, K + 1) / np.arange(1.0, K + 1).sum(),
        "pure_0": np.eye(K)[0],
        "dirichlet": rng.dirichlet(np.ones(K)),
    }


# ---------------------------------------------------------------------------- OpenSpiel -> zoo
@pytest.mark.parametrize(("name", "family"), [("matrix_rps", "rps"), ("matrix_brps", "biased_rps")])
def test_openspiel_rps_games_are_the_zoo_games_bit_for_bit(name, family):
    game = PreferenceGame.from_pyspiel(name, beta=0.05, pi_ref=[0.2, 0.3, 0.5])
    zoo = make_game(family)
    assert np.array_equal(game.P, zoo.P)
    assert game.name == name and game.beta == 0.05
    np.testing.assert_array_equal(game.pi_ref[0], [0.2, 0.3, 0.5])
    # a loaded pyspiel game and its name give the same game; name= overrides
    same = PreferenceGame.from_pyspiel(pyspiel.load_game(name), name="mine")
    assert same.name == "mine" and np.array_equal(same.P, zoo.P)


def test_biased_rps_nash_from_openspiel_payoffs():
    # matrix_brps: R = [[0, -25, 50], [25, 0, -5], [-50, 5, 0]], P = 1/2 + R / 100, Nash (1, 10, 5)/16
    game = PreferenceGame.from_pyspiel("matrix_brps")
    np.testing.assert_allclose(
        game.P[0], 0.5 + np.array(pyspiel.load_game("matrix_brps").row_utilities()) / 100
    )
    np.testing.assert_allclose(nash_lp(game), np.array([1.0, 10.0, 5.0]) / 16, atol=1e-9)


def test_rps_with_a_tie_action_and_constant_sum_games():
    # matrix_rpsw: the fourth action ties everything (P = 1/2 on its row and column)
    P, name = preference_matrix("matrix_rpsw")
    assert name == "matrix_rpsw"
    np.testing.assert_array_equal(P[3], 0.5)
    np.testing.assert_array_equal(P[:3, :3], make_game("rps").P[0])
    # constant sum c = 10: R = 5 + u, Q = 5 - u = 5 + u^T; u ranges over [-2, 2]
    u = np.array([[0.0, 2.0, -1.0], [-2.0, 0.0, 0.5], [1.0, -0.5, 0.0]])
    spiel = pyspiel.create_matrix_game((5 + u).tolist(), (5 - u).tolist())
    assert spiel.get_type().utility == pyspiel.GameType.Utility.CONSTANT_SUM
    P, _ = preference_matrix(spiel)
    np.testing.assert_allclose(P, 0.5 + u / 4, atol=1e-15)  # s = max |u| = 2
    P, _ = preference_matrix(spiel, payoff_scale=8.0)
    np.testing.assert_allclose(P, 0.5 + u / 16, atol=1e-15)
    # a game of ties: s = 1, P = 1/2
    ties = pyspiel.create_matrix_game([[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(preference_matrix(ties)[0], 0.5)


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("matrix_mp", "not symmetric"),  # zero-sum matching pennies: Q = -R != R^T
        ("matrix_pd", "not constant-sum"),  # prisoner's dilemma: symmetric, general-sum
        ("matrix_shapleys_game", "not constant-sum"),
        ("matrix_bos", "not constant-sum"),
        ("kuhn_poker", "normal-form (matrix) game"),
        ("matching_pennies_3p", "two players"),
        ("no_such_game", "cannot load"),
        (42, "expected a pyspiel game"),
    ],
)
def test_refuses_games_that_are_not_symmetric_constant_sum_matrix_games(spec, fragment):
    with pytest.raises(OpenSpielGameError, match=re.escape(fragment)) as info:
        PreferenceGame.from_pyspiel(spec)
    assert isinstance(info.value, GameError) and isinstance(info.value, ValueError)


def test_refuses_unequal_action_counts_asymmetric_payoffs_and_small_scales():
    rect = pyspiel.create_matrix_game(
        [[0.0, 1.0, -1.0], [1.0, 0.0, 0.0]], [[0.0, -1.0, 1.0], [-1.0, 0.0, 0.0]]
    )
    with pytest.raises(OpenSpielGameError, match="row player has 2 and the column player 3"):
        PreferenceGame.from_pyspiel(rect)
    # zero-sum but not symmetric: R is not antisymmetric
    skew = pyspiel.create_matrix_game([[0.0, 1.0], [0.5, 0.0]], [[0.0, -1.0], [-0.5, 0.0]])
    with pytest.raises(
        OpenSpielGameError, match=r"not symmetric: the column player's payoff at \(0, 1\) is -1"
    ):
        PreferenceGame.from_pyspiel(skew)
    with pytest.raises(
        OpenSpielGameError, match="payoff_scale 40 is below the largest payoff advantage"
    ):
        PreferenceGame.from_pyspiel("matrix_brps", payoff_scale=40)
    for bad in (0, -1.0, float("nan"), "50", True):
        with pytest.raises(OpenSpielGameError, match="payoff_scale must be a finite number > 0"):
            PreferenceGame.from_pyspiel("matrix_brps", payoff_scale=bad)
    # the game's own checks still apply (beta, pi_ref)
    with pytest.raises(GameError, match="beta"):
        PreferenceGame.from_pyspiel("matrix_rps", beta=0.0)


def test_missing_openspiel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspiel", None)  # `import pyspiel` now raises ImportError
    with pytest.raises(ImportError, match=re.escape("pip install 'nlhf-zoo[openspiel]'")):
        PreferenceGame.from_pyspiel("matrix_rps")
    with pytest.raises(ImportError, match="optional extra 'openspiel'"):
        make_game("rps").to_pyspiel()


# ---------------------------------------------------------------------------- zoo -> OpenSpiel
def test_to_pyspiel_payoffs_and_round_trips():
    brps = PreferenceGame.from_pyspiel("matrix_brps")
    reference = pyspiel.load_game("matrix_brps")
    spiel = brps.to_pyspiel(payoff_scale=50)  # s = 50 gives OpenSpiel's own payoffs back
    assert spiel.get_type().utility == pyspiel.GameType.Utility.ZERO_SUM
    np.testing.assert_allclose(spiel.row_utilities(), reference.row_utilities(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(spiel.col_utilities(), reference.col_utilities(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(spiel.col_utilities(), -spiel.row_utilities())  # exactly zero-sum
    # default s = 1/2: row payoffs P - 1/2 (antisymmetrised: within an ulp), column payoffs 1/2 - P
    spiel = brps.to_pyspiel()
    np.testing.assert_allclose(spiel.row_utilities(), brps.P[0] - 0.5, rtol=0, atol=1e-16)
    np.testing.assert_allclose(spiel.col_utilities(), 0.5 - brps.P[0], rtol=0, atol=1e-16)
    np.testing.assert_array_equal(spiel.col_utilities(), spiel.row_utilities().T)
    rps = make_game("rps")  # P in {0, 1/2, 1}: no rounding at all
    np.testing.assert_array_equal(rps.to_pyspiel().row_utilities(), rps.P[0] - 0.5)
    assert spiel.row_action_name(1) == "y1"
    named = brps.to_pyspiel(action_names=["rock", "paper", "scissors"])
    assert named.col_action_name(2) == "scissors"
    for game in (
        make_game("uniform", num_actions=6, seed=3),
        make_game("skew_gaussian", num_actions=8, seed=1),
        make_game("bradley_terry", num_actions=5, seed=2),
    ):
        for s in (0.5, 3.0):
            back = PreferenceGame.from_pyspiel(game.to_pyspiel(payoff_scale=s), payoff_scale=s)
            np.testing.assert_allclose(back.P, game.P, rtol=0, atol=1e-15)
        # default scale on the way back: P' - 1/2 = (P - 1/2) / (2 max |P - 1/2|)
        A = game.P[0] - 0.5
        back = PreferenceGame.from_pyspiel(game.to_pyspiel())
        np.testing.assert_allclose(back.P[0] - 0.5, A / (2 * np.abs(A).max()), rtol=0, atol=1e-15)


def test_contextual_games_convert_one_context_and_refuse_otherwise():
    game = make_game("uniform", num_actions=4, num_contexts=3, seed=0)
    with pytest.raises(OpenSpielGameError, match=r"has 3 contexts .* pass context=0..2"):
        game.to_pyspiel()
    for bad, fragment in (
        (3, r"context must lie in \[0, 3\)"),
        (-1, "must lie in"),
        (1.0, "integer"),
        (True, "integer"),
    ):
        with pytest.raises(OpenSpielGameError, match=fragment):
            game.to_pyspiel(bad)
    for x in range(3):
        spiel = game.to_pyspiel(x)
        assert spiel.get_type().short_name == f"nlhf_uniform4_context{x}"
        np.testing.assert_allclose(
            preference_matrix(spiel, payoff_scale=0.5)[0], game.P[x], atol=1e-15
        )
    with pytest.raises(OpenSpielGameError, match="4 distinct names; got 2"):
        to_pyspiel(game, 0, action_names=["a", "b"])
    with pytest.raises(OpenSpielGameError, match="payoff_scale"):
        to_pyspiel(game, 0, payoff_scale=0.0)


# ---------------------------------------------------------------------------- exploitability
@pytest.mark.parametrize(
    "game",
    [
        make_game("rps"),
        make_game("biased_rps"),
        make_game("cyclic", num_actions=5),
        make_game("uniform", num_actions=6, seed=0),
        make_game("skew_gaussian", num_actions=8, seed=0),
        make_game("condorcet", num_actions=7, seed=0),
    ],
    ids=lambda g: g.name,
)
def test_openspiel_exploitability_is_2s_times_ours(game):
    rng = np.random.default_rng(0)
    for s in (0.5, 4.0):
        spiel = game.to_pyspiel(payoff_scale=s)
        for label, pi in policies(game, rng).items():
            ours = unregularized_exploitability(game, pi)
            python, cpp, nash_conv = openspiel_exploitability(spiel, pi)
            assert python == pytest.approx(2 * s * ours, abs=1e-9), (label, s)
            assert cpp == pytest.approx(2 * s * ours, abs=1e-9), (label, s)
            assert nash_conv == pytest.approx(2 * python, abs=1e-12), (label, s)
            if label == "nash_lp":  # OpenSpiel agrees that our LP solution is a Nash equilibrium
                assert abs(python) < 1e-9
    # numbers: biased RPS, uniform policy: P pi = (0.5833, 0.5667, 0.3500), so 1/12 for s = 1/2
    if game.name == "biased_rps":
        python, cpp, _ = openspiel_exploitability(game.to_pyspiel(), np.full(3, 1.0 / 3))
        assert python == pytest.approx(1.0 / 12, abs=1e-12) and cpp == pytest.approx(
            1.0 / 12, abs=1e-12
        )


def test_openspiel_exploitability_on_openspiel_own_games():
    # OpenSpiel's matrix_brps has s = 50: its exploitability is 100 times ours on the converted game
    spiel = pyspiel.load_game("matrix_brps")
    game = PreferenceGame.from_pyspiel(spiel)
    for pi in (np.full(3, 1.0 / 3), np.array([0.5, 0.3, 0.2]), nash_lp(game)):
        python, cpp, _ = openspiel_exploitability(spiel, pi)
        assert python == pytest.approx(100 * unregularized_exploitability(game, pi), abs=1e-9)
        assert cpp == pytest.approx(python, abs=1e-9)
    assert openspiel_exploitability(spiel, np.full(3, 1.0 / 3))[0] == pytest.approx(
        25 / 3, abs=1e-9
    )
    # the constant-sum form (P, 1 - P) has the same exploitability: OpenSpiel subtracts utility_sum()
    P = make_game("skew_gaussian", num_actions=6, seed=4).P[0]
    constant_sum = pyspiel.create_matrix_game(P.tolist(), (1 - P).tolist())
    assert constant_sum.utility_sum() == pytest.approx(1.0)
    game = PreferenceGame.from_pyspiel(constant_sum, payoff_scale=0.5)
    np.testing.assert_allclose(game.P[0], P, atol=1e-15)
    pi = np.random.default_rng(1).dirichlet(np.ones(6))
    assert openspiel_exploitability(constant_sum, pi)[0] == pytest.approx(
        unregularized_exploitability(game, pi), abs=1e-9
    )


def test_token_game_context_through_openspiel():
    exact = pytest.importorskip("nlhf_envs.text.exact")
    game = exact.exact_game("nlhf/TinyTokenDuel-v0", "heldout")
    C, K = game.shape
    assert C > 1
    with pytest.raises(OpenSpielGameError, match=f"has {C} contexts"):
        game.to_pyspiel()
    x = 1
    one = PreferenceGame(game.P[x], game.pi_ref[x], game.beta, name="context1")
    spiel = game.to_pyspiel(x)
    assert spiel.num_rows() == K
    turn_based = pyspiel.convert_to_turn_based(spiel)
    players = [s for s in TabularPolicy(turn_based).state_lookup]
    for pi in (game.pi_ref[x], nash_lp(one)):
        cpp = pyspiel.exploitability(
            turn_based, {s: list(enumerate(map(float, pi))) for s in players}
        )
        assert cpp == pytest.approx(unregularized_exploitability(one, pi), abs=1e-9)
    assert unregularized_exploitability(one, game.pi_ref[x]) > 0.01  # pi_ref is exploitable


# ---------------------------------------------------------------------------- alpha-rank
def _alpharank(meta: np.ndarray, **kwargs) -> np.ndarray:
    from open_spiel.python.egt import alpharank

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.asarray(alpharank.compute([meta], **kwargs)[2])


def test_alpharank_and_nash_averaging_agree_on_a_transitive_tournament():
    from agents import arena

    game = make_game("bradley_terry")  # the game of nlhf/BradleyTerry-v0: transitive
    strength = (game.P[0] - 0.5).sum(axis=1)
    order = np.argsort(-strength)
    participants = {
        "worst": np.eye(10)[order[-1]],
        "uniform": "uniform",
        "best": np.eye(10)[order[0]],
        "median": np.eye(10)[order[5]],
    }
    result = arena.run(participants, "nlhf/BradleyTerry-v0", num_duels=200, seed=0)
    W = result.win_rate
    np.testing.assert_allclose(W + W.T, 1.0, atol=1e-12)  # a symmetric constant-sum meta-game
    best = result.names.index("best")
    # the Condorcet winner of the meta-game: exactly (P(best > x) >= 0.748 for every x) and beyond
    # the 95% intervals of the 200 duels per pair
    assert np.all(np.delete(result.exact_win_rate[best], best) > 0.74)
    assert np.all(np.delete(result.ci_low[best], best) > 0.5)
    nash, scores = arena.nash_averaging(W)
    np.testing.assert_allclose(nash, np.eye(4)[best], atol=1e-9)
    np.testing.assert_allclose(result.nash, np.eye(4)[best], atol=1e-9)  # exact win rates
    for kwargs in ({"alpha": 10.0}, {"alpha": 100.0}):
        pi = _alpharank(W, **kwargs)
        assert int(np.argmax(pi)) == best and pi[best] > 0.999
    pi = _alpharank(W, use_inf_alpha=True)  # with the default 1% noise: a sink with ~97% mass
    assert int(np.argmax(pi)) == best and pi[best] > 0.95
    # the meta-game through our conversion: OpenSpiel finds the Nash-averaging mixture unexploitable
    meta = PreferenceGame(0.5 * (W - W.T) + 0.5, name="meta")
    python, cpp, _ = openspiel_exploitability(meta.to_pyspiel(), nash)
    assert python == pytest.approx(max(scores.max(), 0.0), abs=1e-12) and abs(cpp) < 1e-9
    assert openspiel_exploitability(meta.to_pyspiel(), np.full(4, 0.25))[1] == pytest.approx(
        unregularized_exploitability(meta, np.full(4, 0.25)), abs=1e-12
    )


def test_alpharank_and_nash_averaging_are_uniform_on_the_rps_meta_game():
    from agents import arena

    pure = {"rock": [1.0, 0.0, 0.0], "paper": [0.0, 1.0, 0.0], "scissors": [0.0, 0.0, 1.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", arena.IntransitivityWarning)
        result = arena.run(pure, "nlhf/RPS-v0", num_duels=20, seed=0)
    assert result.intransitive
    np.testing.assert_array_equal(result.win_rate, make_game("rps").P[0])  # pure play: exact
    nash, _ = arena.nash_averaging(result.win_rate)
    np.testing.assert_allclose(nash, np.full(3, 1 / 3), atol=1e-6)
    for kwargs in ({"alpha": 100.0}, {"use_inf_alpha": True}):
        np.testing.assert_allclose(
            _alpharank(result.win_rate, **kwargs), np.full(3, 1 / 3), atol=1e-9
        )


# ---------------------------------------------------------------------------- docs
def test_docs_openspiel_snippet_runs_as_a_doctest():
    text = (ROOT / "docs" / "integrations.md").read_text()
    start = text.index("**OpenSpiel**")
    block = re.search(r"```pycon\n(.*?)```", text[start:], flags=re.S)
    assert block is not None
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.group(1), {}, "docs OpenSpiel", "docs/integrations.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5
