"""Folding a stream's events into the assistant's message, its finish, usage and timing (no I/O)."""

from __future__ import annotations

import time
from typing import Any

from . import errors
from .conversation import Status, Turn
from .messages import Message, Part, Reasoning, Text, ToolCall
from .stream import Event, Finish, Logprobs, ReasoningDelta, Sample, ServerError, TextDelta, ToolCallDelta, Usage


class Fold:
    """What one streamed answer has brought so far; :meth:`turn` records it.

    Runs once per streamed token, so :meth:`take` dispatches on the event's exact type.
    """

    __slots__ = ("text", "reasoning", "calls", "finish", "usage", "ttft", "started", "pieces", "logprobs", "samples")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        self.finish: Finish | None = None
        self.usage: Usage | None = None
        self.ttft: float | None = None
        self.started = time.perf_counter()
        self.pieces = 0  # content, reasoning and tool-call deltas: about one token each
        self.logprobs: list[dict[str, Any]] = []
        self.samples: dict[int, list[str]] = {}  # the other samples' pieces (n > 1), by index

    def take(self, event: Event) -> None:
        kind = type(event)
        if kind is TextDelta or kind is ReasoningDelta or kind is ToolCallDelta:
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.started
            self.pieces += 1
            if kind is TextDelta:
                self.text.append(event.text)  # type: ignore[union-attr]
            elif kind is ReasoningDelta:
                self.reasoning.append(event.text)  # type: ignore[union-attr]
            else:
                self._take_call(event)  # type: ignore[arg-type]
        elif kind is Finish:
            self.finish = event  # type: ignore[assignment]
        elif kind is Usage:
            self.usage = event  # type: ignore[assignment]
        elif kind is Logprobs:
            self.logprobs += event.entries  # type: ignore[union-attr]
        elif kind is Sample:
            self.samples.setdefault(event.index, []).append(event.text)  # type: ignore[union-attr]
        elif kind is ServerError:
            kept = "the partial answer is kept, marked incomplete" if self.pieces else "nothing was recorded"
            said = event.message  # type: ignore[union-attr]
            raise errors.StreamError(f"The server stopped the answer with an error ({kept}): {said}",
                                     hint="retry" if self.pieces else "ask_again", server_message=said)

    def _take_call(self, delta: ToolCallDelta) -> None:
        call = self.calls.setdefault(delta.index, ["", "", ""])
        call[0] = delta.id or call[0]
        call[1] = delta.name or call[1]
        call[2] += delta.arguments

    @property
    def got_output(self) -> bool:
        return self.pieces > 0

    def message(self) -> Message:
        """The assistant's message so far: reasoning, text, then tool calls."""
        parts: list[Part] = []
        if self.reasoning:
            parts.append(Reasoning("".join(self.reasoning)))
        if self.text or not (self.reasoning or self.calls):
            parts.append(Text("".join(self.text)))
        parts += [ToolCall(*self.calls[index]) for index in sorted(self.calls)]
        return Message("assistant", parts)

    def turn(self, user: Message, model: str, status: Status, params: dict[str, Any]) -> Turn:
        """The turn as it stands; usage is the server's, else the pieces received (estimated)."""
        usage = self.usage
        return Turn(
            user, [self.message()], model, status=status,
            finish_reason=self.finish.reason if self.finish else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else self.pieces,
            reasoning_tokens=usage.reasoning_tokens if usage else None,
            usage_estimated=usage is None,
            ttft=self.ttft, seconds=time.perf_counter() - self.started, params=params,
            token_logprobs=[_compact(entry) for entry in self.logprobs] or None,
            samples=["".join(self.text), *("".join(self.samples[i]) for i in sorted(self.samples))] if self.samples
            else None,
        )


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    """A token's log-probability as kept: the token, its logprob and the alternatives' (no bytes)."""
    return {"token": entry.get("token", ""), "logprob": entry.get("logprob"),
            "top": [[alt.get("token", ""), alt.get("logprob")] for alt in entry.get("top_logprobs") or ()]}
