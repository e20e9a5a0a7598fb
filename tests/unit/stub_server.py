"""A bare HTTP server on loopback for servers the vLLM look-alike does not play (a router's or a
proxy's odd answers): each request is answered by a function of its method and path."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Answer = Callable[[str, str], "tuple[int, bytes]"]


@contextmanager
def stub_server(answer: Answer) -> Iterator[str]:
    """Serve ``answer(method, path) -> (status, body)`` (JSON when the body starts with ``{``);
    yields the server's URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._reply()

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._reply()

        def _reply(self) -> None:
            status, body = answer(self.command, self.path)
            self.send_response(status)
            if body.startswith(b"{"):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
