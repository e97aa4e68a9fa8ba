"""Fixtures of the spaces tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread: on the shared 2-core machine, two threads per process oversubscribe the CPU
    and small models run 10-100x slower. Restores the previous setting afterwards."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
