"""Fixtures shared by the fast unit suite."""

from collections.abc import Iterator

import pytest

from tests.loopback import LoopbackServer
from tests.unit.notebook_shell import ENV, Shell, ipython_shell
from vllm_magic import errors


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A fresh vLLM look-alike per test (chat model ``tiny-chat``, max_model_len 512), so scripted
    replies and recorded requests never leak between tests."""
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def ip(loopback: LoopbackServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Shell]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VLLM_BASE_URL", loopback.base_url + "/v1/")
    shell = ipython_shell()
    yield Shell(shell, capsys)
    errors.show_tracebacks = False
    shell.config.pop("VLLMMagics", None)  # %config settings of one test must not reach the next
