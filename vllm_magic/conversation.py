"""A conversation: a system prompt and a list of turns, with their usage and timings.

A :class:`Turn` is recorded only once the server answered: a request that fails adds nothing, and
a stream that is interrupted or cut keeps its partial answer marked incomplete. That is what keeps
the history consistent whatever goes wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError

FORMAT = "vllm_magic.conversation/1"

COMPLETE = "complete"
INTERRUPTED = "interrupted"
CUT = "cut"


@dataclass
class Turn:
    """One exchange: the user's prompt and the assistant's answer, with what it cost."""

    prompt: str
    text: str
    model: str
    status: str = COMPLETE
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft: float | None = None
    seconds: float | None = None
    reasoning: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens over the time after the first token (generation speed)."""
        if not self.completion_tokens or self.seconds is None or self.ttft is None:
            return None
        span = self.seconds - self.ttft
        return self.completion_tokens / span if span > 0 else None

    @property
    def truncated(self) -> bool:
        """The answer stopped because it hit ``max_tokens`` (or the context end)."""
        return self.finish_reason == "length"

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.text}]


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

    def messages(self, prompt: str | None = None, turns: list[Turn] | None = None) -> list[dict[str, str]]:
        """The request's messages: system, the turns (all by default), then ``prompt`` as user."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns if turns is None else turns:
            out.extend(turn.messages())
        if prompt is not None:
            out.append({"role": "user", "content": prompt})
        return out

    def add(self, turn: Turn) -> None:
        self.turns.append(turn)
        self._changed()

    def replace_last(self, turn: Turn) -> None:
        self.turns[-1] = turn
        self._changed()

    def replace_with(self, other: Conversation) -> None:
        """Take over another conversation's system prompt and turns (used by ``%vllm load``)."""
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

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "system": self.system,
                "turns": [asdict(t) for t in self.turns]}

    def save(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Conversation:
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            conversation = cls(system=data.get("system"), name=data.get("name", "default"))
            conversation.turns = [Turn(**turn) for turn in data["turns"]]
        except FileNotFoundError:
            raise ConfigError(f"There is no file {str(path)!r}.", "Check the path given to `%vllm load`.") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{str(path)!r} is not a saved vllm_magic conversation ({exc}).",
                "Load a file written by `%vllm save PATH` or `Conversation.save()`.",
            ) from None
        return conversation
