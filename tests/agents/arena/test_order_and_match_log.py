"""Issue 20, items 3 and 4 (tournament half) and 7 (token exploitability): tournaments that do not
depend on list order, reuse the matches of a superset, lock their folder, check every logged record
before reusing it, and report exact exploitability on enumerable token duels."""

from __future__ import annotations

import hashlib
import json
import math
import warnings

import numpy as np
import pytest

import agents
from agents import arena as T
from nlhf_envs import make_game
from nlhf_envs.errors import EnvironmentSetupError

ENV = "nlhf/BiasedRPS-v0"


def _always_rock(obs):
    return 0


def _parts():
    """Fixed policies (the vectorised match path) and a callable (the episode path)."""
    return [
        ("pi_ref", "pi_ref"),
        ("uniform", "uniform"),
        ("paperish", [0.1, 0.7, 0.2]),
        ("scissorsish", [0.2, 0.1, 0.7]),
        ("rock", _always_rock),
    ]


def _by_name(result, names):
    """The win-rate, interval and duel matrices re-indexed by ``names``."""
    k = [result.names.index(n) for n in names]
    return [np.asarray(m)[np.ix_(k, k)] for m in (result.win_rate, result.ci_low, result.ci_high)]


def _run(parts, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", T.IntransitivityWarning)
        return T.run(parts, ENV, **{"num_duels": 150, "seed": 5, **kw})


def test_the_same_participants_in_any_order_give_the_same_win_rates():
    parts = _parts()
    names = [n for n, _ in parts]
    first = _run(parts)
    for order in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        other = _run([parts[k] for k in order])
        for a, b in zip(_by_name(first, names), _by_name(other, names), strict=True):
            np.testing.assert_array_equal(a, b)
    # the win rate of (a, b) mirrors that of (b, a), and so do the intervals
    M, lo, hi = first.win_rate, first.ci_low, first.ci_high
    np.testing.assert_allclose(M + M.T, 1.0, atol=1e-12)
    np.testing.assert_allclose(lo + hi.T, 1.0, atol=1e-12)
    # the seed depends on the names only (a stable hash), not on their order
    assert T.match_seed(5, "rock", "uniform") == T.match_seed(5, "uniform", "rock")
    assert T.match_seed(5, "rock", "uniform") != T.match_seed(6, "rock", "uniform")
    digest = hashlib.sha256(json.dumps(["nlhf-zoo/arena/match/v2", 5, "rock", "uniform"]).encode())
    assert T.match_seed(5, "uniform", "rock") == int.from_bytes(digest.digest()[:8], "big") >> 1


def test_a_superset_tournament_reuses_the_logged_matches(tmp_path):
    parts = _parts()
    out = tmp_path / "t"
    small = _run(parts[:3], out_dir=out)
    played = []
    bigger = [parts[4], parts[2], parts[0], parts[3], parts[1]]  # two more, in another order
    big = _run(bigger, out_dir=out, on_match=played.append)
    # only the 7 matches involving a new participant were played; the 3 old pairs were reused
    new = {"rock", "scissorsish"}
    assert len(played) == 7
    assert all({big.names[r.i], big.names[r.j]} & new for r in played)
    old = ["pi_ref", "uniform", "paperish"]
    for a, b in zip(_by_name(small, old), _by_name(big, old), strict=True):
        np.testing.assert_array_equal(a, b)
    # and the reused rates are what a fresh run of the bigger tournament measures
    fresh = _run(bigger)
    np.testing.assert_array_equal(fresh.win_rate, big.win_rate)
    assert len((out / "matches.jsonl").read_text().splitlines()) == 10


def test_a_second_tournament_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "t"
    parts = _parts()[:3]
    refused = []

    def start_another(result):
        if not refused:
            with pytest.raises(EnvironmentSetupError) as err:
                _run(parts, out_dir=out)
            refused.append(str(err.value))

    first = _run(parts, out_dir=out, on_match=start_another)
    assert refused == [
        f"another tournament is writing to {out} (it holds {out / '.tournament.lock'}); wait for "
        "it to finish or choose another output folder"
    ]
    # the first one finished undisturbed: 3 records, its report, and the folder is free again
    assert len((out / "matches.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "tournament.json").read_text())["win_rate"] == first.win_rate.tolist()
    again = []
    _run(parts, out_dir=out, on_match=again.append)
    assert again == []


def test_the_cli_refuses_a_tournament_folder_in_use(tmp_path, capsys):
    from agents.zoo.cli import main

    out = tmp_path / "t"
    out.mkdir()
    argv = ["tournament", "pi_ref", "uniform", "--env", ENV, "--n-duels", "20", "--no-progress"]
    with T.lock_folder(out):
        assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"nlhf-zoo: error: another tournament is writing to {out} (it holds "
        f"{out / '.tournament.lock'}); wait for it to finish or choose another output folder\n"
    )
    assert not (out / "matches.jsonl").exists()


def _digest(row):
    body = {k: v for k, v in row.items() if k != "check"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"duels": 0}, "duels must be 150 (the tournament's duels per pair); got 0"),
        ({"wins": 151.0}, "wins must be a number in [0, 150]; got 151.0"),
        ({"wins": -1.0}, "wins must be a number in [0, 150]; got -1.0"),
        ({"wins": math.nan}, "wins must be a number in [0, 150]; got nan"),
        ({"wins": "70"}, "wins must be a number in [0, 150]; got '70'"),
        ({"wins": 70.5}, "wins must be a whole number (every duel scores 0 or 1); got 70.5"),
        ({"mean_prob": 1.5}, "mean_prob must be a probability or NaN; got 1.5"),
        ({"seed": 1}, "seed 1 is not the match seed of"),
        ({"wins": 1.0, "keep_check": True}, "its checksum does not match its content"),
    ],
)
def test_a_damaged_match_record_is_replayed_with_a_warning(tmp_path, edit, reason):
    parts = _parts()[:3]
    out = tmp_path / "t"
    full = _run(parts, out_dir=out)
    log = out / "matches.jsonl"
    lines = log.read_text().splitlines()
    row = json.loads(lines[1])
    edit = dict(edit)
    keep_check = edit.pop("keep_check", False)
    row.update(edit)
    if "check" in row and not keep_check:
        row["check"] = _digest(row)  # a careful edit: only the checks of the values catch it
    lines[1] = json.dumps(row)
    log.write_text("\n".join(lines) + "\n")
    played = []
    with pytest.warns(T.MatchLogWarning) as caught:
        resumed = _run(parts, out_dir=out, on_match=played.append)
    messages = [str(w.message) for w in caught if issubclass(w.category, T.MatchLogWarning)]
    assert len(messages) == 1
    assert messages[0].startswith(f"{log}:2: damaged match record (")
    assert reason in messages[0]
    assert messages[0].endswith(
        "the match is replayed and the line moved to matches.rejected.jsonl"
    )
    # only the damaged match was replayed, and the result is the undamaged one
    assert len(played) == 1
    np.testing.assert_array_equal(resumed.win_rate, full.win_rate)
    # the damaged line is kept aside (nothing is lost) and the next run is quiet
    assert (out / "matches.rejected.jsonl").read_text() == lines[1] + "\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error", T.MatchLogWarning)
        again = []
        _run(parts, out_dir=out, on_match=again.append)
    assert again == []


def test_an_unreadable_line_inside_the_log_is_named(tmp_path):
    parts = _parts()[:3]
    out = tmp_path / "t"
    _run(parts, out_dir=out)
    log = out / "matches.jsonl"
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n" + "{not json\n" + lines[1] + "\n" + lines[2][:20])
    played = []
    with pytest.warns(T.MatchLogWarning, match=r"matches.jsonl: line\(s\) 2 are not match records"):
        _run(parts, out_dir=out, on_match=played.append)
    assert len(played) == 1  # the record cut short at the end (a kill), silently replayed
    assert (out / "matches.rejected.jsonl").read_text() == "{not json\n"


# ------------------------------------------------------------------ token duel: exploitability
def test_token_tournament_reports_exact_exploitability_on_an_enumerable_world():
    import torch

    from nlhf_envs.solvers import exploitability
    from nlhf_envs.text.exact import enumerate_answers, exact_game

    tiny = "nlhf/TinyTokenDuel-v0"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        agent = agents.make("online_ipo", tiny, seed=0, eval_every=0).learn(num_iterations=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", T.IntransitivityWarning)
            r = T.run({"ipo": agent, "ref": "pi_ref", "words": "uniform"}, tiny, num_duels=4)
        own = agent.nash_metrics(exact=True)["eval/exploitability"]
    finally:
        torch.set_num_threads(previous)
    ipo, ref, words = r.exploitability
    # the agent's value is what its own exact evaluation reports
    assert ipo == pytest.approx(own, rel=1e-9, abs=1e-12)
    game = exact_game(tiny, "heldout")
    assert ref == pytest.approx(float(exploitability(game, game.pi_ref)), abs=1e-9)
    # uniformly random answer words: each of the V + 1 tokens (eos included) has probability
    # 1 / (V + 1), so an answer of t tokens has probability (V + 1)^-t
    answers = enumerate_answers(tiny)
    longest = max(len(a) for a in answers)
    words_count = len({t for a in answers for t in a})
    pi_words = np.array([(1.0 / words_count) ** len(a) for a in answers])
    assert longest == 3 and pi_words.sum() == pytest.approx(1.0)
    expected = float(exploitability(game, np.tile(pi_words, (game.num_contexts, 1))))
    assert words == pytest.approx(expected, abs=1e-9)
    assert ipo < ref < words  # training helped; random words are far from the equilibrium
    assert "| exploitability |" in r.to_markdown() and f"{ipo:.2e}" in r.to_markdown()


def test_matrix_tournament_exploitability_is_unchanged():
    game = make_game("biased_rps")
    r = _run([("pi_ref", "pi_ref"), ("rock", [1.0, 0, 0])])
    from nlhf_envs.solvers import exploitability

    assert r.exploitability[r.names.index("rock")] == pytest.approx(
        exploitability(game, np.array([1.0, 0, 0]))
    )
