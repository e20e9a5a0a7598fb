"""The engine every view shares: a :class:`Chat` owns a conversation and streams answers into it.

    >>> chat = Chat("http://127.0.0.1:8000", temperature=0.2)
    >>> chat.ask("Say hello").text
    >>> for piece in chat.stream("And again, slowly"):
    ...     print(piece, end="")
    >>> chat.ask("Think first", chat_template_kwargs={"enable_thinking": True}).reasoning
    >>> chat.ask("What does the plot show?", images=[fig])    # PIL, Figure, numpy, bytes, path or URL
    >>> chat.complete("def fib(n):", max_tokens=64).text()   # a base model continues it; nothing recorded

Python code gets plain exceptions (KeyboardInterrupt stays KeyboardInterrupt); the magics and the
panel turn them into one-paragraph messages.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from . import errors
from .client import COMPLETIONS_PATH, redact_url
from .connection import Connection
from .conversation import Conversation, Turn
from .images import DEFAULT_MAX_SIDE, user_message
from .messages import Context, Message
from .params import GUIDED, translate_guided, validate
from .response import Response
from .structured import OLD_FIELDS, Constraint, constraint
from .toolloop import Confirm, ToolUse


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
        self.image_max_side = DEFAULT_MAX_SIDE
        """Images sent are shrunk so that their longer side is at most this many pixels (0: never)."""

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
        images: Sequence[Any] = (),
        context: str = "",
        tools: Any = None,
        tool_choice: str = "auto",
        max_rounds: int = 8,
        confirm: Confirm | None = None,
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
        ``images`` go with the prompt: PIL images, matplotlib Figures, numpy arrays, image bytes, file
        paths or http(s) URLs (see :func:`~vllm_magic.images.to_image`). ``context`` (e.g. variables described
        by :mod:`~vllm_magic.context`) is sent before the prompt in the same message, under "Context from the
        notebook:", and kept in the turn apart from the prompt.

        ``tools`` (functions, :class:`~vllm_magic.tools.Tool` objects, or names registered with
        ``@tool``) may be called by the model: each call runs here and its result is sent back, until
        the model answers or ``max_rounds`` requests were sent. ``tool_choice`` is ``auto``,
        ``required`` (a call first), ``none``, a tool's name, or ``json`` (calls asked for as guided JSON,
        for a server without a tool parser; used by itself after such a server refuses tool calls).
        ``confirm(call) -> bool`` is asked before each call; a declined call is reported to the model.
        """
        shape = shape or constraint(json=json, schema=schema, choice=choice, regex=regex, grammar=grammar)
        if think is not None:
            kwargs = {**self.params.get("chat_template_kwargs", {}), **params.get("chat_template_kwargs", {})}
            params["chat_template_kwargs"] = {**kwargs, "enable_thinking": think}
        body = self._sampling_body(model, params)
        notes: list[str] = []
        if shape is not None:
            body.update(shape.request_fields(self.connection.version() if shape.kind in OLD_FIELDS else None))
        if any(name in body for name in GUIDED):
            body, moved = translate_guided(body, self.connection.version())
            if moved:
                notes.append(f"{', '.join(moved)} moved into `structured_outputs`: vLLM "
                             f"{self.connection.version()} ignores the old guided_* fields.")
        turns = self.conversation.turns[:-1] if _replace_last else self.conversation.turns
        user = user_message(prompt, list(images), self.image_max_side)
        if context:
            user.parts.insert(0, Context(context))
        body["messages"] = self.conversation.messages(user, turns=turns if record else [],
                                                      send_reasoning=self.send_reasoning)
        mode = "replace" if _replace_last else ("add" if record else None)
        tool_use = None
        if tools:
            from .tools import resolve

            tool_use = ToolUse(resolve(tools), tool_choice, max_rounds, confirm)
        response = Response(self.conversation, self.connection.client, user, body, mode, shape, tool_use)
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
        """Ask the last prompt (with its images and context) again; the new answer replaces the last turn
        once it arrives.

        Until then the old turn stays, so a retry that fails leaves the history as it was.
        """
        if not self.conversation.turns:
            raise errors.ConfigError("There is no turn to retry yet.", "Send a prompt first.")
        last = self.conversation.turns[-1].user
        return self.stream(last.text, images=last.images, context=last.context, _replace_last=True, **kwargs)

    def complete(self, prompt: str, *, model: str | None = None, **params: Any) -> Response:
        """Start a completion: a base model continues ``prompt`` as written (``/v1/completions``: no
        chat template, no system prompt, no history). Iterate the :class:`Response` for the text as it
        arrives; its ``.turn`` holds the text, usage and timings. Nothing is recorded in the conversation.

        ``params`` as for :meth:`stream` (``max_tokens``, ``temperature``, ``stop``...) and the completions
        API's own, e.g. ``echo=True`` (the server sends the prompt back before the completion). Without
        ``max_tokens`` vLLM stops a completion after 16 tokens.
        """
        body = {**self._sampling_body(model, params), "prompt": prompt}
        return Response(self.conversation, self.connection.client, Message.of("user", prompt), body, None,
                        path=COMPLETIONS_PATH)

    def _sampling_body(self, model: str | None, params: dict[str, Any]) -> dict[str, Any]:
        """This chat's params with ``params`` over them, validated, and the model they go to."""
        merged, _ = validate({**self.params, **params})
        body: dict[str, Any] = {k: v for k, v in merged.items() if v is not None}
        body["model"] = self.connection.resolve_model(model or self.model)
        if "max_tokens" in body:
            self.connection.check_max_tokens(body["max_tokens"], body["model"])
        return body

    def reset(self) -> None:
        self.conversation.reset()

    def undo(self) -> Turn | None:
        return self.conversation.undo()

    def usage(self):  # -> pandas.DataFrame
        """Per-turn usage and timings as a DataFrame, with a ``total`` row."""
        from .usage import usage_frame

        return usage_frame(self.conversation.turns)
