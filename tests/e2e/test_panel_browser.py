"""The ipywidgets chat panel in real JupyterLab (Chromium), on the real vLLM tiny model."""

from __future__ import annotations

import re

import pytest
from lab import LabServer, assert_no_widget_errors, open_notebook, outputs, run_all, write_notebook
from playwright.sync_api import Page, expect

CELLS = [
    "%load_ext vllm_magic\n%vllm connect",
    "%vllm panel",
    "%%chat --max-tokens 8 --temperature 0\nhello from a cell",
]


@pytest.fixture(scope="module")
def lab_env(vllm_chat) -> dict[str, str]:
    return {"VLLM_BASE_URL": vllm_chat.base_url, "VLLM_API_KEY": vllm_chat.api_key}


def test_panel_chats_streams_stops_and_shares_the_notebooks_conversation(page: Page, lab_server: LabServer) -> None:
    open_notebook(page, lab_server, write_notebook(lab_server, "panel.ipynb", CELLS))
    run_all(page)
    panel = outputs(page).locator(".vllm-magic-panel").first
    expect(panel).to_be_visible()
    transcript = panel.locator(".vm-user")  # newest first: the box is laid out bottom-up
    expect(transcript.first).to_contain_text("hello from a cell")  # the cell's turn is in the panel
    expect(panel).to_contain_text("/ 512 tokens")  # the context gauge, counted by /tokenize

    box = panel.locator("textarea.vllm-magic-input")
    max_tokens = panel.locator(".widget-text", has_text="max tokens").locator("input")
    answers = panel.locator(".vm-assistant")
    max_tokens.fill("12")
    max_tokens.press("Enter")
    box.fill("Tell me about notebooks")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(answers).to_have_count(2)  # the streamed answer, recorded
    expect(transcript.first).to_contain_text("Tell me about notebooks")
    expect(answers.first.locator(".vllm-magic-footer")).to_contain_text("→ 12 tokens")

    max_tokens.fill("480")
    max_tokens.press("Enter")
    box.fill("Now a very long story please")
    box.press("Enter")
    expect(panel.locator(".vm-live")).to_contain_text(re.compile(r"\S{3}"))  # text is streaming in
    panel.get_by_role("button", name="Stop").click()
    expect(answers).to_have_count(3)
    expect(transcript.first).to_contain_text("Now a very long story please")
    expect(answers.first.locator(".vllm-magic-footer")).to_contain_text("interrupted: partial answer kept")
    expect(panel.locator(".vm-cursor")).to_have_count(0)
    assert_no_widget_errors(page)
    panel.scroll_into_view_if_needed()
