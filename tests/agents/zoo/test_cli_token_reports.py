"""Issue 20, item 7: the token command line says what it did (prompts and intervals of ``eval``,
exact exploitability in token tournaments, torch threads)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

import agents
from agents.arena.stats import wilson_interval
from agents.zoo.cli import main

TINY = "nlhf/TinyTokenDuel-v0"


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    """A short online IPO run on the tiny token duel (one torch thread, a few seconds)."""
    logs = tmp_path_factory.mktemp("logs")
    argv = ["train", "--agent", "online_ipo", "--env", TINY, "-n", "512", "--no-progress"]
    assert main([*argv, "--log-folder", str(logs)]) == 0
    return logs / "online_ipo" / "TinyTokenDuel-v0_1"


def test_token_eval_names_the_prompts_and_gives_wilson_intervals(token_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(token_run), "--n-duels", "300"]) == 0
    out = capsys.readouterr().out.splitlines()
    heldout = len(agents.load(token_run / "final.npz").world.prompts.indices("heldout"))
    assert heldout == 8  # the tiny world holds out 8 of its 32 prompts
    head = (
        f"{token_run} vs pi_ref on {TINY}: 300 answer pairs on prompts drawn from the 8 prompts "
        "of the heldout split: win rate "
    )
    assert out[0].startswith(head)
    rates = re.findall(r"(\d\.\d{4}) \(95% CI \[(\d\.\d{4}), (\d\.\d{4})\]\)", out[0])
    assert len(rates) == 2  # judge and ground truth
    for p, lo, hi in rates:
        want = wilson_interval(float(p) * 300, 300)
        assert float(lo) == pytest.approx(want[0], abs=6e-4)
        assert float(hi) == pytest.approx(want[1], abs=6e-4)
        assert float(lo) < float(p) < float(hi) and float(hi) - float(lo) > 0.05
    assert out[1].startswith("exact Nash metrics (beta = 0.1): exploitability ")


def test_token_tournament_fills_exploitability_and_reports_threads(
    token_run, tmp_path, capsys, monkeypatch
):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    out = tmp_path / "t"
    argv = ["tournament", str(token_run), "pi_ref", "uniform", "--n-duels", "6", "--no-progress"]
    capsys.readouterr()
    assert main([*argv, "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert torch.get_num_threads() == 2  # the caller's thread count is restored
    assert text.splitlines()[-1].startswith(
        f"3 of 3 matches played, 0 reused from {out / 'matches.jsonl'}; "
    )
    assert text.splitlines()[-1].endswith(" s on 1 torch thread")
    data = json.loads((out / "tournament.json").read_text())
    expl = dict(zip(data["names"], data["exploitability"], strict=True))
    assert all(v is not None for v in expl.values()), expl
    # the run's own final (exact) evaluation measured the same policy in the same game
    final = yaml.safe_load((token_run / "evaluation.yml").read_text())
    assert expl["online_ipo"] == pytest.approx(final["eval/exploitability"], abs=1e-6)
    assert expl["uniform"] > 10 * expl["pi_ref"] > 0
    assert "| - |" not in text.split("Win rate")[0]  # no empty exploitability cell
    # the same tournament again, on 2 threads: every match is reused
    assert main([*argv, "--output-dir", str(out), "--threads", "2"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("0 of 3 matches played, 3 reused") and last.endswith(" torch threads")
    torch.set_num_threads(1)


def test_threads_option_and_default(monkeypatch, capsys):
    from agents.zoo.cli import torch_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads(None) == 1
    assert torch_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert torch_threads(None) == 4
    assert torch_threads(2) == 2
    for command in (["eval", "x.npz"], ["tournament", "pi_ref", "uniform"], ["train"]):
        assert main([*command, "--threads", "0"]) == 2
        assert capsys.readouterr().err == (
            "nlhf-zoo: error: --threads must be an integer >= 1; got 0\n"
        )
