"""The core features against a real vLLM (CPU build) serving the project's tiny chat model."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from vllm_magic import Chat, errors, models
from vllm_magic.client import Client

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def chat(vllm_chat) -> Chat:
    return Chat(vllm_chat.base_url + "/v1/", api_key=vllm_chat.api_key, temperature=0, max_tokens=8)


def printed(cell) -> str:
    """A cell's printed text: the kernel may send one print() as several stream outputs."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def kernel_env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    return {**env, "VLLM_BASE_URL": server.base_url, "VLLM_API_KEY": server.api_key}


def test_models_lists_the_tiny_model(vllm_chat) -> None:
    (entry,) = models(vllm_chat.base_url, api_key=vllm_chat.api_key)
    assert entry["id"] == "tiny-chat" and entry["max_model_len"] == 512


def test_multi_turn_chat_and_usage_equal_the_servers(chat: Chat, vllm_chat) -> None:
    first = chat.ask("Say hello")
    assert first.text and first.finish_reason == "length" and first.completion_tokens == 8
    messages = chat.conversation.messages("And again")
    counted = Client(vllm_chat.base_url, vllm_chat.api_key).tokenize("tiny-chat", messages)["count"]
    second = chat.ask("And again")
    assert second.prompt_tokens == counted, "usage is the server's own count"
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens, "turn 2 carries turn 1"
    usage = chat.usage()
    assert list(usage["completion_tokens"][:2]) == [8, 8]
    assert usage.loc["total", "prompt_tokens"] == first.prompt_tokens + second.prompt_tokens


def test_greedy_answers_repeat_and_params_pass_through(chat: Chat) -> None:
    once = chat.stream("Tell me a story", record=False, max_tokens=12)
    twice = chat.stream("Tell me a story", record=False, max_tokens=12)
    assert once.text() == twice.text()
    seeded = [chat.stream("Hi", record=False, temperature=1.0, seed=5, top_k=20, min_tokens=2).text()
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    stopped = chat.ask("Tell me a story", max_tokens=30, stop=[once.turn.text[3:6]])
    assert stopped.finish_reason == "stop" and stopped.text == once.turn.text[:3]


def test_context_too_long_counts_the_conversation(chat: Chat) -> None:
    chat.ask("short")
    with pytest.raises(errors.ContextLengthError) as info:
        chat.ask("word " * 600)
    message = str(info.value)
    held = re.search(r"The conversation holds (\d+) tokens", message)
    assert held and int(held.group(1)) > 512
    assert "max_model_len of 512" in message and "maximum context length is 512 tokens" in message
    assert len(chat.history) == 1


def test_bad_param_is_the_servers_verbatim_message(chat: Chat) -> None:
    with pytest.raises(errors.BadRequestError, match="max_tokens=100000 cannot be greater than max_model_len=512"):
        chat.ask("hi", max_tokens=100000)
    assert chat.history == []


def test_wrong_and_missing_key(vllm_chat) -> None:
    for key in ("wrong-key", None):
        with pytest.raises(errors.AuthError) as info:
            Chat(vllm_chat.base_url, api_key=key or "").ask("hi")
        assert "HTTP 401" in str(info.value) and (key is None or key not in str(info.value))


def running_requests(server) -> float:
    metrics = httpx.get(server.base_url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("vllm:num_requests_running"))


def test_kernel_interrupt_stops_generation_and_keeps_the_partial_answer(vllm_chat) -> None:
    manager, client = start_new_kernel(kernel_name="python3", env=kernel_env(vllm_chat))
    try:
        client.execute_interactive("%load_ext vllm_magic", timeout=60)
        msg_id = client.execute("%%chat --max-tokens 480 --temperature 0\nWrite a very long story.")
        while True:  # wait for the answer's first display update, then interrupt
            msg = client.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "update_display_data":
                break
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = client.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "Interrupted"
        deadline = time.monotonic() + 10
        while running_requests(vllm_chat) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the server's own metric, not a guess at timing
        assert running_requests(vllm_chat) == 0, "vLLM aborted the request"
        outputs: list[str] = []
        client.execute_interactive(
            "t = get_ipython().magics_manager.registry['VLLMMagics'].chats['default'].history[-1]\n"
            "print(t.status, t.finish_reason, len(t.text) > 0, t.completion_tokens)",
            output_hook=lambda m: outputs.append(m["content"].get("text", "")), timeout=60)
        assert "".join(outputs).split() == ["interrupted", "None", "True", "None"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_quickstart_notebook_runs_against_the_real_server(vllm_chat) -> None:
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    checks = nbformat.v4.new_code_cell(
        "print(usage.index.tolist(), usage.loc[2, 'prompt_tokens'] > usage.loc[1, 'total_tokens'], "
        "turn.finish_reason, turn.completion_tokens)"
    )
    notebook.cells.append(checks)
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=kernel_env(vllm_chat))
    code = [c for c in notebook.cells if c.cell_type == "code"]
    connect = printed(next(c for c in code if c.source == "%vllm connect"))
    assert "model tiny-chat (max_model_len 512)" in connect and vllm_chat.api_key not in connect
    first_chat = next(c for c in code if c.source.startswith("%%chat --temperature 0 --max-tokens 24"))
    html = "".join(o.data["text/html"] for o in first_chat.outputs if o.output_type == "display_data")
    assert re.search(r'<div class="vllm-magic"><(p|h[1-6]|ul|ol|pre|table|blockquote|hr)[ >]', html), html[:500]
    assert "tiny-chat" in html and "\u2192 24 tokens" in html
    assert "cut by max_tokens" in html
    assert printed(checks).strip() == "[1, 2, 3, 'total'] True length 8"
    assert vllm_chat.api_key not in nbformat.writes(notebook)
