"""%%chat in a real ipykernel (via nbclient) against the loopback server: what a notebook saves."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from tests.loopback import LoopbackServer, Reply

ANSWER = ["# Plan\n\n", "Use **pandas**:\n\n", "```python\n", "df = pd.DataFrame()\n", "```\n\n",
          "| a | b |\n|---|---|\n| 1 | 2 |\n\n", "<script>alert(1)</script> done."]


def run(cells: list[str], env: dict[str, str], allow_errors: bool = False) -> nbformat.NotebookNode:
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    client = NotebookClient(notebook, kernel_name="python3", timeout=60, allow_errors=allow_errors)
    client.execute(env=env)
    return notebook


@pytest.fixture
def kernel_env(loopback: LoopbackServer) -> dict[str, str]:
    """The kernel's environment: this one without any vLLM/OpenAI settings, plus the loopback URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    return {**env, "VLLM_BASE_URL": loopback.base_url}


def test_streamed_answer_is_saved_as_rendered_html_with_a_footer(loopback: LoopbackServer, kernel_env) -> None:
    loopback.push(Reply.tokens(ANSWER, finish_reason="stop", delay=0.02))
    notebook = run(["%load_ext vllm_magic", "%%chat\nPlan it"], kernel_env)
    outputs = notebook.cells[1].outputs
    assert outputs and all(o.output_type == "display_data" for o in outputs)
    html = "".join(o.data["text/html"] for o in outputs)
    assert "<h1>Plan</h1>" in html and "<strong>pandas</strong>" in html
    assert '<pre class="highlight"><code class="language-python">' in html and "<table>" in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "tiny-chat" in outputs[-1].data["text/html"] and "finished" in outputs[-1].data["text/plain"]
    assert "\u258d" not in html, "the streaming cursor is gone from the saved output"


def test_errors_fail_the_cell_with_one_paragraph(loopback: LoopbackServer, kernel_env) -> None:
    notebook = run(["%load_ext vllm_magic", "%%chat --model nope\nhi", "print('after')"], kernel_env,
                   allow_errors=True)
    error = notebook.cells[1].outputs[-1]
    assert error.output_type == "error" and error.ename == "NotFoundError"
    assert len(error.traceback) == 1 and "Valid aliases: tiny-chat" in error.traceback[0]
    with pytest.raises(CellExecutionError, match="NotFoundError"):
        run(["%load_ext vllm_magic", "%%chat --model nope\nhi", "print('never')"], kernel_env)
