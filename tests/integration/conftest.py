"""The integration tier's notebook: an IPython shell with vllm_magic loaded and no server settings
from the environment (each test connects to the real server it is about)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.notebook_shell import ENV, Shell, ipython_shell


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Shell]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    yield Shell(ipython_shell(), capsys)
    ipython_shell().config.pop("VLLMMagics", None)
