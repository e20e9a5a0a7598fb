"""Completions (``/v1/completions``) against a real vLLM (CPU build) serving ``tiny-random``, whose
greedy gibberish only ``max_tokens`` ends: a completion streams with the server's own usage and is cut
by length, ``echo`` sends the prompt first, and the cell magic shows it like a chat answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.unit.notebook_shell import Shell
from vllm_magic import Chat, complete
from vllm_magic.stream import Finish, TextDelta, Usage

PROMPT = "def add(a, b):"


@pytest.fixture
def chat(vllm_random) -> Iterator[Chat]:
    chat = Chat(vllm_random.base_url, api_key=vllm_random.api_key, temperature=0)
    yield chat
    chat.connection.client.close()


def server_answer(server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The server's JSON answer to a request sent straight to it (not streamed)."""
    headers = {"Authorization": f"Bearer {server.api_key}"}
    response = httpx.post(server.base_url + path, json={"model": server.model, **body}, headers=headers, timeout=60)
    return response.raise_for_status().json()


def greedy_text(server, max_tokens: int) -> str:
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    return server_answer(server, "/v1/completions", body)["choices"][0]["text"]


def test_a_completion_streams_with_the_servers_usage_and_is_cut_by_length(chat: Chat, vllm_random) -> None:
    response = chat.complete(PROMPT, max_tokens=8)
    events = list(response.events())
    prompt_tokens = server_answer(vllm_random, "/tokenize", {"prompt": PROMPT})["count"]
    assert [e for e in events if type(e) is Usage] == [Usage(prompt_tokens, 8, prompt_tokens + 8, None)]
    assert [e.reason for e in events if type(e) is Finish] == ["length"]
    streamed = "".join(e.text for e in events if type(e) is TextDelta)
    assert streamed == response.turn.text == greedy_text(vllm_random, 8) and streamed
    turn = response.turn
    assert (turn.finish_reason, turn.completion_tokens, turn.usage_estimated) == ("length", 8, False)
    assert chat.history == []


def test_echo_returns_the_prompt_first(vllm_random) -> None:
    text = complete(PROMPT, base_url=vllm_random.base_url, api_key=vllm_random.api_key, max_tokens=4,
                    temperature=0, echo=True)
    assert text == PROMPT + greedy_text(vllm_random, 4)


def test_the_cell_shows_the_cut_with_the_servers_counts(
    ip: Shell, vllm_random, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", vllm_random.api_key)
    ip.ok(f"%vllm connect {vllm_random.base_url}")
    out = ip.ok(f"%%vllm complete --max-tokens 5 -t 0\n{PROMPT}")
    prompt_tokens = server_answer(vllm_random, "/tokenize", {"prompt": PROMPT})["count"]
    assert out.startswith(greedy_text(vllm_random, 5))
    assert f"tiny-random \u00b7 {prompt_tokens} \u2192 5 tokens \u00b7" in out and "cut by max_tokens" in out
    assert ip.turns == []
