"""The look-alike on a real socket: 127.0.0.1, a free port, HTTP/1.1 keep-alive, one thread per
connection, answers written as raw bytes.

Why not a framework: the fast suite needs byte-exact fidelity to the recorded responses (header order
and casing, ``content-length``, one HTTP chunk per server-sent event, exactly like uvicorn) and it
must push 20,000+ SSE chunks a second to a single client.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from tests.loopback.app import FakeVLLM
from tests.loopback.wire import (
    END_OF_CHUNKS, Answer, RecordedRequest, Silence, chunk, joined_headers, paced, recorded, render_head,
)


class LoopbackServer(FakeVLLM):
    """A vLLM 0.32 look-alike on 127.0.0.1 (a free port), served from a background thread; use it as
    a context manager.  The arguments are :class:`~tests.loopback.app.FakeVLLM`'s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept_loop, name="loopback-accept", daemon=True)
        self.port: int = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self._acceptor.start()
        return self

    def close(self) -> None:
        """Stop accepting, cut every open connection (waking stalled replies) and join the threads."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake_writer.send(b"x")
        if self._acceptor.is_alive():
            self._acceptor.join()
        with self._lock:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept_loop(self) -> None:
        poll = select.poll()
        poll.register(self._listener, select.POLLIN)
        poll.register(self._wake_reader, select.POLLIN)
        while True:
            poll.poll()
            if self._stopping.is_set():
                return
            sock, _ = self._listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(sock,), name="loopback-conn", daemon=True)
            with self._lock:
                self._connections.add(sock)
                self._threads.add(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        connection = _Connection(sock, self._stopping, self.client_disconnected)
        reader = _RequestReader(sock)
        try:
            while (received := reader.next()) is not None:
                request, keep_alive = received
                if not (connection.write(self.answer(request)) and keep_alive):
                    break
        except (OSError, ValueError):
            pass  # the peer reset the connection, sent a bad request, or close() shut it down
        finally:
            with self._lock:
                self._connections.discard(sock)
                self._threads.discard(threading.current_thread())
            sock.close()


class _Connection:
    """An accepted socket plus what writing an answer needs to notice a vanished client or a
    stopping server."""

    def __init__(self, sock: socket.socket, stopping: threading.Event, disconnected: threading.Event) -> None:
        self._sock = sock
        self._stopping = stopping
        self._disconnected = disconnected
        self._poll = select.poll()  # unlike select(), not limited to descriptors below 1024
        self._poll.register(sock, select.POLLIN)

    def write(self, answer: Answer | Silence) -> bool:
        """Write the answer; True when the connection can serve another request."""
        if isinstance(answer, Silence):
            self._pause(answer.seconds)
            return False
        if not self._pause(answer.delay):
            return False
        frame = chunk if answer.chunked else bytes
        # Bytes due together go out in one write: the client shares the GIL with this thread, and
        # Python work interleaved with its reads would halve the chunk rate.
        pending = [render_head(answer)]
        for part in paced(answer.body):
            if isinstance(part, bytes):
                pending.append(frame(part))
                continue
            if not (self._send(b"".join(pending)) and self._pause(part)):
                return False
            pending = []
        if answer.complete and answer.chunked:
            pending.append(END_OF_CHUNKS)
        return self._send(b"".join(pending)) and answer.complete

    def _send(self, data: bytes) -> bool:
        """Send everything; False (and the disconnect recorded) when the client is gone."""
        try:
            self._sock.sendall(data)
        except OSError:
            self._lost()
            return False
        return True

    def _pause(self, seconds: float) -> bool:
        """Wait while watching the socket, so a client hanging up mid-reply is seen at once.

        False when the client went away or the server is stopping.
        """
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            timeout = None if math.isinf(remaining) else remaining
            if not self._poll.poll(None if timeout is None else timeout * 1000):
                continue
            try:
                pending = self._sock.recv(1, socket.MSG_PEEK)
            except OSError:
                pending = b""
            if not pending:
                self._lost()
                return False
            self._stopping.wait(timeout)  # a pipelined request is waiting: it is no hang-up
        return False

    def _lost(self) -> None:
        if not self._stopping.is_set():
            self._disconnected.set()


class _RequestReader:
    """Parses HTTP/1.1 requests off one keep-alive connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> bool:
        data = self._sock.recv(1 << 16)
        self._buffer += data
        return bool(data)

    def _take_line(self) -> bytes | None:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if not self._fill():
                return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _take(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if not self._fill():
                return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def next(self) -> tuple[RecordedRequest, bool] | None:
        """The next request and whether the client allows keep-alive; None at EOF or garbage."""
        request_line = self._take_line()
        if not request_line:
            return None
        try:
            method, target, version = request_line.decode("latin-1").split(" ")
        except ValueError:
            return None
        fields: list[tuple[str, str]] = []
        while line := self._take_line():
            name, _, value = line.decode("latin-1").partition(":")
            fields.append((name, value))
        if line is None:
            return None
        headers = joined_headers(fields)
        body = self._read_body(headers)
        if body is None:
            return None
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        return recorded(method, target, headers, body), keep_alive

    def _read_body(self, headers: Mapping[str, str]) -> bytes | None:
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            return self._take(int(headers.get("content-length", "0")))
        body = bytearray()
        while (size_line := self._take_line()) is not None:
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while self._take_line():  # skip optional trailers up to the blank line
                    pass
                return bytes(body)
            chunk_data = self._take(size + 2)
            if chunk_data is None:
                return None
            body += chunk_data[:-2]
        return None
