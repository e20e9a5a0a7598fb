"""The core features against a real vLLM (CPU build) serving the project's tiny chat models.

``tiny-chat`` (``vllm_chat``) was trained on scripts/tiny_corpus.py, so the tests about real
answers send corpus prompts and expect the corpus answers word for word. ``tiny-random``
(``vllm_random``) writes gibberish that only max_tokens or a stop string ends: the tests of cut,
stopped and interrupted answers use it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import httpx
import nbformat
import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from vllm_magic import Chat, errors, models
from vllm_magic.client import Client
from vllm_magic.render import footer_text, markdown_to_html

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def chat(vllm_chat) -> Chat:
    """The trained model, greedy."""
    return Chat(vllm_chat.base_url + "/v1/", api_key=vllm_chat.api_key, temperature=0)


@pytest.fixture
def random_chat(vllm_random) -> Chat:
    """The random model, greedy, cut at 8 tokens."""
    return Chat(vllm_random.base_url + "/v1/", api_key=vllm_random.api_key, temperature=0, max_tokens=8)


def answer_tokens(server, text: str) -> int:
    """Tokens of ``text`` on the server, plus the closing <|im_end|> the model generates."""
    body = {"model": server.model, "prompt": text, "add_special_tokens": False}
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return int(httpx.post(server.base_url + "/tokenize", json=body, headers=headers).raise_for_status().json()["count"]) + 1


def printed(cell) -> str:
    """A cell's printed text: the kernel may send one print() as several stream outputs."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def kernel_env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    return {**env, "VLLM_BASE_URL": server.base_url, "VLLM_API_KEY": server.api_key}


def test_models_lists_the_tiny_model(vllm_chat) -> None:
    (entry,) = models(vllm_chat.base_url, api_key=vllm_chat.api_key)
    assert entry["id"] == "tiny-chat" and entry["max_model_len"] == 512


def test_multi_turn_chat_and_usage_equal_the_servers(random_chat: Chat, vllm_random) -> None:
    chat = random_chat
    first = chat.ask("Say hello")
    assert first.text and first.finish_reason == "length" and first.completion_tokens == 8
    messages = chat.conversation.messages("And again")
    counted = Client(vllm_random.base_url, vllm_random.api_key).tokenize("tiny-random", messages)["count"]
    second = chat.ask("And again")
    assert second.prompt_tokens == counted, "usage is the server's own count"
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens, "turn 2 carries turn 1"
    usage = chat.usage()
    assert list(usage["completion_tokens"][:2]) == [8, 8]
    assert usage.loc["total", "prompt_tokens"] == first.prompt_tokens + second.prompt_tokens


def test_trained_answers_render_as_markdown_and_later_turns_see_the_earlier_ones(chat: Chat, vllm_chat) -> None:
    """The quickstart's three-turn conversation through the package: each streamed answer is the
    corpus answer exactly (turns 2 and 3 only come out right if the history sent is exactly the
    trained one), it ends on EOS, and the package's renderer makes a table and highlighted code."""
    expected = [(tiny_corpus.DATAFRAME_PROMPT, tiny_corpus.DATAFRAME_ANSWER),
                (tiny_corpus.TOTAL_PROMPT, tiny_corpus.TOTAL_ANSWER),
                (tiny_corpus.SUM_PROMPT, tiny_corpus.SUM_ANSWER)]
    client = Client(vllm_chat.base_url, vllm_chat.api_key)
    for prompt, answer in expected:
        counted = client.tokenize("tiny-chat", chat.conversation.messages(prompt))["count"]
        response = chat.stream(prompt)
        assert response.text() == answer
        turn = response.turn
        assert turn.text == answer and turn.finish_reason == "stop" and turn.complete
        assert turn.prompt_tokens == counted and turn.completion_tokens == answer_tokens(vllm_chat, answer)
        assert footer_text(turn).endswith("finished")
    first_html = markdown_to_html(chat.history[0].text)
    assert "<table>" in first_html and first_html.count("<td>") == 9
    assert '<pre class="highlight"><code class="language-python">' in first_html
    assert '<span class="kn">import</span>' in first_html, "Pygments marked the keywords"
    assert chat.history[1].prompt_tokens > chat.history[0].prompt_tokens + chat.history[0].completion_tokens


def test_think_answer_arrives_as_the_turns_reasoning(vllm_reasoning) -> None:
    """Behind vLLM's qwen3 reasoning parser the <think> block streams as delta.reasoning, which the
    package keeps apart from the answer's text."""
    chat = Chat(vllm_reasoning.base_url, api_key=vllm_reasoning.api_key, temperature=0)
    turn = chat.ask(tiny_corpus.THINK_PROMPT)
    assert turn.reasoning == f"\n{tiny_corpus.THINK_REASONING}\n"
    assert turn.text == f"\n\n{tiny_corpus.THINK_ANSWER}" and turn.finish_reason == "stop"


def test_greedy_answers_repeat_and_params_pass_through(random_chat: Chat) -> None:
    chat = random_chat
    once = chat.stream("Tell me a story", record=False, max_tokens=12)
    twice = chat.stream("Tell me a story", record=False, max_tokens=12)
    assert once.text() == twice.text()
    seeded = [chat.stream("Hi", record=False, temperature=1.0, seed=5, top_k=20, min_tokens=2).text()
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    stopped = chat.ask("Tell me a story", max_tokens=30, stop=[once.turn.text[3:6]])
    assert stopped.finish_reason == "stop" and stopped.text == once.turn.text[:3]


def test_context_too_long_counts_the_conversation(chat: Chat) -> None:
    assert chat.ask(tiny_corpus.HELLO_PROMPT).text == tiny_corpus.HELLO_ANSWER
    with pytest.raises(errors.ContextLengthError) as info:
        chat.ask("word " * 600)
    message = str(info.value)
    held = re.search(r"The conversation holds (\d+) tokens", message)
    assert held and int(held.group(1)) > 512
    assert "max_model_len of 512" in message and "maximum context length is 512 tokens" in message
    assert len(chat.history) == 1


def test_bad_param_is_the_servers_verbatim_message(chat: Chat) -> None:
    # min_tokens is not checked by the package (max_tokens over max_model_len now is, before
    # sending): it passes through and vLLM's own words come back.
    with pytest.raises(errors.BadRequestError, match=re.escape("min_tokens must be less than or equal to max_tokens=10, got 20.")):
        chat.ask(tiny_corpus.HELLO_PROMPT, max_tokens=10, min_tokens=20)
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


def test_kernel_interrupt_stops_generation_and_keeps_the_partial_answer(vllm_random) -> None:
    manager, client = start_new_kernel(kernel_name="python3", env=kernel_env(vllm_random))
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
        while running_requests(vllm_random) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the server's own metric, not a guess at timing
        assert running_requests(vllm_random) == 0, "vLLM aborted the request"
        outputs: list[str] = []
        client.execute_interactive(
            "t = get_ipython().magics_manager.registry['VLLMMagics'].session.chats['default'].history[-1]\n"
            "print(t.status.value, t.finish_reason, len(t.text) > 0, t.prompt_tokens, t.usage_estimated)",
            output_hook=lambda m: outputs.append(m["content"].get("text", "")), timeout=60)
        # no finish_reason and no usage from the server: the stream was closed before either came
        assert "".join(outputs).split() == ["interrupted", "None", "True", "None", "True"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_quickstart_notebook_runs_against_the_real_server(vllm_chat) -> None:
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    checks = nbformat.v4.new_code_cell(
        "import json\n"
        "_chat = get_ipython().magics_manager.registry['VLLMMagics'].session.chats['default']\n"
        "print(json.dumps({'texts': [t.text for t in _chat.history],\n"
        "                  'finish': [t.finish_reason for t in _chat.history],\n"
        "                  'system': _chat.conversation.system,\n"
        "                  'index': [str(i) for i in usage.index],\n"
        "                  'grows': bool(usage.loc[2, 'prompt_tokens'] > usage.loc[1, 'total_tokens']),\n"
        "                  'answer': answer, 'turn': [turn.text, turn.finish_reason, turn.completion_tokens]}))"
    )
    notebook.cells.append(checks)
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=kernel_env(vllm_chat))
    code = [c for c in notebook.cells if c.cell_type == "code"]
    connect = printed(next(c for c in code if c.source == "%vllm connect"))
    assert "model tiny-chat (max_model_len 512)" in connect and vllm_chat.api_key not in connect

    def html_of(prefix: str, prompt: str) -> str:
        cell = next(c for c in code if c.source == f"{prefix}\n{prompt}")
        return "".join(o.data["text/html"] for o in cell.outputs if o.output_type == "display_data")

    first = html_of("%%chat --temperature 0", tiny_corpus.DATAFRAME_PROMPT)
    assert first.startswith('<style') or '<div class="vllm-magic">' in first, first[:300]
    assert "<table>" in first and '<pre class="highlight"><code class="language-python">' in first
    assert "tiny-chat" in first and "finished" in first and "cut by max_tokens" not in first
    second = html_of("%%chat --temperature 0", tiny_corpus.TOTAL_PROMPT)
    assert "<table>" in second and "total" in second and "finished" in second
    json_check = html_of("%%chat --once --temperature 0", tiny_corpus.JSON_CHECK_PROMPT)
    assert "valid JSON" not in json_check and "<code>&quot;a&quot;</code>" in json_check and "finished" in json_check

    result = json.loads(printed(checks))
    assert result["texts"] == [tiny_corpus.DATAFRAME_ANSWER, tiny_corpus.TOTAL_ANSWER, tiny_corpus.SUM_ANSWER], \
        "the conversation the notebook sends is the trained one, so every answer is the trained answer"
    assert result["finish"] == ["stop", "stop", "stop"] and result["system"] is None
    assert result["index"] == ["1", "2", "3", "total"] and result["grows"]
    assert result["answer"] == tiny_corpus.INTERPOLATED_ANSWER
    assert result["turn"] == [tiny_corpus.HELLO_ANSWER, "stop", answer_tokens(vllm_chat, tiny_corpus.HELLO_ANSWER)]
    assert vllm_chat.api_key not in nbformat.writes(notebook)
