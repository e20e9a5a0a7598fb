"""The look-alike in-process: an httpx transport, sync and async, serving the socket server's answers
without a socket (``httpx.Client(transport=t)``, ``httpx.AsyncClient(transport=t)``).

Reading an answer feels like reading it off the socket: the body arrives one HTTP chunk (SSE event)
at a time, paced like the server paces it; a cut raises ``httpx.RemoteProtocolError`` after the bytes
before it; a wait (a hang, a delay, a drip) longer than the request's read timeout sleeps that timeout
and raises ``httpx.ReadTimeout``, while with no read timeout the whole wait is slept.  A response
closed before its end, or timed out, counts as the client hanging up (``client_disconnected``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator

import httpx

from tests.loopback.app import FakeVLLM
from tests.loopback.wire import Answer, RecordedRequest, Silence, head_fields, joined_headers, paced, recorded


class LoopbackTransport(FakeVLLM, httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A vLLM 0.32 look-alike for ``httpx.Client`` and ``httpx.AsyncClient``, scripted and recorded
    like :class:`~tests.loopback.server.LoopbackServer`.  The arguments are
    :class:`~tests.loopback.app.FakeVLLM`'s; closing a client leaves the transport usable."""

    base_url = "http://vllm.loopback"
    """Any URL reaches the transport; this one reads like a server's."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _Exchange(self.answer(_recorded(request, request.read())), request, self.client_disconnected)
        for seconds in exchange.waits_before_head():
            time.sleep(seconds)
        return exchange.response()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _Exchange(self.answer(_recorded(request, await request.aread())), request, self.client_disconnected)
        for seconds in exchange.waits_before_head():
            await asyncio.sleep(seconds)
        return exchange.response()


def _recorded(request: httpx.Request, body: bytes) -> RecordedRequest:
    target = request.url.raw_path.decode("ascii")  # the path and query, as on the request line
    return recorded(request.method, target, joined_headers(request.headers.multi_items()), body)


class _Exchange:
    """One answer as a client reading it off a socket meets it, without I/O: seconds to wait and
    bytes to hand over, and the errors httpx raises."""

    def __init__(self, answer: Answer | Silence, request: httpx.Request, disconnected: threading.Event) -> None:
        self._answer = answer
        self._request = request
        self._disconnected = disconnected
        self._read_timeout: float | None = request.extensions.get("timeout", {}).get("read")

    def waits_before_head(self) -> Iterator[float]:
        if isinstance(self._answer, Silence):
            yield from self._wait(self._answer.seconds)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=self._request)
        yield from self._wait(self._answer.delay)

    def response(self) -> httpx.Response:
        assert isinstance(self._answer, Answer)  # a Silence ended in waits_before_head
        stream = _Body(self._body(self._answer), self._disconnected)
        return httpx.Response(self._answer.status, headers=head_fields(self._answer), stream=stream)

    def _body(self, answer: Answer) -> Generator[bytes | float, None, None]:
        for part in paced(answer.body):
            if isinstance(part, bytes):
                yield part
            else:
                yield from self._wait(part)
        if not answer.complete:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=self._request
            )

    def _wait(self, seconds: float) -> Iterator[float]:
        if self._read_timeout is not None and seconds > self._read_timeout:
            yield self._read_timeout
            self._disconnected.set()  # the client gives up and hangs up
            raise httpx.ReadTimeout("timed out", request=self._request)
        if math.isinf(seconds):
            raise RuntimeError("the loopback transport would wait forever: give the client a read timeout")
        if seconds > 0:
            yield seconds


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body stepping through an exchange; closed before its end, the client hung up."""

    def __init__(self, steps: Generator[bytes | float, None, None], disconnected: threading.Event) -> None:
        self._steps = steps
        self._disconnected = disconnected

    def __iter__(self) -> Iterator[bytes]:
        for step in self._steps:
            if isinstance(step, bytes):
                yield step
            else:
                time.sleep(step)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for step in self._steps:
            if isinstance(step, bytes):
                yield step
            else:
                await asyncio.sleep(step)

    def close(self) -> None:
        if inspect.getgeneratorstate(self._steps) != inspect.GEN_CLOSED:
            self._disconnected.set()
            self._steps.close()

    async def aclose(self) -> None:
        self.close()
