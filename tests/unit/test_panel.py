"""The chat panel's logic on the loopback server: send, stream, stop, errors, clear, model, params."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.loopback import LoopbackServer, Reply
from tests.unit.notebook_shell import ENV, Shell, chat_bodies, ipython_shell
from vllm_magic.panel import ChatPanel


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    with LoopbackServer(models=("tiny-chat", "other")) as server:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("VLLM_BASE_URL", server.base_url)
        monkeypatch.setenv("VLLM_MODEL", "tiny-chat")
        shell = Shell(ipython_shell(), capsys)
        shell.server = server
        yield shell
        ipython_shell().config.pop("VLLMMagics", None)


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Let the event loop run until ``condition`` holds (the panel works on this loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def transcript_html(panel: ChatPanel) -> str:
    def html(view) -> str:
        return view.value if hasattr(view, "value") else "".join(html(child) for child in view.children)

    return "".join(html(view) for view in reversed(panel.transcript.children))  # laid out bottom-up


def run(scenario) -> None:
    asyncio.run(scenario())


def test_send_streams_rendered_markdown_and_shares_the_conversation(ip: Shell) -> None:
    server: LoopbackServer = ip.server

    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        server.push(Reply.tokens(["Hello", " **there**"], finish_reason="stop"))
        panel.submit("Hi from the panel")
        assert panel.streaming and not panel.stop.disabled and panel.input.value == ""
        await until(lambda: not panel.streaming)
        assert [(t.prompt, t.text) for t in ip.turns] == [("Hi from the panel", "Hello **there**")]
        assert "<strong>there</strong>" in transcript_html(panel) and panel.stop.disabled
        assert "last turn: tiny-chat" in panel.usage.value and "vm-usage" in panel.usage.value
        ip.ok("%%chat\nfrom a cell")
        assert chat_bodies(server)[-1]["messages"][1] == {"role": "assistant", "content": "Hello **there**"}
        assert transcript_html(panel).index("Hi from the panel") < transcript_html(panel).index("from a cell")
        await until(lambda: panel.gauge.value > 0)
        assert panel.gauge.max == 512 and 0 < panel.gauge.value < 512

    run(scenario)


def test_panel_magic_shows_one_panel_per_conversation(ip: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ip.shell, "kernel", object(), raising=False)  # as in a Jupyter kernel

    async def scenario() -> None:
        first = ip.shell.run_line_magic("vllm", "panel")
        assert ip.shell.run_line_magic("vllm", "panel") is first
        assert ip.shell.run_line_magic("vllm", "panel -c side") is not first

    run(scenario)


def test_enter_in_the_input_sends(ip: Shell) -> None:
    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        panel.input._handle_custom_msg({"type": "submit", "text": "typed"}, [])
        await until(lambda: not panel.streaming)
        assert ip.turns[-1].prompt == "typed"

    run(scenario)


def test_stop_closes_the_connection_and_keeps_the_partial_answer(ip: Shell) -> None:
    server: LoopbackServer = ip.server

    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        server.push(Reply.until_disconnect("tok ", delay=0.005))
        panel.submit("go on forever")
        await until(lambda: "tok" in transcript_html(panel))
        panel.stop.click()
        await until(lambda: not panel.streaming, timeout=0.5)
        assert server.client_disconnected.wait(5)
        turn = ip.turns[-1]
        assert turn.status == "interrupted" and turn.text.startswith("tok ")
        assert "interrupted" in transcript_html(panel) and not panel.streaming

    run(scenario)


def test_errors_show_in_the_panel_and_add_nothing(ip: Shell) -> None:
    server: LoopbackServer = ip.server

    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        server.push(Reply.status(500, {"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}}))
        panel.submit("hi")
        await until(lambda: not panel.streaming)
        assert "engine dead" in panel.error.value and "Check the server" in panel.error.value
        assert ip.turns == [] and not panel.streaming

    run(scenario)


def test_clear_model_switch_and_params_are_the_notebooks(ip: Shell) -> None:
    server: LoopbackServer = ip.server

    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        ip.ok("%%chat\nfirst")
        panel.clear.click()
        assert ip.turns == [] and transcript_html(panel) == ""
        panel.model.value = "other"
        panel.temperature.value = "0.3"
        panel.max_tokens.value = "5"
        assert ip.magics.session.params == {"temperature": 0.3, "max_tokens": 5}
        panel.submit("with params")
        await until(lambda: not panel.streaming)
        body = chat_bodies(server)[-1]
        assert body["model"] == "other" and body["temperature"] == 0.3 and body["max_tokens"] == 5
        ip.ok("%%chat -c side\nanother conversation")
        assert chat_bodies(server)[-1]["model"] == "tiny-chat", "the panel's model is its conversation's own"
        panel.temperature.value = "-1"
        assert "`temperature` must be a number &gt;= 0" in panel.error.value
        assert ip.magics.session.params["temperature"] == 0.3
        ip.ok("%vllm params max_tokens=7")
        assert panel.max_tokens.value == "7", "the panel shows params set by %vllm params"

    run(scenario)


def test_the_model_list_follows_a_connect_to_another_server(ip: Shell) -> None:
    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        assert panel.model.options == ("tiny-chat", "other")
        with LoopbackServer(models=("elsewhere",)) as second:
            ip.ok(f"%vllm connect {second.base_url} --model elsewhere")
            assert panel.model.options == ("elsewhere",) and panel.model.value == "elsewhere"
            panel.submit("hi there")
            await until(lambda: not panel.streaming)
            assert chat_bodies(second)[-1]["model"] == "elsewhere"

    run(scenario)


def test_the_gauge_says_when_the_conversation_is_over_the_limit(ip: Shell) -> None:
    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        ip.magics.session.chat().conversation.set_system("word " * 600)
        await until(lambda: "over the limit" in panel.gauge_label.value)
        assert panel.gauge.bar_style == "danger" and "Clear" in panel.gauge_label.value

    run(scenario)


def test_text_typed_while_an_answer_starts_is_never_touched(ip: Shell) -> None:
    server: LoopbackServer = ip.server

    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        server.push(Reply.until_disconnect("tok ", delay=0.005))
        panel.input._handle_custom_msg({"type": "submit", "text": "first"}, [])  # the box cleared itself
        panel.input.value = "next question, still typing"
        await until(lambda: bool(chat_bodies(server)))
        assert panel.streaming and panel.input.busy
        panel.send.click()  # while answering: nothing is sent and the text stays
        assert panel.input.value == "next question, still typing" and len(chat_bodies(server)) == 1
        panel.stop.click()
        await until(lambda: not panel.streaming)
        assert not panel.input.busy and panel.input.value == "next question, still typing"
        server.push(Reply.tokens(["ok"], finish_reason="stop"))
        panel.send.click()
        await until(lambda: not panel.streaming)
        assert [t.prompt for t in ip.turns][-1] == "next question, still typing" and panel.input.value == ""
        assert [b["messages"][-1]["content"] for b in chat_bodies(server)] == ["first", "next question, still typing"]

    run(scenario)


def test_stop_before_the_answer_started_leaves_the_panel_ready(ip: Shell) -> None:
    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        panel.submit("never mind")
        panel.stop.click()
        await until(lambda: not panel.streaming)
        assert not panel.streaming and not panel.input.busy and not panel.send.disabled
        assert panel.error.value == "" and ip.turns == []

    run(scenario)


def test_an_empty_conversation_reads_zero_without_asking_the_server(ip: Shell) -> None:
    server: LoopbackServer = ip.server

    async def scenario() -> None:
        panel = ChatPanel(ip.magics.session)
        await until(lambda: "0 / 512 tokens" in panel.gauge_label.value)
        assert not [r for r in server.requests if r.path == "/tokenize"]

    run(scenario)
