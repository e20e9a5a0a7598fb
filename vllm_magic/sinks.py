"""Where a streamed answer goes: notebook outputs updated in place, or plain text.

A sink (:class:`~vllm_magic.response.Sink`) gets ``start()``, ``on_event(event)`` for each event,
and ``close(turn)`` with the recorded turn (None if the request failed before any output); the one
loop that feeds it is :func:`~vllm_magic.response.drive`. Sinks are the only code that paces
updates: at most ``rate`` a second whatever the token rate, and the final render is always exact.
Reasoning shows above the answer in a "Thinking" block, open while it streams; each tool call as a
card where it happened, between the texts of the requests around it.
"""

from __future__ import annotations

import html
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from .conversation import Turn
from .render import (
    CSS,
    CURSOR,
    IncrementalMarkdown,
    append_inside,
    extras_html,
    footer_html,
    footer_text,
    markdown_to_html,
    thinking_html,
    tool_card_html,
    tool_card_text,
)
from .stream import Event, ReasoningDelta, TextDelta
from .toolloop import ToolCalled, ToolCalling, ToolEvent, ToolNote

Bundle = dict[str, Any]
Publish = Callable[[str, Bundle, bool], None]  # (display_id, mime bundle, is_update)


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
    the answer times the number of updates. Re-rendering the tail may take at most ``TAIL_BUDGET``
    of the time spent rendering finished blocks (plus a small allowance, so short answers always
    render); past it the tail shows as plain text until more blocks finish. Rendering a whole
    answer thus costs about 1.2 renders of the final text (CPU time), however long it is.
    """

    TAIL_BUDGET = 0.2
    TAIL_ALLOWANCE = 0.01  # CPU seconds (thread time: what rendering costs, whatever else runs)

    def __init__(self, rate: float = 15.0, publish: Publish | None = None,
                 clock: Callable[[], float] = time.monotonic, show_reasoning: bool = True) -> None:
        self._markdown = IncrementalMarkdown()
        self._show_reasoning = show_reasoning
        self._reasoning: list[str] = []
        self._thinking: str | None = None  # display id of the Thinking block, once reasoning came
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._publish = publish or ipython_publish
        self._clock = clock
        self._next_update = 0.0
        self._slots: list[str] = []  # display ids, one per output; only the last one changes
        self._shown = False  # whether the last slot was displayed yet
        self._finished_seconds = 0.0  # time spent rendering finished blocks
        self._tail_seconds = 0.0  # time spent re-rendering the unfinished tail
        self._tail_html = ("", "")  # the tail as last rendered, and its HTML
        self._segment = 0  # index in _slots of the first output of the text being written
        self._cards: dict[str, str] = {}  # tool call id -> display id of its card

    def start(self) -> None:
        self._new_slot()
        self._update(self._bundle(f"<p>{CURSOR}</p>", ""))

    def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is TextDelta:
            if self._thinking is not None and not self._markdown.text:
                self._show_thinking(streaming=False)  # the answer starts: fold the thinking away
            self._markdown.append(event.text)  # type: ignore[union-attr]
        elif kind is ReasoningDelta and self._show_reasoning:
            self._reasoning.append(event.text)  # type: ignore[union-attr]
            if self._thinking is None:
                self._open_thinking()
        elif kind is ToolCalling or kind is ToolCalled or kind is ToolNote:
            self._tool(event)  # type: ignore[arg-type]
            return
        else:
            return
        now = self._clock()
        if now >= self._next_update:
            self._next_update = now + self._interval
            if self._markdown.text:
                self._render(final=False)
            else:
                self._show_thinking(streaming=True)

    def close(self, turn: Turn | None) -> None:
        if self._thinking is not None:
            self._show_thinking(streaming=False, tokens=turn.reasoning_tokens if turn else None)
        if turn is None:
            self._update(self._bundle("", ""))
            return
        self._render(final=True, footer=turn)
        if self._markdown.needs_full_render:
            text = self._markdown.text
            for display_id in self._slots[self._segment + 1:]:
                self._publish(display_id, {"text/plain": ""}, True)
            self._slots[self._segment + 1:] = []
            self._update(self._bundle(markdown_to_html(text) + footer_html(turn), text + "\n\n" + footer_text(turn)))
        extras = extras_html(turn)
        if extras:  # the samples side by side, the tokens' probabilities: an output of their own
            self._new_slot()
            self._update(self._bundle(extras, ""))

    def _render(self, final: bool, footer: Turn | None = None) -> None:
        finished = self._markdown.take_finished()
        if finished:
            started = time.thread_time()
            body = markdown_to_html(finished)
            self._finished_seconds += time.thread_time() - started
            self._update(self._bundle(body, finished))
            self._new_slot()
        tail = self._markdown.tail()
        if final:
            body = markdown_to_html(tail)
        else:
            body = append_inside(*self._render_tail(tail))
        plain = tail
        if footer is not None:
            body += footer_html(footer)
            plain = f"{tail}\n\n{footer_text(footer)}" if tail else footer_text(footer)
        self._update(self._bundle(body, plain))

    def _render_tail(self, tail: str) -> tuple[str, str]:
        """The tail's HTML and what to append inside it (newer text, escaped, and the cursor).

        Within the budget the whole tail is rendered. Past it, the last render of this same tail
        is reused and only the text that arrived since is shown as is, until the budget allows a
        new render.
        """
        rendered_text, rendered_html = self._tail_html
        if self._tail_seconds <= self.TAIL_BUDGET * self._finished_seconds + self.TAIL_ALLOWANCE:
            started = time.thread_time()
            self._tail_html = tail, self._markdown.tail_html()
            self._tail_seconds += time.thread_time() - started
            return self._tail_html[1], CURSOR
        if rendered_text and tail.startswith(rendered_text):
            return rendered_html, html.escape(tail[len(rendered_text):]) + CURSOR
        return f"<p>{html.escape(tail)}</p>", CURSOR

    def _tool(self, event: ToolEvent) -> None:
        """A card per call, in the output where the text stood; the text goes on below it."""
        if type(event) is ToolCalled:
            call, result = event  # type: ignore[misc]
            self._publish(self._cards[call.id], self._bundle(tool_card_html(call, result), tool_card_text(call, result)),
                          True)
            return
        if self._markdown.text:  # what the model said before calling stays, rendered, above the card
            self._render(final=True)
            self._markdown = IncrementalMarkdown()
            self._tail_html = ("", "")
            self._new_slot()
        if type(event) is ToolNote:
            body, plain = f"<p><em>Note: {html.escape(event.text)}</em></p>", f"Note: {event.text}"  # type: ignore[union-attr]
        else:
            call = event.call  # type: ignore[union-attr]
            body, plain = tool_card_html(call, None), f"[tool] {call.name}({call.arguments}) running"
            self._cards[call.id] = self._slots[-1]
        self._update(self._bundle(body, plain))
        self._new_slot()
        self._segment = len(self._slots) - 1
        self._update(self._bundle(f"<p>{CURSOR}</p>", ""))

    def _open_thinking(self) -> None:
        """The output showing the cursor becomes the Thinking block; the answer gets the next one."""
        self._thinking = self._slots.pop()
        self._new_slot()
        self._update(self._bundle(f"<p>{CURSOR}</p>", ""))

    def _show_thinking(self, streaming: bool, tokens: int | None = None) -> None:
        reasoning = "".join(self._reasoning)
        body = thinking_html(reasoning, streaming=streaming, tokens=tokens)
        # The answer's first output carries the CSS (styles apply page-wide).
        self._publish(self._thinking, {"text/html": f'<div class="vllm-magic">{body}</div>',  # type: ignore[arg-type]
                                       "text/plain": f"Thinking: {reasoning}"}, True)

    def _bundle(self, body: str, plain: str) -> Bundle:
        css = CSS if len(self._slots) <= 1 else ""
        return {"text/html": f'{css}<div class="vllm-magic">{body}</div>', "text/plain": plain}

    def _new_slot(self) -> None:
        self._slots.append(os.urandom(16).hex())
        self._shown = False

    def _update(self, bundle: Bundle) -> None:
        self._publish(self._slots[-1], bundle, self._shown)
        self._shown = True


class PlainSink:
    """Writes pieces as they come, for terminals, ``--raw`` and logs; the footer on its own line."""

    def __init__(self, out: IO[str] | None = None, rate: float = 15.0,
                 clock: Callable[[], float] = time.monotonic, show_reasoning: bool = True) -> None:
        self._out = out or sys.stdout
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next_flush = 0.0
        self._wrote = False
        self._show_reasoning = show_reasoning
        self._thinking = False  # inside the reasoning's lines
        dim = getattr(self._out, "isatty", lambda: False)()
        self._think_open, self._think_close = ("\x1b[2m", "\x1b[0m\n\n") if dim else ("Thinking: ", "\n\n")

    def start(self) -> None:
        pass

    def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is TextDelta:
            piece = event.text  # type: ignore[union-attr]
            if self._thinking:
                self._thinking = False
                piece = self._think_close + piece
        elif kind is ReasoningDelta and self._show_reasoning:
            piece = event.text  # type: ignore[union-attr]
            if not self._thinking:
                self._thinking = True
                piece = ("\n\n" if self._wrote else "") + self._think_open + piece
        elif kind is ToolCalled or kind is ToolNote:
            piece = ("\n" if self._wrote else "") + self._tool_line(event) + "\n"  # type: ignore[arg-type]
        else:
            return
        self._out.write(piece)
        self._wrote = True
        now = self._clock()
        if now >= self._next_flush:
            self._next_flush = now + self._interval
            self._out.flush()

    @staticmethod
    def _tool_line(event: ToolCalled | ToolNote) -> str:
        if type(event) is ToolNote:
            return f"Note: {event.text}"  # type: ignore[union-attr]
        return tool_card_text(*event)  # type: ignore[arg-type]

    def close(self, turn: Turn | None) -> None:
        if self._thinking:
            self._out.write(self._think_close.rstrip("\n"))
        if turn is not None:
            self._out.write(("\n\n" if self._wrote else "") + f"[{footer_text(turn)}]\n")
        self._out.flush()
