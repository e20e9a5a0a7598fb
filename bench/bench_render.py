"""Rendering cost and display traffic of a long answer streamed at a steady 1,000 chunks/s.

The loopback server streams a ~80 KB Markdown answer (paragraphs, lists, code, tables) as 20,000
chunks at 1,000 chunks/s (~300 display updates at 15/s). We measure, in the same run:

* all Markdown rendering done while streaming, against one render of the final text (target <= 2x),
  both in CPU time of the rendering thread, so other processes on the machine do not skew it;
* the bytes of all display messages, against the bytes of the final outputs (target <= 4x).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.loopback import LoopbackServer, Reply  # noqa: E402
from vllm_magic import Chat, drive, render, sinks  # noqa: E402

WORDS = ("the model data frame column value index token stream cell kernel server request answer "
         "latency batch memory vector notebook python pandas numpy render update").split()


def answer(chunks: int, seed: int = 7) -> list[str]:
    """A deterministic Markdown answer cut into token-sized pieces."""
    rng = random.Random(seed)
    blocks: list[str] = []
    while sum(map(len, blocks)) < chunks * 4:
        kind = rng.choice(["para", "para", "para", "list", "code", "table", "heading"])
        words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
        if kind == "para":
            blocks.append(" ".join(f"{words(rng.randint(6, 14)).capitalize()} **{rng.choice(WORDS)}** `x{i}`."
                                   for i in range(rng.randint(3, 6))))
        elif kind == "list":
            blocks.append("\n".join(f"- {words(rng.randint(4, 10))}" for _ in range(rng.randint(3, 6))))
        elif kind == "code":
            lines = [f"    {rng.choice(WORDS)}_{i} = compute({rng.randint(0, 99)}, '{rng.choice(WORDS)}')"
                     for i in range(rng.randint(4, 12))]
            blocks.append("```python\ndef step():\n" + "\n".join(lines) + "\n    return None\n```")
        elif kind == "table":
            rows = [f"| {rng.choice(WORDS)} | {rng.randint(0, 999)} | {rng.random():.3f} |" for _ in range(rng.randint(3, 8))]
            blocks.append("| name | count | score |\n|---|---|---|\n" + "\n".join(rows))
        else:
            blocks.append(f"## {words(3).title()}")
    text = "\n\n".join(blocks) + "\n"
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(2, 6)
        pieces.append(text[i:i + n])
        i += n
    return pieces


class Timed:
    """Wraps markdown_to_html wherever it is called from and adds up the time spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._original = render.markdown_to_html

    def __call__(self, text: str) -> str:
        started = time.thread_time()
        try:
            return self._original(text)
        finally:
            self.seconds += time.thread_time() - started
            self.calls += 1

    def __enter__(self) -> "Timed":
        render.markdown_to_html = sinks.markdown_to_html = self
        return self

    def __exit__(self, *exc: object) -> None:
        render.markdown_to_html = sinks.markdown_to_html = self._original


def measure(chunks: int = 20_000, rate: int = 1_000) -> dict[str, float]:
    pieces = answer(chunks)
    final_text = "".join(pieces)
    render.markdown_to_html(final_text)  # warm Pygments' lexers for both sides
    messages: list[tuple[str, dict]] = []
    with LoopbackServer() as server, Timed() as timed:
        server.push(Reply.tokens(pieces, chunk_rate=rate))
        chat = Chat(server.base_url, model="tiny-chat")
        sink = sinks.CellSink(rate=15, publish=lambda display_id, bundle, update: messages.append((display_id, bundle)))
        drive(chat.stream("write"), sink)
    one_render = statistics.median(_time(render.markdown_to_html, final_text) for _ in range(9))
    final: dict[str, dict] = {}
    for display_id, bundle in messages:
        final[display_id] = bundle
    sent = sum(len(json.dumps(bundle)) for _, bundle in messages)
    kept = sum(len(json.dumps(bundle)) for bundle in final.values())
    return {"chunks": len(pieces), "chars": len(final_text), "updates": len(messages), "outputs": len(final),
            "render_ratio": timed.seconds / one_render, "bytes_ratio": sent / kept,
            "render_s": timed.seconds, "one_render_s": one_render}


def _time(fn, arg) -> float:
    started = time.thread_time()
    fn(arg)
    return time.thread_time() - started


if __name__ == "__main__":
    r = measure()
    ok = r["render_ratio"] <= 2 and r["bytes_ratio"] <= 4
    print(f"{r['chunks']:,} chunks, {r['chars']:,} characters, {r['updates']} display messages into "
          f"{r['outputs']} outputs")
    print(f"Markdown rendering: {r['render_s'] * 1000:.0f} ms in all vs {r['one_render_s'] * 1000:.0f} ms for one "
          f"render = {r['render_ratio']:.2f}x (target <= 2); display bytes = {r['bytes_ratio']:.2f}x the final "
          f"output (target <= 4) -> {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)
