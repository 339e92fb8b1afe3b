"""Exact comparison of recorded env trajectories, shared by the seeding tests of the n-player envs
(imported by name: pytest puts this folder on ``sys.path`` for its ``conftest.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_same(a: Any, b: Any) -> None:
    """``a`` and ``b`` are the same to the bit: equal types, dict keys in the same order, arrays
    of the same dtype and values (recursively), other values ``==``."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b
