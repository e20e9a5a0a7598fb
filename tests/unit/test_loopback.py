"""The loopback server must answer like the recorded vLLM 0.32 server, byte for byte where the
request is reproducible, or every fast test built on it proves nothing about the real thing.

Raw sockets read the exact bytes (status line, header order and casing, chunk framing); only the
``date`` value, ids and ``created`` timestamps are masked, since they differ on every response.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.loopback import (
    SYSTEM_FINGERPRINT,
    LoopbackServer,
    LoopbackTransport,
    Reply,
    chat_prompt_pieces,
    completion_pieces,
    count_chat_tokens,
    count_embedding_tokens,
    count_text_tokens,
    embedding_vector,
)

SAMPLES = Path(__file__).parents[1] / "fixtures" / "vllm-samples"
CHAT = "/v1/chat/completions"
EMBED_MODEL = "all-MiniLM-L6-v2"
SAY_HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


# -- helpers ---------------------------------------------------------------------------------


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def user_with_tokens(prompt_tokens: int) -> list[dict[str, str]]:
    """A one-message chat whose prompt counts exactly ``prompt_tokens`` (4 characters a token)."""
    messages = user("x" * (4 * (prompt_tokens - count_chat_tokens(user("")))))
    assert count_chat_tokens(messages) == prompt_tokens
    return messages


def embedding_server() -> LoopbackServer:
    """Like the recorded pooling server: one embedding model, max_model_len 256, no chat model."""
    return LoopbackServer(models=(), embedding_models=(EMBED_MODEL,))


def raw_exchange(
    server: LoopbackServer, method: str, path: str, body: bytes | Mapping[str, Any] | None = None,
    headers: Sequence[str] = (),
) -> bytes:
    """Send one request with ``connection: close`` and return every byte the server answered."""
    payload = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *headers, "connection: close"]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(payload)}"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        received = []
        while data := sock.recv(1 << 16):
            received.append(data)
    return b"".join(received)


def split_response(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


def http_chunks(body: bytes) -> tuple[list[bytes], bool]:
    """The payload of each HTTP chunk, and whether the terminating zero-size chunk arrived."""
    chunks: list[bytes] = []
    position = 0
    while position < len(body):
        line_end = body.index(b"\r\n", position)
        size = int(body[position:line_end], 16)
        start = line_end + 2
        if size == 0:
            assert body[start:] == b"\r\n"
            return chunks, True
        chunks.append(body[start : start + size])
        assert body[start + size : start + size + 2] == b"\r\n"
        position = start + size + 2
    return chunks, False


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_events(name: str) -> list[bytes]:
    """The SSE events of a recorded stream (the recordings store the de-chunked body)."""
    _, body = split_response(sample(name))
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


def mask(raw: bytes) -> bytes:
    """Blank what legitimately differs per response; all of it keeps its length."""
    raw = re.sub(rb"date: [^\r]*", b"date: <date>", raw)
    raw = re.sub(rb'"created":\d{10}', b'"created":1234567890', raw)
    return re.sub(rb"(chatcmpl|cmpl|embd|modelperm)-[0-9a-f]{16}", rb"\1-0123456789abcdef", raw)


def payload(event: bytes) -> Any:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n"), event
    return json.loads(event[len(b"data: ") :])


_VARYING_NUMBERS = {"created", "prompt_tokens", "completion_tokens", "total_tokens", "count"}


def generic(value: Any) -> Any:
    """A response with generated text, ids, token numbers and vectors blanked, keeping the shape."""
    if isinstance(value, dict):
        return {key: _generic_field(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [generic(item) for item in value]
    return value


def _generic_field(key: str, value: Any) -> Any:
    if key == "id":
        return "<id>"
    if key in _VARYING_NUMBERS:
        return 0
    if key in ("content", "stop_reason") and value:
        return "<text>"
    if key in ("embedding", "tokens"):
        return f"<{len(value)} items>"
    return generic(value)


def stream_request(**extra: Any) -> dict[str, Any]:
    return {"model": "tiny-chat", "messages": user("hi"), "stream": True, **extra}


def read_stream(server: LoopbackServer, body: Mapping[str, Any]) -> tuple[bytes, list[bytes], bool]:
    """Head, events (one per HTTP chunk) and completeness of a streamed chat answer."""
    head, raw_body = split_response(raw_exchange(server, "POST", CHAT, body))
    events, complete = http_chunks(raw_body)
    return head, events, complete


# -- byte-exact fidelity ---------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]

CHAT_EXACT = [
    ("chat/health.http", "GET", "/health", None),
    ("chat/version.http", "GET", "/version", None),
    ("chat/models.http", "GET", "/v1/models", None),
    ("chat/err_unknown_model.http", "POST", CHAT, {"model": "nope", "messages": user("hi")}),
    ("chat/err_bad_temperature.http", "POST", CHAT, {"model": "tiny-chat", "messages": user("hi"), "temperature": -1}),
    ("chat/err_max_tokens_over_max_model_len.http", "POST", CHAT,
     {"model": "tiny-chat", "messages": user("hi"), "max_tokens": 100000}),
    ("chat/err_missing_messages.http", "POST", CHAT, {"model": "tiny-chat"}),
    ("chat/err_invalid_json.http", "POST", CHAT, b'{"model":'),
    ("chat/err_prompt_too_long.http", "POST", CHAT,
     {"model": "tiny-chat", "messages": user_with_tokens(513), "max_tokens": 5}),
    ("chat/err_prompt_too_long_stream.http", "POST", CHAT,
     {"model": "tiny-chat", "messages": user_with_tokens(513), "max_tokens": 5, "stream": True}),
    ("chat/err_tools_without_parser.http", "POST", CHAT, {"model": "tiny-chat", "messages": user("hi"), "tools": TOOLS}),
    ("chat/err_embeddings_on_chat_server.http", "POST", "/v1/embeddings", {"model": "tiny-chat", "input": "hi"}),
]

EMBED_EXACT = [
    ("embed/health.http", "GET", "/health", None),
    ("embed/models.http", "GET", "/v1/models", None),
    ("embed/err_unknown_model.http", "POST", "/v1/embeddings", {"model": "nope", "input": "hi"}),
    ("embed/err_dimensions_unsupported.http", "POST", "/v1/embeddings",
     {"model": EMBED_MODEL, "input": "hi", "dimensions": 64}),
    ("embed/err_bad_encoding_format.http", "POST", "/v1/embeddings",
     {"model": EMBED_MODEL, "input": "hi", "encoding_format": "hex"}),
    ("embed/err_empty_input_list.http", "POST", "/v1/embeddings", {"model": EMBED_MODEL, "input": []}),
    ("embed/err_input_too_long.http", "POST", "/v1/embeddings", {"model": EMBED_MODEL, "input": "x" * 1020}),
    ("embed/err_chat_on_embedding_server.http", "POST", CHAT, {"model": EMBED_MODEL, "messages": user("hi")}),
]


@pytest.mark.parametrize(("name", "method", "path", "body"), CHAT_EXACT, ids=[case[0] for case in CHAT_EXACT])
def test_chat_server_answers_byte_for_byte(
    loopback: LoopbackServer, name: str, method: str, path: str, body: Any
) -> None:
    assert mask(raw_exchange(loopback, method, path, body)) == mask(sample(name))


@pytest.mark.parametrize(("name", "method", "path", "body"), EMBED_EXACT, ids=[case[0] for case in EMBED_EXACT])
def test_embedding_server_answers_byte_for_byte(name: str, method: str, path: str, body: Any) -> None:
    assert count_embedding_tokens("x" * 1020) == 257
    with embedding_server() as server:
        assert mask(raw_exchange(server, method, path, body)) == mask(sample(name))


def test_base64_embeddings_match_byte_for_byte_apart_from_the_vector() -> None:
    def blank_vector(raw: bytes) -> bytes:
        return re.sub(rb'"embedding":"[A-Za-z0-9+/]+={0,2}"', lambda m: b"x" * len(m.group()), mask(raw))

    body = {"model": EMBED_MODEL, "input": "Hello Jupyter", "encoding_format": "base64"}
    with embedding_server() as server:
        answer = raw_exchange(server, "POST", "/v1/embeddings", body)
    assert blank_vector(answer) == blank_vector(sample("embed/embeddings_base64.http"))


def test_unauthorized_is_vllms_401() -> None:
    with LoopbackServer(api_key="sekret") as server:
        answer = raw_exchange(server, "GET", "/v1/models")
        allowed = raw_exchange(server, "GET", "/v1/models", headers=["authorization: Bearer sekret"])
        wrong = raw_exchange(server, "POST", CHAT, {"messages": user("hi")}, headers=["authorization: Bearer nope"])
        # vLLM only guards /v1: probes and /tokenize stay open.
        health = raw_exchange(server, "GET", "/health")
    head, body = split_response(answer)
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 401 Unauthorized"
    assert b"content-type: application/json" in head and b"content-length: 24" in head
    assert body == b'{"error":"Unauthorized"}'
    assert split_response(wrong)[1] == b'{"error":"Unauthorized"}'
    assert allowed.startswith(b"HTTP/1.1 200 OK") and health.startswith(b"HTTP/1.1 200 OK")


# -- structural fidelity of generated answers --------------------------------------------------


def assert_same_stream(ours: list[bytes], recorded: list[bytes]) -> None:
    assert len(ours) == len(recorded)
    for mine, theirs in zip(ours[:-1], recorded[:-1]):
        assert generic(payload(mine)) == generic(payload(theirs))
    assert ours[-1] == recorded[-1] == b"data: [DONE]\n\n"


def test_stream_with_usage_is_framed_like_vllm(loopback: LoopbackServer) -> None:
    request = {"messages": SAY_HELLO, "stream": True, "stream_options": {"include_usage": True},
               "max_tokens": 8, "temperature": 0}
    head, events, complete = read_stream(loopback, request)
    recorded_head, _ = split_response(sample("chat/chat_stream_usage.sse.http"))
    assert mask(head) == mask(recorded_head)
    assert complete
    assert_same_stream(events, sample_events("chat/chat_stream_usage.sse.http"))
    # The role chunk carries no generated data at all, so it matches exactly.
    assert mask(events[0]) == mask(sample_events("chat/chat_stream_usage.sse.http")[0])
    texts = [payload(event)["choices"][0]["delta"]["content"] for event in events[1:9]]
    assert texts == completion_pieces(SAY_HELLO, 8)
    assert payload(events[9])["usage"] == {"prompt_tokens": count_chat_tokens(SAY_HELLO),
                                           "total_tokens": count_chat_tokens(SAY_HELLO) + 8, "completion_tokens": 8}


def test_stream_without_usage_puts_the_fingerprint_on_the_last_chunk(loopback: LoopbackServer) -> None:
    request = {"messages": user("Say hello"), "stream": True, "max_tokens": 16, "temperature": 0.8, "seed": 7}
    _, events, _ = read_stream(loopback, request)
    assert_same_stream(events, sample_events("chat/chat_stream_sampled_no_usage.sse.http"))
    assert payload(events[-2])["system_fingerprint"] == SYSTEM_FINGERPRINT


def test_stop_string_ends_the_stream_like_vllm(loopback: LoopbackServer) -> None:
    messages = user("Say hello")
    first, second = completion_pieces(messages, 2)
    stop = second.strip()
    # Like the recording: the stop string comes with the second token, after a space.
    assert second == f" {stop}" and stop not in first and len(first) > len(stop)
    request = {"messages": messages, "stream": True, "stream_options": {"include_usage": True},
               "max_tokens": 30, "temperature": 0, "stop": [stop]}
    _, events, _ = read_stream(loopback, request)
    assert_same_stream(events, sample_events("chat/chat_stream_stop_string.sse.http"))
    # vLLM holds back len(stop) - 1 characters so that no chunk shows part of the stop string.
    assert contents(events) == [first[: len(first) - len(stop) + 1], first[len(first) - len(stop) + 1 :] + " "]
    last = payload(events[-3])["choices"][0]
    assert (last["finish_reason"], last["stop_reason"]) == ("stop", stop)
    assert payload(events[-2])["usage"]["completion_tokens"] == 2


def test_two_choices_stream_like_vllm(loopback: LoopbackServer) -> None:
    request = {"messages": user("hi"), "stream": True, "stream_options": {"include_usage": True},
               "max_tokens": 3, "temperature": 0.7, "seed": 3, "n": 2}
    _, events, _ = read_stream(loopback, request)
    recorded = sample_events("chat/chat_stream_n2.sse.http")
    # Real interleaving of the choices is scheduling-dependent: compare as multisets, in blocks.
    def blocks(stream: list[bytes]) -> tuple[list[str], list[str], list[str]]:
        shapes = [json.dumps(generic(payload(event))) for event in stream[:-1]]
        return shapes[:2], sorted(shapes[2:-1]), shapes[-1:]

    assert len(events) == len(recorded) and blocks(events) == blocks(recorded)
    assert payload(events[-2])["usage"]["completion_tokens"] == 6


def test_non_streamed_answer_is_shaped_like_vllm(loopback: LoopbackServer) -> None:
    request = {"messages": SAY_HELLO, "max_tokens": 8, "temperature": 0}
    head, body = split_response(raw_exchange(loopback, "POST", CHAT, request))
    recorded_head, recorded_body = split_response(sample("chat/chat_nonstream.http"))
    assert re.sub(rb"content-length: \d+", b"", mask(head)) == re.sub(rb"content-length: \d+", b"", mask(recorded_head))
    assert generic(json.loads(body)) == generic(json.loads(recorded_body))
    assert json.loads(body)["choices"][0]["message"]["content"] == "".join(completion_pieces(SAY_HELLO, 8))


def test_max_tokens_beyond_the_context_left_is_clamped_like_vllm(loopback: LoopbackServer) -> None:
    request = {"messages": user_with_tokens(376), "max_tokens": 400}
    _, body = split_response(raw_exchange(loopback, "POST", CHAT, request))
    _, recorded = split_response(sample("chat/prompt_plus_max_tokens_over_limit_is_clamped.http"))
    assert generic(json.loads(body)) == generic(json.loads(recorded))
    assert json.loads(body)["usage"] == json.loads(recorded)["usage"]


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("chat/tokenize_prompt.http", {"prompt": "Hello Jupyter!"}),
        ("chat/tokenize_chat.http", {"messages": user("Hello"), "add_generation_prompt": True, "return_token_strs": True}),
    ],
)
def test_tokenize_is_shaped_like_vllm(loopback: LoopbackServer, name: str, body: dict[str, Any]) -> None:
    _, answer = split_response(raw_exchange(loopback, "POST", "/tokenize", body))
    ours, recorded = json.loads(answer), json.loads(split_response(sample(name))[1])
    if ours["token_strs"] is None:
        assert generic(ours) == generic(recorded)
    else:  # the chat template's token count differs from the recorded tokenizer's
        assert ours.keys() == recorded.keys() and len(ours["token_strs"]) == ours["count"]
    assert ours["count"] == len(ours["tokens"]) and ours["max_model_len"] == 512


def test_tokenize_counts_what_chat_usage_counts(loopback: LoopbackServer) -> None:
    with httpx.Client(base_url=loopback.base_url) as client:
        tokenized = client.post("/tokenize", json={"messages": SAY_HELLO, "return_token_strs": True}).json()
        usage = client.post(CHAT, json={"messages": SAY_HELLO, "max_tokens": 1}).json()["usage"]
        assert tokenized["count"] == usage["prompt_tokens"] == count_chat_tokens(SAY_HELLO)
        assert tokenized["token_strs"][:2] == ["<|im_start|>", "syst"]
        assert tokenized["token_strs"][-1] == "tĊ" and len(chat_prompt_pieces(SAY_HELLO)) == tokenized["count"]
        # The recorded plain-prompt count happens to agree with the 4-characters-a-token rule.
        assert client.post("/tokenize", json={"prompt": "Hello Jupyter!"}).json()["count"] == 4


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("embed/embeddings_float.http", {"input": ["Hello Jupyter", "A cat sits on the mat"], "encoding_format": "float"}),
        ("embed/embeddings_token_ids.http", {"input": [101, 7592, 102]}),
        ("embed/embeddings_truncate_prompt_tokens.http", {"input": "x" * 1020, "truncate_prompt_tokens": -1}),
        ("embed/tokenize.http", {"prompt": "Hello Jupyter"}),
    ],
)
def test_embedding_answers_are_shaped_like_vllm(name: str, body: dict[str, Any]) -> None:
    path = "/tokenize" if name.endswith("tokenize.http") else "/v1/embeddings"
    with embedding_server() as server:
        head, answer = split_response(raw_exchange(server, "POST", path, {"model": EMBED_MODEL, **body}))
    recorded_head, recorded = split_response(sample(name))
    assert re.sub(rb"content-length: \d+", b"", mask(head)) == re.sub(rb"content-length: \d+", b"", mask(recorded_head))
    ours, theirs = json.loads(answer), json.loads(recorded)
    assert generic(ours) == generic(theirs)
    # Token accounting agrees with the recording (CLS/SEP plus 4 characters a token).
    assert ours.get("usage", ours.get("count")) == theirs.get("usage", theirs.get("count"))


def test_embeddings_are_deterministic_normalised_and_base64_is_little_endian_float32() -> None:
    with embedding_server() as server, httpx.Client(base_url=server.base_url) as client:
        floats = client.post("/v1/embeddings", json={"input": ["Hello Jupyter", "other"]}).json()["data"]
        encoded = client.post("/v1/embeddings", json={"input": "Hello Jupyter", "encoding_format": "base64"}).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats[0]["embedding"]
    assert len(floats[0]["embedding"]) == 384 and floats[0]["embedding"] != floats[1]["embedding"]
    assert math.isclose(math.fsum(x * x for x in floats[0]["embedding"]), 1.0, rel_tol=1e-5)
    assert embedding_vector([1, 2, 3], 8) == embedding_vector([1, 2, 3], 8)


# -- default semantics ---------------------------------------------------------------------------


def test_default_answer_is_sixteen_predictable_tokens(loopback: LoopbackServer) -> None:
    answer = httpx.post(f"{loopback.base_url}{CHAT}", json={"messages": user("hi")}).json()
    assert answer["choices"][0]["message"]["content"] == "".join(completion_pieces(user("hi"), 16))
    assert answer["usage"]["completion_tokens"] == 16 and answer["choices"][0]["finish_reason"] == "length"


def test_without_a_default_max_tokens_vllm_fills_the_context() -> None:
    with LoopbackServer(default_max_tokens=None) as server:
        answer = httpx.post(f"{server.base_url}{CHAT}", json={"messages": user("hi")}).json()
    assert answer["usage"]["total_tokens"] == 512 and answer["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("span", [(10, 13), (0, 2), (5, 9)])
def test_stop_string_cuts_the_text_before_it(loopback: LoopbackServer, span: tuple[int, int]) -> None:
    text = "".join(completion_pieces(user("hi"), 16))
    stop = text[span[0] : span[1]]
    request = {"messages": user("hi"), "stop": ["never", stop]}
    answer = httpx.post(f"{loopback.base_url}{CHAT}", json=request).json()
    choice = answer["choices"][0]
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", stop)
    _, events, _ = read_stream(loopback, {**request, "stream": True})
    assert "".join(contents(events)) == text[: text.index(stop)]
    assert len(contents(events)) == answer["usage"]["completion_tokens"]


def test_requests_are_recorded(loopback: LoopbackServer) -> None:
    httpx.post(f"{loopback.base_url}{CHAT}?x=1", json={"messages": user("hi")}, headers={"X-Trace": "7"})
    request = loopback.requests[-1]
    assert (request.method, request.path, request.query) == ("POST", CHAT, "x=1")
    assert request.headers["x-trace"] == "7" and request.json == {"messages": user("hi")}


def test_connections_are_kept_alive(loopback: LoopbackServer) -> None:
    request = b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as sock:
        sock.sendall(request + request)
        received = b""
        while received.count(b'{"version":"0.32.0"}') < 2:
            received += sock.recv(1 << 16)
    assert received.count(b"HTTP/1.1 200 OK") == 2


def test_unknown_path_and_wrong_method(loopback: LoopbackServer) -> None:
    assert split_response(raw_exchange(loopback, "GET", "/v1/nope"))[1] == b'{"detail":"Not Found"}'
    head, body = split_response(raw_exchange(loopback, "GET", CHAT))
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed") and b"allow: POST" in head
    assert body == b'{"detail":"Method Not Allowed"}'


def test_openai_client_streams_from_it(loopback: LoopbackServer) -> None:
    with openai.OpenAI(base_url=f"{loopback.base_url}/v1", api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="tiny-chat", messages=SAY_HELLO, max_tokens=5, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(completion_pieces(SAY_HELLO, 5))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


# -- scripted replies --------------------------------------------------------------------------


def contents(events: list[bytes]) -> list[str]:
    return [payload(e)["choices"][0]["delta"]["content"] for e in events if e.startswith(b'data: {"id"') and b'"delta":{"content"' in e]


def test_tokens_stream_exactly_the_pieces(loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["Hel", "lo"], finish_reason="stop"))
    _, events, complete = read_stream(loopback, stream_request(stream_options={"include_usage": True}))
    assert complete and contents(events) == ["Hel", "lo"]
    assert payload(events[2])["choices"][0]["finish_reason"] == "stop"
    assert payload(events[3])["usage"]["completion_tokens"] == 2 and events[4] == b"data: [DONE]\n\n"


def test_tokens_without_usage_skip_the_usage_chunk(loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["a"], usage=False))
    _, events, _ = read_stream(loopback, stream_request(stream_options={"include_usage": True}))
    assert len(events) == 3 and payload(events[1])["system_fingerprint"] == SYSTEM_FINGERPRINT


def test_scripts_are_a_fifo_then_the_default_returns(loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["one"]))
    loopback.push(Reply.status(503))
    with httpx.Client(base_url=loopback.base_url) as client:
        first = client.post(CHAT, json={"messages": user("hi")}).json()
        second = client.post(CHAT, json={"messages": user("hi")})
        third = client.post(CHAT, json={"messages": user("hi")}).json()
        assert first["choices"][0]["message"]["content"] == "one" and first["usage"]["completion_tokens"] == 1
        assert second.status_code == 503 and second.json()["error"]["code"] == 503
        assert third["usage"]["completion_tokens"] == 16


def test_delay_drips_the_chunks(loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["a", "b", "c"], delay=0.05))
    started = time.monotonic()
    arrivals = []
    with httpx.stream("POST", f"{loopback.base_url}{CHAT}", json=stream_request()) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"role"' not in line:
                arrivals.append(time.monotonic() - started)
    # Pauses are counted from when the previous chunk was due (wire.paced), so chunk i is never
    # early for its due time (i + 1) * 0.05; a late first chunk does not push the others back.
    assert len(arrivals) == 3 and all(at >= (i + 1) * 0.05 - 0.005 for i, at in enumerate(arrivals)), arrivals


def test_chunk_rate_paces_the_stream(loopback: LoopbackServer) -> None:
    loopback.push(Reply.many(20, chunk_rate=200))
    started = time.monotonic()
    _, events, complete = read_stream(loopback, stream_request())
    assert complete and len(contents(events)) == 20 and time.monotonic() - started >= 0.095


def test_twenty_thousand_chunks_stream_well_under_a_second(loopback: LoopbackServer) -> None:
    def one_run() -> tuple[float, float, int]:
        loopback.push(Reply.many(20_000))
        wall, cpu = time.perf_counter(), time.process_time()
        with httpx.stream("POST", f"{loopback.base_url}{CHAT}", json=stream_request()) as response:
            events = sum(1 for line in response.iter_lines() if line.startswith("data: "))
        return time.perf_counter() - wall, time.process_time() - cpu, events

    # The machine is shared, so CPU seconds of this process (httpx and the server thread together)
    # measure the cost; wall-clock time only guards against the server stalling.
    runs = [one_run() for _ in range(3)]
    assert all(events == 20_000 + 2 for _, _, events in runs)  # the role chunk and [DONE] besides
    assert min(cpu for _, cpu, _ in runs) < 1.0
    assert min(wall for wall, _, _ in runs) < 10.0


def test_the_server_is_never_the_bottleneck(loopback: LoopbackServer) -> None:
    def one_run() -> float:
        loopback.push(Reply.many(20_000))
        started = time.perf_counter()
        _, events, complete = read_stream(loopback, stream_request())
        assert complete and len(events) == 20_000 + 2
        return time.perf_counter() - started

    # Reading raw bytes costs the client next to nothing: this is the server's own rate.
    assert min(one_run() for _ in range(3)) < 0.5


def test_cut_after_closes_without_terminator(loopback: LoopbackServer) -> None:
    loopback.push(Reply.cut_after(3))
    _, events, complete = read_stream(loopback, stream_request(max_tokens=10))
    assert not complete and len(events) == 4 and b"[DONE]" not in b"".join(events)
    assert contents(events) == completion_pieces(user("hi"), 3)
    loopback.push(Reply.cut_after(1))
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("POST", f"{loopback.base_url}{CHAT}", json=stream_request()) as response:
        list(response.iter_lines())


def test_cut_after_on_a_non_streamed_request_sends_half_the_body(loopback: LoopbackServer) -> None:
    loopback.push(Reply.cut_after(1))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{loopback.base_url}{CHAT}", json={"messages": user("hi")})


def test_malformed_line_is_injected_and_the_stream_goes_on(loopback: LoopbackServer) -> None:
    loopback.push(Reply.malformed_line(after=2, pieces=["a", "b", "c"]))
    _, events, complete = read_stream(loopback, stream_request())
    assert complete and events[3] == b"data: {not json\n\n" and events[-1] == b"data: [DONE]\n\n"
    assert contents(events) == ["a", "b", "c"]


def test_error_event_is_vllms_in_stream_error(loopback: LoopbackServer) -> None:
    loopback.push(Reply.error_event(after=1, message="boom", code=400))
    _, events, complete = read_stream(loopback, stream_request())
    assert complete and len(events) == 4
    assert events[2] == b'data: {"error": {"message": "boom", "type": "BadRequestError", "param": null, "code": 400}}\n\n'
    assert events[3] == b"data: [DONE]\n\n"
    loopback.push(Reply.error_event(message="engine died"))
    with openai.OpenAI(base_url=f"{loopback.base_url}/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.APIError, match="engine died"):
            list(client.chat.completions.create(model="tiny-chat", messages=user("hi"), stream=True))


def test_status_replies(loopback: LoopbackServer) -> None:
    loopback.push(Reply.status(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "2"}))
    loopback.push(Reply.status(502, body="<html><body>Bad Gateway</body></html>"))
    with httpx.Client(base_url=loopback.base_url) as client:
        limited = client.post(CHAT, json=stream_request())
        gateway = client.post(CHAT, json=stream_request())
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        assert limited.json() == {"error": {"message": "slow down"}}
        assert gateway.status_code == 502 and gateway.headers["content-type"] == "text/html; charset=utf-8"
        assert gateway.text.startswith("<html>")
    loopback.push(Reply.status(429, headers={"Retry-After": "2"}))
    head, body = split_response(raw_exchange(loopback, "POST", CHAT, stream_request()))
    # Starlette puts an application's own headers before content-length and content-type.
    assert head.split(b"\r\n")[3:] == [b"retry-after: 2", b"content-length: %d" % len(body),
                                        b"content-type: application/json", b"vary: Origin"]
    assert json.loads(body)["error"]["type"] == "TooManyRequestsError"


def test_hang_before_anything_times_the_client_out(loopback: LoopbackServer) -> None:
    loopback.push(Reply.hang(30))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{loopback.base_url}{CHAT}", json={"messages": user("hi")}, timeout=0.3)


def test_hang_after_headers_times_out_while_streaming(loopback: LoopbackServer) -> None:
    loopback.push(Reply.hang(30, send_headers=True))
    with httpx.stream("POST", f"{loopback.base_url}{CHAT}", json=stream_request(), timeout=0.5) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        with pytest.raises(httpx.ReadTimeout):
            list(response.iter_lines())


def test_until_disconnect_sees_the_client_hang_up(loopback: LoopbackServer) -> None:
    loopback.push(Reply.until_disconnect("tick ", delay=0.01))
    assert not loopback.client_disconnected.is_set()
    with httpx.stream("POST", f"{loopback.base_url}{CHAT}", json=stream_request()) as response:
        ticks = 0
        for line in response.iter_lines():
            ticks += '"tick "' in line
            if ticks == 3:
                break  # leaving the block closes the half-read response's connection
    assert loopback.client_disconnected.wait(5)


def test_a_finished_stream_is_no_disconnect(loopback: LoopbackServer) -> None:
    read_stream(loopback, stream_request())
    assert not loopback.client_disconnected.is_set()


def test_embedding_scripts() -> None:
    with embedding_server() as server, httpx.Client(base_url=server.base_url) as client:
        server.push_embedding(Reply.status(503))
        server.push_embedding(Reply.cut_after(0))
        server.push_embedding(Reply.hang(30))
        assert client.post("/v1/embeddings", json={"input": "hi"}).status_code == 503
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/embeddings", json={"input": "hi"})
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/embeddings", json={"input": "hi"}, timeout=0.3)
        assert client.post("/v1/embeddings", json={"input": "hi"}).json()["usage"]["prompt_tokens"] == 3
        with pytest.raises(ValueError):
            server.push_embedding(Reply.tokens(["a"]))


def test_close_wakes_stalled_replies() -> None:
    with LoopbackServer() as server:
        server.push(Reply.hang(300, send_headers=True))
        with httpx.stream("POST", f"{server.base_url}{CHAT}", json=stream_request(), timeout=10) as response:
            server.close()  # returns only once the stalled connection thread has ended
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
    assert not server.client_disconnected.is_set()


# -- reasoning (vllm serve --reasoning-parser) ------------------------------------------------

THOUGHT = ["Hmm", " let me", " think"]


def reasoning_server() -> LoopbackServer:
    return LoopbackServer(reasoning_parser="qwen3")


def test_reasoning_streams_before_the_content_one_field_per_chunk() -> None:
    with reasoning_server() as server:
        server.push(Reply.tokens(["The", " answer"], finish_reason="stop", reasoning=THOUGHT))
        _, events, complete = read_stream(server, stream_request(stream_options={"include_usage": True}))
    assert complete and len(events) == 1 + 3 + 2 + 2
    # vLLM 0.32's own pydantic models render a reasoning delta like this (exclude_unset: no content).
    assert mask(events[1]) == (
        b'data: {"id":"chatcmpl-0123456789abcdef","object":"chat.completion.chunk","created":1234567890,'
        b'"model":"tiny-chat","choices":[{"index":0,"delta":{"reasoning":"Hmm"},"logprobs":null,'
        b'"finish_reason":null,"token_ids":null}]}\n\n'
    )
    deltas = [payload(event)["choices"][0]["delta"] for event in events[1:6]]
    assert deltas == [*({"reasoning": piece} for piece in THOUGHT), {"content": "The"}, {"content": " answer"}]
    assert payload(events[5])["choices"][0]["finish_reason"] == "stop"
    # <think> and </think> are generated tokens too, streamed as no chunk of their own.
    assert payload(events[6])["usage"] == {"prompt_tokens": count_chat_tokens(user("hi")),
                                           "total_tokens": count_chat_tokens(user("hi")) + 7,
                                           "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 3}}


def test_reasoning_without_streaming_is_the_messages_reasoning() -> None:
    with reasoning_server() as server, httpx.Client(base_url=server.base_url) as client:
        server.push(Reply.tokens(["The", " answer"], reasoning=THOUGHT))
        server.push(Reply.tokens([], reasoning=THOUGHT))
        answered = client.post(CHAT, json={"messages": user("hi")}).json()
        thought_only = client.post(CHAT, json={"messages": user("hi")}).json()
        plain = client.post(CHAT, json={"messages": user("hi")}).json()
    message = answered["choices"][0]["message"]
    assert (message["content"], message["reasoning"]) == ("The answer", "Hmm let me think")
    assert answered["usage"]["completion_tokens"] == 7
    assert answered["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}
    assert thought_only["choices"][0]["message"]["content"] is None
    # A server with a reasoning parser reports reasoning_tokens even for an answer without thought.
    assert plain["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert plain["choices"][0]["message"]["reasoning"] is None


def test_a_thought_without_an_answer_ends_with_an_empty_delta() -> None:
    with reasoning_server() as server:
        server.push(Reply.tokens([], reasoning=["Hmm"]))
        _, events, _ = read_stream(server, stream_request())
    # The last token was </think>: vLLM sends its finish_reason with an empty delta.
    assert [payload(event)["choices"][0]["delta"] for event in events[1:3]] == [{"reasoning": "Hmm"}, {}]
    assert payload(events[2])["choices"][0]["finish_reason"] == "length"


def test_reasoning_needs_a_reasoning_parser(loopback: LoopbackServer) -> None:
    with pytest.raises(ValueError, match="reasoning_parser"):
        loopback.push(Reply.tokens(["a"], reasoning=["b"]))
    _, events, _ = read_stream(loopback, stream_request(stream_options={"include_usage": True}))
    assert "completion_tokens_details" not in payload(events[-2])["usage"]


# -- the in-process transport ------------------------------------------------------------------


def event_lines(response: httpx.Response) -> list[str]:
    return [line for line in response.iter_lines() if line]


def test_transport_answers_what_the_socket_server_answers(loopback: LoopbackServer) -> None:
    transport = LoopbackTransport()
    request = stream_request(stream_options={"include_usage": True}, max_tokens=5, stop=["o"])
    _, events, _ = read_stream(loopback, request)
    with httpx.Client(transport=transport, base_url=transport.base_url) as client:
        with client.stream("POST", CHAT, json=request) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert [mask(part) for part in response.iter_raw()] == [mask(event) for event in events]
        assert client.post("/v1/nope").json() == {"detail": "Not Found"}
    assert not transport.client_disconnected.is_set()


def test_transport_records_requests_and_plays_scripts_in_order() -> None:
    transport = LoopbackTransport()
    transport.push(Reply.status(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "2"}))
    transport.push(Reply.tokens(["one"]))
    with httpx.Client(transport=transport, base_url=transport.base_url) as client:
        limited = client.post(f"{CHAT}?x=1", json={"messages": user("hi")}, headers={"X-Trace": "7"})
        scripted = client.post(CHAT, json={"messages": user("hi")}).json()
        default = client.post(CHAT, json={"messages": user("hi")}).json()
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert scripted["choices"][0]["message"]["content"] == "one"
    assert default["choices"][0]["message"]["content"] == "".join(completion_pieces(user("hi"), 16))
    request = transport.requests[0]
    assert (request.method, request.path, request.query) == ("POST", CHAT, "x=1")
    assert request.headers["x-trace"] == "7" and request.json == {"messages": user("hi")}
    assert len(transport.requests) == 3 and transport.wait_for_requests(3, CHAT, timeout=0)


def test_async_transport_streams_and_sees_the_client_hang_up() -> None:
    transport = LoopbackTransport()
    transport.push(Reply.tokens(["a", "b", "c"], delay=0.02))
    transport.push(Reply.until_disconnect("tick ", delay=0.01))

    async def scenario() -> tuple[list[str], int]:
        async with httpx.AsyncClient(transport=transport, base_url=transport.base_url) as client:
            async with client.stream("POST", CHAT, json=stream_request()) as response:
                lines = [line async for line in response.aiter_lines() if line]
            assert not transport.client_disconnected.is_set()
            ticks = 0
            async with client.stream("POST", CHAT, json=stream_request()) as response:
                async for line in response.aiter_lines():
                    ticks += '"tick "' in line
                    if ticks == 3:
                        break
            return lines, ticks

    started = time.monotonic()
    lines, ticks = asyncio.run(scenario())
    assert [json.loads(line[6:])["choices"][0]["delta"]["content"] for line in lines[1:4]] == ["a", "b", "c"]
    assert lines[-1] == "data: [DONE]" and ticks == 3 and time.monotonic() - started >= 0.06
    assert transport.client_disconnected.is_set()


def test_transport_cut_raises_after_the_bytes_before_it() -> None:
    transport = LoopbackTransport(embedding_models=(EMBED_MODEL,))
    transport.push(Reply.cut_after(2))
    transport.push(Reply.cut_after(1))
    transport.push_embedding(Reply.cut_after(0))
    received: list[str] = []
    with httpx.Client(transport=transport, base_url=transport.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", CHAT, json=stream_request()) as response:
            received.extend(line for line in response.iter_lines() if line)
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(CHAT, json={"messages": user("hi")})
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/embeddings", json={"input": "hi"})
    assert len(received) == 3 and "[DONE]" not in received[-1]
    assert not transport.client_disconnected.is_set()


def test_transport_hang_times_out_only_when_the_client_gives_up_first() -> None:
    transport = LoopbackTransport()
    transport.push(Reply.hang(30))
    transport.push(Reply.hang(30, send_headers=True))
    transport.push(Reply.hang(0.05))
    with httpx.Client(transport=transport, base_url=transport.base_url, timeout=0.1) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.post(CHAT, json={"messages": user("hi")})
        with client.stream("POST", CHAT, json=stream_request()) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                response.read()
        assert time.monotonic() - started < 2
        assert transport.client_disconnected.is_set()  # a client that times out hangs up
        # A hang shorter than the timeout ends like the socket server's: the connection closes.
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            client.post(CHAT, json={"messages": user("hi")})


# -- /v1/completions -------------------------------------------------------------------------------

COMPLETIONS = "/v1/completions"


def blank_completion(event: bytes) -> bytes:
    """A completion event with what the model and tokenizer decide blanked: the text, the prompt's count."""
    event = re.sub(rb'"text":"(?:[^"\\]|\\.)*"', b'"text":"<text>"', mask(event))
    return re.sub(rb'"(prompt_tokens|total_tokens)":\d+', rb'"\1":0', event)


def test_completion_stream_is_vllms_byte_for_byte_but_the_text(loopback: LoopbackServer) -> None:
    request = {"model": "tiny-chat", "prompt": "def add(a, b):", "stream": True,
               "stream_options": {"include_usage": True}, "max_tokens": 5}
    head, raw_body = split_response(raw_exchange(loopback, "POST", COMPLETIONS, request))
    events, complete = http_chunks(raw_body)
    recorded_head, _ = split_response(sample("chat/completions_stream.sse.http"))
    assert mask(head) == mask(recorded_head) and complete
    recorded = sample_events("chat/completions_stream.sse.http")
    assert [blank_completion(event) for event in events] == [blank_completion(event) for event in recorded]
    texts = [payload(event)["choices"][0]["text"] for event in events[:5]]
    assert texts == completion_pieces(user("def add(a, b):"), 5)
    assert payload(events[5])["usage"]["prompt_tokens"] == count_text_tokens("def add(a, b):")


def test_completion_without_usage_ends_with_the_fingerprint_and_echo_leads_with_the_prompt(
    loopback: LoopbackServer,
) -> None:
    request = {"model": "tiny-chat", "prompt": "hi", "stream": True, "max_tokens": 2, "echo": True}
    events, _ = http_chunks(split_response(raw_exchange(loopback, "POST", COMPLETIONS, request))[1])
    first, second = completion_pieces(user("hi"), 2)
    assert [payload(event)["choices"][0]["text"] for event in events[:-1]] == ["hi" + first, second]
    assert payload(events[-2])["system_fingerprint"] == SYSTEM_FINGERPRINT and events[-1] == b"data: [DONE]\n\n"


def test_completion_not_streamed_is_a_text_completion(loopback: LoopbackServer) -> None:
    request = {"model": "tiny-chat", "prompt": "hi", "max_tokens": 3, "echo": True}
    body = json.loads(split_response(raw_exchange(loopback, "POST", COMPLETIONS, request))[1])
    assert list(body) == ["id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage",
                          "kv_transfer_params", "ec_transfer_params", "metrics"]
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    (choice,) = body["choices"]
    assert choice["text"] == "hi" + "".join(completion_pieces(user("hi"), 3)) and choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_completions_need_a_prompt_and_are_missing_from_the_openai_profile(loopback: LoopbackServer) -> None:
    missing = raw_exchange(loopback, "POST", COMPLETIONS, {"model": "tiny-chat"})
    assert missing.startswith(b"HTTP/1.1 400") and b"body.prompt" in missing
    with LoopbackServer(profile="openai") as server:
        assert raw_exchange(server, "POST", COMPLETIONS, {"prompt": "hi"}).endswith(b'{"detail":"Not Found"}')
