"""Messages as a role plus typed parts: text, reasoning, images, tool calls and results, JSON.

A :class:`Message` is what the conversation keeps; :meth:`Message.to_wire` is what the
OpenAI-compatible API is sent, and :meth:`Message.to_dict` / :func:`message_from_dict` what a saved
conversation holds. A new kind of content is a new part class here, not a new field elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Union


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Context:
    """What the notebook told the model with a prompt (``%%chat --context``, ``%vllm fix``): sent before
    the prompt in the same message, and kept apart from it, so the prompt stays as the user typed it."""

    text: str


@dataclass(frozen=True)
class Reasoning:
    """The model's thinking (vLLM's ``reasoning``), kept apart from the answer."""

    text: str


@dataclass(frozen=True)
class Image:
    url: str
    """An http(s) URL or a ``data:`` URL."""
    detail: str | None = None
    width: int | None = None
    height: int | None = None
    """The pixels sent, when known (images made by :mod:`.images`)."""


@dataclass(frozen=True)
class ImageRef:
    """An image saved without its data (see ``Conversation.save``): what it was, never sent again."""

    media_type: str
    sha256: str
    bytes: int
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """The arguments as the model wrote them (JSON text)."""


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    content: str
    """What the model is sent: the result summarised, or ``Error: ...``."""
    value: Any = field(default=None, compare=False, repr=False)
    """The function's whole return value (kept in memory, not saved)."""
    error: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class JSON:
    """A structured answer: the JSON text as sent and its parsed value."""

    text: str
    value: Any = None


Part = Union[Text, Context, Reasoning, Image, ImageRef, ToolCall, ToolResult, JSON]
PART_TYPES: dict[str, type] = {cls.__name__: cls for cls in (Text, Context, Reasoning, Image, ImageRef, ToolCall,
                                                             ToolResult, JSON)}
CONTEXT_HEADING = "Context from the notebook:"


@dataclass
class Message:
    role: str
    parts: list[Part] = field(default_factory=list)

    @classmethod
    def of(cls, role: str, text: str, reasoning: str = "") -> Message:
        parts: list[Part] = [Reasoning(reasoning)] if reasoning else []
        return cls(role, [*parts, Text(text)] if text or not parts else parts)

    @property
    def text(self) -> str:
        """The message's text (text and JSON parts), as a person reads it."""
        return "".join(p.text for p in self.parts if isinstance(p, (Text, JSON)))

    @property
    def context(self) -> str:
        """The notebook's context sent with the message ("" when none)."""
        return "".join(p.text for p in self.parts if isinstance(p, Context))

    @property
    def sent_text(self) -> str:
        """The text as the server gets it: the context under its heading, then the message's text."""
        return f"{CONTEXT_HEADING}\n\n{self.context}\n\n{self.text}" if self.context else self.text

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, Reasoning))

    @property
    def images(self) -> list[Image | ImageRef]:
        """The message's images: those sent, and those a saved conversation kept only a reference of."""
        return [p for p in self.parts if isinstance(p, (Image, ImageRef))]

    def to_wire(self, send_reasoning: bool = False) -> dict[str, Any]:
        """The message as the chat completions API takes it."""
        wire: dict[str, Any] = {"role": self.role}
        images = [p for p in self.parts if isinstance(p, Image)]
        if images:
            content: Any = [{"type": "text", "text": self.sent_text}] if self.sent_text else []
            content += [{"type": "image_url", "image_url": {"url": p.url, **({"detail": p.detail} if p.detail else {})}}
                        for p in images]
        else:
            content = self.sent_text
        wire["content"] = content
        calls = [p for p in self.parts if isinstance(p, ToolCall)]
        if calls:
            wire["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        results = [p for p in self.parts if isinstance(p, ToolResult)]
        if results:
            wire["tool_call_id"] = results[0].call_id
            wire["content"] = results[0].content
        if send_reasoning and self.reasoning:
            wire["reasoning"] = self.reasoning
        return wire

    @property
    def value(self) -> Any:
        """The structured answer's value (a JSON part's), or None."""
        values = [p.value for p in self.parts if isinstance(p, JSON)]
        return values[-1] if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "parts": [_part_dict(p) for p in self.parts]}


def _part_dict(part: Part) -> dict[str, Any]:
    if isinstance(part, JSON):  # a model instance is saved as the plain data it holds
        from .structured import plain

        return {"type": "JSON", "text": part.text, "value": plain(part.value)}
    if isinstance(part, ToolResult):  # its value is any Python object: the summary in content is saved
        return {"type": "ToolResult", **{f.name: getattr(part, f.name) for f in fields(part) if f.name != "value"}}
    return {"type": type(part).__name__, **asdict(part)}


def message_from_dict(data: dict[str, Any]) -> Message:
    parts: list[Part] = []
    for part in data["parts"]:
        cls = PART_TYPES[part["type"]]
        parts.append(cls(**{f.name: part[f.name] for f in fields(cls) if f.name in part}))
    return Message(data["role"], parts)
