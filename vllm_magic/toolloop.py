"""The tool loop's rules: what each request says about tools, which calls an answer holds, running
them, and the events every view shows for them.

:class:`ToolUse` is what ``chat.stream(..., tools=[...])`` hands the :class:`~vllm_magic.response.Response`,
whose one stream loop sends a request, folds the answer, and while the answer holds calls, runs them
here and sends the results back (at most ``max_rounds`` requests).

Two ways to ask for calls:

- ``native``: vLLM's tool calling (``tools`` and ``tool_choice``; the server needs
  ``--enable-auto-tool-choice --tool-call-parser NAME``). Each tool is sent with ``strict: true`` so
  vLLM holds the arguments to the schema; they are validated again before the function runs.
- ``json``: for a server without a tool parser, the answer is held by guided decoding to a JSON
  object that is either one call (``{"name", "arguments"}`` of one of the tools) or, unless a call
  is required, a final ``{"answer": "..."}``. Used on request (``tool_choice="json"``) or after the
  server refused tool calling, with a note.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from . import errors
from .messages import Message, Text, ToolCall, ToolResult
if TYPE_CHECKING:  # tools.py loads when a request has tools, not at `%load_ext`
    from .tools import Outcome, Tool

ToolCalling = NamedTuple("ToolCalling", [("call", ToolCall)])
"""A call is about to run (or to be confirmed)."""
ToolCalled = NamedTuple("ToolCalled", [("call", ToolCall), ("result", ToolResult)])
"""A call ran (or was declined, refused, or failed): its result as the model is sent it, with the
whole value and the time it took."""
ToolNote = NamedTuple("ToolNote", [("text", str)])
"""Something the user should know about the loop, e.g. that it fell back to guided JSON."""
ToolEvent = Union[ToolCalling, ToolCalled, ToolNote]

Confirm = Callable[[ToolCall], bool]
CHOICES = ("auto", "required", "none", "json")
NO_PARSER = "requires --"  # vLLM 0.32 without a tool parser: '"auto" tool choice requires --enable-auto-...'
RESULT_BUDGET = 2000  # characters of each result the model sees; the Turn keeps the whole value
ANSWER_BRANCH = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
                 "additionalProperties": False}


@dataclass
class ToolUse:
    """The tools of one request and how to call them."""

    tools: Sequence[Tool]
    choice: str = "auto"
    """``auto``, ``required``, ``none``, ``json`` or a tool's name."""
    max_rounds: int = 8
    confirm: Confirm | None = None
    mode: str = field(init=False)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        if self.choice not in CHOICES and self.choice not in names:
            raise errors.ConfigError(
                f"tool_choice {self.choice!r} is not one of {', '.join(CHOICES)} or a tool's name "
                f"({', '.join(names)}).", hint="tool_choice")
        if self.max_rounds < 1:
            raise errors.ConfigError(f"max_rounds must be at least 1, not {self.max_rounds}.", hint="tool_choice")
        self.mode = "json" if self.choice == "json" else "native"
        self.by_name = {t.name: t for t in self.tools}

    def request_fields(self, round_: int) -> dict[str, Any]:
        """What request number ``round_`` (from 0) says about tools. The last allowed round asks for
        an answer, so the loop always ends with one."""
        last = round_ == self.max_rounds - 1
        forced = round_ == 0 and self.choice not in ("auto", "json")
        if self.mode == "json":
            if not self.guides(round_):
                return {}
            from .tools import union_schema

            schema = union_schema(self._chosen() if forced else self.tools)
            if not forced:
                schema = {**schema, "anyOf": [*schema["anyOf"], ANSWER_BRANCH]}
            return {"response_format": {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}}
        choice: Any = "none" if last else (self.choice if self.choice in CHOICES else
                                           {"type": "function", "function": {"name": self.choice}})
        if not forced and not last and self.choice != "none":
            choice = "auto"
        return {"tools": [t.spec(strict=True) for t in self.tools], "tool_choice": choice}

    def guides(self, round_: int) -> bool:
        """Whether request number ``round_`` is held to guided JSON (a call or an answer): in ``json``
        mode, all but the last request and unless no call is wanted."""
        return self.mode == "json" and round_ != self.max_rounds - 1 and self.choice != "none"

    def fall_back(self, error: errors.VLLMError) -> str | None:
        """After the server refused tool calling for want of a parser: switch to guided JSON and return
        the note to show; None when the error is something else."""
        said = error.server_message or ""
        if self.mode != "native" or error.status != 400 or NO_PARSER not in said or "tool" not in said:
            return None
        self.mode = "json"
        return ("This server has no tool parser (vLLM needs `--enable-auto-tool-choice --tool-call-parser NAME` "
                "for tool calls), so tool calls are asked for as guided JSON instead.")

    def answer(self, message: Message) -> Message:
        """The assistant's message as the conversation keeps it: in ``json`` mode the guided JSON
        becomes a tool call, or the final answer's text."""
        if self.mode != "json" or not message.text:
            return message
        try:
            data = json.loads(message.text)
        except json.JSONDecodeError:
            return message  # cut by max_tokens: the raw text is kept, as for any cut answer
        if isinstance(data, dict) and isinstance(data.get("name"), str) and "arguments" in data:
            arguments = json.dumps(data["arguments"], ensure_ascii=False)
            return Message("assistant", [ToolCall(f"call-{os.urandom(6).hex()}", data["name"], arguments)])
        if isinstance(data, dict) and isinstance(data.get("answer"), str):
            return Message("assistant", [Text(data["answer"])])
        return message

    def stopped(self) -> ToolNote:
        """The model still called tools in the last request allowed (their results are kept)."""
        return ToolNote(f"The tool loop stopped after {self.max_rounds} requests with the model still calling "
                        "tools; allow more with `--max-rounds N` (Python: `max_rounds=N`).")

    def run(self, calls: Sequence[ToolCall], results: list[Message]) -> Iterator[ToolEvent]:
        """Run ``calls`` in order, appending each result's tool message to ``results``; a declined,
        unknown or failing call is reported to the model as such, never raised."""
        for call in calls:
            yield ToolCalling(call)
            outcome = self._outcome(call)
            result = ToolResult(call.id, outcome.for_model(RESULT_BUDGET), value=outcome.value, error=outcome.error,
                                seconds=outcome.seconds)
            results.append(Message("tool", [result]))
            yield ToolCalled(call, result)

    def _outcome(self, call: ToolCall) -> Outcome:
        from .tools import Outcome

        tool = self.by_name.get(call.name)
        if tool is None:
            return Outcome(None, f"there is no tool named {call.name!r} (the tools are "
                                 f"{', '.join(self.by_name)})", 0.0, None)
        if self.confirm is not None and not self.confirm(call):
            return Outcome(None, "the user declined this call", 0.0, None)
        return tool.run(call.arguments)

    def _chosen(self) -> Sequence[Tool]:
        return [self.by_name[self.choice]] if self.choice in self.by_name else self.tools


def ask_in_terminal(call: ToolCall) -> bool:
    """Confirm a call with ``input()``: a terminal's prompt, or the input box Jupyter shows under the
    running cell (a widget button cannot be heard while the cell runs: ipykernel 7 handles the click's
    message only after it)."""
    answer = input(f"Run {call.name}({call.arguments})? [y/N] ")
    return answer.strip().lower() in ("y", "yes")
