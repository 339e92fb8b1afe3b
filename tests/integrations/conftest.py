"""Fixtures of the integration tests: one local Ray cluster shared by every Ray test of the session."""

from __future__ import annotations

import pytest

RAY_REASON = "needs the ray extra: pip install 'nlhf-zoo[ray]'"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray cluster (reused if this process already joined one; shut down at the end)."""
    ray = pytest.importorskip("ray", reason=RAY_REASON)
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
