"""The quickstart notebook in real JupyterLab (Chromium) against the real vLLM trained tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest
from lab import LabServer, cell_outputs, cells, copy_notebook, open_notebook, run_all
from playwright.sync_api import Page, expect

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def lab_env(vllm_chat) -> dict[str, str]:
    """Kernels of this module's JupyterLab talk to the real vLLM, with its key."""
    return {"VLLM_BASE_URL": vllm_chat.base_url, "VLLM_API_KEY": vllm_chat.api_key}


def test_quickstart_streams_rendered_markdown(page: Page, lab_server: LabServer, vllm_chat) -> None:
    """The trained tiny model's first answer shows as a highlighted Python block and a table, and
    the footer says it finished (EOS, not max_tokens)."""
    relpath = copy_notebook(lab_server, QUICKSTART)
    open_notebook(page, lab_server, relpath)
    run_all(page)
    # textContent, not innerText: JupyterLab skips rendering cells scrolled out of view, whose
    # innerText is then empty (the editor's lines come without newlines between them)
    sources = cells(page).locator(".jp-InputArea-editor").all_text_contents()
    index = next((i for i, s in enumerate(sources) if s.startswith("%%chat") and tiny_corpus.DATAFRAME_PROMPT in s), None)
    assert index is not None, sources
    answer = cell_outputs(page, index)  # a long answer may span several outputs
    expect(answer.locator(".vllm-magic").first).to_be_visible()
    code = answer.locator(".vllm-magic pre.highlight code.language-python")
    expect(code).to_be_visible()
    expect(code).to_contain_text('df = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})')
    expect(code.locator("span.kn").first).to_have_text("import")  # Pygments marked the keyword
    table = answer.locator(".vllm-magic table")
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator("tbody tr").last.locator("td")).to_have_text(["2", "3", "6"])
    footer = answer.locator(".vllm-magic-footer")
    expect(footer).to_be_visible()
    expect(footer).to_contain_text("tiny-chat")
    expect(footer).to_contain_text("finished")
    expect(footer).not_to_contain_text("cut by max_tokens")
    assert answer.locator(".vm-cursor").count() == 0, "no streaming cursor left once the answer is done"
    assert vllm_chat.api_key not in page.content()
    answer.first.scroll_into_view_if_needed()  # the saved screenshot shows the answer
