"""The vLLM look-alike without I/O: what it serves, its scripts, the requests it saw, and the routing of
one request to its endpoint."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from tests.loopback import chat, completions, embeddings, info, tokenization
from tests.loopback.errors import INTERNAL_SERVER_ERROR, NOT_FOUND, UNAUTHORIZED, method_not_allowed
from tests.loopback.script import ScriptedReply, StreamReply, is_plain_cut
from tests.loopback.wire import Answer, RecordedRequest, Silence

Endpoint = Callable[["FakeVLLM", RecordedRequest], "Answer | Silence"]


PROFILES = ("vllm", "llama.cpp", "openai")

class FakeVLLM:
    """A vLLM 0.32 server's behaviour, shared by :class:`~tests.loopback.server.LoopbackServer` (sockets)
    and :class:`~tests.loopback.transport.LoopbackTransport` (in-process httpx).

    ``models`` are chat models sharing ``max_model_len``; ``embedding_models`` are pooling models
    (``embedding_max_model_len``, ``embedding_dims``).  Endpoints a real server of that kind lacks
    answer 404, like vLLM.  With ``api_key`` set, ``/v1/*`` needs ``Authorization: Bearer <key>``
    (vLLM leaves ``/health``, ``/version`` and ``/tokenize`` open).  ``default_max_tokens`` is what a
    chat request without ``max_tokens`` generates; None means vLLM's own default, the rest of the
    context window.

    ``reasoning_parser`` plays ``vllm serve --reasoning-parser NAME`` (any name: the look-alike splits
    thought from answer like vLLM's ``<think>`` parsers): usage then always carries
    ``completion_tokens_details.reasoning_tokens``, and scripted replies may think.
    ``tool_call_parser`` plays ``--enable-auto-tool-choice --tool-call-parser NAME``: without it a
    request with tools and ``tool_choice`` "auto" or "required" is refused with vLLM's 400, as the
    real server does; scripted replies may call tools (``Reply.tool_calls``) either way.
    ``vision_models`` take images (``image_url`` parts, :data:`~tests.loopback.model.IMAGE_TOKENS` prompt
    tokens each); the others refuse them like a text-only model (see :mod:`tests.loopback.images`).
    ``vllm_version`` is what ``/version`` answers (an older vLLM wants the pre-0.12 ``guided_*`` fields).
    ``chat_delay`` is added before every chat answer, like a busy GPU's latency.

    ``profile`` plays another kind of server: ``"llama.cpp"`` (llama.cpp's server: no ``/health``,
    ``/version``, ``/tokenize`` or ``/metrics``, no ``max_model_len``, no usage chunk even when asked,
    unknown model names answered anyway, ``dimensions`` ignored) or ``"openai"`` (the OpenAI API
    without vLLM's extra endpoints and model fields, nor ``/v1/completions``, which it keeps for models
    of its own). The default ``"vllm"`` also serves ``/metrics``.

    For embeddings, ``embedding_encodings`` are the ``encoding_format`` values accepted (narrow it to
    ``("float",)`` to play a server without base64), and ``canned_embeddings`` answers every input
    with one precomputed vector, so a benchmark measures the client rather than this server.
    """

    def __init__(
        self,
        models: Sequence[str] = ("tiny-chat",),
        api_key: str | None = None,
        max_model_len: int = 512,
        *,
        embedding_models: Sequence[str] = (),
        embedding_max_model_len: int = 256,
        embedding_dims: int = 384,
        embedding_encodings: Sequence[str] = embeddings.ENCODING_FORMATS,
        canned_embeddings: bool = False,
        default_max_tokens: int | None = 16,
        reasoning_parser: str | None = None,
        tool_call_parser: str | None = None,
        vision_models: Sequence[str] = (),
        vllm_version: str = info.VLLM_VERSION,
        chat_delay: float = 0.0,
        profile: str = "vllm",
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        self.profile = profile
        self.models = tuple(models)
        self.embedding_models = tuple(embedding_models)
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.embedding_max_model_len = embedding_max_model_len
        self.embedding_dims = embedding_dims
        self.embedding_encodings = tuple(embedding_encodings)
        self.canned_embeddings = canned_embeddings
        self.default_max_tokens = default_max_tokens
        self.reasoning_parser = reasoning_parser
        self.tool_call_parser = tool_call_parser
        self.vision_models = tuple(vision_models)
        self.vllm_version = vllm_version
        self.chat_delay = chat_delay
        self.requests: list[RecordedRequest] = []
        """Every request received, in arrival order (recorded before it is answered)."""
        self.client_disconnected = threading.Event()
        """Set when a client hung up while a reply was still being written or awaited."""
        self.chat_script: deque[ScriptedReply] = deque()
        self.chat_rule: Callable[[dict[str, Any]], ScriptedReply | None] | None = None
        self.embedding_script: deque[ScriptedReply] = deque()
        self._arrival = threading.Condition()
        routes: dict[str, tuple[str, Endpoint]] = {"/v1/models": ("GET", info.models)}
        if profile == "vllm":
            routes.update({
                "/health": ("GET", info.health),
                "/version": ("GET", info.version),
                "/metrics": ("GET", info.metrics),
                "/tokenize": ("POST", tokenization.tokenize),
            })
        if self.models:
            routes["/v1/chat/completions"] = ("POST", chat.chat)
        if self.models and profile != "openai":  # the OpenAI API has no completions for its chat models
            routes["/v1/completions"] = ("POST", completions.completions)
        if self.embedding_models:
            routes["/v1/embeddings"] = ("POST", embeddings.embeddings)
        self._routes = routes

    # -- scripting --------------------------------------------------------------------------

    def push(self, reply: ScriptedReply) -> None:
        """Script the answer to the next ``/v1/chat/completions`` (or ``/v1/completions``) request not yet
        scripted (FIFO)."""
        if isinstance(reply, StreamReply) and reply.repeat and reply.interval <= 0:
            raise ValueError("an endless stream needs a delay between chunks")
        if isinstance(reply, StreamReply) and reply.reasoning and not self.reasoning_parser:
            raise ValueError("only a server with a reasoning_parser sends reasoning")
        self.chat_script.append(reply)

    def script_by(self, rule: Callable[[dict[str, Any]], ScriptedReply | None] | None) -> None:
        """Script chat answers by what is asked, for concurrent requests whose order ``push`` cannot
        know: ``rule(body)`` (the request's JSON) returns the reply, or None for the default answer.
        Replies pushed with ``push`` come first; None removes the rule."""
        self.chat_rule = rule

    def push_embedding(self, reply: ScriptedReply) -> None:
        """Script the next ``/v1/embeddings`` answer: a status, a hang, or a cut (half the body)."""
        if isinstance(reply, StreamReply) and not is_plain_cut(reply):
            raise ValueError("embeddings can only be scripted with Reply.status, Reply.hang or Reply.cut_after")
        self.embedding_script.append(reply)

    def wait_for_requests(self, count: int, path: str | None = None, timeout: float = 10.0) -> bool:
        """Block until ``count`` requests (to ``path``, when given) have arrived; False on timeout."""
        def arrived() -> bool:
            return sum(path is None or r.path == path for r in self.requests) >= count

        with self._arrival:
            return self._arrival.wait_for(arrived, timeout)

    # -- answering --------------------------------------------------------------------------

    def answer(self, request: RecordedRequest) -> Answer | Silence:
        """Record the request, then answer it as vLLM would (or as the script says)."""
        with self._arrival:
            self.requests.append(request)
            self._arrival.notify_all()
        if self.api_key is not None and request.path.startswith("/v1") and request.method != "OPTIONS":
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return UNAUTHORIZED
        route = self._routes.get(request.path)
        if route is None:
            return NOT_FOUND
        method, endpoint = route
        if request.method != method:
            return method_not_allowed(method)
        try:
            return endpoint(self, request)
        except (TypeError, ValueError, AttributeError, KeyError):
            # Requests vLLM would reject in pydantic validation (wrong types): Starlette's last resort.
            return INTERNAL_SERVER_ERROR
