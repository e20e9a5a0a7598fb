"""``%%chat --context`` against the real vLLM: a context too large for tiny-chat's 512-token window is cut,
counted exactly by the server's own ``/tokenize``, and the request then succeeds."""

from __future__ import annotations

import re

import httpx
import pandas as pd
import pytest

from tests.unit.notebook_shell import Shell
from vllm_magic.context import context_text, describe_variables
from vllm_magic.messages import Context, Message, Text


def test_context_too_large_for_the_window_is_cut_with_a_note(ip: Shell, vllm_chat,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", vllm_chat.api_key)
    ip.ok(f"%vllm connect {vllm_chat.base_url}")
    ip.shell.user_ns.update(small=7, big=pd.DataFrame({"text": ["a long line of words " * 8] * 100}))
    out = ip.ok("%%chat --context small,big --max-tokens 16 -t 0\nSummarise the data.")

    whole = Message("user", [Context(context_text(describe_variables("small,big", ip.shell.user_ns, 2000,
                                                                      lambda text: False))),
                             Text("Summarise the data.")])
    counted = httpx.post(vllm_chat.base_url + "/tokenize", json={"model": "tiny-chat", "messages": [whole.to_wire()]},
                         headers={"Authorization": f"Bearer {vllm_chat.api_key}"}).raise_for_status().json()
    turn = ip.turns[-1]
    assert counted["count"] + 16 > 512, "the whole context would not have fitted"
    dropped = counted["count"] - turn.prompt_tokens
    assert f"Context left out to fit tiny-chat's 512 tokens: big ({dropped:,} tokens)." in out
    assert turn.user.context == "small:\nint: 7" and turn.complete and 0 < turn.completion_tokens <= 16
    assert re.search(rf"tiny-chat \u00b7 {turn.prompt_tokens} \u2192 \d+ tokens", out)


def test_the_context_notebook_runs_on_the_real_server(vllm_chat) -> None:
    import os
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[2]
    notebook = nbformat.read(root / "notebooks" / "context.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_", "JPY_"))}
    env.update(VLLM_BASE_URL=vllm_chat.base_url, VLLM_API_KEY=vllm_chat.api_key)
    NotebookClient(notebook, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute(env=env)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["KeyError"], "only the cell meant to fail"
    history = "".join(o.get("data", {}).get("text/html", "") for o in code[3].outputs)
    assert "units" in history and "not-for-the-model" not in history and "withheld" in history
    cells = "".join(o.get("data", {}).get("text/html", "") for o in code[-1].outputs)
    assert cells.count("In [") == 2, "each turn names the cell that made it"
    assert "KeyError" in cells and "prices" in cells, "the fix turn carries the failing cell and its traceback"
    assert vllm_chat.api_key not in nbformat.writes(notebook)
