"""Pure pieces: URL handling, parameter validation, the SSE decoder, conversations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_magic import errors
from vllm_magic.client import normalize_base_url, redact_url, vllm_samples
from vllm_magic.conversation import Conversation, Status, Turn
from vllm_magic.fold import Fold
from vllm_magic.messages import Message, Reasoning, Text, ToolCall
from vllm_magic.params import parse_assignments, validate
from vllm_magic.stream import (
    DONE,
    Finish,
    ReasoningDelta,
    ServerError,
    SSEDecoder,
    TextDelta,
    ToolCallDelta,
    Usage,
    chunk_events,
    parse_payload,
)

SAMPLES = Path(__file__).parents[1] / "fixtures" / "vllm-samples"


@pytest.mark.parametrize("given", [
    "http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/", "h:8000", " http://h:8000//v1// ",
])
def test_base_url_with_or_without_v1(given: str) -> None:
    assert normalize_base_url(given) == "http://h:8000"


def test_base_url_keeps_a_path_prefix() -> None:
    assert normalize_base_url("https://proxy/vllm/v1") == "https://proxy/vllm"


@pytest.mark.parametrize("bad", ["", "ftp://h", "http://"])
def test_bad_base_url_is_a_config_error(bad: str) -> None:
    with pytest.raises(errors.ConfigError):
        normalize_base_url(bad)


def test_credentials_in_urls_are_hidden() -> None:
    assert redact_url("http://user:s3cret@h:8000/v1") == "http://***@h:8000/v1"
    assert "s3cret" not in redact_url("https://:s3cret@h/v1")


def test_assignments_are_typed() -> None:
    assert parse_assignments(["temperature=0.2", "max_tokens=64", 'stop=["a","b"]', "ignore_eos=true",
                              "stop_name=plain text", "top-k=40"]) == {
        "temperature": 0.2, "max_tokens": 64, "stop": ["a", "b"], "ignore_eos": True,
        "stop_name": "plain text", "top_k": 40,
    }


def test_known_params_are_validated_and_extras_pass_through() -> None:
    clean, extras = validate({"temperature": 1, "stop": "END", "max_tokens": 8.0, "min_tokens": 3})
    assert clean == {"temperature": 1.0, "stop": ["END"], "max_tokens": 8, "min_tokens": 3}
    assert extras == ["min_tokens"]


@pytest.mark.parametrize("params, named", [
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 1.5}, "max_tokens"), ({"temperature": "hot"}, "temperature"),
    ({"stop": [1]}, "stop"), ({"presence_penalty": 3}, "presence_penalty"), ({"seed": True}, "seed"),
    ({"n": 0}, "n"), ({"logprobs": 1}, "logprobs"), ({"stream": False}, "stream"), ({"temperature": float("nan")}, "temperature"),
])
def test_bad_params_are_refused_before_sending(params: dict, named: str) -> None:
    with pytest.raises(errors.ParamError) as info:
        validate(params)
    assert f"`{named}`" in str(info.value)


def test_sse_decoder_handles_any_chunking() -> None:
    body = (SAMPLES / "chat" / "chat_stream_usage.sse.http").read_bytes().split(b"\r\n\r\n", 1)[1]
    expected = [line[6:].decode() for line in body.split(b"\n") if line.startswith(b"data: ")]
    for size in (1, 2, 3, 7, 64, len(body)):
        decoder = SSEDecoder()
        got = []
        for i in range(0, len(body), size):
            got += decoder.feed(body[i:i + size])
        assert got == expected
        assert not decoder.has_partial_event


def test_sse_decoder_crlf_multiline_and_comments() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": keep-alive\r\n\r\ndata: a\r\ndata: b\r") == []
    assert decoder.feed(b"\n\r\nevent: x\ndata:c\n\n") == ["a\nb", "c"]


def test_sse_decoder_joins_utf8_split_across_chunks() -> None:
    payload = 'data: {"t": "caf\u00e9 \u2603"}\n\n'.encode()
    decoder = SSEDecoder()
    cut = payload.index(b"\xe2") + 1  # inside the snowman's three bytes
    assert decoder.feed(payload[:cut]) == []
    assert decoder.feed(payload[cut:]) == ['{"t": "caf\u00e9 \u2603"}']


def test_sample_stream_gives_text_finish_and_usage() -> None:
    body = (SAMPLES / "chat" / "chat_stream_usage.sse.http").read_bytes().split(b"\r\n\r\n", 1)[1]
    events = []
    for payload in SSEDecoder().feed(body):
        if payload != DONE:
            events += chunk_events(parse_payload(payload))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "The notebooks nponsQXNdef"
    assert Finish("length", None) in events
    assert Usage(40, 8, 48, None) in events


def test_n2_stream_keeps_choice_zero_only() -> None:
    body = (SAMPLES / "chat" / "chat_stream_n2.sse.http").read_bytes().split(b"\r\n\r\n", 1)[1]
    text = "".join(e.text for p in SSEDecoder().feed(body) if p != DONE
                   for e in chunk_events(parse_payload(p)) if isinstance(e, TextDelta))
    assert text == " the brownenAI"


def test_error_event_and_garbage_are_stream_errors() -> None:
    (event,) = chunk_events(parse_payload(json.dumps({"error": {"message": "out of memory", "code": 500}})))
    assert event == ServerError("out of memory")
    fold = Fold()
    fold.take(TextDelta("partial"))
    with pytest.raises(errors.StreamError, match="out of memory") as info:
        fold.take(event)
    assert "partial answer is kept" in str(info.value)
    with pytest.raises(errors.StreamError, match="nothing was recorded"):
        Fold().take(event)
    with pytest.raises(errors.StreamError, match="malformed"):
        parse_payload("{not json")


def test_fold_builds_the_message_from_reasoning_text_and_tool_call_deltas() -> None:
    fold = Fold()
    for event in [ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("It is "), TextDelta("4."),
                  ToolCallDelta(0, "call_1", "add", '{"a": '), ToolCallDelta(0, None, None, "2}"),
                  Finish("stop", None), Usage(10, 7, 17, 3)]:
        fold.take(event)
    message = fold.message()
    assert message.parts == [Reasoning("Let me think."), Text("It is 4."), ToolCall("call_1", "add", '{"a": 2}')]
    turn = fold.turn(Message.of("user", "2+2?"), "m", Status.COMPLETE, {})
    assert (turn.prompt, turn.text, turn.reasoning) == ("2+2?", "It is 4.", "Let me think.")
    assert (turn.completion_tokens, turn.reasoning_tokens, turn.usage_estimated) == (7, 3, False)
    assert turn.messages()[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2}'}


def test_without_the_servers_usage_the_pieces_received_are_counted_as_estimated() -> None:
    fold = Fold()
    for piece in ["a", "b", "c"]:
        fold.take(TextDelta(piece))
    turn = fold.turn(Message.of("user", "q"), "m", Status.INTERRUPTED, {})
    assert (turn.prompt_tokens, turn.completion_tokens, turn.usage_estimated) == (None, 3, True)


def test_reasoning_is_kept_but_not_sent_back_unless_asked() -> None:
    conversation = Conversation()
    conversation.add(Turn.of("q", "answer", "m", reasoning="thoughts"))
    assert conversation.messages("next")[1] == {"role": "assistant", "content": "answer"}
    assert conversation.messages("next", send_reasoning=True)[1]["reasoning"] == "thoughts"


def test_format_version_1_files_still_load(tmp_path: Path) -> None:
    v1 = {"format": "vllm_magic.conversation/1", "name": "default", "system": "S",
          "turns": [{"prompt": "p", "text": "t", "model": "m", "status": "interrupted", "finish_reason": None,
                     "prompt_tokens": None, "completion_tokens": None, "ttft": 0.1, "seconds": 0.2,
                     "reasoning": "r", "params": {}, "created": "2026-01-01T00:00:00+00:00"}]}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    (turn,) = Conversation.load(tmp_path / "v1.json").turns
    assert (turn.prompt, turn.text, turn.reasoning, turn.status) == ("p", "t", "r", Status.INTERRUPTED)
    saved = json.loads(Conversation.load(tmp_path / "v1.json").save(tmp_path / "v2.json").read_text())
    assert saved["format"] == "vllm_magic.conversation/2"
    assert saved["turns"][0]["replies"][0]["parts"] == [{"type": "Reasoning", "text": "r"}, {"type": "Text", "text": "t"}]


def test_conversation_messages_and_save_load(tmp_path: Path) -> None:
    conversation = Conversation(system="Be terse.")
    conversation.add(Turn.of("a {x}", "b", "m", prompt_tokens=3, completion_tokens=1))
    assert conversation.messages("c") == [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "a {x}"},
        {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
    ]
    path = conversation.save(tmp_path / "c.json")
    loaded = Conversation.load(path)
    assert loaded.messages() == conversation.messages() and loaded.turns == conversation.turns


def test_loading_a_wrong_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(errors.ConfigError, match="not a saved vllm_magic conversation"):
        Conversation.load(tmp_path / "x.json")
    with pytest.raises(errors.ConfigError, match="no file"):
        Conversation.load(tmp_path / "missing.json")


def test_listeners_hear_changes() -> None:
    conversation, seen = Conversation(), []
    stop = conversation.on_change(lambda c: seen.append(len(c)))
    conversation.add(Turn.of("a", "b", "m"))
    conversation.undo()
    stop()
    conversation.add(Turn.of("a", "b", "m"))
    assert seen == [1, 0]


def test_errors_render_as_one_paragraph_unless_debugging() -> None:
    error = errors.ConnectError("Could not connect.", "Start the server.")
    assert error._render_traceback_() == ["\x1b[1;31mConnectError\x1b[0m: Could not connect. Start the server."]
    errors.show_tracebacks = True
    try:
        assert not hasattr(error, "_render_traceback_")
    finally:
        errors.show_tracebacks = False


def test_vllm_metrics_are_read_from_a_real_servers_page() -> None:
    samples = vllm_samples((SAMPLES / "chat" / "metrics.txt").read_text())
    values = {name: value for name, labels, value in samples if not labels.get("reason")}
    assert values["vllm:generation_tokens_total"] == 194.0 and values["vllm:num_requests_running"] == 0.0
    assert all(name.startswith("vllm:") for name, _, _ in samples), "python_* and process_* are left out"
    assert ("vllm:kv_cache_usage_perc", {"engine": "0", "model_name": "tiny-chat"}, 0.0) in samples
