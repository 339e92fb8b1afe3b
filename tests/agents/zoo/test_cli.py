"""The nlhf-zoo command line: list and demo."""

import subprocess
import sys

import pytest

from agents.zoo.cli import main


def test_list_names_every_env_id(capsys):
    import nlhf_envs

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in nlhf_envs.registered_ids():
        assert env_id in out


def test_catalog_solves_builtin_games():
    from nlhf_envs.catalog import solve_table

    rows = solve_table()
    assert len(rows) >= 8
    for r in rows:
        assert abs(r.expl_nash) < 1e-10
        assert r.expl_uniform >= -1e-12
    biased = next(r for r in rows if r.game == "biased_rps")
    assert biased.expl_uniform > 0.01  # uniform is not the Nash of biased RPS


def test_unknown_command_is_one_line_error():
    proc = subprocess.run(
        [sys.executable, "-m", "agents.zoo.cli", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("cmd", [["--help"], ["list", "--help"], ["demo", "--help"]])
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(cmd)
    assert exc.value.code == 0
    assert "usage: nlhf-zoo" in capsys.readouterr().out
