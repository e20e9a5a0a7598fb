"""notebooks/panel.ipynb runs headless against the loopback server (it shows widgets, so the
browser tier covers how it looks; this checks every cell runs and the panel is there)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.loopback import LoopbackServer

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_panel_notebook_runs(loopback: LoopbackServer) -> None:
    notebook = nbformat.read(NOTEBOOKS / "panel.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    NotebookClient(notebook, kernel_name="python3", timeout=60, store_widget_state=True,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute(env={**env, "VLLM_BASE_URL": loopback.base_url})
    code = [c for c in notebook.cells if c.cell_type == "code"]
    panel = next(c for c in code if c.source == "%vllm panel")
    assert panel.outputs[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]
    sidebar = next(c for c in code if c.source == "%vllm sidebar")
    assert sidebar.outputs[0].data == {"text/plain": "Asked JupyterLab to open the vLLM chat sidebar (right side); other front ends have no sidebar: use `%vllm panel` there."}, \
        "the saved notebook keeps no request that would reopen the sidebar"
    states = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    texts = " ".join(str(s["state"].get("value", "")) for s in states.values())
    assert "Give me three names" in texts and "Which of those names" in texts, "the panel holds both cell turns"
