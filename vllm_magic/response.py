"""One streamed answer: typed events in, a recorded turn out; and the one loop that drives a view.

    >>> for event in chat.stream("Hi").events():     # TextDelta, ReasoningDelta, Finish, Usage...
    ...     print(event)
    >>> for piece in chat.stream("Hi"):              # the answer's text, piece by piece
    ...     print(piece, end="")
    >>> drive(chat.stream("Hi"), sink)               # every view: cells, panel, terminal

A :class:`Response` streams once: iterating it again raises :class:`~vllm_magic.errors.StreamConsumed`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from . import errors
from .client import CHAT_PATH, COMPLETIONS_PATH
from .conversation import Conversation, Status, Turn
from .fold import Fold
from .messages import JSON, Message, Text, ToolCall
from .stream import Event, TextDelta
from .toolloop import ToolEvent, ToolNote, ToolUse

if TYPE_CHECKING:
    from .client import Client
    from .structured import Constraint

RESERVED_BODY = ("model", "messages", "prompt", "stream", "stream_options")


class Response:
    """One answer being streamed; :attr:`turn` holds the recorded :class:`Turn` once it ends.

    A turn is recorded also when the answer was interrupted or cut after some output (then
    ``turn.status`` says so); a request that fails before any output records nothing.
    """

    def __init__(self, conversation: Conversation, client: Client, user: Message, body: dict[str, Any],
                 mode: str | None, shape: Constraint | None = None, tool_use: ToolUse | None = None, *,
                 path: str = CHAT_PATH) -> None:
        self._conversation = conversation
        self._client = client
        self.user = user
        self.body = body
        self.model: str = body["model"]
        self._mode = mode  # "add" a turn, "replace" the last one, or None: record nothing
        self.path = path
        """The endpoint: chat, or ``/v1/completions`` where a base model continues ``body["prompt"]``."""
        self.shape = shape
        """The structured answer asked for: a complete answer is parsed and validated against it."""
        self.tool_use = tool_use
        """The tools the model may call: while its answer holds calls, they run and it is asked again."""
        self._folds: list[Fold] = []  # one per request: a tool loop sends several
        self._replies: list[Message] = []  # the finished requests' answers and the tools' results
        self._open = False  # whether the last fold's answer is still to be added to _replies
        self._more = False  # whether the tool loop asks again
        self.turn: Turn | None = None
        self.notes: list[str] = []
        """What the user should know about the request (e.g. fields translated for this server)."""
        self.cell: int | None = None
        """The execution count of the notebook cell that asked, kept on the recorded turn."""
        self.left_out: str | None = None
        """What context was left out to fit the window: the recorded turn's footer says it."""

    @property
    def prompt(self) -> str:
        return self.user.text

    @property
    def records(self) -> bool:
        """Whether the answer goes into the conversation (not for ``record=False`` nor a completion)."""
        return self._mode is not None

    @property
    def ttft(self) -> float | None:
        return self._folds[0].ttft if self._folds else None

    def events(self) -> Iterator[Event | ToolEvent]:
        """The answer's events as they arrive, and with tools, each call's. Closing this iterator (or
        Ctrl-C inside it) closes the connection at once, so vLLM stops generating; what arrived is
        recorded."""
        self._start()
        stream = None
        try:
            with self._recording():
                for round_ in range(self.tool_use.max_rounds if self.tool_use else 1):
                    fold = self._new_fold()
                    while True:
                        stream = self._client.stream_chat(self._request(round_), self.path)
                        held = self._held(round_)
                        try:
                            for event in stream:
                                fold.take(event)
                                if not (held and type(event) is TextDelta):
                                    yield event
                            break
                        except errors.BadRequestError as exc:
                            yield self._fall_back(exc, fold)
                    stream.close()
                    yield from self._between_requests(held, round_)
                    if not self._more:
                        break
        finally:
            if stream is not None:
                stream.close()  # after recording: a second Ctrl-C here must not lose the answer

    async def aevents(self) -> AsyncIterator[Event | ToolEvent]:
        """:meth:`events` on the running event loop; cancelling the task closes the connection."""
        self._start()
        stream = None
        try:
            with self._recording():
                for round_ in range(self.tool_use.max_rounds if self.tool_use else 1):
                    fold = self._new_fold()
                    while True:
                        stream = self._client.astream_chat(self._request(round_), self.path)
                        held = self._held(round_)
                        try:
                            async for event in stream:
                                fold.take(event)
                                if not (held and type(event) is TextDelta):
                                    yield event
                            break
                        except errors.BadRequestError as exc:
                            yield self._fall_back(exc, fold)
                    await stream.aclose()
                    for between in self._between_requests(held, round_):
                        yield between
                    if not self._more:
                        break
        finally:
            if stream is not None:
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
        if not self._folds:
            for _ in self.events():
                pass
        return self.turn.text if self.turn else ""

    def _start(self) -> None:
        if self._folds:
            raise errors.StreamConsumed(
                "This answer was already streamed; a Response streams once (its `.turn` holds the answer).",
                hint="stream_consumed",
            )

    def _new_fold(self) -> Fold:
        self._folds.append(Fold())
        self._open = True
        return self._folds[-1]

    def _request(self, round_: int) -> dict[str, Any]:
        """The body of request number ``round_``: with tools, the conversation so far in this turn."""
        if self.tool_use is None:
            return self.body
        history = [m.to_wire() for m in self._replies]
        return {**self.body, **self.tool_use.request_fields(round_), "messages": [*self.body["messages"], *history]}

    def _fall_back(self, error: errors.BadRequestError, fold: Fold) -> ToolNote:
        """A server without a tool parser refused the tools: ask again with guided JSON, or re-raise."""
        note = self.tool_use.fall_back(error) if self.tool_use and not fold.got_output else None
        if note is None:
            raise error
        return ToolNote(note)

    def _held(self, round_: int) -> bool:
        """Whether this request's text is guided JSON standing for a call or an answer (not shown as
        it streams: the call shows as a card, the answer once it is read)."""
        return self.tool_use is not None and self.tool_use.guides(round_)

    def _between_requests(self, held: bool, round_: int) -> Iterator[TextDelta | ToolEvent]:
        """After request ``round_``: with tools, its answer joins the turn and the calls it holds run,
        and :attr:`_more` says whether to ask again; a held-back answer shows now."""
        self._more = False
        if self.tool_use is None:
            return
        message = self.tool_use.answer(self._folds[-1].message())
        self._replies.append(message)
        self._open = False
        calls = [p for p in message.parts if isinstance(p, ToolCall)]
        if held and not calls and message.text:
            yield TextDelta(message.text)
        if calls:
            yield from self.tool_use.run(calls, self._replies)
            if round_ == self.tool_use.max_rounds - 1:
                yield self.tool_use.stopped()
            self._more = True

    @property
    def _got_output(self) -> bool:
        return any(fold.got_output for fold in self._folds)

    @contextmanager
    def _recording(self) -> Iterator[None]:
        """Record the turn however the stream ends: complete, cut, or stopped (interrupted)."""
        status = Status.INTERRUPTED
        try:
            yield
            status = Status.COMPLETE
        except errors.StreamError as exc:
            status = Status.CUT
            if self._got_output and not self.records and exc.hint in ("stream_cut", "retry"):
                # nothing recorded, so there is no turn to retry: the partial text is all there is
                raise errors.StreamError(exc.cause, hint="cut_not_recorded",
                                         server_message=exc.server_message) from None
            if self._got_output:
                raise
            raise errors.StreamError(f"{exc.cause} Nothing had arrived, so nothing was recorded.",
                                     hint="ask_again", server_message=exc.server_message) from None
        except errors.ContextLengthError as exc:
            raise self._explain_context(exc) from None
        except errors.NotFoundError as exc:
            raise self._explain_not_found(exc) from None
        finally:
            if status is Status.COMPLETE or self._got_output:
                turn = self._turn(status)
                if status is Status.COMPLETE and self.shape is not None:
                    self._record_checked(turn, self.shape)
                else:
                    self._record(turn)

    def _turn(self, status: Status) -> Turn:
        """The turn as it stands: the last request's answer after the earlier requests' answers and
        the tools' results; usage summed over the requests (estimated if any lacked the server's)."""
        last = self._folds[-1]
        turn = last.turn(self.user, self.model, status,
                         {k: v for k, v in self.body.items() if k not in RESERVED_BODY})
        if self.tool_use is None:
            return turn
        answer = [self.tool_use.answer(turn.replies[-1])] if self._open else []
        turn.replies = [*self._replies, *answer]
        if len(self._folds) > 1:
            first = self._folds[0]
            turn.usage_estimated = any(f.usage is None for f in self._folds)
            turn.prompt_tokens = None if turn.usage_estimated else sum(f.usage.prompt_tokens for f in self._folds)
            turn.completion_tokens = sum(f.usage.completion_tokens if f.usage else f.pieces for f in self._folds)
            turn.ttft, turn.seconds = first.ttft, time.perf_counter() - first.started
        return turn

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
        turn.cell, turn.left_out = self.cell, self.left_out
        self.turn = turn
        if self._mode == "add":
            self._conversation.add(turn)
        elif self._mode == "replace":
            self._conversation.replace_last(turn)

    def _explain_context(self, error: errors.ContextLengthError) -> errors.ContextLengthError:
        """Add the exact size of the conversation (vLLM's ``/tokenize``) to a context error."""
        if self.path == COMPLETIONS_PATH:  # no conversation: vLLM's words already count the prompt
            return errors.ContextLengthError(
                f"The prompt is too long for {self.model}. The server said: {error.server_message}",
                hint="prompt_too_long", status=error.status, server_message=error.server_message,
            )
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

    def _explain_not_found(self, error: errors.NotFoundError) -> errors.NotFoundError:
        """A server without ``/v1/completions`` (one serving chat only) is told apart from an unknown model."""
        if self.path != COMPLETIONS_PATH or error.hint == "model_not_found":
            return error
        return errors.NotFoundError(
            f"The server at {self._client.display_url} does not serve completions: /v1/completions answered "
            f"HTTP {error.status} ({error.server_message}); it may serve chat only, as the OpenAI API does for "
            "its chat models.",
            hint="no_completions_endpoint", status=error.status, server_message=error.server_message,
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
