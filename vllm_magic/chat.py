"""The engine every view shares: a :class:`Chat` owns a conversation and streams answers into it.

    >>> chat = Chat("http://127.0.0.1:8000", temperature=0.2)
    >>> chat.ask("Say hello").text
    >>> for piece in chat.stream("And again, slowly"):
    ...     print(piece, end="")

Python code gets plain exceptions (KeyboardInterrupt stays KeyboardInterrupt); the magics and the
panel turn them into one-paragraph messages.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from . import errors
from .client import Client, redact_url
from .conversation import COMPLETE, CUT, INTERRUPTED, Conversation, Turn
from .params import GUIDED, translate_guided, validate
from .stream import Event, Finish, ReasoningDelta, TextDelta, Usage


def env_base_url() -> str | None:
    return os.environ.get("VLLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None


def env_api_key(name: str | None = None) -> str | None:
    """The key from ``name`` if given, else ``VLLM_API_KEY`` then ``OPENAI_API_KEY``."""
    names = [name] if name else ["VLLM_API_KEY", "OPENAI_API_KEY"]
    for candidate in names:
        if os.environ.get(candidate):
            return os.environ[candidate]
    return None


CHOOSE_CHAT_MODEL = (
    "Choose one with `%vllm connect URL --model NAME`, `%%chat --model NAME`, or `Chat(url, model=NAME)`."
)


class Connection:
    """A client plus the model to use, resolved lazily from ``/v1/models`` when not given.

    ``model_env`` names the environment variable with the default model and ``choose_hint`` says
    how to pick one when the server serves several: embeddings use their own (see embeddings.py).
    ``key_source`` says where the API key came from, for display (never the key itself).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        client: Client | None = None,
        model_env: str = "VLLM_MODEL",
        choose_hint: str = CHOOSE_CHAT_MODEL,
    ) -> None:
        if client is None:
            url = base_url or env_base_url()
            if not url:
                raise errors.ConfigError("No server URL is set.", hint="no_url")
            client = Client(url, api_key if api_key is not None else env_api_key(), timeout=timeout)
        self.client = client
        self.model = model or os.environ.get(model_env) or None
        self.choose_hint = choose_hint
        self.key_source = "set" if client.has_api_key else "none"
        self._models: list[dict[str, Any]] | None = None
        self._version: str | None = None

    def __repr__(self) -> str:
        return f"Connection({self.client.display_url!r}, model={self.model!r})"

    def models(self, refresh: bool = False) -> list[dict[str, Any]]:
        if self._models is None or refresh:
            self._models = self.client.models()
        return self._models

    def check(self, notes: list[str]) -> None:
        """Ask the server for its models: the key must be accepted and the model must be served.

        A server whose model list is unavailable is accepted when a model was named (with a note).
        """
        try:
            served = [m["id"] for m in self.models()]
        except (errors.NotFoundError, errors.UnexpectedResponse) as exc:
            if not self.model:
                raise
            notes.append(f"The server's model list is unavailable ({exc.cause}); using {self.model!r} as given.")
            return
        if self.model and self.model not in served:
            raise errors.ConfigError(
                f"The server at {self.client.display_url} does not serve {self.model!r}.",
                hint="unknown_model", served=", ".join(served) or "none",
            )
        self.resolve_model()

    def version(self) -> str | None:
        """vLLM's version (``/version``, asked once), or None for a server without it."""
        if self._version is None:
            try:
                self._version = self.client.version() or ""
            except errors.VLLMError:
                self._version = ""
        return self._version or None

    def resolve_model(self, requested: str | None = None) -> str:
        """The model to send: the requested one, the configured one, or the only one served."""
        if requested or self.model:
            return requested or self.model  # type: ignore[return-value]
        ids = [m["id"] for m in self.models()]
        if len(ids) == 1:
            self.model = ids[0]
            return ids[0]
        if not ids:
            raise errors.ConfigError(
                f"The server at {self.client.display_url} serves no models.", "Check how it was started."
            )
        raise errors.ConfigError(
            f"The server at {self.client.display_url} serves {len(ids)} models: {', '.join(ids)}.",
            self.choose_hint,
        )

    def max_model_len(self, model: str) -> int | None:
        """The model's context window when the model list (already fetched) says it."""
        for entry in self._models or ():
            if entry.get("id") == model:
                return entry.get("max_model_len")
        return None

    def check_max_tokens(self, max_tokens: int, model: str | None, hint: str = "max_tokens_over_limit") -> None:
        """Refuse a ``max_tokens`` the server would refuse on every request (over ``max_model_len``)."""
        limit = self.max_model_len(model) if model else None
        if limit is not None and max_tokens > limit:
            raise errors.ParamError(
                f"max_tokens={max_tokens} is more than {model}'s max_model_len of {limit}, so the server "
                "would refuse every request.",
                hint=hint, limit=limit,
            )


class _Answer:
    """What one streamed answer has brought so far: text, reasoning, finish, usage, timing."""

    __slots__ = ("pieces", "reasoning", "finish", "usage", "ttft", "started")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.reasoning: list[str] = []
        self.finish: Finish | None = None
        self.usage: Usage | None = None
        self.ttft: float | None = None
        self.started = time.perf_counter()

    def take(self, event: Event) -> str | None:
        """Record ``event``; return its text when it is a piece of the answer."""
        kind = type(event)
        if kind is TextDelta or kind is ReasoningDelta:
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.started
            (self.pieces if kind is TextDelta else self.reasoning).append(event.text)
            return event.text if kind is TextDelta else None
        if kind is Finish:
            self.finish = event
        elif kind is Usage:
            self.usage = event
        return None


class Response:
    """One answer being streamed. Iterate it for text pieces, or call :meth:`text` to wait.

    When the stream ends, :attr:`turn` holds the recorded :class:`Turn` (also when it was
    interrupted or cut after some text; then ``turn.status`` says so). A request that fails before
    any text records nothing.
    """

    def __init__(
        self,
        conversation: Conversation,
        client: Client,
        prompt: str,
        body: dict[str, Any],
        mode: str | None,
    ) -> None:
        self._conversation = conversation
        self._client = client
        self.prompt = prompt
        self.body = body
        self.model: str = body["model"]
        self._mode = mode  # "add" a turn, "replace" the last one, or None: record nothing
        self._answer: _Answer | None = None
        self.turn: Turn | None = None
        self.notes: list[str] = []
        """What the user should know about the request (e.g. fields translated for this server)."""

    @property
    def ttft(self) -> float | None:
        return self._answer.ttft if self._answer else None

    def __iter__(self) -> Iterator[str]:
        if self._answer is not None:
            yield from self._answer.pieces if self.turn else ()
            return
        answer = self._answer = _Answer()
        events = self._client.stream_chat(self.body)
        try:
            with self._recording():
                for event in events:
                    text = answer.take(event)
                    if text:
                        yield text
        finally:
            events.close()  # after recording: a second Ctrl-C here must not lose the answer

    async def __aiter__(self) -> AsyncIterator[str]:
        """The same answer streamed on the running event loop (the panel uses this).

        Cancelling the iterating task (the panel's Stop) closes the connection and keeps the
        partial answer, marked interrupted.
        """
        answer = self._answer = _Answer()
        events = self._client.astream_chat(self.body)
        try:
            with self._recording():
                async for event in events:
                    text = answer.take(event)
                    if text:
                        yield text
        finally:
            await events.aclose()

    @contextmanager
    def _recording(self) -> Iterator[None]:
        """Record the turn however the stream ends: complete, cut, or stopped (interrupted)."""
        status = INTERRUPTED
        try:
            yield
            status = COMPLETE
        except errors.StreamError:
            status = CUT
            raise
        except errors.ContextLengthError as exc:
            raise self._explain_context(exc) from None
        finally:
            self._record(status)

    def _record(self, status: str) -> None:
        answer = self._answer
        assert answer is not None
        if status != COMPLETE and not answer.pieces and not answer.reasoning:
            return  # failed before any text: nothing to keep
        self.turn = Turn(
            prompt=self.prompt,
            text="".join(answer.pieces),
            model=self.model,
            status=status,
            finish_reason=answer.finish.reason if answer.finish else None,
            prompt_tokens=answer.usage.prompt_tokens if answer.usage else None,
            completion_tokens=answer.usage.completion_tokens if answer.usage else None,
            ttft=answer.ttft,
            seconds=time.perf_counter() - answer.started,
            reasoning="".join(answer.reasoning),
            params={k: v for k, v in self.body.items() if k not in ("model", "messages", "stream", "stream_options")},
        )
        if self._mode == "add":
            self._conversation.add(self.turn)
        elif self._mode == "replace":
            self._conversation.replace_last(self.turn)

    def _explain_context(self, error: errors.ContextLengthError) -> errors.ContextLengthError:
        """Add the exact size of the conversation (vLLM's ``/tokenize``) to a context error."""
        try:
            counted = self._client.tokenize(self.model, self.body["messages"])
        except errors.VLLMError:
            return error
        return errors.ContextLengthError(
            f"The conversation holds {counted['count']} tokens with this prompt "
            f"({len(self.body['messages'])} messages), more than {self.model}'s max_model_len of {counted['max_model_len']}. "
            f"The server said: {error.server_message}",
            error.fix,
            status=error.status,
            server_message=error.server_message,
        )

    def text(self) -> str:
        """Consume the stream and return the whole answer."""
        for _ in self:
            pass
        return self.turn.text if self.turn else ""


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
        connection: Connection | None = None,
        conversation: Conversation | None = None,
        **params: Any,
    ) -> None:
        if connection is None:
            connection = Connection(base_url, model, api_key=api_key, timeout=timeout)
        self.connection = connection
        self.conversation = conversation if conversation is not None else Conversation(system=system)
        self.params, _ = validate(params)
        self.model: str | None = None
        """This conversation's own model; None: the connection's."""

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
        _replace_last: bool = False,
        **params: Any,
    ) -> Response:
        """Start an answer; iterate the returned :class:`Response` for its text as it arrives.

        ``record=False`` sends the prompt alone (system prompt kept, no history) and records nothing.
        """
        merged, _ = validate({**self.params, **params})
        body: dict[str, Any] = {k: v for k, v in merged.items() if v is not None}
        body["model"] = self.connection.resolve_model(model or self.model)
        if "max_tokens" in body:
            self.connection.check_max_tokens(body["max_tokens"], body["model"])
        notes: list[str] = []
        if any(name in body for name in GUIDED):
            body, moved = translate_guided(body, self.connection.version())
            if moved:
                notes.append(f"{', '.join(moved)} moved into `structured_outputs`: vLLM "
                             f"{self.connection.version()} ignores the old guided_* fields.")
        turns = self.conversation.turns[:-1] if _replace_last else self.conversation.turns
        body["messages"] = self.conversation.messages(prompt, turns=turns if record else [])
        mode = "replace" if _replace_last else ("add" if record else None)
        response = Response(self.conversation, self.connection.client, prompt, body, mode)
        response.notes = notes
        return response

    def ask(self, prompt: str, **kwargs: Any) -> Turn:
        """Send ``prompt`` and wait for the whole answer; returns the recorded :class:`Turn`."""
        response = self.stream(prompt, **kwargs)
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
