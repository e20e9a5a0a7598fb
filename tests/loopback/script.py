"""Scripted replies (:class:`Reply` and what it builds), for what a real server only does
occasionally: slow drips, cut connections, error events, 429s, hangs."""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.loopback.errors import error_object
from tests.loopback.wire import Answer, Silence, fixed, phrase, render_json


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
    calls: tuple[tuple[str, str], ...] = ()
    """Tool calls (name, arguments JSON) after the content pieces; see ``Reply.tool_calls``."""
    reasoning: tuple[str, ...] = ()
    """The model's thought before the answer, one token chunk each, streamed as ``delta.reasoning``
    (needs a server with a ``reasoning_parser``); these chunks count for ``cut_after`` and the other
    ``*_after`` fields."""


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


class Reply:
    """Factories for ``push`` / ``push_embedding`` of a :class:`~tests.loopback.app.FakeVLLM`."""

    @staticmethod
    def tokens(
        pieces: Iterable[str],
        finish_reason: str = "length",
        usage: bool = True,
        delay: float = 0.0,
        chunk_rate: float | None = None,
        reasoning: Iterable[str] = (),
    ) -> StreamReply:
        """Stream exactly these content pieces (one chunk each), paced by ``delay`` or ``chunk_rate``.

        ``reasoning`` pieces come first, as ``delta.reasoning`` chunks (``message.reasoning`` when not
        streamed), like vLLM with ``--reasoning-parser``: the server must have a ``reasoning_parser``.
        Stop strings of the request do not apply; ``usage`` False suppresses the usage chunk.
        """
        return StreamReply(tuple(pieces), finish_reason, usage, _interval(delay, chunk_rate), reasoning=tuple(reasoning))

    @staticmethod
    def tool_calls(*calls: tuple[str, Any], pieces: Iterable[str] = (), delay: float = 0.0) -> StreamReply:
        """Call tools: ``(name, arguments)`` each (a dict is sent as its JSON), after ``pieces`` of
        text, ending with ``finish_reason`` "tool_calls", as vLLM's hermes parser streams them."""
        wire = tuple((name, arguments if isinstance(arguments, str) else json.dumps(arguments)) for name, arguments in calls)
        return StreamReply(tuple(pieces), "tool_calls", interval=delay, calls=wire)

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
            _pieces_or_default(pieces), error_after=after, error=error_object(message, code, error_type)
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
            default = {"error": error_object(phrase(code) or "Error", code)}
            payload = render_json(body_json if body_json is not None else default)
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
        ``client_disconnected``)."""
        return StreamReply((piece,), interval=delay, repeat=True)


def is_plain_cut(reply: ScriptedReply) -> bool:
    """A bare ``Reply.cut_after(k)``: the only stream-like script a non-chat endpoint understands."""
    return isinstance(reply, StreamReply) and reply.cut_after is not None and (
        dataclasses.replace(reply, cut_after=None) == StreamReply()
    )


def next_script(script: deque[ScriptedReply]) -> ScriptedReply | None:
    """Pop the next scripted reply; concurrent requests may race for the last one."""
    try:
        return script.popleft()
    except IndexError:
        return None


def status_answer(reply: StatusReply) -> Answer:
    return fixed(reply.status, reply.body, reply.content_type, reply.headers)


def hung(would_be: Answer, reply: HangReply) -> Answer | Silence:
    """Stall instead of ``would_be``, after its head when the script says so, then close."""
    if not reply.send_headers:
        return Silence(reply.seconds)
    return Answer(would_be.status, would_be.headers, (reply.seconds,), complete=False)


def cut_in_half(would_be: Answer) -> Answer:
    """The head and half the body of a complete non-streamed answer, then the connection closes."""
    body = b"".join(part for part in would_be.body if isinstance(part, bytes))
    return Answer(would_be.status, would_be.headers, (body[: len(body) // 2],), complete=False)
