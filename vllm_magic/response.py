"""One streamed answer: typed events in, a recorded turn out; and the one loop that drives a view.

    >>> for event in chat.stream("Hi").events():     # TextDelta, ReasoningDelta, Finish, Usage...
    ...     print(event)
    >>> for piece in chat.stream("Hi"):              # the answer's text, piece by piece
    ...     print(piece, end="")
    >>> drive(chat.stream("Hi"), sink)               # every view: cells, panel, terminal

A :class:`Response` streams once: iterating it again raises :class:`~vllm_magic.errors.StreamConsumed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from . import errors
from .conversation import Conversation, Status, Turn
from .fold import Fold
from .messages import JSON, Message, Text
from .stream import Event, TextDelta

if TYPE_CHECKING:
    from .client import Client
    from .structured import Constraint

RESERVED_BODY = ("model", "messages", "stream", "stream_options")


class Response:
    """One answer being streamed; :attr:`turn` holds the recorded :class:`Turn` once it ends.

    A turn is recorded also when the answer was interrupted or cut after some output (then
    ``turn.status`` says so); a request that fails before any output records nothing.
    """

    def __init__(self, conversation: Conversation, client: Client, user: Message, body: dict[str, Any],
                 mode: str | None, shape: Constraint | None = None) -> None:
        self._conversation = conversation
        self._client = client
        self.user = user
        self.body = body
        self.model: str = body["model"]
        self._mode = mode  # "add" a turn, "replace" the last one, or None: record nothing
        self.shape = shape
        """The structured answer asked for: a complete answer is parsed and validated against it."""
        self._fold: Fold | None = None
        self.turn: Turn | None = None
        self.notes: list[str] = []
        """What the user should know about the request (e.g. fields translated for this server)."""

    @property
    def prompt(self) -> str:
        return self.user.text

    @property
    def ttft(self) -> float | None:
        return self._fold.ttft if self._fold else None

    def events(self) -> Iterator[Event]:
        """The answer's events as they arrive. Closing this iterator (or Ctrl-C inside it) closes
        the connection at once, so vLLM stops generating; the partial answer is recorded."""
        fold = self._start()
        stream = self._client.stream_chat(self.body)
        try:
            with self._recording(fold):
                for event in stream:
                    fold.take(event)
                    yield event
        finally:
            stream.close()  # after recording: a second Ctrl-C here must not lose the answer

    async def aevents(self) -> AsyncIterator[Event]:
        """:meth:`events` on the running event loop; cancelling the task closes the connection."""
        fold = self._start()
        stream = self._client.astream_chat(self.body)
        try:
            with self._recording(fold):
                async for event in stream:
                    fold.take(event)
                    yield event
        finally:
            await stream.aclose()

    def __iter__(self) -> Iterator[str]:
        for event in self.events():
            if type(event) is TextDelta:
                yield event.text

    async def __aiter__(self) -> AsyncIterator[str]:
        async for event in self.aevents():
            if type(event) is TextDelta:
                yield event.text

    def text(self) -> str:
        """Wait for the whole answer and return its text (the recorded one, once streamed)."""
        if self._fold is None:
            for _ in self.events():
                pass
        return self.turn.text if self.turn else ""

    def _start(self) -> Fold:
        if self._fold is not None:
            raise errors.StreamConsumed(
                "This answer was already streamed; a Response streams once (its `.turn` holds the answer).",
                hint="stream_consumed",
            )
        self._fold = Fold()
        return self._fold

    @contextmanager
    def _recording(self, fold: Fold) -> Iterator[None]:
        """Record the turn however the stream ends: complete, cut, or stopped (interrupted)."""
        status = Status.INTERRUPTED
        try:
            yield
            status = Status.COMPLETE
        except errors.StreamError as exc:
            status = Status.CUT
            if fold.got_output:
                raise
            raise errors.StreamError(f"{exc.cause} Nothing had arrived, so nothing was recorded.",
                                     hint="ask_again", server_message=exc.server_message) from None
        except errors.ContextLengthError as exc:
            raise self._explain_context(exc) from None
        finally:
            if status is Status.COMPLETE or fold.got_output:
                turn = fold.turn(self.user, self.model, status,
                                 {k: v for k, v in self.body.items() if k not in RESERVED_BODY})
                if status is Status.COMPLETE and self.shape is not None:
                    self._record_checked(turn, self.shape)
                else:
                    self._record(turn)

    def _record_checked(self, turn: Turn, shape: Constraint) -> None:
        """Record a structured answer with its value, or marked failed (raw text kept) and raise."""
        try:
            value = shape.parse(turn.text, turn.finish_reason)
        except errors.StructuredError:
            turn.status = Status.FAILED
            self._record(turn)
            raise
        answer = turn.replies[-1]
        turn.replies[-1] = Message(answer.role, [*(p for p in answer.parts if not isinstance(p, Text)),
                                                 JSON(turn.text, value)])
        self._record(turn)

    def _record(self, turn: Turn) -> None:
        self.turn = turn
        if self._mode == "add":
            self._conversation.add(turn)
        elif self._mode == "replace":
            self._conversation.replace_last(turn)

    def _explain_context(self, error: errors.ContextLengthError) -> errors.ContextLengthError:
        """Add the exact size of the conversation (vLLM's ``/tokenize``) to a context error."""
        try:
            counted = self._client.tokenize(self.model, self.body["messages"])
        except errors.VLLMError:
            return error
        return errors.ContextLengthError(
            f"The conversation holds {counted['count']} tokens with this prompt "
            f"({len(self.body['messages'])} messages), more than {self.model}'s max_model_len of "
            f"{counted['max_model_len']}. The server said: {error.server_message}",
            error.fix, status=error.status, server_message=error.server_message,
            hint=error.hint, **error.hint_args,
        )


class Sink(Protocol):
    """A view of a streaming answer: it sees every event, then the recorded turn (None if none)."""

    def start(self) -> None: ...
    def on_event(self, event: Event) -> None: ...
    def close(self, turn: Turn | None) -> None: ...


def drive(response: Response, sink: Sink) -> Turn | None:
    """The one stream loop: ``response``'s events into ``sink``, which is closed however it ends."""
    sink.start()
    try:
        for event in response.events():
            sink.on_event(event)
    finally:
        sink.close(response.turn)
    return response.turn


async def adrive(response: Response, sink: Sink) -> Turn | None:
    """:func:`drive` on the running event loop (the panel)."""
    sink.start()
    try:
        async for event in response.aevents():
            sink.on_event(event)
    finally:
        sink.close(response.turn)
    return response.turn
