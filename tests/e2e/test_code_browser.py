"""Code from an answer into the notebook, in real JupyterLab (Chromium): the labextension's "Insert
below" and "Copy" buttons on every code block, and `%%chat --code`, which needs no extension."""

from __future__ import annotations

import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest
from lab import LabServer, cell, cell_outputs, cells, open_notebook, run_all, start_run_all, write_notebook
from playwright.sync_api import Page, expect

CODE = 'import pandas as pd\n\ndf = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})\nprint(df)'


@pytest.fixture(scope="module")
def lab_env(vllm_chat) -> dict[str, str]:
    return {"VLLM_BASE_URL": vllm_chat.base_url, "VLLM_API_KEY": vllm_chat.api_key}


def source(page: Page, index: int) -> str:
    return page.evaluate(
        "i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource()", index)


def test_a_code_block_goes_into_a_new_cell_below_or_to_the_clipboard(page: Page, lab_server: LabServer) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    cells_ = ["%load_ext vllm_magic", f"%%chat --temperature 0\n{tiny_corpus.DATAFRAME_PROMPT}", "print('last')"]
    open_notebook(page, lab_server, write_notebook(lab_server, "code.ipynb", cells_))
    run_all(page)
    answer = cell_outputs(page, 1)
    insert = answer.get_by_role("button", name="Insert below")
    expect(insert).to_have_count(1)
    insert.click()
    expect(cells(page)).to_have_count(4)
    assert source(page, 2) == CODE and source(page, 3) == "print('last')", "below the answer's cell, not run"
    answer.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == CODE


def test_chat_code_puts_the_block_into_the_next_cell(page: Page, lab_server: LabServer) -> None:
    cells_ = ["%load_ext vllm_magic", f"%%chat --code --temperature 0\n{tiny_corpus.DATAFRAME_PROMPT}"]
    open_notebook(page, lab_server, write_notebook(lab_server, "chatcode.ipynb", cells_))
    start_run_all(page)  # run_all would wait for the new cell to run too: it is not run
    expect(cell(page, 2).locator(".jp-InputArea-editor")).to_contain_text("import pandas as pd", timeout=120_000)
    expect(cells(page)).to_have_count(3)
    assert source(page, 2) == CODE
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets[2].model.executionCount") is None
