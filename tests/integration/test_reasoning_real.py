"""Reasoning from the real vLLM (qwen3 reasoning parser) serving the trained tiny model: the Thinking
block and the answer both come from the server, and later requests carry no reasoning."""

from __future__ import annotations

import os

import nbformat
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest
from nbclient import NotebookClient

from vllm_magic import Chat
from vllm_magic.client import Client


def test_reasoning_is_kept_apart_and_not_sent_back(vllm_reasoning) -> None:
    chat = Chat(vllm_reasoning.base_url, api_key=vllm_reasoning.api_key, temperature=0)
    first = chat.ask(tiny_corpus.THINK_PROMPT, max_tokens=200)
    assert first.reasoning.strip() == tiny_corpus.THINK_REASONING
    assert first.text.strip() == tiny_corpus.THINK_ANSWER and first.finish_reason == "stop"
    assert first.reasoning_tokens and first.reasoning_tokens < first.completion_tokens
    second = chat.ask(tiny_corpus.PRIME_PROMPT, max_tokens=200)
    without = chat.conversation.messages(tiny_corpus.PRIME_PROMPT, turns=chat.history[:1])
    assert all("reasoning" not in m for m in without)
    counted = Client(vllm_reasoning.base_url, vllm_reasoning.api_key).tokenize(vllm_reasoning.model, without)["count"]
    assert second.prompt_tokens == counted, "the server saw the first turn without its reasoning"
    assert chat.usage().loc["total", "reasoning_tokens"] >= first.reasoning_tokens


def test_a_cell_shows_the_thinking_block_above_the_rendered_answer(vllm_reasoning) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    env.update(VLLM_BASE_URL=vllm_reasoning.base_url, VLLM_API_KEY=vllm_reasoning.api_key)
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext vllm_magic"),
        nbformat.v4.new_code_cell(f"%%chat --temperature 0 --max-tokens 200\n{tiny_corpus.THINK_PROMPT}"),
    ])
    NotebookClient(notebook, kernel_name="python3", timeout=120).execute(env=env)
    html = [o["data"]["text/html"] for o in notebook.cells[1].outputs if "text/html" in o.get("data", {})]
    thinking, answer = html[0], "".join(html[1:])
    assert '<details class="vm-thinking"><summary>Thinking (' in thinking, "folded, with its token count"
    assert tiny_corpus.THINK_REASONING in thinking
    assert "<strong>51</strong>" in answer and "finished" in answer and "<details" not in answer
