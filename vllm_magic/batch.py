"""A batch job's own connections, which it can cut at once (Ctrl-C, or a batch that failed for good).

Closing an httpx client leaves a thread blocked reading an answer waiting until the server replies;
shutting the sockets down ends those reads at once and tells the server to drop the requests (vLLM
aborts a request whose client went away). The job's connections are a pool of their own, so cutting
them leaves the notebook's other requests alone.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from .client import Client


class JobConnections:
    """A pool of connections for one job's requests; :meth:`abort` cuts every one of them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._pool = client.new_pool()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._aborted = False

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/embeddings`` on this job's connections (threads may call it at once)."""
        return self.client.embeddings(body, pool=self._pool, trace=self._track)

    def abort(self) -> None:
        """Cut the connections now (requests in flight fail at once), then close the pool."""
        with self._lock:
            self._aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)
        self.close()

    def close(self) -> None:
        self._pool.close()

    def _track(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` hook: note the socket of each new connection, for :meth:`abort`."""
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._sockets.add(sock)
            aborted = self._aborted
        if aborted:  # connected while abort() ran
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed
