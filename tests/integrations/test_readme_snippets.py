"""The docs' SB3 and RLlib snippets are the files in ``examples/`` (included, not copied), and they run."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

from nlhf_envs import solvers
from nlhf_envs.registration import MATRIX_ENV_IDS

ROOT = Path(__file__).resolve().parents[2]
RAY_REASON = "needs the ray extra: pip install 'nlhf-zoo[ray]'"


def _page_blocks() -> list[str]:
    text = (ROOT / "docs" / "integrations.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_snippets_are_the_examples():
    assert _page_blocks() == [
        '--8<-- "examples/sb3_selfplay.py"\n',
        '--8<-- "examples/rllib_selfplay.py"\n',
    ]
    for name in ("sb3_selfplay.py", "rllib_selfplay.py"):
        assert (ROOT / "examples" / name).is_file()


def test_sb3_snippet_runs_and_learns(one_torch_thread, capsys):
    ns = runpy.run_path(str(ROOT / "examples" / "sb3_selfplay.py"), run_name="__main__")
    game = ns["game"]
    # part 1: PPO finds the best answer to the fixed Nash-MP opponent
    g = game.win_rates_all(ns["nash_mp"].policy_table()[None]).reshape(-1)
    assert int(ns["action"]) == int(np.argmax(g))
    # part 2: regularised self-play zoo agent
    assert solvers.exploitability(game, ns["ppo"].policy_table()) < 0.015
    assert "exploitability" in capsys.readouterr().out


@pytest.mark.ray
def test_rllib_snippet_runs_and_learns(ray_cluster, one_torch_thread):
    pytest.importorskip("ray.rllib", reason=RAY_REASON)
    ns = runpy.run_path(str(ROOT / "examples" / "rllib_selfplay.py"), run_name="__main__")
    policy, game = ns["policy"], ns["game"]
    np.testing.assert_allclose(policy.sum(), 1.0, atol=1e-5)
    uniform = solvers.exploitability(game, np.ones(3) / 3)
    assert solvers.exploitability(game, policy) < 0.02 < uniform


@pytest.mark.ray
@pytest.mark.parametrize("env_id", sorted(MATRIX_ENV_IDS))
def test_rllib_wrapper_passes_rllib_checker(env_id):
    pytest.importorskip("ray.rllib", reason=RAY_REASON)
    import pettingzoo
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    env = ParallelPettingZooEnv(pettingzoo.make("parallel", env_id))
    check_multiagent_environments(env)
    assert sorted(env.possible_agents) == ["player_0", "player_1"]
