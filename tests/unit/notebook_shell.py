"""An IPython shell with vllm_magic loaded, for tests that run magics as a notebook user would."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.testing.globalipapp import start_ipython

import vllm_magic
from tests.loopback import LoopbackServer
from vllm_magic import errors


def ipython_shell() -> InteractiveShell:
    """The test session's one IPython shell (IPython allows a single global instance)."""
    return start_ipython() or InteractiveShell.instance()


ENV = ("VLLM_BASE_URL", "VLLM_API_KEY", "VLLM_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "JPY_SESSION_NAME")


class Shell:
    """An IPython shell with the extension freshly loaded; ``run`` returns (result, printed text)."""

    def __init__(self, shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
        self.shell = shell
        self.capsys = capsys
        vllm_magic.load_ipython_extension(shell)
        self.magics = shell.magics_manager.registry["VLLMMagics"]

    def run(self, source: str) -> tuple[ExecutionResult, str]:
        self.capsys.readouterr()
        result = self.shell.run_cell(source)
        return result, self.capsys.readouterr().out

    def ok(self, source: str) -> str:
        result, out = self.run(source)
        assert result.success, out
        return out

    def fails(self, source: str, error: type[BaseException]) -> str:
        result, out = self.run(source)
        assert isinstance(result.error_in_exec, error), (result.error_in_exec, out)
        assert "Traceback" not in out, "errors show one paragraph, not a traceback"
        return out

    @property
    def turns(self):
        return self.magics.session.existing_chat().history


def chat_bodies(server: LoopbackServer) -> list[dict]:
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


