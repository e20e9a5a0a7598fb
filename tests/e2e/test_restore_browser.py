"""The conversation belongs to the notebook, in real JupyterLab (Chromium): a `%%chat` cell's turn is
saved beside the notebook and in its metadata, and after a kernel restart `%load_ext vllm_magic` offers
it back and `%vllm restore` brings it back, with the cell that made it (from the metadata when the file
beside the notebook is gone)."""

from __future__ import annotations

import json

import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest
from lab import LabServer, cell_outputs, open_notebook, run_all, write_notebook
from playwright.sync_api import Page, expect


@pytest.fixture(scope="module")
def lab_env(vllm_chat) -> dict[str, str]:
    return {"VLLM_BASE_URL": vllm_chat.base_url, "VLLM_API_KEY": vllm_chat.api_key}


def restart_kernel(page: Page) -> None:
    """Kernel > Restart Kernel… and its dialog's Restart, as a person does; returns once the new kernel is idle."""
    page.evaluate("""() => {
      const restart = { done: false };
      window.__e2eRestart = restart;
      window.jupyterapp.commands.execute('kernelmenu:restart').then(() => { restart.done = true; });
    }""")
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.wait_for_function("""() => {
      const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
      return window.__e2eRestart.done && kernel.status === 'idle';
    }""", polling=100)


def set_source(page: Page, index: int, source: str) -> None:
    page.evaluate("""([index, source]) => {
      window.jupyterapp.shell.currentWidget.content.widgets[index].model.sharedModel.setSource(source);
    }""", [index, source])


def test_a_restarted_kernel_offers_and_restores_the_notebooks_conversation(
        page: Page, lab_server: LabServer, lab_env: dict[str, str]) -> None:
    cells = ["%load_ext vllm_magic", f"%%chat --temperature 0\n{tiny_corpus.HELLO_PROMPT}"]
    open_notebook(page, lab_server, write_notebook(lab_server, "restore.ipynb", cells))
    run_all(page)
    expect(cell_outputs(page, 1).first).to_contain_text(tiny_corpus.HELLO_ANSWER)
    sidecar = (lab_server.root_dir / ".restore.ipynb.vllm-chat.json").read_text(encoding="utf-8")
    assert json.loads(sidecar)["conversations"][0]["turns"][0]["cell"] == 2
    assert lab_env["VLLM_API_KEY"] not in sidecar and lab_env["VLLM_BASE_URL"] not in sidecar

    restart_kernel(page)
    set_source(page, 1, "%vllm restore\n%vllm history --cells")
    run_all(page)
    expect(cell_outputs(page, 0)).to_contain_text("This notebook has a saved conversation (1 turn, last ")
    expect(cell_outputs(page, 0)).to_contain_text("`%vllm restore` brings it back.")
    restored = cell_outputs(page, 1)
    expect(restored.first).to_contain_text("Restored 'default' (1 turn")
    history = restored.locator(".vllm-magic")
    expect(history.locator("h4").first).to_contain_text("1. You \u00b7 In [2]")
    expect(history).to_contain_text(tiny_corpus.HELLO_PROMPT)
    expect(history).to_contain_text(tiny_corpus.HELLO_ANSWER)


def test_the_notebooks_metadata_keeps_the_conversation_and_restores_it_without_the_file(
        page: Page, lab_server: LabServer, lab_env: dict[str, str]) -> None:
    cells = ["%load_ext vllm_magic", f"%%chat --temperature 0\n{tiny_corpus.HELLO_PROMPT}", "%vllm history"]
    open_notebook(page, lab_server, write_notebook(lab_server, "metadata.ipynb", cells))
    run_all(page)
    kept = page.evaluate("() => window.jupyterapp.shell.currentWidget.model.getMetadata('vllm_magic')")
    (conversation,) = kept["conversations"]
    assert [t["replies"][-1]["parts"][-1]["text"] for t in conversation["turns"]] == [tiny_corpus.HELLO_ANSWER]
    assert lab_env["VLLM_API_KEY"] not in json.dumps(kept)

    (lab_server.root_dir / ".metadata.ipynb.vllm-chat.json").unlink()  # copied elsewhere without it
    restart_kernel(page)
    set_source(page, 1, "pass")
    set_source(page, 2, "pass")
    run_all(page)  # %load_ext alone: the kernel hears the metadata once that cell has finished
    set_source(page, 1, "%vllm restore")
    set_source(page, 2, "%vllm history")
    for index in (1, 2):
        page.evaluate("""index => {
          window.jupyterapp.shell.currentWidget.content.activeCellIndex = index;
          return window.jupyterapp.commands.execute('notebook:run-cell');
        }""", index)
    expect(cell_outputs(page, 1).first).to_contain_text("Restored 'default' (1 turn")
    expect(cell_outputs(page, 2).locator(".vllm-magic")).to_contain_text(tiny_corpus.HELLO_ANSWER)
