"""Run notebooks/quickstart.ipynb headless and say where its output is.

Uses the server in VLLM_BASE_URL (and VLLM_API_KEY) when set; otherwise starts the embedded
default, a local real vLLM serving the project's tiny chat model (trained at build time on
scripts/tiny_corpus.py, which holds the notebook's prompts), and stops it afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
OUT = ROOT / "build"


def main() -> int:
    server = None
    if not os.environ.get("VLLM_BASE_URL"):
        sys.path.insert(0, str(ROOT / "scripts"))
        import vllm_env

        print("VLLM_BASE_URL is not set: starting the embedded tiny vLLM server...", flush=True)
        server = vllm_env.start_server("chat")
        server.wait_ready()
        os.environ["VLLM_BASE_URL"] = server.base_url
        print(f"vLLM is up at {server.base_url}", flush=True)
    try:
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        NotebookClient(notebook, kernel_name="python3", timeout=300,
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        if server is not None:
            server.stop()
    OUT.mkdir(exist_ok=True)
    executed = OUT / "quickstart.ipynb"
    nbformat.write(notebook, executed)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    (OUT / "quickstart.html").write_text(html, encoding="utf-8")
    print(f"Quickstart ran. Executed notebook: {executed}\nAs a web page: {OUT / 'quickstart.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
