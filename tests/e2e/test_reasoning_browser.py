"""Reasoning in real JupyterLab (Chromium): the trained tiny model behind vLLM's qwen3 reasoning
parser thinks first; the cell shows a folded Thinking block above the rendered answer."""

from __future__ import annotations

import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest
from lab import LabServer, cell_outputs, open_notebook, run_all, write_notebook
from playwright.sync_api import Page, expect


@pytest.fixture(scope="module")
def lab_env(vllm_reasoning) -> dict[str, str]:
    return {"VLLM_BASE_URL": vllm_reasoning.base_url, "VLLM_API_KEY": vllm_reasoning.api_key}


def test_the_thinking_block_folds_above_the_answer(page: Page, lab_server: LabServer) -> None:
    cells = ["%load_ext vllm_magic", f"%%chat --temperature 0 --max-tokens 200\n{tiny_corpus.THINK_PROMPT}"]
    open_notebook(page, lab_server, write_notebook(lab_server, "thinking.ipynb", cells))
    run_all(page)
    output = cell_outputs(page, 1)
    thinking = output.locator("details.vm-thinking")
    expect(thinking).to_have_count(1)
    expect(thinking.locator("summary")).to_contain_text("Thinking (")  # with its token count
    expect(thinking).not_to_have_attribute("open", "")  # folded once the answer came
    expect(output.locator("strong", has_text="51")).to_be_visible()
    thinking.locator("summary").click()
    expect(thinking.locator(".vm-thinking-text")).to_have_text(tiny_corpus.THINK_REASONING)
    expect(output.locator(".vllm-magic-footer")).to_contain_text("finished")
    thinking.scroll_into_view_if_needed()
