"""Reasoning, and the engine's events, on a vLLM look-alike started with a reasoning parser:
in-process through the transport seam, and in cells through a real IPython shell."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.loopback import LoopbackServer, LoopbackTransport, Reply
from tests.unit.notebook_shell import ENV, Shell, chat_bodies, ipython_shell
from vllm_magic import Chat, Client, Connection, errors
from vllm_magic.stream import Finish, ReasoningDelta, TextDelta, Usage

THOUGHT = ["Two ", "and ", "two."]
ANSWER = ["It is ", "**4**."]


def chat_on(transport: LoopbackTransport) -> Chat:
    return Chat(connection=Connection(client=Client(transport.base_url, transport=transport)))


def test_events_carry_reasoning_text_finish_and_usage_in_process() -> None:
    transport = LoopbackTransport(reasoning_parser="qwen3")
    transport.push(Reply.tokens(ANSWER, finish_reason="stop", reasoning=THOUGHT))
    chat = chat_on(transport)
    response = chat.stream("2+2?")
    events = list(response.events())
    kinds = [type(e) for e in events]
    assert kinds[:5] == [ReasoningDelta] * 3 + [TextDelta] * 2 and Finish in kinds and Usage in kinds
    usage = next(e for e in events if type(e) is Usage)
    turn = response.turn
    assert (turn.reasoning, turn.text, turn.reasoning_tokens) == ("".join(THOUGHT), "".join(ANSWER),
                                                                   usage.reasoning_tokens)
    assert usage.reasoning_tokens and chat.history == [turn]
    with pytest.raises(errors.StreamConsumed):
        list(response)
    chats = [r for r in transport.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 1, "a consumed response never sends its request again"


def test_async_events_through_the_same_transport() -> None:
    transport = LoopbackTransport(reasoning_parser="qwen3")
    transport.push(Reply.tokens(ANSWER, finish_reason="stop", reasoning=THOUGHT))
    chat = chat_on(transport)

    async def scenario() -> list[str]:
        response = chat.stream("2+2?")
        pieces = [piece async for piece in response]
        with pytest.raises(errors.StreamConsumed):
            async for _ in response:
                pass
        return pieces

    assert asyncio.run(scenario()) == ANSWER
    assert chat.history[-1].reasoning == "".join(THOUGHT)


def test_reasoning_is_not_sent_back_unless_the_chat_asks() -> None:
    transport = LoopbackTransport(reasoning_parser="qwen3")
    chat = chat_on(transport)
    transport.push(Reply.tokens(ANSWER, finish_reason="stop", reasoning=THOUGHT))
    chat.ask("first")
    chat.ask("second")
    assert transport.requests[-1].json["messages"][1] == {"role": "assistant", "content": "".join(ANSWER)}
    chat.send_reasoning = True
    chat.ask("third")
    assert transport.requests[-1].json["messages"][1]["reasoning"] == "".join(THOUGHT)


def test_think_sets_the_templates_enable_thinking() -> None:
    transport = LoopbackTransport()
    chat = chat_on(transport)
    chat.ask("hi", think=False, chat_template_kwargs={"custom": 1})
    assert transport.requests[-1].json["chat_template_kwargs"] == {"custom": 1, "enable_thinking": False}


@pytest.fixture
def thinker(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Shell]:
    with LoopbackServer(reasoning_parser="qwen3") as server:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("VLLM_BASE_URL", server.base_url)
        shell = Shell(ipython_shell(), capsys)
        shell.server = server
        yield shell
        ipython_shell().config.pop("VLLMMagics", None)


def test_a_cell_shows_the_reasoning_before_the_answer_and_usage_counts_it(thinker: Shell) -> None:
    thinker.server.push(Reply.tokens(ANSWER, finish_reason="stop", reasoning=THOUGHT))
    out = thinker.ok("%%chat --think\n2+2?")
    assert out.startswith("Thinking: Two and two.\n\nIt is **4**.\n\n[tiny-chat")
    assert chat_bodies(thinker.server)[-1]["chat_template_kwargs"] == {"enable_thinking": True}
    usage = thinker.shell.run_line_magic("vllm", "usage")
    assert usage.loc[1, "reasoning_tokens"] >= 1 and usage.loc["total", "reasoning_tokens"] >= 1
    thinker.server.push(Reply.tokens(ANSWER, finish_reason="stop", reasoning=THOUGHT))
    out = thinker.ok("%%chat --no-reasoning --no-think\nagain")
    assert "Two and two" not in out and out.startswith("It is **4**.")
    assert chat_bodies(thinker.server)[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert chat_bodies(thinker.server)[-1]["messages"][1] == {"role": "assistant", "content": "It is **4**."}
    assert thinker.turns[-1].reasoning == "".join(THOUGHT), "hidden, still kept"


def test_settings_hide_reasoning_or_send_it_back(thinker: Shell) -> None:
    thinker.ok("%config VLLMMagics.show_reasoning = False")
    thinker.server.push(Reply.tokens(ANSWER, finish_reason="stop", reasoning=THOUGHT))
    assert "Two and two" not in thinker.ok("%%chat\n2+2?")
    thinker.ok("%config VLLMMagics.send_reasoning = True")
    thinker.ok("%%chat\nand then?")
    assert chat_bodies(thinker.server)[-1]["messages"][1]["reasoning"] == "".join(THOUGHT)
