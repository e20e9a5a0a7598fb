"""A progress bar for jobs made of steps: an ipywidgets bar in a notebook kernel, a text line elsewhere.

It shows steps done out of the total, items per second and the time left, redrawn at most
``rate`` times a second so a fast job does not spend its time drawing. Only the thread that owns
the job calls it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Counts finished steps (e.g. batches) and items (e.g. texts), and for chat jobs the tokens
    generated and the steps that failed; subclasses draw the line.

    ``step_name`` None leaves the steps out of the line (a job whose items are what counts).
    ``log_every`` is the fewest seconds between two lines on a log file (0: every step).
    """

    def __init__(self, steps: int, items: int, *, title: str = "Embedding", step_name: str | None = "batches",
                 item_name: str = "texts", rate: float = 10.0, log_every: float = 0.0) -> None:
        self.title = title
        self.steps, self.items = steps, items
        self.step_name, self.item_name = step_name, item_name
        self.steps_done = self.items_done = self.tokens = self.errors = 0
        self.log_every = log_every
        self._interval = 1.0 / rate
        self._started = self._drawn = time.monotonic()

    def update(self, steps_done: int, items_done: int, *, tokens: int = 0, errors: int = 0) -> None:
        new_step = steps_done != self.steps_done
        self.steps_done, self.items_done = steps_done, items_done
        self.tokens, self.errors = tokens, errors
        if self.due(new_step):
            self.draw(self.line(), final=None)

    def due(self, new_step: bool) -> bool:
        """Whether to redraw now: at most ``rate`` times a second."""
        now = time.monotonic()
        if now - self._drawn < self._interval:
            return False
        self._drawn = now
        return True

    def close(self, ok: bool) -> None:
        """Draw the last state: the totals when ``ok``, else where the job stopped."""
        self.draw(self.line(stopped=not ok), final=ok)

    def line(self, stopped: bool = False) -> str:
        seconds = max(time.monotonic() - self._started, 1e-9)
        speed = self.items_done / seconds
        items = f"{self.items_done:,}/{self.items:,} {self.item_name}"
        done = [f"{self.steps_done:,}/{self.steps:,} {self.step_name}", items] if self.step_name else [items]
        failed = [f"{self.errors:,} failed"] if self.errors else []
        if stopped:
            return f"stopped at {done[0]}" + (f" ({', '.join([*done[1:], *failed])})" if done[1:] or failed else "")
        rates = [f"{speed:,.0f} {self.item_name}/s"] + ([f"{self.tokens / seconds:,.0f} tokens/s"] if self.tokens else [])
        if self.items_done >= self.items:
            total = f"{self.items:,} {self.item_name} in {_duration(seconds)}"
            return " · ".join([*done[:-1], total]) + f" ({', '.join([*rates, *failed])})"
        eta = f"ETA {_duration((self.items - self.items_done) / speed)}" if speed else "ETA ?"
        return " · ".join([*done, *rates, *failed, eta])

    def draw(self, line: str, final: bool | None) -> None:
        """Show ``line``; ``final`` is None while running, then True (finished) or False (stopped)."""


class TextProgress(Progress):
    """One line on stderr: rewritten in place on a terminal; elsewhere (a log file, a pipe) one
    line per step, since a carriage return there only piles lines up."""

    def __init__(self, steps: int, items: int, *, stream: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(steps, items, **kwargs)
        self.stream = stream or sys.stderr
        self._in_place = getattr(self.stream, "isatty", lambda: False)()
        self._width = 0
        self._last = ""
        self.draw(self.line(), final=None)

    def due(self, new_step: bool) -> bool:
        if self._in_place:
            return super().due(new_step)
        if not new_step or self.items_done >= self.items:  # the last step is drawn by close()
            return False
        now = time.monotonic()
        if now - self._drawn < self.log_every:
            return False
        self._drawn = now
        return True

    def draw(self, line: str, final: bool | None) -> None:
        text = f"{self.title}: {line}"
        if not self._in_place:
            if text != self._last:
                self.stream.write(text + "\n")
                self._last = text
        else:
            padding = " " * max(0, self._width - len(text))  # wipe the end of a longer previous line
            self._width = len(text)
            self.stream.write(f"\r{text}{padding}" + ("\n" if final is not None else ""))
        self.stream.flush()


class WidgetProgress(Progress):
    """An ipywidgets progress bar with the same line beside it, displayed in the cell's output."""

    def __init__(self, steps: int, items: int, **kwargs: Any) -> None:
        import ipywidgets
        from IPython.display import display

        super().__init__(steps, items, **kwargs)
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=items, description=self.title)
        self.label = ipywidgets.Label(self.line())
        display(ipywidgets.HBox([self.bar, self.label]))

    def draw(self, line: str, final: bool | None) -> None:
        self.bar.value = self.items_done
        self.label.value = line
        if final is not None:
            self.bar.bar_style = "success" if final else "danger"


def progress_bar(steps: int, items: int, show: bool | None = None, **kwargs: Any) -> Progress:
    """The right bar for where the code runs; ``show`` None means: only for more than one step.
    ``kwargs`` are :class:`Progress`'s (title, names, pacing)."""
    if not (show if show is not None else steps > 1):
        return Progress(steps, items, **kwargs)  # draws nothing
    if _in_kernel():
        return WidgetProgress(steps, items, **kwargs)
    return TextProgress(steps, items, **kwargs)


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (widgets can show), False in a terminal or plain Python."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
