"""Where a streamed answer goes: notebook outputs updated in place, or plain text.

A sink gets ``start()``, ``feed(piece)`` for each piece of text, and ``close(turn)`` with the
recorded turn (None if the request failed before any text). It is the only code that paces
updates: at most ``rate`` a second whatever the token rate, and the final render is always exact.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import IO, Any, Protocol

from .conversation import Turn
from .render import CSS, CURSOR, IncrementalMarkdown, escaped_block, footer_html, footer_text, markdown_to_html

Bundle = dict[str, Any]
Publish = Callable[[str, Bundle, bool], None]  # (display_id, mime bundle, is_update)


class Sink(Protocol):
    def start(self) -> None: ...
    def feed(self, piece: str) -> None: ...
    def close(self, turn: Turn | None) -> None: ...


def ipython_publish(display_id: str, bundle: Bundle, update: bool) -> None:
    from IPython.display import display, update_display

    if update:
        update_display(bundle, raw=True, display_id=display_id)
    else:
        display(bundle, raw=True, display_id=display_id)


class CellSink:
    """Streams rendered Markdown into a notebook cell's outputs.

    Finished blocks are rendered and sent once, each group into its own output; only the last
    output (the block being written) is updated. So the bytes sent grow with the answer, not with
    the answer times the number of updates. The tail is re-rendered within a budget of
    ``TAIL_BUDGET`` times the text so far; past it the tail shows as plain text until more blocks
    finish.
    """

    TAIL_BUDGET = 0.6
    TAIL_ALLOWANCE = 2000  # characters: short answers always render fully while streaming

    def __init__(self, rate: float = 15.0, publish: Publish | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._markdown = IncrementalMarkdown()
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._publish = publish or ipython_publish
        self._clock = clock
        self._next_update = 0.0
        self._slots: list[str] = []  # display ids, one per output; only the last one changes
        self._shown = False  # whether the last slot was displayed yet
        self._tail_spent = 0

    def start(self) -> None:
        self._new_slot()
        self._update(self._bundle(f"<p>{CURSOR}</p>", ""))

    def feed(self, piece: str) -> None:
        self._markdown.append(piece)
        now = self._clock()
        if now >= self._next_update:
            self._next_update = now + self._interval
            self._render(final=False)

    def close(self, turn: Turn | None) -> None:
        if turn is None:
            self._update(self._bundle("", ""))
            return
        self._render(final=True, footer=turn)
        if self._markdown.needs_full_render:
            text = self._markdown.text
            for display_id in self._slots[1:]:
                self._publish(display_id, {"text/plain": ""}, True)
            self._slots[1:] = []
            self._update(self._bundle(markdown_to_html(text) + footer_html(turn), text + "\n\n" + footer_text(turn)))

    def _render(self, final: bool, footer: Turn | None = None) -> None:
        finished = self._markdown.take_finished()
        if finished:
            self._update(self._bundle(markdown_to_html(finished), finished))
            self._new_slot()
        tail = self._markdown.tail()
        if final:
            body = markdown_to_html(tail)
        elif self._tail_spent + len(tail) <= self.TAIL_BUDGET * len(self._markdown.text) + self.TAIL_ALLOWANCE:
            self._tail_spent += len(tail)
            body = self._markdown.tail_html() + CURSOR
        else:
            body = escaped_block(tail) + CURSOR
        plain = tail
        if footer is not None:
            body += footer_html(footer)
            plain = f"{tail}\n\n{footer_text(footer)}" if tail else footer_text(footer)
        self._update(self._bundle(body, plain))

    def _bundle(self, body: str, plain: str) -> Bundle:
        css = CSS if len(self._slots) <= 1 else ""
        return {"text/html": f'{css}<div class="vllm-magic">{body}</div>', "text/plain": plain}

    def _new_slot(self) -> None:
        self._slots.append(uuid.uuid4().hex)
        self._shown = False

    def _update(self, bundle: Bundle) -> None:
        self._publish(self._slots[-1], bundle, self._shown)
        self._shown = True


class PlainSink:
    """Writes pieces as they come, for terminals, ``--raw`` and logs; the footer on its own line."""

    def __init__(self, out: IO[str] | None = None, rate: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out or sys.stdout
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next_flush = 0.0
        self._wrote = False

    def start(self) -> None:
        pass

    def feed(self, piece: str) -> None:
        self._out.write(piece)
        self._wrote = True
        now = self._clock()
        if now >= self._next_flush:
            self._next_flush = now + self._interval
            self._out.flush()

    def close(self, turn: Turn | None) -> None:
        if turn is not None:
            self._out.write(("\n\n" if self._wrote else "") + f"[{footer_text(turn)}]\n")
        self._out.flush()
