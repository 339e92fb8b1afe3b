"""Fixtures shared by every test package."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny SB3 networks run much faster on one torch thread; restore the caller's count after."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
