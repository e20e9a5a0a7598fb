"""HTTP client for vLLM's OpenAI-compatible API: auth, bounded retries, error mapping, streaming.

The only module that speaks HTTP. Everything above it gets Python values, :mod:`.stream` events
and :class:`~vllm_magic.errors.VLLMError` subclasses with a human message.
"""

from __future__ import annotations

import json
import os
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from . import errors
from .stream import ChatStream, Event

if TYPE_CHECKING:
    import asyncio

RETRY_STATUSES = frozenset({429, 503})
_PROMETHEUS_SAMPLE = re.compile(r"^(vllm:[\w:]+)(?:\{([^}]*)\})?\s+(\S+)", re.MULTILINE)
_PROMETHEUS_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"  # a base model continues a prompt: no chat template, no messages


class Pacing:
    """When a request may go: each attempt runs inside :meth:`turn`, and a 429 or 503 that will be
    retried calls :meth:`hold` with the delay before the next attempt.

    A request on its own sleeps the delay. A batch job shares one across its requests
    (:class:`vllm_magic.batch.SharedBackoff`), so a rate-limit storm slows the whole job instead
    of multiplying its requests.
    """

    def turn(self) -> AbstractContextManager[object]:
        return nullcontext()

    def hold(self, seconds: float) -> None:
        time.sleep(seconds)


ALONE = Pacing()


def normalize_base_url(url: str) -> str:
    """``host:8000``, ``http://host:8000/``, ``http://host:8000/v1`` -> ``http://host:8000``.

    The API root without ``/v1``: vLLM serves ``/health``, ``/version`` and ``/tokenize`` there.
    """
    url = url.strip()
    if not url:
        raise errors.ConfigError("The server URL is empty.", hint="empty_url")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.ConfigError(
            f"{redact_url(url)!r} is not an http(s) URL.", hint="bad_url",
        )
    path = re.sub(r"(/+v1)?/*$", "", re.sub(r"/+$", "", parts.path))
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def redact_url(url: str) -> str:
    """The URL with any ``user:password@`` replaced, safe to print."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class Client:
    """A connection to one server. Thread-safe for requests; holds one httpx connection pool.

    ``api_key`` is kept in a private attribute and in the ``Authorization`` header only; it never
    appears in ``repr``, messages or saved files. ``headers`` go with every request (a gateway's
    organisation or routing headers); their values are secrets too, only their names are shown.
    ``credentials`` is for tokens that expire: a function returning a key or a dict of headers,
    called now and again once after a request is refused with 401 (then the request is resent).
    ``transport`` (the test seam) serves both the
    sync and the async httpx clients: an object that is an ``httpx.BaseTransport`` and an
    ``httpx.AsyncBaseTransport``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        credentials: Callable[[], str | Mapping[str, str]] | None = None,
        transport: Any = None,
    ) -> None:
        self.root_url = normalize_base_url(base_url)
        self.base_url = self.root_url + "/v1"
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.__api_key = api_key or None
        self._credentials = credentials
        self._ahttp: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._transport = transport
        self.header_names = tuple(headers or ())
        self._secret_headers = {"authorization", *(name.lower() for name in self.header_names)}
        headers = {**(headers or {}), **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._tls = httpx.create_ssl_context()  # made once (~20 ms): batch jobs' pools share it
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=True,
            verify=self._tls,
        )
        if credentials is not None:
            self._authorize()

    @property
    def has_api_key(self) -> bool:
        return self.__api_key is not None or self._credentials is not None

    def _authorize(self) -> dict[str, str]:
        """Ask the credentials (again) and use what they give from now on; returns the headers."""
        given = self._credentials()  # type: ignore[misc]
        headers = {"Authorization": f"Bearer {given}"} if isinstance(given, str) else dict(given)
        self._secret_headers.update(name.lower() for name in headers)
        for http in (self._http, *self._ahttp.values()):
            http.headers.update(headers)
        return headers

    def is_secret(self, text: str) -> bool:
        """Whether ``text`` would give a credential away: it equals the value of a header sent with every
        request (the API key, a gateway's headers, what ``credentials`` gave) or holds the API key. Says
        only yes or no, so the notebook's context can be filtered without the secrets leaving the client."""
        values = {value for name, value in self._http.headers.items() if name.lower() in self._secret_headers}
        key = self._http.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return bool(text) and (text in values or bool(key) and key in text)

    def _reauthorized(self, request: httpx.Request, response: httpx.Response) -> bool:
        """After a 401, fresh credentials once per request: True when the request should go again."""
        if response.status_code != 401 or self._credentials is None or request.extensions.get("reauthorized"):
            return False
        request.extensions["reauthorized"] = True
        request.headers.update(self._authorize())
        return True

    @property
    def display_url(self) -> str:
        return redact_url(self.base_url)

    def __repr__(self) -> str:
        key = "set" if self.has_api_key else "none"
        extra = f", headers={list(self.header_names)}" if self.header_names else ""
        return f"Client({self.display_url!r}, api_key=<{key}>{extra})"

    def close(self) -> None:
        self._http.close()
        self._ahttp.clear()  # their connections close when collected; closing them needs their loops

    # -- endpoints -------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the served models with ``max_model_len``, ``root``, ``parent``..."""
        body = self.request("GET", "/v1/models").json()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise errors.UnexpectedResponse(
                f"The server at {self.display_url} answered /v1/models in an unexpected shape "
                f"({str(body)[:120]}).",
                "Name the model to use; everything else works without the list.",
            )
        return data

    def health(self) -> bool:
        """``GET /health``: True when the engine is up."""
        return self.request("GET", "/health", retry=False).status_code == 200

    def version(self) -> str | None:
        """``GET /version`` (vLLM only; other servers may not have it)."""
        try:
            return self.request("GET", "/version", retry=False).json().get("version")
        except errors.NotFoundError:
            return None

    def metrics(self, replica: str | None = None) -> list[tuple[str, dict[str, str], float]]:
        """vLLM's ``/metrics`` (Prometheus text) as ``(name, labels, value)``, its own ``vllm:`` ones;
        of ``replica`` (a URL from :meth:`replicas`) when given, asked with the same key and headers."""
        url = (normalize_base_url(replica) if replica else self.root_url) + "/metrics"
        response = self._send(self._http.build_request("GET", url), stream=False, model=None, retry=False)
        return vllm_samples(response.text)

    def replicas(self) -> list[str] | None:
        """The servers behind a vLLM router (its ``GET /workers``), or None when this is no router.

        A router forwards ``/metrics`` to one replica of its choosing, so load is read per replica.
        """
        try:
            body = self.request("GET", "/workers", retry=False).json()
        except (errors.VLLMError, ValueError):
            return None
        workers = body.get("workers") if isinstance(body, dict) else None
        if not isinstance(workers, list):
            return None
        return [w["url"] for w in workers if isinstance(w, dict) and isinstance(w.get("url"), str)] or None

    def tokenize(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """vLLM's ``/tokenize`` with the chat template applied: exact ``count`` and ``max_model_len``.

        A diagnostic, so never retried: it must not delay the error or the view it serves.
        """
        return self.request("POST", "/tokenize", json=_tokenize_body(model, messages), retry=False).json()

    async def atokenize(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """:meth:`tokenize` on the running event loop (the panel's context gauge)."""
        http = self._async_http()
        request = http.build_request("POST", self._url("/tokenize"), json=_tokenize_body(model, messages))
        response = await self._asend(http, request, model=model, retry=False)
        await response.aread()
        return response.json()

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/embeddings``."""
        return self.post("/v1/embeddings", body)

    def post(self, path: str, body: dict[str, Any], *, pool: JobPool | None = None,
             trace: Callable[[str, dict[str, Any]], None] | None = None, pacing: Pacing = ALONE) -> Any:
        """``POST path`` with a JSON body, not streamed: the decoded JSON answer. A batch job sends
        on ``pool`` (its own, from :meth:`new_pool`) with httpcore's ``trace`` hook and its shared
        ``pacing``."""
        if pool is not None:
            request = pool.request(self._url(path), body, trace)
        else:
            request = self._http.build_request("POST", self._url(path), json=body)
        response = self._send(request, stream=False, model=body.get("model"), http=pool, pacing=pacing)
        try:
            return json.loads(response.content)
        except ValueError:
            raise errors.UnexpectedResponse(
                f"The server at {self.display_url} answered {path} with something that is not JSON "
                f"({response.text[:120]!r}).",
                "Check that the URL points at a vLLM or OpenAI-compatible server.",
            ) from None

    def new_pool(self, connections: int = 100) -> JobPool:
        """Connections of a batch job's own, keeping up to ``connections`` open (its concurrency)."""
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return JobPool(httpx.Client(headers=self._http.headers, timeout=self._http.timeout, transport=self._transport,
                                    follow_redirects=True, limits=limits, verify=self._tls), self.root_url,
                       self._http.headers)

    def stream_chat(self, body: dict[str, Any], path: str = CHAT_PATH) -> Iterator[Event]:
        """Stream ``path`` (chat, or :data:`COMPLETIONS_PATH` for a completion); yields events until
        the answer ends.

        Closing the iterator (or an exception such as KeyboardInterrupt inside it) closes the
        response and its connection at once, so vLLM aborts the request and frees its slot.
        """
        request = self._http.build_request("POST", self._url(path), json=_streaming(body))
        response = self._send(request, stream=True, model=body.get("model"))
        stream = ChatStream()
        try:
            for raw in response.iter_raw() if _identity(response) else response.iter_bytes():
                yield from stream.feed(raw)
                if stream.done:
                    break
        except httpx.TransportError as exc:
            raise self._broken(exc) from None
        finally:
            response.close()
        if not stream.complete:
            raise self._stream_cut(stream.why_incomplete)

    async def astream_chat(self, body: dict[str, Any], path: str = CHAT_PATH) -> AsyncIterator[Event]:
        """:meth:`stream_chat` on the running event loop, so a kernel stays responsive meanwhile.

        Cancelling the task that iterates it closes the connection, as closing does for the sync
        stream.
        """
        http = self._async_http()
        request = http.build_request("POST", self._url(path), json=_streaming(body))
        response = await self._asend(http, request, model=body.get("model"))
        stream = ChatStream()
        try:
            async for raw in response.aiter_raw() if _identity(response) else response.aiter_bytes():
                for event in stream.feed(raw):
                    yield event
                if stream.done:
                    break
        except httpx.TransportError as exc:
            raise self._broken(exc) from None
        finally:
            await response.aclose()
        if not stream.complete:
            raise self._stream_cut(stream.why_incomplete)

    # -- plumbing --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.root_url + path

    def request(
        self, method: str, path: str, *, json: Any = None, retry: bool = True
    ) -> httpx.Response:
        request = self._http.build_request(method, self._url(path), json=json)
        model = json.get("model") if isinstance(json, dict) else None
        return self._send(request, stream=False, model=model, retry=retry)

    def _send(
        self, request: httpx.Request, *, stream: bool, model: str | None, retry: bool = True,
        http: httpx.Client | JobPool | None = None, pacing: Pacing = ALONE,
    ) -> httpx.Response:
        """Send with bounded retries on 429/503 (always before any token), map failures to errors."""
        attempts = 1 + (self.max_retries if retry else 0)
        attempt = 0
        while True:
            with pacing.turn():
                try:
                    response = (http or self._http).send(request, stream=stream)
                except httpx.TransportError as exc:
                    raise self._unreachable(exc) from None
                if response.status_code < 400:
                    return response
                response.read()  # an error body is small; the message is in it
                if self._reauthorized(request, response):
                    response.close()
                    continue
                delay = self._retry_or_raise(response, attempt, attempt + 1 < attempts, model)
                response.close()
                pacing.hold(delay)
                attempt += 1

    async def _asend(self, http: httpx.AsyncClient, request: httpx.Request, *, model: str | None,
                     retry: bool = True) -> httpx.Response:
        """:meth:`_send` for the async client (always streaming)."""
        import asyncio  # here, not at the top: `import vllm_magic` stays light
        attempts = 1 + (self.max_retries if retry else 0)
        attempt = 0
        while True:
            try:
                response = await http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            if response.status_code < 400:
                return response
            await response.aread()
            if self._reauthorized(request, response):
                await response.aclose()
                continue
            delay = self._retry_or_raise(response, attempt, attempt + 1 < attempts, model)
            await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    def _async_http(self) -> httpx.AsyncClient:
        """The async client of the running event loop (its connections belong to that loop).

        A kernel may run cells and widget callbacks on different loops, so there is one per loop.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        if loop not in self._ahttp:
            self._ahttp[loop] = httpx.AsyncClient(headers=self._http.headers, timeout=self._http.timeout,
                                                  transport=self._transport, follow_redirects=True)
        return self._ahttp[loop]

    def _retry_or_raise(self, response: httpx.Response, attempt: int, may_retry: bool, model: str | None) -> float:
        """The delay before retrying ``response``, or raise its error when it is not retried."""
        if may_retry and response.status_code in RETRY_STATUSES:
            return self._retry_delay(response, attempt)
        raise errors.from_response(response, model=model, where=f"The server at {self.display_url}")

    def _unreachable(self, exc: httpx.TransportError) -> errors.VLLMError:
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout_error(exc)
        return self._connect_error(exc)

    def _broken(self, exc: httpx.TransportError) -> errors.VLLMError:
        """A transport failure after the answer started: a timeout or a cut stream."""
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout_error(exc)
        return self._stream_cut(str(exc) or type(exc).__name__)

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        retry_after = response.headers.get("retry-after", "")
        if retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), 30.0)
        jitter = 1 + os.urandom(1)[0] / 1024  # up to +25%, so clients retrying together spread out
        return self.retry_backoff * (2**attempt) * jitter

    def _connect_error(self, exc: httpx.TransportError) -> errors.VLLMError:
        reason = str(exc) or type(exc).__name__
        if re.search(r"Name or service not known|nodename nor servname|getaddrinfo|Errno -[235]", reason):
            host = urlsplit(self.root_url).hostname
            return errors.ConnectError(
                f"Could not resolve the host name {host!r} of {self.display_url} ({reason}).", hint="dns",
            )
        return errors.ConnectError(f"Could not connect to {self.display_url} ({reason}).", hint="unreachable")

    def _timeout_error(self, exc: httpx.TimeoutException) -> errors.VLLMError:
        what = "connect to" if isinstance(exc, httpx.ConnectTimeout) else "hear back from"
        return errors.TimeoutError(f"Timed out after {self.timeout:g} s trying to {what} {self.display_url}.",
                                   hint="timeout")

    def _stream_cut(self, reason: str) -> errors.StreamError:
        return errors.StreamError(f"The answer stream from {self.display_url} was cut ({reason}).", hint="stream_cut")


class JobPool:
    """A batch job's connections: an httpx client configured like the notebook's (key, timeout,
    proxies, the test seam), whose requests go straight to the transport it picked for the server.

    A job is thousands of small JSON POSTs to one server, and httpx.Client's per-request cookie jar,
    auth flow and redirect handling cost as much CPU as the HTTP itself (measured: 490 vs 250 us a
    request); the job needs none of them.
    """

    def __init__(self, http: httpx.Client, root_url: str, headers: httpx.Headers) -> None:
        self._http = http
        self._transport = http._transport_for_url(httpx.URL(root_url))
        self._headers = headers
        """The client's own, so credentials renewed after a 401 reach the job's next requests."""
        self._timeout = http.timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}  # parsed once: parsing costs more than building the request

    def request(self, url: str, body: dict[str, Any],
                trace: Callable[[str, dict[str, Any]], None] | None = None) -> httpx.Request:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        extensions: dict[str, Any] = {"timeout": self._timeout}
        if trace is not None:
            extensions["trace"] = trace
        parsed = self._urls.get(url) or self._urls.setdefault(url, httpx.URL(url))
        headers = [*self._headers.raw, (b"Content-Type", b"application/json")]
        return httpx.Request("POST", parsed, headers=headers, content=content, extensions=extensions)

    def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        response = self._transport.handle_request(request)
        response.request = request
        if not stream:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response

    def close(self) -> None:
        self._http.close()


def vllm_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The ``vllm:`` samples of a Prometheus text page as ``(name, labels, value)``."""
    samples = []
    for match in _PROMETHEUS_SAMPLE.finditer(text):
        name, labels, value = match.groups()
        try:
            samples.append((name, dict(_PROMETHEUS_LABEL.findall(labels or "")), float(value)))
        except ValueError:
            continue
    return samples


def _tokenize_body(model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": model, "messages": messages, "add_generation_prompt": True}


def _streaming(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


def _identity(response: httpx.Response) -> bool:
    """Uncompressed: read raw, skipping httpx's per-chunk decoder layer."""
    return response.headers.get("content-encoding", "identity") == "identity"
