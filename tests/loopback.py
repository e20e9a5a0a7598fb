"""A loopback stand-in for a vLLM 0.32 OpenAI-compatible server, for fast tests and benchmarks.

Why not a framework: the fast suite needs byte-exact fidelity to the responses recorded in
``tests/fixtures/vllm-samples`` (header order and casing, ``content-length``, one HTTP chunk per
server-sent event, exactly like uvicorn) and it must push 20,000+ SSE chunks a second to a single
client, so the server writes raw pre-rendered bytes on plain sockets (stdlib only, one thread per
connection, HTTP/1.1 keep-alive).

Without a script the server behaves like the recorded vLLM: validation errors, the prompt-length
limit, ``max_tokens`` clamping, stop strings, usage accounting, embeddings and ``/tokenize`` all
follow one deterministic "tokenizer" (:func:`count_text_tokens`, :func:`count_chat_tokens`) and one
deterministic "model" (:func:`completion_pieces`, :func:`embedding_vector`), so tests can predict
every number.  :meth:`LoopbackServer.push` scripts the next chat answers (:class:`Reply`) to provoke
what a real server only does occasionally: slow drips, cut connections, error events, 429s, hangs.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import math
import random
import secrets
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol

VLLM_VERSION = "0.32.0"
SYSTEM_FINGERPRINT = "vllm-0.32.0-0164b094"
MODEL_ROOT = "/srv/models"

CHARS_PER_TOKEN = 4
"""The stand-in tokenizer cuts text into pieces of this many characters (typical for real models)."""

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
_SPECIAL_IDS = {IM_START: 1, IM_END: 2}
CLS_ID, SEP_ID = 101, 102
"""The embedding model wraps every input in these, like the recorded BERT-style tokenizer."""
_VOCAB_SIZE = 32000

# The "model" answers by walking this text from a hash-chosen start, one piece per token, so the
# output reads like words and every piece is known in advance (see completion_pieces).
_ANSWER_PIECES = (
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
    " Jupyter", " notebooks", " make", " it", " easy", " to", " explore", " data", ",",
    " and", " vLLM", " serves", " models", " fast", ".", " Streaming", " tokens", " arrive",
    " one", " by", " one", " until", " the", " answer", " is", " complete", ".", "\n",
)

_NOT_FOUND = b'{"detail":"Not Found"}'
_UNAUTHORIZED = b'{"error":"Unauthorized"}'
_SSE_DONE = b"data: [DONE]\n\n"
_END_OF_CHUNKS = b"0\r\n\r\n"
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}
_ENCODING_FORMATS = ("float", "base64", "bytes", "bytes_only")


# --------------------------------------------------------------------------------------------
# The deterministic "tokenizer" and "model"


def _text_pieces(text: str) -> list[str]:
    return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def count_text_tokens(text: str) -> int:
    """Tokens in a plain prompt for the chat model: ``ceil(len(text) / 4)``, no special tokens."""
    return len(_text_pieces(text))


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


def chat_prompt_pieces(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[str]:
    """The prompt tokens of a ChatML rendering, as the chat endpoints and ``/tokenize`` count them.

    Each message is ``<|im_start|>``, the pieces of ``"{role}\\n{content}"``, ``<|im_end|>`` and
    ``"\\n"``; the generation prompt adds ``<|im_start|>`` and the pieces of ``"assistant\\n"``.
    """
    pieces: list[str] = []
    for message in messages:
        role = str(message.get("role", ""))
        pieces += [IM_START, *_text_pieces(f"{role}\n{message_text(message.get('content'))}"), IM_END, "\n"]
    if add_generation_prompt:
        pieces += [IM_START, *_text_pieces("assistant\n")]
    return pieces


def count_chat_tokens(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> int:
    """``prompt_tokens`` of a chat request (see :func:`chat_prompt_pieces`)."""
    return len(chat_prompt_pieces(messages, add_generation_prompt))


def count_embedding_tokens(text: str) -> int:
    """Tokens of one embedding input text: ``[CLS]`` + ``ceil(len(text) / 4)`` + ``[SEP]``."""
    return count_text_tokens(text) + 2


def _stable_int(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(repr, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _token_id(piece: str, first_free: int) -> int:
    return first_free + _stable_int(piece) % (_VOCAB_SIZE - first_free)


def completion_pieces(
    messages: Sequence[Mapping[str, Any]], count: int, *, seed: int | None = None, index: int = 0
) -> list[str]:
    """The first ``count`` tokens the default model generates (before stop strings apply).

    The answer depends only on the last user message, the request's ``seed`` and the choice index,
    so repeated requests agree (even with ``temperature`` > 0) and tests can predict the text.
    """
    last_user = next(
        (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    start = _stable_int(last_user, seed, index)
    return [_ANSWER_PIECES[(start + i) % len(_ANSWER_PIECES)] for i in range(count)]


def embedding_vector(token_ids: Sequence[int], dims: int) -> list[float]:
    """The L2-normalised float32 embedding of a tokenized input (same text, same vector)."""
    rng = random.Random(_stable_int(*token_ids))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dims}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dims}f", packed))


def _byte_level_unicode() -> list[str]:
    """GPT-2's byte-to-character table, so ``token_strs`` look like a byte-level BPE's ("Ċ" for "\\n")."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    shifted = itertools.count(256)
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


_BYTE_CHARS = _byte_level_unicode()


def _token_str(piece: str) -> str:
    return piece if piece in _SPECIAL_IDS else "".join(_BYTE_CHARS[b] for b in piece.encode())


# --------------------------------------------------------------------------------------------
# Scripted replies


@dataclass(frozen=True)
class StreamReply:
    """A scripted chat answer; the fields combine (``dataclasses.replace`` a factory's result).

    ``pieces`` None means "what the default model would answer".  For a non-streaming request the
    pieces are joined into one ``chat.completion`` (an error becomes an error response, a cut sends
    half the body, a malformed line becomes the body, ``interval`` delays the whole answer).
    """

    pieces: tuple[str, ...] | None = None
    finish_reason: str = "length"
    usage: bool = True
    """False: never send the usage chunk even when the request asked for it."""
    interval: float = 0.0
    """Seconds between token chunks (the role chunk and the trailer are not delayed)."""
    repeat: bool = False
    """Cycle ``pieces`` forever, until the client disconnects."""
    cut_after: int | None = None
    """Close the TCP connection after this many token chunks: no last chunk, no [DONE]."""
    malformed_after: int | None = None
    malformed_line: bytes = b""
    """Sent as its own event (followed by a blank line) after ``malformed_after`` token chunks."""
    error_after: int | None = None
    error: Mapping[str, Any] | None = None
    """vLLM's in-stream error object, sent after ``error_after`` token chunks, then [DONE]."""


@dataclass(frozen=True)
class StatusReply:
    """A complete scripted HTTP response, e.g. a 429 with ``retry-after`` or a proxy's 502 page."""

    status: int
    body: bytes
    content_type: str | None
    """None when ``headers`` carry their own content-type."""
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class HangReply:
    """Stall (optionally after the response headers) then close, for read-timeout tests."""

    seconds: float
    send_headers: bool = False


ScriptedReply = StreamReply | StatusReply | HangReply


def _interval(delay: float, chunk_rate: float | None) -> float:
    if chunk_rate is None:
        return delay
    if delay:
        raise ValueError("give either delay or chunk_rate, not both")
    return 1.0 / chunk_rate


def _pieces_or_default(pieces: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if pieces is None else tuple(pieces)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _error_object(message: str, code: int, error_type: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind = error_type or _ERROR_TYPES.get(code) or _phrase(code).replace(" ", "") + "Error"
    return {"message": message, "type": kind, "param": param, "code": code}


class Reply:
    """Factories for :class:`LoopbackServer.push` / :meth:`LoopbackServer.push_embedding`."""

    @staticmethod
    def tokens(
        pieces: Iterable[str],
        finish_reason: str = "length",
        usage: bool = True,
        delay: float = 0.0,
        chunk_rate: float | None = None,
    ) -> StreamReply:
        """Stream exactly these content pieces (one chunk each), paced by ``delay`` or ``chunk_rate``.

        Stop strings of the request do not apply; ``usage`` False suppresses the usage chunk.
        """
        return StreamReply(tuple(pieces), finish_reason, usage, _interval(delay, chunk_rate))

    @staticmethod
    def many(
        n: int,
        piece: str = "tok ",
        finish_reason: str = "length",
        usage: bool = True,
        delay: float = 0.0,
        chunk_rate: float | None = None,
    ) -> StreamReply:
        """``n`` identical chunks, as fast as possible by default (the chunk is rendered once)."""
        return StreamReply((piece,) * n, finish_reason, usage, _interval(delay, chunk_rate))

    @staticmethod
    def cut_after(k: int, pieces: Iterable[str] | None = None, delay: float = 0.0) -> StreamReply:
        """Send the role chunk and ``k`` token chunks, then close the connection abruptly."""
        return StreamReply(_pieces_or_default(pieces), interval=delay, cut_after=k)

    @staticmethod
    def malformed_line(
        after: int = 1, line: bytes = b"data: {not json", pieces: Iterable[str] | None = None
    ) -> StreamReply:
        """Inject a raw line after ``after`` token chunks; the stream then continues normally."""
        return StreamReply(_pieces_or_default(pieces), malformed_after=after, malformed_line=line)

    @staticmethod
    def error_event(
        after: int = 0,
        message: str = "Internal server error",
        code: int = 500,
        error_type: str | None = None,
        pieces: Iterable[str] | None = None,
    ) -> StreamReply:
        """After ``after`` token chunks send vLLM's in-stream error event, then ``data: [DONE]``.

        ``error_type`` defaults from ``code``: 400 BadRequestError, 500 InternalServerError.
        """
        return StreamReply(
            _pieces_or_default(pieces), error_after=after, error=_error_object(message, code, error_type)
        )

    @staticmethod
    def status(
        code: int,
        body_json: Any = None,
        headers: Mapping[str, str] | None = None,
        body: str | bytes | None = None,
    ) -> StatusReply:
        """Answer with this status.  The body is ``body_json`` (JSON), else the raw ``body`` (HTML if it
        starts with "<", else plain text), else a vLLM-style error object for the code.
        """
        extra = tuple((name.lower(), value) for name, value in (headers or {}).items())
        content_type: str | None
        if body is not None:
            payload = body.encode() if isinstance(body, str) else body
            content_type = "text/html; charset=utf-8" if payload.startswith(b"<") else "text/plain; charset=utf-8"
        else:
            default = {"error": _error_object(_phrase(code) or "Error", code)}
            payload = _json(body_json if body_json is not None else default)
            content_type = "application/json"
        if any(name == "content-type" for name, _ in extra):
            content_type = None
        return StatusReply(code, payload, content_type, extra)

    @staticmethod
    def hang(seconds: float, send_headers: bool = False) -> HangReply:
        """Say nothing (or only the response headers) for ``seconds``, then close the connection."""
        return HangReply(seconds, send_headers)

    @staticmethod
    def until_disconnect(piece: str = "tok ", delay: float = 0.05) -> StreamReply:
        """Stream ``piece`` every ``delay`` seconds until the client goes away (sets
        :attr:`LoopbackServer.client_disconnected`)."""
        return StreamReply((piece,), interval=delay, repeat=True)


# --------------------------------------------------------------------------------------------
# HTTP plumbing


def _json(obj: Any) -> bytes:
    """Starlette's JSONResponse rendering (and pydantic's): compact, UTF-8, not ASCII-escaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {_phrase(status)}"


def _head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    """uvicorn's header block: its ``date`` and ``server`` first, then the application's headers."""
    lines = [_status_line(status), f"date: {formatdate(usegmt=True)}", "server: uvicorn"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _sse_head() -> bytes:
    """A streamed 200: uvicorn appends ``transfer-encoding`` after the application's headers."""
    return _head(200, [("content-type", "text/event-stream; charset=utf-8"), ("vary", "Origin"),
                       ("transfer-encoding", "chunked")])


def _frame(event: bytes) -> bytes:
    """One HTTP chunk per SSE event, as uvicorn writes each StreamingResponse piece."""
    return b"%x\r\n%s\r\n" % (len(event), event)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it (header names lowercased)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any
    """The body parsed as JSON, or None when it is not JSON."""


class _Wire:
    """An accepted socket plus what a reply needs to notice a vanished client or a stopping server."""

    def __init__(self, sock: socket.socket, stopping: threading.Event, disconnected: threading.Event) -> None:
        self.sock = sock
        self._stopping = stopping
        self._disconnected = disconnected
        self._poll = select.poll()  # unlike select(), not limited to descriptors below 1024
        self._poll.register(sock, select.POLLIN)

    def send(self, data: bytes) -> bool:
        """Send everything; False (and the disconnect recorded) when the client is gone."""
        try:
            self.sock.sendall(data)
        except OSError:
            self._lost()
            return False
        return True

    def pause(self, seconds: float) -> bool:
        """Wait while watching the socket, so a client hanging up mid-reply is seen at once.

        False when the client went away or the server is stopping.
        """
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            timeout = None if math.isinf(remaining) else remaining
            if not self._poll.poll(None if timeout is None else timeout * 1000):
                continue
            try:
                pending = self.sock.recv(1, socket.MSG_PEEK)
            except OSError:
                pending = b""
            if not pending:
                self._lost()
                return False
            self._stopping.wait(timeout)  # a pipelined request is waiting: it is no hang-up
        return False

    def _lost(self) -> None:
        if not self._stopping.is_set():
            self._disconnected.set()


class _Action(Protocol):
    def perform(self, wire: _Wire) -> bool:
        """Write the reply; True when the connection can serve another request."""


@dataclass(frozen=True)
class _Fixed:
    """A complete response with a body (``delay`` simulates a non-streamed generation's latency)."""

    status: int
    body: bytes
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    """Extra headers; like Starlette's Response they precede content-length and content-type."""
    delay: float = 0.0

    def head(self) -> bytes:
        headers = [*self.headers, ("content-length", str(len(self.body)))]
        if self.content_type is not None:
            headers.append(("content-type", self.content_type))
        return _head(self.status, [*headers, ("vary", "Origin")])

    def perform(self, wire: _Wire) -> bool:
        return wire.pause(self.delay) and wire.send(self.head() + self.body)


@dataclass(frozen=True)
class _Broken:
    """Send some bytes, stall, then close the connection without finishing the response."""

    sent: bytes
    stall: float = 0.0

    def perform(self, wire: _Wire) -> bool:
        if wire.send(self.sent) and self.stall:
            wire.pause(self.stall)
        return False


@dataclass(frozen=True)
class _EventStream:
    """A ``text/event-stream`` response: role chunks at once, paced token chunks, the trailer at once."""

    prelude: list[bytes]
    body: Iterable[bytes]
    """Finite unless ``interval`` paces it."""
    trailer: list[bytes]
    interval: float = 0.0
    complete: bool = True
    """False: close the connection after the body instead of ending the chunked response."""

    def perform(self, wire: _Wire) -> bool:
        head = _sse_head() + b"".join(map(_frame, self.prelude))
        if self.interval <= 0:
            # Render everything first and write it at once: the client shares the GIL with this
            # thread, and Python work interleaved with its reads would halve the chunk rate.
            tail = b"".join(map(_frame, self.trailer)) + _END_OF_CHUNKS if self.complete else b""
            return wire.send(head + b"".join(map(_frame, self.body)) + tail) and self.complete
        if not wire.send(head):
            return False
        due = time.monotonic()
        for event in self.body:
            due += self.interval
            if not (wire.pause(due - time.monotonic()) and wire.send(_frame(event))):
                return False
        return self.complete and wire.send(b"".join(map(_frame, self.trailer)) + _END_OF_CHUNKS)


def _hang(would_be: _Action, reply: HangReply) -> _Broken:
    """Stall instead of ``would_be``, after its headers when the script says so."""
    head = b""
    if reply.send_headers and isinstance(would_be, _EventStream):
        head = _sse_head()
    elif reply.send_headers and isinstance(would_be, _Fixed):
        head = would_be.head()
    return _Broken(head, reply.seconds)


def _cut_in_half(would_be: _Fixed) -> _Broken:
    return _Broken(would_be.head() + would_be.body[: len(would_be.body) // 2])


class _RequestReader:
    """Parses HTTP/1.1 requests off one keep-alive connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> bool:
        data = self._sock.recv(1 << 16)
        self._buffer += data
        return bool(data)

    def _take_line(self) -> bytes | None:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if not self._fill():
                return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _take(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if not self._fill():
                return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def next(self) -> tuple[RecordedRequest, bool] | None:
        """The next request and whether the client allows keep-alive; None at EOF or garbage."""
        request_line = self._take_line()
        if not request_line:
            return None
        try:
            method, target, version = request_line.decode("latin-1").split(" ")
        except ValueError:
            return None
        headers: dict[str, str] = {}
        while line := self._take_line():
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if line is None:
            return None
        body = self._read_body(headers)
        if body is None:
            return None
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        path, _, query = target.partition("?")
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        return RecordedRequest(method, path, query, headers, body, parsed), keep_alive

    def _read_body(self, headers: Mapping[str, str]) -> bytes | None:
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            return self._take(int(headers.get("content-length", "0")))
        body = bytearray()
        while (size_line := self._take_line()) is not None:
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while self._take_line():  # skip optional trailers up to the blank line
                    pass
                return bytes(body)
            chunk = self._take(size + 2)
            if chunk is None:
                return None
            body += chunk[:-2]
        return None


# --------------------------------------------------------------------------------------------
# vLLM's request semantics


def _error(status: int, message: str, param: str | None = None, error_type: str | None = None) -> _Fixed:
    return _Fixed(status, _json({"error": _error_object(message, status, error_type, param)}))


def _param_error(param: str, value: object, message: str) -> _Fixed:
    return _error(400, f"{message} (parameter={param}, value={value})", param)


def _validation_error(entries: Sequence[Mapping[str, Any]], param: str, total: int | None = None) -> _Fixed:
    """FastAPI's request-validation 400 as vLLM renders it: each pydantic error as a Python repr,
    at most ten of them."""
    count = len(entries) if total is None else total
    lines = [f"{count} validation error{'' if count == 1 else 's'}:"]
    lines += [f"  {entry!r}" for entry in entries[:10]]
    if count > 10:
        lines.append(f"  ...and {count - 10} more errors")
    return _Fixed(400, _json({"error": {"message": "\n".join(lines), "type": "Bad Request", "param": param, "code": 400}}))


def _parse_json_body(request: RecordedRequest) -> dict[str, Any] | _Fixed:
    """The JSON object of a request, or the 400 FastAPI answers for an unusable body."""
    if not request.body:
        return _validation_error([{"type": "missing", "loc": "body", "msg": "Field required", "input": None}], "body")
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
        message = getattr(exc, "msg", str(exc))
        entry = {"type": "json_invalid", "loc": f"body.{position}", "msg": "JSON decode error",
                 "input": "<dict of 0 items>", "ctx": {"error": message}}
        return _validation_error([entry], f"body.{position}")
    if not isinstance(body, dict):
        entry = {"type": "model_attributes_type", "loc": "body",
                 "msg": "Input should be a valid dictionary or object to extract fields from", "input": body}
        return _validation_error([entry], "body")
    return body


def _missing(body: Mapping[str, Any], field: str) -> dict[str, Any]:
    return {"type": "missing", "loc": f"body.{field}", "msg": "Field required", "input": f"<dict of {len(body)} items>"}


def _prompt_too_long(max_model_len: int, tokens: int) -> _Fixed:
    return _param_error(
        "input_tokens", tokens,
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains at "
        f"least {tokens} input tokens, which exceeds this limit even without any output tokens. Please reduce "
        "the length of the input prompt.",
    )


def _stop_strings(stop: Any) -> list[str]:
    if isinstance(stop, str):
        stop = [stop]
    return [s for s in stop or () if isinstance(s, str) and s]


@dataclass(frozen=True)
class _Choice:
    """One generated choice: the content delta of each token chunk and why it ended."""

    index: int
    deltas: tuple[str, ...]
    finish_reason: str
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def _apply_stop(index: int, pieces: Sequence[str], stops: Sequence[str]) -> _Choice:
    """vLLM's stop strings: the token completing a stop string ends the output and the text is cut
    just before it.  While stop strings are active, vLLM's detokenizer holds back the last
    ``len(longest stop) - 1`` characters of the stream, so no chunk ever shows part of a stop
    string; a chunk whose text is all held back is still sent (one chunk per token)."""
    held_back = max(map(len, stops), default=1) - 1
    text = ""
    emitted = 0
    deltas: list[str] = []
    for number, piece in enumerate(pieces, start=1):
        before = len(text)
        text += piece
        hits = [(found, stop) for stop in stops if (found := text.find(stop, max(0, before - len(stop) + 1))) >= 0]
        if hits:
            cut, stop = min(hits, key=lambda hit: hit[0])
            deltas.append(text[emitted:cut])
            return _Choice(index, tuple(deltas), "stop", stop)
        upto = len(text) if number == len(pieces) else max(emitted, len(text) - held_back)
        deltas.append(text[emitted:upto])
        emitted = upto
    return _Choice(index, tuple(deltas), "length")


class _ChatChunks:
    """Renders ``chat.completion.chunk`` events byte-compatible with vLLM's stream."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        model_json = json.dumps(model, ensure_ascii=False)
        self._prefix = (
            f'data: {{"id":"{request_id}","object":"chat.completion.chunk","created":{created},'
            f'"model":{model_json},"choices":'
        )
        self._cache: dict[tuple[int, str], bytes] = {}

    def role(self, index: int) -> bytes:
        return (
            f'{self._prefix}[{{"index":{index},"delta":{{"role":"assistant","content":""}},"logprobs":null,'
            f'"finish_reason":null}}],"prompt_token_ids":null,"prompt_text":null}}\n\n'
        ).encode()

    def content(self, index: int, delta: str) -> bytes:
        key = (index, delta)
        if (event := self._cache.get(key)) is None:
            event = self._cache[key] = (
                f'{self._prefix}[{{"index":{index},"delta":{{"content":{json.dumps(delta, ensure_ascii=False)}}},'
                f'"logprobs":null,"finish_reason":null,"token_ids":null}}]}}\n\n'
            ).encode()
        return event

    def final(self, choice: _Choice, delta: str, fingerprint: bool) -> bytes:
        """The last chunk of a choice; the stream's very last one carries the fingerprint when no
        usage chunk follows."""
        tail = f',"system_fingerprint":"{SYSTEM_FINGERPRINT}"' if fingerprint else ""
        return (
            f'{self._prefix}[{{"index":{choice.index},"delta":{{"content":{json.dumps(delta, ensure_ascii=False)}}},'
            f'"logprobs":null,"finish_reason":{json.dumps(choice.finish_reason)},'
            f'"stop_reason":{json.dumps(choice.stop_reason)},"token_ids":null}}]{tail}}}\n\n'
        ).encode()

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return (
            f'{self._prefix}[],"usage":{{"prompt_tokens":{prompt_tokens},'
            f'"total_tokens":{prompt_tokens + completion_tokens},"completion_tokens":{completion_tokens}}},'
            f'"system_fingerprint":"{SYSTEM_FINGERPRINT}"}}\n\n'
        ).encode()


def _chat_events(chunks: _ChatChunks, choices: Sequence[_Choice], send_usage: bool, prompt_tokens: int) -> list[bytes]:
    """Token chunks of all choices, interleaved round-robin, plus the usage chunk when asked for."""
    # A choice with no tokens still ends with one (empty) chunk carrying its finish_reason.
    sequences = [choice.deltas or ("",) for choice in choices]
    last_turn = max(map(len, sequences))
    last_choice = max(i for i, deltas in enumerate(sequences) if len(deltas) == last_turn)
    events: list[bytes] = []
    for turn in range(last_turn):
        for position, (choice, deltas) in enumerate(zip(choices, sequences)):
            if turn < len(deltas) - 1:
                events.append(chunks.content(choice.index, deltas[turn]))
            elif turn == len(deltas) - 1:
                fingerprint = not send_usage and turn == last_turn - 1 and position == last_choice
                events.append(chunks.final(choice, deltas[turn], fingerprint))
    if send_usage:
        events.append(chunks.usage(prompt_tokens, sum(len(choice.deltas) for choice in choices)))
    return events


def _chat_completion(request_id: str, created: int, model: str, choices: Sequence[_Choice], prompt_tokens: int) -> bytes:
    completion_tokens = sum(len(choice.deltas) for choice in choices)
    return _json({
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [
            {
                "index": choice.index,
                "message": {"role": "assistant", "content": choice.text, "refusal": None, "annotations": None,
                            "audio": None, "function_call": None, "reasoning": None},
                "logprobs": None, "finish_reason": choice.finish_reason, "stop_reason": choice.stop_reason,
                "token_ids": None, "routed_experts": None,
            }
            for choice in choices
        ],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                  "completion_tokens": completion_tokens, "prompt_tokens_details": None,
                  "completion_tokens_details": None},
        "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None, "kv_transfer_params": None,
        "ec_transfer_params": None, "metrics": None,
    })


def _bad_encoding_format(body: Mapping[str, Any], accepted: Sequence[str] = _ENCODING_FORMATS) -> _Fixed:
    """The union-of-request-types validation error vLLM answers for an unknown ``encoding_format``
    (recorded with a string input; eleven errors, ten shown).  ``accepted`` narrows the formats,
    to play a server that does not know base64."""
    value = body.get("encoding_format")
    quoted = [f"'{name}'" for name in accepted]
    expected = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
    literal = {"type": "literal_error", "loc": "body.encoding_format",
               "msg": f"Input should be {expected}", "input": value, "ctx": {"expected": expected}}
    missing = _missing(body, "messages")
    not_list = {"type": "list_type", "loc": "body.input", "msg": "Input should be a valid list", "input": body.get("input")}
    entries = [literal, literal, missing, literal, missing, literal, missing, not_list, literal, missing]
    return _validation_error(entries, "body.encoding_format", total=11)


def _base64_vector(vector: Sequence[float]) -> str:
    """vLLM's ``encoding_format: base64``: the little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _next_script(script: deque[ScriptedReply]) -> ScriptedReply | None:
    """Pop the next scripted reply; concurrent requests may race for the last one."""
    try:
        return script.popleft()
    except IndexError:
        return None


# --------------------------------------------------------------------------------------------
# The server


class LoopbackServer:
    """A vLLM 0.32 look-alike on 127.0.0.1 (a free port), served from a background thread.

    ``models`` are chat models sharing ``max_model_len``; ``embedding_models`` are pooling models
    (``embedding_max_model_len``, ``embedding_dims``).  Endpoints a real server of that kind lacks
    answer 404, like vLLM.  With ``api_key`` set, ``/v1/*`` needs ``Authorization: Bearer <key>``
    (vLLM leaves ``/health``, ``/version`` and ``/tokenize`` open).  ``default_max_tokens`` is what a
    chat request without ``max_tokens`` generates; None means vLLM's own default, the rest of the
    context window.

    For embeddings, ``embedding_encodings`` are the ``encoding_format`` values accepted (narrow it to
    ``("float",)`` to play a server without base64), and ``canned_embeddings`` answers every input
    with one precomputed vector, so a benchmark measures the client rather than this server.
    """

    def __init__(
        self,
        models: Sequence[str] = ("tiny-chat",),
        api_key: str | None = None,
        max_model_len: int = 512,
        *,
        embedding_models: Sequence[str] = (),
        embedding_max_model_len: int = 256,
        embedding_dims: int = 384,
        embedding_encodings: Sequence[str] = _ENCODING_FORMATS,
        canned_embeddings: bool = False,
        default_max_tokens: int | None = 16,
    ) -> None:
        self.models = tuple(models)
        self.embedding_models = tuple(embedding_models)
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.embedding_max_model_len = embedding_max_model_len
        self.embedding_dims = embedding_dims
        self.embedding_encodings = tuple(embedding_encodings)
        self.canned_embeddings = canned_embeddings
        self._canned_vector = embedding_vector([CLS_ID, SEP_ID], embedding_dims)
        self._canned_base64 = _base64_vector(self._canned_vector)
        self.default_max_tokens = default_max_tokens
        self.requests: list[RecordedRequest] = []
        """Every request received, in arrival order (recorded before it is answered)."""
        self._arrival = threading.Condition()
        self.client_disconnected = threading.Event()
        """Set when a client hung up while a reply was still being written or awaited."""
        self._chat_script: deque[ScriptedReply] = deque()
        self._embedding_script: deque[ScriptedReply] = deque()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept_loop, name="loopback-accept", daemon=True)
        self.port: int = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        routes: dict[str, tuple[str, Any]] = {
            "/health": ("GET", self._health),
            "/version": ("GET", self._version),
            "/v1/models": ("GET", self._models),
            "/tokenize": ("POST", self._tokenize),
        }
        if self.models:
            routes["/v1/chat/completions"] = ("POST", self._chat)
        if self.embedding_models:
            routes["/v1/embeddings"] = ("POST", self._embeddings)
        self._routes = routes

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        self._acceptor.start()
        return self

    def close(self) -> None:
        """Stop accepting, cut every open connection (waking stalled replies) and join the threads."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_writer.send(b"x")
        if self._acceptor.is_alive():
            self._acceptor.join()
        with self._lock:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- scripting --------------------------------------------------------------------------

    def push(self, reply: ScriptedReply) -> None:
        """Script the answer to the next ``/v1/chat/completions`` request not yet scripted (FIFO)."""
        if isinstance(reply, StreamReply) and reply.repeat and reply.interval <= 0:
            raise ValueError("an endless stream needs a delay between chunks")
        self._chat_script.append(reply)

    def wait_for_requests(self, count: int, path: str | None = None, timeout: float = 10.0) -> bool:
        """Block until ``count`` requests (to ``path``, when given) have arrived; False on timeout."""
        def arrived() -> bool:
            return sum(path is None or r.path == path for r in self.requests) >= count

        with self._arrival:
            return self._arrival.wait_for(arrived, timeout)

    def push_embedding(self, reply: ScriptedReply) -> None:
        """Script the next ``/v1/embeddings`` answer: a status, a hang, or a cut (half the body)."""
        if isinstance(reply, StreamReply) and (
            reply.cut_after is None or dataclasses.replace(reply, cut_after=None) != StreamReply()
        ):
            raise ValueError("embeddings can only be scripted with Reply.status, Reply.hang or Reply.cut_after")
        self._embedding_script.append(reply)

    # -- connections ------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        poll = select.poll()
        poll.register(self._listener, select.POLLIN)
        poll.register(self._wake_reader, select.POLLIN)
        while True:
            poll.poll()
            if self._stopping.is_set():
                return
            sock, _ = self._listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(sock,), name="loopback-conn", daemon=True)
            with self._lock:
                self._connections.add(sock)
                self._threads.add(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        wire = _Wire(sock, self._stopping, self.client_disconnected)
        reader = _RequestReader(sock)
        try:
            while (received := reader.next()) is not None:
                request, keep_alive = received
                with self._arrival:
                    self.requests.append(request)
                    self._arrival.notify_all()
                if not (self._route(request).perform(wire) and keep_alive):
                    break
        except (OSError, ValueError):
            pass  # the peer reset the connection, sent a bad request, or close() shut it down
        finally:
            with self._lock:
                self._connections.discard(sock)
                self._threads.discard(threading.current_thread())
            sock.close()

    def _route(self, request: RecordedRequest) -> _Action:
        if self.api_key is not None and request.path.startswith("/v1") and request.method != "OPTIONS":
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _Fixed(401, _UNAUTHORIZED)
        route = self._routes.get(request.path)
        if route is None:
            return _Fixed(404, _NOT_FOUND)
        method, handler = route
        if request.method != method:
            return _Fixed(405, b'{"detail":"Method Not Allowed"}', headers=(("allow", method),))
        try:
            return handler(request)
        except (TypeError, ValueError, AttributeError, KeyError):
            # Requests vLLM would reject in pydantic validation (wrong types): Starlette's last resort.
            return _Fixed(500, b"Internal Server Error", "text/plain; charset=utf-8")

    # -- endpoints --------------------------------------------------------------------------

    def _health(self, _: RecordedRequest) -> _Action:
        return _Fixed(200, b"", content_type=None)

    def _version(self, _: RecordedRequest) -> _Action:
        return _Fixed(200, _json({"version": VLLM_VERSION}))

    def _models(self, _: RecordedRequest) -> _Action:
        created = int(time.time())
        served = [(name, self.max_model_len) for name in self.models]
        served += [(name, self.embedding_max_model_len) for name in self.embedding_models]
        return _Fixed(200, _json({"object": "list", "data": [
            {
                "id": name, "object": "model", "created": created, "owned_by": "vllm",
                "root": f"{MODEL_ROOT}/{name}", "parent": None, "max_model_len": max_len,
                "permission": [{
                    "id": f"modelperm-{secrets.token_hex(8)}", "object": "model_permission", "created": created,
                    "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                    "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                    "organization": "*", "group": None, "is_blocking": False,
                }],
            }
            for name, max_len in served
        ]}))

    def _unknown_chat_model(self, name: object) -> _Fixed:
        return _error(404, f"The model `{name}` does not exist. Valid aliases: {', '.join(self.models)}.", "model")

    # chat ----------------------------------------------------------------------------------

    def _chat(self, request: RecordedRequest) -> _Action:
        script = _next_script(self._chat_script)
        if isinstance(script, StatusReply):
            return _Fixed(script.status, script.body, script.content_type, script.headers)
        if isinstance(script, StreamReply):
            return self._scripted_chat(request, script)
        answer = self._default_chat(request)
        return _hang(answer, script) if isinstance(script, HangReply) else answer

    def _default_chat(self, request: RecordedRequest) -> _Action:
        body = _parse_json_body(request)
        if isinstance(body, _Fixed):
            return body
        if "messages" not in body:
            return _validation_error([_missing(body, "messages")], "body.messages")
        model = body.get("model") or self.models[0]
        if model not in self.models:
            return self._unknown_chat_model(model)
        if body.get("tools") and body.get("tool_choice", "auto") == "auto":
            return _error(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
        messages = body["messages"] if isinstance(body["messages"], list) else []
        prompt_tokens = count_chat_tokens(messages)
        if prompt_tokens > self.max_model_len:
            return _prompt_too_long(self.max_model_len, prompt_tokens)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and max_tokens > self.max_model_len:
            return _param_error(
                "max_tokens", max_tokens,
                f"max_tokens={max_tokens} cannot be greater than max_model_len={self.max_model_len}. "
                "Please request fewer output tokens.",
            )
        temperature = body.get("temperature")
        if temperature is not None and temperature < 0:
            return _param_error("temperature", float(temperature), f"temperature must be non-negative, got {float(temperature)}.")
        choices = self._generate(body, messages, prompt_tokens)
        return self._chat_answer(body, str(model), choices, prompt_tokens, StreamReply())

    def _completion_budget(self, body: Mapping[str, Any], prompt_tokens: int) -> int:
        """Tokens to generate: the request's max_tokens (or the default) clamped to the context left."""
        room = max(0, self.max_model_len - prompt_tokens)
        wanted = body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens
        return room if wanted is None else min(int(wanted), room)

    def _generate(self, body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], prompt_tokens: int) -> list[_Choice]:
        count = self._completion_budget(body, prompt_tokens)
        stops = _stop_strings(body.get("stop"))
        return [
            _apply_stop(index, completion_pieces(messages, count, seed=body.get("seed"), index=index), stops)
            for index in range(int(body.get("n") or 1))
        ]

    def _scripted_chat(self, request: RecordedRequest, script: StreamReply) -> _Action:
        body = request.json if isinstance(request.json, dict) else {}
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        prompt_tokens = count_chat_tokens(messages)
        if script.pieces is None:
            choices = self._generate({**body, "n": 1}, messages, prompt_tokens)
        else:
            choices = [_Choice(0, script.pieces, script.finish_reason)]
        model = str(body.get("model") or (self.models[0] if self.models else ""))
        return self._chat_answer(body, model, choices, prompt_tokens, script)

    def _chat_answer(
        self, body: Mapping[str, Any], model: str, choices: Sequence[_Choice], prompt_tokens: int, script: StreamReply
    ) -> _Action:
        """Render the choices as vLLM would, then apply the script's disturbances."""
        request_id, created = f"chatcmpl-{secrets.token_hex(8)}", int(time.time())
        if body.get("stream") is not True:
            if script.error is not None:
                return _Fixed(int(script.error["code"]), _json({"error": script.error}))
            if script.malformed_after is not None:
                return _Fixed(200, script.malformed_line)
            if script.repeat:
                return _Broken(b"", math.inf)
            answer = _Fixed(200, _chat_completion(request_id, created, model, choices, prompt_tokens),
                            delay=script.interval * sum(len(choice.deltas) for choice in choices))
            return _cut_in_half(answer) if script.cut_after is not None else answer
        chunks = _ChatChunks(request_id, created, model)
        prelude = [chunks.role(choice.index) for choice in choices]
        if script.repeat:
            forever = itertools.cycle([chunks.content(0, piece) for piece in script.pieces or ()])
            return _EventStream(prelude, forever, [], script.interval, complete=False)
        stream_options = body.get("stream_options")
        wants_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
        send_usage = wants_usage and script.usage
        events = _chat_events(chunks, choices, send_usage, prompt_tokens)
        tokens, trailer = (events[:-1], events[-1:]) if send_usage else (events, [])
        trailer.append(_SSE_DONE)
        if script.malformed_after is not None:
            tokens.insert(script.malformed_after, script.malformed_line + b"\n\n")
        if script.error is not None:
            tokens = [*tokens[: script.error_after], f"data: {json.dumps({'error': script.error})}\n\n".encode()]
            trailer = [_SSE_DONE]
        if script.cut_after is not None:
            return _EventStream(prelude, tokens[: script.cut_after], [], script.interval, complete=False)
        return _EventStream(prelude, tokens, trailer, script.interval)

    # tokenize ------------------------------------------------------------------------------

    def _tokenize(self, request: RecordedRequest) -> _Action:
        body = _parse_json_body(request)
        if isinstance(body, _Fixed):
            return body
        if "messages" not in body and "prompt" not in body:
            return _validation_error([_missing(body, "prompt"), _missing(body, "messages")], "body.prompt")
        model = body.get("model") or (self.models or self.embedding_models)[0]
        if model in self.models:
            max_len = self.max_model_len
            if "messages" in body:
                pieces = chat_prompt_pieces(body["messages"], bool(body.get("add_generation_prompt", True)))
            else:
                pieces = _text_pieces(str(body["prompt"]))
            ids = [_SPECIAL_IDS.get(piece) or _token_id(piece, 3) for piece in pieces]
        elif model in self.embedding_models:
            max_len = self.embedding_max_model_len
            pieces = _text_pieces(str(body.get("prompt", "")))
            ids = [CLS_ID, *(_token_id(piece, 1000) for piece in pieces), SEP_ID]
            pieces = ["[CLS]", *pieces, "[SEP]"]
        elif self.models:
            return self._unknown_chat_model(model)
        else:
            return _error(404, f"The model `{model}` does not exist.", error_type="NotFoundError")
        token_strs = [_token_str(piece) for piece in pieces] if body.get("return_token_strs") else None
        return _Fixed(200, _json({"count": len(ids), "max_model_len": max_len, "tokens": ids, "token_strs": token_strs}))

    # embeddings ----------------------------------------------------------------------------

    def _embeddings(self, request: RecordedRequest) -> _Action:
        script = _next_script(self._embedding_script)
        if isinstance(script, StatusReply):
            return _Fixed(script.status, script.body, script.content_type, script.headers)
        answer = self._default_embeddings(request)
        if isinstance(script, HangReply):
            return _hang(answer, script)
        return _cut_in_half(answer) if isinstance(script, StreamReply) else answer

    def _embedding_inputs(self, raw: Any) -> list[list[int]]:
        """Token ids of each input: a text, a list of texts, token ids, or lists of token ids."""
        def text_ids(text: str) -> list[int]:
            if self.canned_embeddings:  # the canned vector ignores the ids: only their number counts
                return [CLS_ID, *itertools.repeat(1000, count_text_tokens(text)), SEP_ID]
            return [CLS_ID, *(_token_id(piece, 1000) for piece in _text_pieces(text)), SEP_ID]

        if isinstance(raw, str):
            return [text_ids(raw)]
        if raw and all(isinstance(item, int) for item in raw):
            return [list(raw)]
        return [text_ids(item) if isinstance(item, str) else list(item) for item in raw]

    def _encoded_vector(self, token_ids: Sequence[int], encoding: str) -> list[float] | str:
        if self.canned_embeddings:
            return self._canned_base64 if encoding == "base64" else self._canned_vector
        vector = embedding_vector(token_ids, self.embedding_dims)
        return _base64_vector(vector) if encoding == "base64" else vector

    def _default_embeddings(self, request: RecordedRequest) -> _Fixed:
        body = _parse_json_body(request)
        if isinstance(body, _Fixed):
            return body
        if "input" not in body:
            return _validation_error([_missing(body, "input")], "body.input")
        model = body.get("model") or self.embedding_models[0]
        if model not in self.embedding_models:
            return _error(404, f"The model `{model}` does not exist.", error_type="NotFoundError")
        encoding = body.get("encoding_format", "float")
        if encoding not in self.embedding_encodings:
            return _bad_encoding_format(body, self.embedding_encodings)
        if body.get("dimensions") is not None:
            return _error(400, f"Model '{model}' does not support Matryoshka embeddings; dimensions must be unset "
                               f"(received dimensions={body['dimensions']}).")
        inputs = self._embedding_inputs(body["input"])
        if not inputs:
            return _error(400, "You must pass at least one prompt")
        limit = self.embedding_max_model_len
        truncate = body.get("truncate_prompt_tokens")
        if truncate is not None:
            keep = limit if truncate < 0 else min(truncate, limit)
            inputs = [ids[len(ids) - keep :] for ids in inputs]
        if (longest := max(map(len, inputs))) > limit:
            return _prompt_too_long(limit, longest)
        if encoding not in ("float", "base64"):
            return _error(500, f"encoding_format={encoding!r} is not simulated by the loopback server")
        data = [{"index": index, "object": "embedding", "embedding": self._encoded_vector(ids, encoding)}
                for index, ids in enumerate(inputs)]
        tokens = sum(map(len, inputs))
        return _Fixed(200, _json({
            "id": f"embd-{secrets.token_hex(8)}", "object": "list", "created": int(time.time()), "model": model,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                      "prompt_tokens_details": None, "completion_tokens_details": None},
        }))

