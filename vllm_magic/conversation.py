"""A conversation: a system prompt and a list of turns, with their usage and timings.

A :class:`Turn` is the user's message and the assistant's message(s) (a tool loop has several),
recorded only once the server answered: a request that fails adds nothing, and a stream that is
interrupted or cut keeps its partial answer with a status saying so. That is what keeps the history
consistent whatever goes wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .images import without_data
from .messages import Message, Text, message_from_dict

FORMAT = "vllm_magic.conversation/2"
FORMAT_V1 = "vllm_magic.conversation/1"


class Status(str, Enum):
    """How a turn's answer ended."""

    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    """Stopped by the user (Ctrl-C, kernel interrupt, Stop); the partial answer is kept."""
    CUT = "cut"
    """The stream broke (connection lost, malformed or error event); the partial answer is kept."""
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass
class Turn:
    """One exchange: the user's message, the assistant's reply(ies), and what it cost.

    ``prompt_tokens`` / ``completion_tokens`` are the server's counts; when a stream ended before
    the server's usage arrived, ``completion_tokens`` counts the pieces received and
    ``usage_estimated`` says so (``prompt_tokens`` is then unknown).
    """

    user: Message
    replies: list[Message]
    model: str
    status: Status = Status.COMPLETE
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_estimated: bool = False
    ttft: float | None = None
    seconds: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    token_logprobs: list[dict[str, Any]] | None = None
    """Each answer token with its logprob and the top alternatives' (``logprobs: true``); see :attr:`logprobs`."""
    samples: list[str] | None = None
    """Every sample's text when several were asked for (``n`` > 1); the answer is sample :attr:`picked`."""
    picked: int = 0
    left_out: str | None = None
    """What context was left out of the request to fit the model's window (``--context``), said in the footer."""
    cell: int | None = None
    """The execution count of the notebook cell that made the turn (``In [7]``); None from the panel,
    the sidebar or Python, and in files saved before turns knew their cell."""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @classmethod
    def of(cls, prompt: str, text: str, model: str, reasoning: str = "", **fields: Any) -> Turn:
        """A turn of one user prompt and one text answer."""
        return cls(Message.of("user", prompt), [Message.of("assistant", text, reasoning)], model, **fields)

    @property
    def prompt(self) -> str:
        return self.user.text

    @property
    def text(self) -> str:
        """The answer: the last assistant message's text."""
        answers = [m for m in self.replies if m.role == "assistant"]
        return answers[-1].text if answers else ""

    @property
    def reasoning(self) -> str:
        return "".join(m.reasoning for m in self.replies)

    @property
    def value(self) -> Any:
        """A structured answer's parsed value (see :mod:`.structured`), else None."""
        answers = [m for m in self.replies if m.role == "assistant"]
        return answers[-1].value if answers else None

    @property
    def logprobs(self):  # -> pandas.DataFrame | None
        """The answer's tokens as a DataFrame: token, logprob, probability, and the alternatives
        (``[(token, probability), ...]``); None when logprobs were not asked for."""
        if not self.token_logprobs:
            return None
        import math

        import pandas as pd

        return pd.DataFrame([{"token": e["token"], "logprob": e["logprob"], "probability": math.exp(e["logprob"]),
                              "alternatives": [(t, math.exp(lp)) for t, lp in e["top"]]}
                             for e in self.token_logprobs])

    def pick(self, index: int) -> None:
        """Keep sample ``index`` as the answer (the conversation goes on from it)."""
        if not self.samples:
            raise ConfigError("The turn has one answer, not several samples.", hint="no_samples")
        if not 0 <= index < len(self.samples):
            raise ConfigError(f"There are {len(self.samples)} samples, numbered 0 to {len(self.samples) - 1}; "
                              f"not {index}.", hint="no_samples")
        kept = self.replies[-1]
        self.replies[-1] = Message(kept.role, [*(p for p in kept.parts if not isinstance(p, Text)),
                                               Text(self.samples[index])])
        self.picked = index

    @property
    def complete(self) -> bool:
        return self.status == Status.COMPLETE

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens over the whole request, from sending it to the last byte.

        A rate after the first token only is what servers quote, but a burst of buffered tokens
        makes it impossible (thousands per second); over the whole request it is what the user got.
        """
        if not self.completion_tokens or not self.seconds:
            return None
        return self.completion_tokens / self.seconds

    @property
    def truncated(self) -> bool:
        """The answer stopped because it hit ``max_tokens`` (or the context end)."""
        return self.finish_reason == "length"

    def messages(self, send_reasoning: bool = False) -> list[dict[str, Any]]:
        return [m.to_wire(send_reasoning) for m in (self.user, *self.replies)]

    def to_dict(self, image_data: bool = True) -> dict[str, Any]:
        """The turn as saved; without ``image_data`` each image sent as data keeps only its hash and size."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["user"] = (self.user if image_data else without_data(self.user)).to_dict()
        data["replies"] = [m.to_dict() for m in self.replies]
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        data = dict(data)
        data["user"] = message_from_dict(data["user"])
        data["replies"] = [message_from_dict(m) for m in data["replies"]]
        data["status"] = Status(data.get("status", "complete"))
        return cls(**data)

    @classmethod
    def from_v1(cls, data: dict[str, Any]) -> Turn:
        """A turn as format version 1 saved it (a prompt and a text string)."""
        data = dict(data)
        prompt, text, reasoning = data.pop("prompt"), data.pop("text"), data.pop("reasoning", "")
        data["status"] = Status(data.get("status", "complete"))
        return cls.of(prompt, text, reasoning=reasoning, **data)


class Conversation:
    """Ordered turns plus a system prompt. Listeners hear about every change (panels use this)."""

    def __init__(self, system: str | None = None, name: str = "default") -> None:
        self.name = name
        self.system = system
        self.turns: list[Turn] = []
        self._listeners: list[Callable[[Conversation], None]] = []

    def __repr__(self) -> str:
        return f"Conversation({self.name!r}, turns={len(self.turns)})"

    def __len__(self) -> int:
        return len(self.turns)

    def messages(self, prompt: Message | str | None = None, turns: list[Turn] | None = None,
                 send_reasoning: bool = False) -> list[dict[str, Any]]:
        """The request's messages: system, the turns (all by default), then ``prompt`` as user.

        Reasoning is left out unless ``send_reasoning``: most models want only the answers back.
        """
        out: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns if turns is None else turns:
            out.extend(turn.messages(send_reasoning))
        if prompt is not None:
            user = prompt if isinstance(prompt, Message) else Message.of("user", prompt)
            out.append(user.to_wire())
        return out

    def add(self, turn: Turn) -> None:
        self.turns.append(turn)
        self._changed()

    def replace_last(self, turn: Turn) -> None:
        self.turns[-1] = turn
        self._changed()

    def replace_with(self, other: Conversation) -> None:
        """Take over another conversation's system prompt and turns (used by loading)."""
        self.system, self.turns = other.system, list(other.turns)
        self._changed()

    def undo(self) -> Turn | None:
        """Drop the last turn and return it (None when empty)."""
        turn = self.turns.pop() if self.turns else None
        if turn is not None:
            self._changed()
        return turn

    def reset(self, system: str | None = ...) -> None:  # type: ignore[assignment]
        """Forget every turn; keep the system prompt unless a new one is given."""
        self.turns.clear()
        if system is not ...:
            self.system = system
        self._changed()

    def set_system(self, system: str | None) -> None:
        self.system = system or None
        self._changed()

    def on_change(self, listener: Callable[[Conversation], None]) -> Callable[[], None]:
        """Call ``listener(conversation)`` after every change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener(self)

    # -- persistence: plain JSON, never a key or URL ---------------------------------------------

    def to_dict(self, image_data: bool = True) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "system": self.system,
                "turns": [t.to_dict(image_data) for t in self.turns]}

    def save(self, path: str | Path, image_data: bool = True) -> Path:
        """Write the conversation as JSON. Images sent as data are saved whole (their ``data:`` URL)
        unless ``image_data`` is False: then only their media type, SHA-256, size in bytes and pixels
        (an :class:`~vllm_magic.messages.ImageRef`, shown but never sent again). URLs are kept."""
        path = Path(path).expanduser()
        path.write_text(json.dumps(self.to_dict(image_data), indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Conversation:
        """Read a saved conversation (format version 2, or 1 from earlier releases)."""
        path = Path(path).expanduser()
        try:
            conversation = cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"There is no file {str(path)!r}.", hint="check_path") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{str(path)!r} is not a saved vllm_magic conversation ({exc}).",
                              hint="not_a_conversation") from None
        return conversation

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        """A conversation from its saved form (:meth:`to_dict`, or format version 1); a malformed one
        raises ValueError, KeyError, TypeError or AttributeError."""
        read = {FORMAT: Turn.from_dict, FORMAT_V1: Turn.from_v1}.get(data.get("format"))
        if read is None:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        conversation = cls(system=data.get("system"), name=data.get("name", "default"))
        conversation.turns = [read(turn) for turn in data["turns"]]
        return conversation
