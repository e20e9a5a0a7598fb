"""A connection: the client for one server plus the model to use, and where settings come from."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from . import errors
from .client import Client


def env_base_url() -> str | None:
    return os.environ.get("VLLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None


def env_api_key(name: str | None = None) -> str | None:
    """The key from ``name`` if given, else ``VLLM_API_KEY`` then ``OPENAI_API_KEY``."""
    names = [name] if name else ["VLLM_API_KEY", "OPENAI_API_KEY"]
    for candidate in names:
        if os.environ.get(candidate):
            return os.environ[candidate]
    return None


class Connection:
    """A client plus the model to use, resolved lazily from ``/v1/models`` when not given.

    ``model_env`` names the environment variable with the default model and ``choose_hint`` is the
    hint of the error when the server serves several: embeddings use their own (see embeddings.py).
    ``key_source`` says where the API key came from, for display (never the key itself).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        credentials: Callable[[], str | dict[str, str]] | None = None,
        client: Client | None = None,
        model_env: str = "VLLM_MODEL",
        choose_hint: str = "choose_model",
    ) -> None:
        if client is None:
            url = base_url or env_base_url()
            if not url:
                raise errors.ConfigError("No server URL is set.", hint="no_url")
            key = api_key if api_key is not None or credentials else env_api_key()
            client = Client(url, key, timeout=timeout, headers=headers, credentials=credentials)
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
        except (errors.BadRequestError, errors.ServerError) as exc:
            raise self._refused_listing(exc) from None
        if self.model and self.model not in served:
            raise errors.ConfigError(
                f"The server at {self.client.display_url} does not serve {self.model!r}.",
                hint="unknown_model", served=", ".join(served) or "none",
            )
        self.resolve_model()

    def _refused_listing(self, exc: errors.VLLMError) -> errors.AuthError:
        """``GET /v1/models`` carries nothing but the key and headers, so when the server refuses it
        with another status than 401, the key is still the likely cause."""
        sent = "the key" if self.client.has_api_key else "no key (none was set)"
        if self.client.header_names:
            sent += " and the headers"
        return errors.AuthError(
            f"The server at {self.client.display_url} refused to list its models (HTTP {exc.status}: "
            f"{exc.server_message}). That request carries nothing but {sent}, so the key is the likely cause: "
            "LiteLLM's proxy answers a wrong key with HTTP 400 \"No connected db.\" and a missing one with "
            "HTTP 500.",
            hint="auth", status=exc.status, server_message=exc.server_message,
        )

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
            raise errors.ConfigError(f"The server at {self.client.display_url} serves no models.",
                                     "Check how it was started.")
        raise errors.ConfigError(
            f"The server at {self.client.display_url} serves {len(ids)} models: {', '.join(ids)}.",
            hint=self.choose_hint,
        )

    def max_model_len(self, model: str) -> int | None:
        """The model's context window when the model list (already fetched) says it."""
        for entry in self._models or ():
            if entry.get("id") == model:
                return entry.get("max_model_len") or entry.get("max_input_tokens")  # LiteLLM says the latter
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
