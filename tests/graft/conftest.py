"""Fixtures shared by the graft tests."""

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread avoids waiting on busy cores."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
