"""Fixtures shared by the fast unit suite."""

from collections.abc import Iterator

import pytest

from tests.loopback import LoopbackServer


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A fresh vLLM look-alike per test (chat model ``tiny-chat``, max_model_len 512), so scripted
    replies and recorded requests never leak between tests."""
    with LoopbackServer() as server:
        yield server
