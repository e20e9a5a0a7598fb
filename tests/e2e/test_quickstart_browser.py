"""The quickstart notebook in real JupyterLab (Chromium) against the real vLLM tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab import LabServer, cell_outputs, cells, copy_notebook, open_notebook, run_all
from playwright.sync_api import Page, expect

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def lab_env(vllm_chat) -> dict[str, str]:
    """Kernels of this module's JupyterLab talk to the real vLLM, with its key."""
    return {"VLLM_BASE_URL": vllm_chat.base_url, "VLLM_API_KEY": vllm_chat.api_key}


def test_quickstart_streams_rendered_markdown(page: Page, lab_server: LabServer, vllm_chat) -> None:
    relpath = copy_notebook(lab_server, QUICKSTART)
    open_notebook(page, lab_server, relpath)
    run_all(page)
    sources = cells(page).locator(".jp-InputArea-editor").all_inner_texts()
    index = next(i for i, s in enumerate(sources) if s.startswith("%%chat --temperature 0 --max-tokens 24"))
    answer = cell_outputs(page, index)
    rendered = answer.locator(".vllm-magic").first
    expect(rendered).to_be_visible()
    expect(rendered.locator("p, h1, h2, h3, ul, ol, pre, table, blockquote").first).to_be_attached()
    footer = answer.locator(".vllm-magic-footer")
    expect(footer).to_be_visible()
    expect(footer).to_contain_text("tiny-chat")
    expect(footer).to_contain_text("\u2192 24 tokens")
    expect(footer).to_contain_text("cut by max_tokens")
    assert answer.locator(".vm-cursor").count() == 0, "no streaming cursor left once the answer is done"
    assert vllm_chat.api_key not in page.content()
    answer.scroll_into_view_if_needed()  # the saved screenshot shows the answer
