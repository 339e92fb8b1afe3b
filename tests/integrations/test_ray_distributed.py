"""``agents.arena.distributed.ray_map`` and tournaments on a local Ray cluster (identical to the local run)."""

from __future__ import annotations

import math
import operator
import sys

import numpy as np
import pytest

from agents.arena.distributed import ray_map

RAY_REASON = "needs the ray extra: pip install 'nlhf-zoo[ray]'"


# Ray workers import task functions by reference: use importable ones (stdlib), not test-module ones.


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ImportError, match=r"install the ray extra: pip install 'nlhf-zoo\[ray\]'"):
        ray_map(operator.neg, [1])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_cpus applies to a new local cluster only"):
        ray_map(operator.neg, [], address="auto", num_cpus=2)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1 or None; got 0"):
        ray_map(operator.neg, [], chunk_size=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        ray_map(3, [])


@pytest.mark.ray
def test_ray_map_preserves_order_for_any_chunking(ray_cluster):
    pytest.importorskip("ray", reason=RAY_REASON)
    items = [0.5 * i - 7 for i in range(37)]
    expected = [-x for x in items]
    for chunk_size in (None, 1, 5, 100):
        assert ray_map(operator.neg, items, chunk_size=chunk_size) == expected
    assert ray_map(operator.neg, []) == []
    seen: list[float] = []
    assert ray_map(operator.neg, items, chunk_size=4, on_result=seen.append) == expected
    assert sorted(seen) == sorted(expected)  # every result reported once, as tasks finish


@pytest.mark.ray
def test_ray_map_reraises_the_task_error(ray_cluster):
    pytest.importorskip("ray", reason=RAY_REASON)
    with pytest.raises(ValueError, match="math domain error"):
        ray_map(math.sqrt, [4.0, 1.0, -1.0, 9.0], chunk_size=2)


@pytest.mark.ray
def test_tournament_on_ray_equals_the_local_run(ray_cluster):
    pytest.importorskip("ray", reason=RAY_REASON)
    import agents
    from agents import arena

    nash_mp = agents.make("nash_mp", "biased_rps", seed=0).learn(num_iterations=20)
    ppo = agents.make("sb3_ppo_selfplay", "biased_rps", seed=0, batch_size=64).learn(
        num_iterations=3
    )
    participants = {
        "nash_mp": nash_mp,
        "sb3_ppo": ppo,
        "uniform": "uniform",
        "rock": np.array([1.0, 0.0, 0.0]),
    }
    local = arena.run(participants, "nlhf/BiasedRPS-v0", num_duels=300, seed=3)
    remote = arena.run(participants, "nlhf/BiasedRPS-v0", num_duels=300, seed=3, use_ray=True)
    np.testing.assert_array_equal(remote.win_rate, local.win_rate)
    # a real tournament: rock loses to the learned policies (paper-heavy in biased RPS)
    i, j = remote.names.index("rock"), remote.names.index("nash_mp")
    assert remote.win_rate[i, j] < 0.5
