"""The docs' token-games snippet is ``examples/token_nash.py`` (included, not copied), and it runs."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

from nlhf_envs.solvers import exploitability

ROOT = Path(__file__).resolve().parents[3]

#: documented figures against a live run: `make test` runs them again on numpy's baseline kernels
pytestmark = pytest.mark.cpu_kernels


def test_docs_token_games_snippet_is_the_example():
    text = (ROOT / "docs" / "games" / "exact-token-games.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks[0] == '--8<-- "examples/token_nash.py"\n'
    assert (ROOT / "examples" / "token_nash.py").is_file()


def test_token_nash_example_runs_and_measures_exactly(capsys):
    ns = runpy.run_path(str(ROOT / "examples" / "token_nash.py"), run_name="__main__")
    game, pi_star, pi_ref = ns["game"], ns["pi_star"], ns["pi_ref"]
    assert len(ns["answers"]) == 259 and game.P.shape == (8, 259, 259)
    assert exploitability(game, pi_star) < 1e-9 < exploitability(game, pi_ref)
    np.testing.assert_allclose(pi_ref.sum(axis=1), 1.0, atol=1e-12)
    row = ns["agent"].history[-1]
    assert "eval/exploitability" in row and "eval/kl_to_nash" in row
    lo, hi = ns["est"].exploitability_ci
    assert lo <= ns["est"].exploitability <= hi
    assert "estimated exploitability" in capsys.readouterr().out
