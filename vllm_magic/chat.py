"""The engine every view shares: a :class:`Chat` owns a conversation and streams answers into it.

    >>> chat = Chat("http://127.0.0.1:8000", temperature=0.2)
    >>> chat.ask("Say hello").text
    >>> for piece in chat.stream("And again, slowly"):
    ...     print(piece, end="")
    >>> chat.ask("Think first", chat_template_kwargs={"enable_thinking": True}).reasoning

Python code gets plain exceptions (KeyboardInterrupt stays KeyboardInterrupt); the magics and the
panel turn them into one-paragraph messages.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from . import errors
from .client import redact_url
from .connection import Connection
from .conversation import Conversation, Turn
from .messages import Message
from .params import GUIDED, translate_guided, validate
from .response import Response
from .structured import OLD_FIELDS, Constraint, constraint


class Chat:
    """A conversation with one server: ``ask`` / ``stream`` send a prompt with the history so far.

    ``params`` (temperature, max_tokens, top_p, any vLLM extra...) apply to every request; keyword
    arguments of ``ask``/``stream`` override them for one request.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        system: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        credentials: Callable[[], str | dict[str, str]] | None = None,
        connection: Connection | None = None,
        conversation: Conversation | None = None,
        **params: Any,
    ) -> None:
        if connection is None:
            connection = Connection(base_url, model, api_key=api_key, timeout=timeout, headers=headers,
                                    credentials=credentials)
        self.connection = connection
        self.conversation = conversation if conversation is not None else Conversation(system=system)
        self.params, _ = validate(params)
        self.model: str | None = None
        """This conversation's own model; None: the connection's."""
        self.send_reasoning = False
        """Send earlier turns' reasoning back (as ``reasoning``) for models that want it."""

    def __repr__(self) -> str:
        return (
            f"Chat({redact_url(self.connection.client.base_url)!r}, model={self.connection.model!r}, "
            f"turns={len(self.conversation)})"
        )

    @property
    def history(self) -> list[Turn]:
        return self.conversation.turns

    def stream(
        self,
        prompt: str,
        *,
        model: str | None = None,
        record: bool = True,
        think: bool | None = None,
        json: bool = False,
        schema: Any = None,
        choice: Any = None,
        regex: str | None = None,
        grammar: str | None = None,
        shape: Constraint | None = None,
        _replace_last: bool = False,
        **params: Any,
    ) -> Response:
        """Start an answer; iterate the returned :class:`Response` for its text as it arrives
        (or :meth:`Response.events` for reasoning, usage and the finish reason too).

        ``record=False`` sends the prompt alone (system prompt kept, no history) and records nothing.
        ``think`` asks a reasoning model's chat template to think or not (``enable_thinking``).
        ``json``, ``schema`` (a pydantic model, dataclass, TypedDict, JSON Schema dict or
        ``"name str, age int"``), ``choice``, ``regex`` or ``grammar`` ask for a structured answer
        (or a prebuilt ``shape``): the turn's ``.value`` is then the validated value.
        """
        shape = shape or constraint(json=json, schema=schema, choice=choice, regex=regex, grammar=grammar)
        if think is not None:
            kwargs = {**self.params.get("chat_template_kwargs", {}), **params.get("chat_template_kwargs", {})}
            params["chat_template_kwargs"] = {**kwargs, "enable_thinking": think}
        merged, _ = validate({**self.params, **params})
        body: dict[str, Any] = {k: v for k, v in merged.items() if v is not None}
        body["model"] = self.connection.resolve_model(model or self.model)
        if "max_tokens" in body:
            self.connection.check_max_tokens(body["max_tokens"], body["model"])
        notes: list[str] = []
        if shape is not None:
            body.update(shape.request_fields(self.connection.version() if shape.kind in OLD_FIELDS else None))
        if any(name in body for name in GUIDED):
            body, moved = translate_guided(body, self.connection.version())
            if moved:
                notes.append(f"{', '.join(moved)} moved into `structured_outputs`: vLLM "
                             f"{self.connection.version()} ignores the old guided_* fields.")
        turns = self.conversation.turns[:-1] if _replace_last else self.conversation.turns
        user = Message.of("user", prompt)
        body["messages"] = self.conversation.messages(user, turns=turns if record else [],
                                                      send_reasoning=self.send_reasoning)
        mode = "replace" if _replace_last else ("add" if record else None)
        response = Response(self.conversation, self.connection.client, user, body, mode, shape)
        response.notes = notes
        return response

    def ask(self, prompt: str, **kwargs: Any) -> Turn:
        """Send ``prompt`` and wait for the whole answer; returns the recorded :class:`Turn`."""
        response = self.stream(prompt, **kwargs)
        for note in response.notes:
            warnings.warn(note, stacklevel=2)
        response.text()
        assert response.turn is not None
        return response.turn

    def retry(self, **kwargs: Any) -> Response:
        """Ask the last prompt again; the new answer replaces the last turn once it arrives.

        Until then the old turn stays, so a retry that fails leaves the history as it was.
        """
        if not self.conversation.turns:
            raise errors.ConfigError("There is no turn to retry yet.", "Send a prompt first.")
        return self.stream(self.conversation.turns[-1].prompt, _replace_last=True, **kwargs)

    def reset(self) -> None:
        self.conversation.reset()

    def undo(self) -> Turn | None:
        return self.conversation.undo()

    def usage(self):  # -> pandas.DataFrame
        """Per-turn usage and timings as a DataFrame, with a ``total`` row."""
        from .usage import usage_frame

        return usage_frame(self.conversation.turns)
