"""The ipywidgets chat panel in real JupyterLab (Chromium), on the real vLLM random tiny model.

``tiny-random`` (``vllm_random``) never ends an answer by itself: max_tokens decides each answer's
length, and a long one is still streaming when Stop is clicked. It writes 480 tokens in about a
second here, quicker than a click lands, so the kernel reaches it through a proxy that passes the
answers on at a remote server's pace.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import pytest
from lab import LabServer, assert_no_widget_errors, open_notebook, outputs, run_all, write_notebook
from playwright.sync_api import Page, expect

CELLS = [
    "%load_ext vllm_magic\n%vllm connect",
    "%vllm panel",
    "%%chat --max-tokens 8 --temperature 0\nhello from a cell",
]


class DripProxy:
    """A loopback TCP proxy to ``port`` that passes the server's bytes on at ``rate`` bytes/s
    (about 70 tokens/s of vLLM's stream events); requests go through at once."""

    def __init__(self, port: int, rate: int = 16_000) -> None:
        self._port, self._rate = port, rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="drip-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self._port))
            threading.Thread(target=self._pump, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self._rate), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, rate: int) -> None:
        try:
            while data := source.recv(1024):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:  # either side hanging up ends both directions (a Stop closes the connection)
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def lab_env(vllm_random) -> Iterator[dict[str, str]]:
    proxy = DripProxy(vllm_random.port)
    yield {"VLLM_BASE_URL": proxy.url, "VLLM_API_KEY": vllm_random.api_key}
    proxy.close()


def test_panel_chats_streams_stops_and_shares_the_notebooks_conversation(page: Page, lab_server: LabServer) -> None:
    open_notebook(page, lab_server, write_notebook(lab_server, "panel.ipynb", CELLS))
    run_all(page)
    panel = outputs(page).locator(".vllm-magic-panel").first
    expect(panel).to_be_visible()
    transcript = panel.locator(".vm-user")  # newest first: the box is laid out bottom-up
    expect(transcript.first).to_contain_text("hello from a cell")  # the cell's turn is in the panel
    expect(panel).to_contain_text("/ 512 tokens")  # the context gauge, counted by /tokenize

    box = panel.locator("textarea.vllm-magic-input")
    max_tokens = panel.locator(".widget-text", has_text="max tokens").locator("input")
    answers = panel.locator(".vm-assistant")
    max_tokens.fill("12")
    max_tokens.press("Enter")
    box.fill("Tell me about notebooks")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(answers).to_have_count(2)  # the streamed answer, recorded
    expect(transcript.first).to_contain_text("Tell me about notebooks")
    expect(answers.first.locator(".vllm-magic-footer")).to_contain_text("→ 12 tokens")

    max_tokens.fill("480")
    max_tokens.press("Enter")
    box.fill("Now a very long story please")
    box.press("Enter")
    box.press_sequentially("typed while it starts")  # the next prompt, typed at once
    expect(panel.locator(".vm-live")).to_contain_text(re.compile(r"\S{3}"))  # text is streaming in
    box.press("Enter")  # refused while answering: the text stays in the box
    expect(box).to_have_value("typed while it starts")
    panel.get_by_role("button", name="Stop").click()
    expect(answers).to_have_count(3)
    expect(transcript.first).to_contain_text("Now a very long story please")
    expect(box).to_have_value("typed while it starts")  # never lost, never sent twice
    expect(transcript.filter(has_text="typed while it starts")).to_have_count(0)
    expect(answers.first.locator(".vllm-magic-footer")).to_contain_text("interrupted: partial answer kept")
    expect(panel.locator(".vm-cursor")).to_have_count(0)
    assert_no_widget_errors(page)
    panel.scroll_into_view_if_needed()
