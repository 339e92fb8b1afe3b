"""Tournaments: Nash averaging, ratings, confidence intervals, reproducibility and resume."""

import json
import warnings

import numpy as np
import pytest

import agents
from agents import arena as T
from nlhf_envs import make_game
from nlhf_envs.solvers import exploitability


def test_nash_averaging_rps_is_uniform():
    M = np.array([[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]])
    p, score = T.nash_averaging(M)
    np.testing.assert_allclose(p, np.full(3, 1 / 3), atol=1e-6)
    np.testing.assert_allclose(score, 0.0, atol=1e-6)


def test_nash_averaging_transitive_puts_all_mass_on_best():
    s = np.array([0.3, 2.0, -1.0, 0.9])
    M = 1 / (1 + np.exp(-(s[:, None] - s[None, :])))
    p, score = T.nash_averaging(M)
    np.testing.assert_allclose(p, [0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(score, M[:, 1] - 0.5, atol=1e-6)  # advantage against the best


def test_nash_averaging_is_invariant_to_copies():
    # Balduzzi et al.: adding a copy of a participant does not change the others' scores
    M = np.array([[0.5, 0.2, 0.9], [0.8, 0.5, 0.3], [0.1, 0.7, 0.5]])
    p, score = T.nash_averaging(M)
    M4 = np.zeros((4, 4))
    idx = [0, 1, 2, 2]
    M4[:] = M[np.ix_(idx, idx)]
    p4, score4 = T.nash_averaging(M4)
    np.testing.assert_allclose(score4[:3], score, atol=1e-6)
    assert p4[2] == pytest.approx(p4[3], abs=1e-6)
    assert p4[2] + p4[3] == pytest.approx(p[2], abs=1e-6)


def test_nash_averaging_bad_input():
    with pytest.raises(
        ValueError, match=r"M must be a non-empty square matrix; got shape \(2, 3\)"
    ):
        T.nash_averaging(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="M must be finite"):
        T.nash_averaging(np.array([[0.5, np.nan], [np.nan, 0.5]]))


def test_wilson_interval_and_bt_ratings():
    lo, hi = T.wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert T.wilson_interval(0, 10)[0] == 0.0
    # Bradley-Terry recovers Elo differences from exact win counts
    R = np.array([1600.0, 1500.0, 1350.0])
    P = 1 / (1 + 10 ** ((R[None, :] - R[:, None]) / 400))
    games = np.full((3, 3), 100000)
    np.fill_diagonal(games, 0)
    elo = T.bradley_terry_ratings(P * games, games, prior=0.0)
    np.testing.assert_allclose(elo - elo.mean(), R - R.mean(), atol=0.5)


def test_has_cycle():
    assert T.has_cycle(np.array([[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]]))
    assert not T.has_cycle(np.array([[0.5, 1, 1], [0, 0.5, 1], [0, 0, 0.5]]))


def test_biased_rps_tournament_exact_values():
    game = make_game("biased_rps")
    parts = {"rock": [1.0, 0, 0], "paper": [0, 1.0, 0], "scissors": [0, 0, 1.0], "pi_ref": "pi_ref"}
    with pytest.warns(T.IntransitivityWarning):
        res = T.run(parts, "nlhf/BiasedRPS-v0", num_duels=4000, seed=1)
    M = res.win_rate
    # rock vs paper: P = 1/2 - 25/100 = 0.25; paper vs scissors: 0.45; rock vs scissors: 1
    for i, j, p in [(0, 1, 0.25), (1, 2, 0.45), (0, 2, 1.0)]:
        assert res.ci_low[i, j] <= p <= res.ci_high[i, j]
        assert abs(M[i, j] - p) < 4 * np.sqrt(max(p * (1 - p), 1e-4) / 4000) + 1e-9
    np.testing.assert_allclose(M + M.T, 1.0)
    assert res.intransitive
    expl = res.exploitability
    assert expl[3] == pytest.approx(exploitability(game, np.full(3, 1 / 3)))
    # the Nash mixture of the exact meta-game plays biased RPS's unique Nash (1/16, 10/16, 5/16)
    policies = np.vstack([np.eye(3), np.full(3, 1 / 3)])
    np.testing.assert_allclose(res.nash @ policies, [1 / 16, 10 / 16, 5 / 16], atol=1e-5)


def test_tournament_is_reproducible_and_resumes(tmp_path):
    game = make_game("uniform", num_actions=6, seed=2)
    a = agents.make("nash_mp", game, seed=0, mode="sampled").learn(num_queries=5000)
    b = agents.make("nash_md", game, seed=0, mode="sampled").learn(num_queries=5000)
    parts = [("nash_mp", a), ("nash_md", b), ("pi_ref", "pi_ref"), ("always0", lambda obs: 0)]
    kw = {"env_kwargs": {"game": game}, "num_duels": 300, "seed": 7}
    rng_state = a.act_rng.bit_generator.state
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = T.run(parts, "nlhf/MatrixGame-v0", **kw)
        again = T.run(parts, "nlhf/MatrixGame-v0", **kw)
        np.testing.assert_array_equal(full.win_rate, again.win_rate)
        # an interrupted tournament: keep the first two matches only, then resume
        out = tmp_path / "t"
        T.run(parts, "nlhf/MatrixGame-v0", out_dir=out, **kw)
        lines = (out / "matches.jsonl").read_text().splitlines()
        assert len(lines) == 6
        (out / "matches.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
        played = []
        resumed = T.run(parts, "nlhf/MatrixGame-v0", out_dir=out, on_match=played.append, **kw)
    assert len(played) == 4  # the two finished matches were not replayed
    np.testing.assert_array_equal(resumed.win_rate, full.win_rate)
    data = json.loads((out / "tournament.json").read_text())
    assert data["names"] == ["nash_mp", "nash_md", "pi_ref", "always0"]
    assert (out / "heatmap.png").stat().st_size > 1000
    assert (out / "win_rates.csv").read_text().count("\n") == 1 + 12
    assert "| rank | participant |" in (out / "tournament.md").read_text()
    assert a.act_rng.bit_generator.state == rng_state  # matches play copies, not the caller's agent


def test_participant_errors():
    with pytest.raises(ValueError, match="at least two participants"):
        T.run({"a": "pi_ref"}, "nlhf/RPS-v0")
    with pytest.raises(
        ValueError, match="'nope' is not 'pi_ref', 'uniform' or an existing checkpoint"
    ):
        T.run({"a": "pi_ref", "b": "nope"}, "nlhf/RPS-v0")
    with pytest.raises(ValueError, match=r"participant 'b': pi must have shape \(3,\)"):
        T.run({"a": "pi_ref", "b": [0.5, 0.5]}, "nlhf/RPS-v0")
    with pytest.raises(ValueError, match="num_duels must be a positive integer"):
        T.run({"a": "pi_ref", "b": "uniform"}, "nlhf/RPS-v0", num_duels=0)


def test_resume_replays_a_participant_whose_content_changed(tmp_path):
    game = make_game("biased_rps")
    first = agents.make("nash_mp", game, seed=0, mode="exact").learn(num_iterations=1)
    second = agents.make("nash_mp", game, seed=0, mode="exact").learn(num_queries=300)
    kw = {"env_kwargs": {"game": game}, "num_duels": 400, "seed": 3, "out_dir": tmp_path / "t"}
    env_id = "nlhf/MatrixGame-v0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T.run([("nash_mp", first), ("pi_ref", "pi_ref"), ("uniform", "uniform")], env_id, **kw)
        played = []
        parts = [("nash_mp", second), ("pi_ref", "pi_ref"), ("uniform", "uniform")]
        resumed = T.run(parts, env_id, on_match=played.append, **kw)
        fresh = T.run(parts, env_id, **{**kw, "out_dir": None})
    # the two matches of the changed participant are replayed, pi_ref vs uniform is reused
    assert sorted((r.i, r.j) for r in played) == [(0, 1), (0, 2)]
    np.testing.assert_array_equal(resumed.win_rate, fresh.win_rate)
    assert T.participant_fingerprint(T.as_participant("a", first)) != T.participant_fingerprint(
        T.as_participant("a", second)
    )


def test_truncated_match_log_is_repaired_before_appending(tmp_path):
    parts = [("a", "pi_ref"), ("b", "uniform"), ("c", [0.8, 0.1, 0.1])]
    kw = {"num_duels": 200, "seed": 1, "out_dir": tmp_path / "t"}
    T.run(parts, "nlhf/BiasedRPS-v0", **kw)
    log = tmp_path / "t" / "matches.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + lines[1][:25])  # killed in the middle of the second record
    played = []
    T.run(parts, "nlhf/BiasedRPS-v0", on_match=played.append, **kw)
    assert len(played) == 2
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 3
    assert sorted(tuple(r["names"]) for r in rows) == [("a", "b"), ("a", "c"), ("b", "c")]
    again = []
    T.run(parts, "nlhf/BiasedRPS-v0", on_match=again.append, **kw)
    assert again == []


def test_participants_must_share_the_tournament_game():
    from nlhf_envs.errors import EnvironmentSetupError

    agent = agents.make("nash_mp", make_game("biased_rps"), seed=0, mode="exact")
    agent.learn(num_iterations=1)
    with pytest.raises(
        EnvironmentSetupError,
        match=r"participant 'mp' was trained on biased_rps \(K=3, contexts=1, beta=0.1, "
        r"fingerprint [0-9a-f]{16}\), but nlhf/RPS-v0 plays rps",
    ):
        T.run({"mp": agent, "ref": "pi_ref"}, "nlhf/RPS-v0", num_duels=10)
    uniform = agents.make("nash_mp", make_game("uniform", num_actions=10, seed=0), seed=0)
    with pytest.raises(EnvironmentSetupError, match=r"K=10"):
        T.run({"u": uniform, "ref": "pi_ref"}, "nlhf/BiasedRPS-v0", num_duels=10)


# ------------------------------------------------------------------ participants from anywhere
def test_live_sb3_models_and_unnamed_agents_play(one_torch_thread):
    """A live (not reloaded) SB3 model plays; agents given without names are named by kind."""
    import gymnasium
    from stable_baselines3 import PPO

    import agents

    a = agents.make("nash_mp", "biased_rps", seed=0).learn(num_iterations=5)
    b = agents.make("mmd", "biased_rps", seed=0).learn(num_iterations=5)
    model = PPO(
        "MlpPolicy",
        gymnasium.make("nlhf/BiasedRPS-SingleSeat-v0"),
        n_steps=64,
        batch_size=32,
        seed=0,
    ).learn(64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", T.IntransitivityWarning)
        r = T.run([a, b, model, "pi_ref", a], "nlhf/MatrixGame-v0", env_kwargs={"game": a.game},
                  num_duels=400, seed=0)  # fmt: skip
    assert r.names == ["nash_mp", "mmd", "ppo", "pi_ref", "nash_mp#2"]
    # the two copies of nash_mp play the same known policy: an even match, exactly 1/2 in P
    assert r.win_rate[0, 4] == pytest.approx(0.5, abs=0.08)
    assert np.allclose(r.win_rate + r.win_rate.T, 1.0)


def test_pi_ref_and_uniform_play_the_token_duel_with_judge_and_truth():
    r = T.run({"ref": "pi_ref", "words": "uniform"}, "nlhf/TinyTokenDuel-v0", num_duels=60, seed=0)
    m = r.matches[0]
    assert 0.0 <= m.mean_prob <= 1.0 and 0.0 <= m.mean_true_prob <= 1.0
    # pi_ref writes the demonstrator's kind of answer; random words lose under both
    assert r.win_rate[0, 1] > 0.6 and m.mean_prob > 0.6 and m.mean_true_prob > 0.6
    again = T.run({"ref": "pi_ref", "words": "uniform"}, "nlhf/TinyTokenDuel-v0", num_duels=60,
                  seed=0)  # fmt: skip
    assert again.win_rate[0, 1] == r.win_rate[0, 1]  # seeded: reproducible


def test_default_names():
    assert T.default_name("runs/nash_mp_1/final.npz") == "final"
    assert T.default_name("pi_ref") == "pi_ref"
    assert T.default_name(np.array([0.5, 0.5])) == "policy"
    assert T.unique_names([("a", 1), ("a", 2), ("b", 3)]) == [("a", 1), ("a#2", 2), ("b", 3)]
