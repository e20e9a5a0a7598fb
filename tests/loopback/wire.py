"""HTTP as uvicorn and Starlette put it on the wire for vLLM 0.32, and the I/O-free answer type.

Endpoints return an :class:`Answer` (or :class:`Silence`); the socket server frames it byte for byte
(:func:`render_head`, :func:`chunk`) and the in-process transport hands the same parts to httpx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

SSE_DONE = b"data: [DONE]\n\n"
END_OF_CHUNKS = b"0\r\n\r\n"

Headers = tuple[tuple[str, str], ...]


def render_json(obj: Any) -> bytes:
    """Starlette's JSONResponse rendering (and pydantic's): compact, UTF-8, not ASCII-escaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


@dataclass(frozen=True)
class Answer:
    """An HTTP response before any I/O."""

    status: int
    headers: Headers
    """The application's headers in Starlette's order; uvicorn's ``date`` and ``server`` go first."""
    body: Iterable[bytes | float] = ()
    """Body bytes and pauses in seconds (see :func:`paced`); with chunked transfer encoding each bytes
    item is one HTTP chunk, as uvicorn writes each piece of a StreamingResponse (one SSE event)."""
    delay: float = 0.0
    """Seconds before the head: a non-streamed generation's latency."""
    complete: bool = True
    """False: the connection closes after the body, leaving the response unfinished."""

    @property
    def chunked(self) -> bool:
        return ("transfer-encoding", "chunked") in self.headers


@dataclass(frozen=True)
class Silence:
    """No response at all: the connection stays silent for ``seconds``, then closes."""

    seconds: float


def fixed(
    status: int, body: bytes, content_type: str | None = "application/json", headers: Headers = (), delay: float = 0.0
) -> Answer:
    """A Starlette Response: the extra ``headers`` precede content-length and content-type."""
    fields = [*headers, ("content-length", str(len(body)))]
    if content_type is not None:
        fields.append(("content-type", content_type))
    return Answer(status, (*fields, ("vary", "Origin")), (body,), delay)


def event_stream(body: Iterable[bytes | float], complete: bool = True) -> Answer:
    """A streamed 200: uvicorn appends ``transfer-encoding`` after the application's headers."""
    headers = (("content-type", "text/event-stream; charset=utf-8"), ("vary", "Origin"), ("transfer-encoding", "chunked"))
    return Answer(200, headers, body, complete=complete)


def dripped(events: Iterable[bytes], interval: float) -> Iterable[bytes | float]:
    """The events, each after a pause of ``interval`` seconds (no pauses at all for 0)."""
    if interval <= 0:
        return events
    return (item for event in events for item in (interval, event))


def paced(body: Iterable[bytes | float]) -> Iterator[bytes | float]:
    """The body with each pause turned into the seconds left until it is due, each pause counted
    from when the previous one was due (so slow writes do not add up); <= 0 means go on at once."""
    due = time.monotonic()
    for part in body:
        if isinstance(part, bytes):
            yield part
        else:
            due += part
            yield due - time.monotonic()


def head_fields(answer: Answer) -> list[tuple[str, str]]:
    """Every header as uvicorn sends it: its ``date`` and ``server`` first, then the application's."""
    return [("date", formatdate(usegmt=True)), ("server", "uvicorn"), *answer.headers]


def render_head(answer: Answer) -> bytes:
    lines = [f"HTTP/1.1 {answer.status} {phrase(answer.status)}"]
    lines += [f"{name}: {value}" for name, value in head_fields(answer)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One HTTP chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


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


def joined_headers(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header fields by lowercased name; a repeated field's values joined with ", " as HTTP allows."""
    joined: dict[str, str] = {}
    for name, value in fields:
        key = name.strip().lower()
        joined[key] = f"{joined[key]}, {value.strip()}" if key in joined else value.strip()
    return joined


def recorded(method: str, target: str, headers: dict[str, str], body: bytes) -> RecordedRequest:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    path, _, query = target.partition("?")
    return RecordedRequest(method, path, query, headers, body, parsed)
