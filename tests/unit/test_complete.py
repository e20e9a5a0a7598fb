"""Completions for base models: ``%%vllm complete``, ``Chat.complete`` and ``complete`` against the
loopback vLLM, streamed like chat (same loop, sinks, footer, errors, Ctrl-C) and recorded nowhere."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from IPython.core.error import UsageError
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from tests.loopback import LoopbackServer, Reply, completion_pieces, count_text_tokens
from tests.unit.notebook_shell import Shell, chat_bodies
from vllm_magic import Chat, complete, errors
from vllm_magic.sinks import PlainSink
from vllm_magic.stream import Event, Finish, TextDelta, Usage

COMPLETIONS = "/v1/completions"
PROMPT = "def add(a, b):"


def answer(prompt: str, tokens: int) -> str:
    """What the loopback's default model continues ``prompt`` with."""
    return "".join(completion_pieces([{"role": "user", "content": prompt}], tokens))


def completion_bodies(server: LoopbackServer) -> list[dict]:
    return [r.json for r in server.requests if r.path == COMPLETIONS]


def ending(out: str) -> str:
    """The last part of the footer printed in brackets: why the answer stopped."""
    return out.rstrip().rsplit("\n", 1)[-1].strip("[]").rsplit(" \u00b7 ", 1)[-1]


@pytest.fixture
def stop_after_five_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of the stream: after the plain sink has shown five events."""
    show = PlainSink.on_event
    seen: list[Event] = []

    def show_then_interrupt(self: PlainSink, event: Event) -> None:
        show(self, event)
        seen.append(event)
        if len(seen) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(PlainSink, "on_event", show_then_interrupt)


# -- %%vllm complete ---------------------------------------------------------------------------------


def test_the_cell_is_continued_as_plain_text_with_the_servers_usage(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.ok(f"%%vllm complete --max-tokens 5\n{PROMPT}\n")
    text, footer = out.split("\n\n[")
    assert text == answer(PROMPT, 5)
    assert footer.startswith(f"tiny-chat \u00b7 {count_text_tokens(PROMPT)} \u2192 5 tokens \u00b7 first token ")
    (body,) = completion_bodies(loopback)
    assert body == {"max_tokens": 5, "model": "tiny-chat", "prompt": PROMPT, "stream": True,
                    "stream_options": {"include_usage": True}}
    assert chat_bodies(loopback) == []


def test_an_answer_that_ends_on_its_own_says_finished(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["    return", " a + b", "\n"], finish_reason="stop"))
    out = ip.ok(f"%%vllm complete\n{PROMPT}")
    assert out.startswith("    return a + b\n\n\n[tiny-chat") and ending(out) == "finished"


def test_max_tokens_cuts_it_with_the_same_footer_as_chat(ip: Shell) -> None:
    chat_cut = ending(ip.ok("%%chat --max-tokens 3\nhi"))
    completion_cut = ending(ip.ok(f"%%vllm complete --max-tokens 3\n{PROMPT}"))
    assert completion_cut == chat_cut and "cut by max_tokens" in completion_cut


def test_echo_stop_model_temperature_and_out_reach_the_request(ip: Shell, loopback: LoopbackServer) -> None:
    first, second = completion_pieces([{"role": "user", "content": PROMPT}], 2)
    stop = second.strip()
    assert stop and stop not in first
    out = ip.ok(f"%%vllm complete --echo --stop '{stop}' --stop '\\n\\n' -m tiny-chat -t 0.5 --out text\n{PROMPT}")
    (body,) = completion_bodies(loopback)
    assert body["echo"] is True and body["stop"] == [stop, "\n\n"]
    assert (body["model"], body["temperature"]) == ("tiny-chat", 0.5)
    assert ip.shell.user_ns["text"] == PROMPT + answer(PROMPT, 16).partition(stop)[0]
    assert ending(out) == "finished"


def test_help_names_the_cell_command_and_a_line_or_an_empty_cell_is_refused(ip: Shell) -> None:
    assert "%%vllm complete" in ip.ok("%vllm help")
    assert "--markdown" in ip.ok("%vllm help complete")
    result, _ = ip.run("%vllm complete --max-tokens 3")
    assert isinstance(result.error_in_exec, UsageError) and "works on a cell" in str(result.error_in_exec)
    result, _ = ip.run("%%vllm complete\n\n")
    assert isinstance(result.error_in_exec, UsageError) and "no prompt" in str(result.error_in_exec)


def test_chat_options_on_vllm_still_chat(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%vllm -t 0.5 --max-tokens 3\ncomplete this")
    assert chat_bodies(loopback)[-1]["messages"] == [{"role": "user", "content": "complete this"}]
    assert completion_bodies(loopback) == []


def test_nothing_is_added_to_the_conversation(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat\nfirst")
    ip.ok(f"%%vllm complete\n{PROMPT}")
    ip.ok("%%chat\nsecond")
    assert [t.prompt for t in ip.turns] == ["first", "second"]
    assert [m["content"] for m in chat_bodies(loopback)[-1]["messages"] if m["role"] == "user"] == ["first", "second"]


def test_ctrl_c_keeps_the_partial_text_and_closes_the_connection(
    ip: Shell, loopback: LoopbackServer, stop_after_five_events: None
) -> None:
    loopback.push(Reply.until_disconnect("tok ", delay=0.001))
    out = ip.fails(f"%%vllm complete\n{PROMPT}", errors.Interrupted)
    assert loopback.client_disconnected.wait(5), "the HTTP connection is closed at once"
    assert out.startswith("tok " * 5 + "\n\n[tiny-chat") and "interrupted: partial answer kept" in out
    assert "partial text is shown above" in out and "%vllm retry" not in out
    assert ip.turns == []


def test_a_cut_stream_is_one_paragraph_without_a_retry_that_would_ask_the_chat(
    ip: Shell, loopback: LoopbackServer
) -> None:
    loopback.push(Reply.cut_after(3))
    out = ip.fails(f"%%vllm complete\n{PROMPT}", errors.StreamError)
    assert "was cut" in out and "run the cell again" in out and "%vllm retry" not in out
    assert ip.turns == []


def test_a_prompt_too_long_names_the_prompt_not_a_conversation(ip: Shell) -> None:
    out = ip.fails("%%vllm complete\n" + "x" * 4 * 600, errors.ContextLengthError)
    assert "The prompt is too long for tiny-chat" in out and "maximum context length is 512" in out
    assert "Shorten the cell's prompt" in out and "%vllm reset" not in out


def test_a_server_without_completions_says_so_in_notebook_words(ip: Shell) -> None:
    with LoopbackServer(profile="openai") as server:
        ip.ok(f"%vllm connect {server.base_url}")
        out = ip.fails(f"%%vllm complete\n{PROMPT}", errors.NotFoundError)
    assert "does not serve completions: /v1/completions answered HTTP 404 (Not Found)" in out
    assert "Use a `%%chat` cell instead" in out and ip.turns == []


def test_an_unknown_model_is_still_an_unknown_model(ip: Shell) -> None:
    out = ip.fails(f"%%vllm complete -m nope\n{PROMPT}", errors.NotFoundError)
    assert "The model `nope` does not exist" in out and "does not serve completions" not in out


# -- in Python ---------------------------------------------------------------------------------------


@pytest.fixture
def chat(loopback: LoopbackServer) -> Iterator[Chat]:
    chat = Chat(loopback.base_url, system="Be terse.", temperature=0.2)
    yield chat
    chat.connection.client.close()


def test_chat_complete_streams_events_and_records_nothing(chat: Chat, loopback: LoopbackServer) -> None:
    response = chat.complete(PROMPT, max_tokens=4, stop=["never"])
    events = list(response.events())
    assert "".join(e.text for e in events if type(e) is TextDelta) == answer(PROMPT, 4) == response.turn.text
    assert [e for e in events if type(e) is Finish] == [Finish("length", None)]
    prompt_tokens = count_text_tokens(PROMPT)
    assert [e for e in events if type(e) is Usage] == [Usage(prompt_tokens, 4, prompt_tokens + 4, None)]
    turn = response.turn
    assert (turn.status, turn.finish_reason, turn.usage_estimated, turn.prompt) == ("complete", "length", False, PROMPT)
    assert turn.params == {"temperature": 0.2, "max_tokens": 4, "stop": ["never"]}
    (body,) = completion_bodies(loopback)
    assert "messages" not in body and body["prompt"] == PROMPT, "no system prompt, no history"
    assert chat.history == []


def test_chat_complete_streams_on_the_event_loop_too(chat: Chat, loopback: LoopbackServer) -> None:
    async def pieces() -> list[str]:
        return [piece async for piece in chat.complete(PROMPT, max_tokens=3)]

    assert "".join(asyncio.run(pieces())) == answer(PROMPT, 3)
    assert len(completion_bodies(loopback)) == 1 and chat.history == []


def test_chat_complete_interrupted_keeps_the_partial_turn(chat: Chat, loopback: LoopbackServer) -> None:
    loopback.push(Reply.until_disconnect("tok ", delay=0.001))
    response = chat.complete(PROMPT)
    with pytest.raises(KeyboardInterrupt):
        for count, _ in enumerate(response, start=1):
            if count == 3:
                raise KeyboardInterrupt
    assert loopback.client_disconnected.wait(5)
    assert (response.turn.text, response.turn.status) == ("tok " * 3, "interrupted") and chat.history == []


def test_top_level_complete_returns_the_text_echo_first(loopback: LoopbackServer) -> None:
    text = complete(PROMPT, base_url=loopback.base_url, max_tokens=3, echo=True)
    assert text == PROMPT + answer(PROMPT, 3)
    assert completion_bodies(loopback)[-1]["echo"] is True


def test_the_key_never_shows_in_a_completion_error() -> None:
    with LoopbackServer(api_key="sekret-key", profile="openai") as server:
        with pytest.raises(errors.NotFoundError) as caught:
            complete(PROMPT, base_url=server.base_url, api_key="sekret-key", model="tiny-chat")
    assert "sekret" not in str(caught.value) and "sekret" not in repr(caught.value)


# -- in a notebook -----------------------------------------------------------------------------------


def test_a_notebook_saves_plain_text_by_default_and_html_with_markdown(loopback: LoopbackServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    loopback.push(Reply.tokens(["**bold**", " text"], finish_reason="stop"))
    loopback.push(Reply.tokens(["**bold**", " text"], finish_reason="stop"))
    cells = ["%load_ext vllm_magic", f"%%vllm complete\n{PROMPT}", f"%%vllm complete --markdown\n{PROMPT}"]
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    NotebookClient(notebook, kernel_name="python3", timeout=60).execute(
        env={**env, "VLLM_BASE_URL": loopback.base_url})
    plain, rendered = notebook.cells[1].outputs, notebook.cells[2].outputs
    assert {o.output_type for o in plain} == {"stream"}
    assert "".join(o.text for o in plain).startswith("**bold** text\n\n[tiny-chat")
    assert all(o.output_type == "display_data" for o in rendered)
    html = "".join(o.data["text/html"] for o in rendered)
    assert "<strong>bold</strong> text" in html and "finished" in rendered[-1].data["text/plain"]
