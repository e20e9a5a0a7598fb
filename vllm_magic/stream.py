"""Server-sent events -> typed chat events (text, reasoning, tool-call deltas, usage, finish, error).

Two small pure layers, shared by the sync and async clients:

* :class:`SSEDecoder` turns the raw bytes of an ``text/event-stream`` body into ``data`` payloads.
* :func:`chunk_events` turns one decoded chunk (chat or completions) into :class:`Event` values.

Both are on the hot path of every streamed token, so they avoid per-byte work and text decoding.
"""

from __future__ import annotations

import codecs
import json
from typing import Any, NamedTuple, Union

from .errors import StreamError, message_from_body

DONE = "[DONE]"


# Events are named tuples: cheap to create per token and to define at import time.
TextDelta = NamedTuple("TextDelta", [("text", str)])
ReasoningDelta = NamedTuple("ReasoningDelta", [("text", str)])  # delta.reasoning (older: reasoning_content)
ToolCallDelta = NamedTuple("ToolCallDelta", [("index", int), ("id", "str | None"), ("name", "str | None"),
                                             ("arguments", str)])
Finish = NamedTuple("Finish", [("reason", "str | None"), ("stop_reason", "str | int | None")])
Usage = NamedTuple("Usage", [("prompt_tokens", int), ("completion_tokens", int), ("total_tokens", int),
                             ("reasoning_tokens", "int | None")])
ServerError = NamedTuple("ServerError", [("message", str)])  # an error event inside a 200 stream
Logprobs = NamedTuple("Logprobs", [("entries", list)])
"""The answer's tokens with their log-probabilities (``logprobs: true``): vLLM's ``logprobs.content``."""
Sample = NamedTuple("Sample", [("index", int), ("text", str), ("finish_reason", "str | None")])
"""A piece of another sample than the first (``n`` > 1), or its end."""

Event = Union[TextDelta, ReasoningDelta, ToolCallDelta, Finish, Usage, ServerError, Logprobs, Sample]


class SSEDecoder:
    """Incremental SSE decoder: feed byte chunks, get back the complete events' ``data`` fields.

    Handles events and UTF-8 characters split across chunks, ``\\r\\n`` line ends, multi-line
    data and comments. ``event:``, ``id:`` and ``retry:`` carry nothing vLLM uses and are ignored.
    The usual event, one ``data:`` line, takes a fast path: this runs once per streamed token.
    """

    __slots__ = ("_pending", "_utf8")

    def __init__(self) -> None:
        self._pending = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, chunk: bytes) -> list[str]:
        text = self._pending + self._utf8.decode(chunk)
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):  # its "\n" may start the next chunk
                self._pending = text
                return []
            text = text.replace("\r", "\n")
        blocks = text.split("\n\n")
        self._pending = blocks.pop()
        out: list[str] = []
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                out.append(block[6:])
            elif block:
                data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
                if data:
                    out.append("\n".join(data))
        return out

    @property
    def has_partial_event(self) -> bool:
        """True when the body ended inside an event (the stream was cut)."""
        return bool(self._pending.strip())


def parse_payload(payload: str) -> dict[str, Any]:
    """Decode one ``data`` payload, mapping garbage and in-stream errors to :class:`StreamError`."""
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        shown = payload[:120]
        raise StreamError(
            f"The server sent a malformed event in the middle of the answer: {shown!r}.",
            "The partial answer is kept, marked incomplete. If this repeats, check for a proxy "
            "between you and the server that rewrites streamed responses.",
        ) from None
    if not isinstance(chunk, dict):
        raise StreamError(f"The server sent an unexpected event: {payload[:120]!r}.", "")
    return chunk


def chunk_events(chunk: dict[str, Any]) -> list[Event]:
    """Events of one ``chat.completion.chunk``, or of a ``text_completion`` chunk of ``/v1/completions``
    (its text as :class:`TextDelta`). Choice 0 is the answer; other choices (``n`` > 1) come as
    :class:`Sample` pieces."""
    if "error" in chunk:
        return [ServerError(message_from_body(chunk))]
    events: list[Event] = []
    for choice in chunk.get("choices") or ():
        index = choice.get("index", 0)
        if index:
            piece = choice.get("delta") or {}
            events.append(Sample(index, piece.get("content") or choice.get("text") or "", choice.get("finish_reason")))
            continue
        logprobs = choice.get("logprobs")
        if logprobs and logprobs.get("content"):
            events.append(Logprobs(logprobs["content"]))
        delta = choice.get("delta")
        if delta is None:  # a /v1/completions chunk: the text is on the choice itself
            text = choice.get("text")
            if text:
                events.append(TextDelta(text))
        else:
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if reasoning:
                events.append(ReasoningDelta(reasoning))
            content = delta.get("content")
            if content:
                events.append(TextDelta(content))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                events.append(ToolCallDelta(call.get("index", 0), call.get("id"), function.get("name"),
                                            function.get("arguments") or ""))
        reason = choice.get("finish_reason")
        if reason is not None:
            events.append(Finish(reason, choice.get("stop_reason")))
    usage = chunk.get("usage")
    if usage:
        details = usage.get("completion_tokens_details") or {}
        events.append(
            Usage(
                usage.get("prompt_tokens", 0),
                usage.get("completion_tokens", 0),
                usage.get("total_tokens", 0),
                details.get("reasoning_tokens"),
            )
        )
    return events


class ChatStream:
    """Raw body chunks of a streamed chat completion (or completion) -> events; shared by sync and
    async clients.

    ``done`` turns true at ``data: [DONE]``; :attr:`complete` says whether the answer arrived
    whole (a finish reason, and nothing left half-sent).
    """

    __slots__ = ("_decoder", "done", "_finished")

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self.done = False
        self._finished = False

    def feed(self, raw: bytes) -> list[Event]:
        events: list[Event] = []
        for payload in self._decoder.feed(raw):
            if payload == DONE:
                self.done = True
                break
            events += chunk_events(parse_payload(payload))
        if events and not self._finished:
            self._finished = any(type(event) is Finish for event in events)
        return events

    @property
    def complete(self) -> bool:
        """The answer arrived whole: a finish reason came and nothing was left half-sent. A stream
        that ends with ``[DONE]`` but no finish reason (llama.cpp's server, when a second request
        preempts the first) is not complete."""
        return self._finished and not self._decoder.has_partial_event

    @property
    def why_incomplete(self) -> str:
        if self.done:
            return "the server ended it without a finish reason, as a server does when another request preempts it"
        return "the connection closed before the end of the answer"
