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
    """Counts finished steps (e.g. batches) and items (e.g. texts); subclasses draw the line."""

    def __init__(self, steps: int, items: int, *, title: str = "Embedding", step_name: str = "batches",
                 item_name: str = "texts", rate: float = 10.0) -> None:
        self.title = title
        self.steps, self.items = steps, items
        self.step_name, self.item_name = step_name, item_name
        self.steps_done = self.items_done = 0
        self._interval = 1.0 / rate
        self._started = self._drawn = time.monotonic()

    def update(self, steps_done: int, items_done: int) -> None:
        new_step = steps_done != self.steps_done
        self.steps_done, self.items_done = steps_done, items_done
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
        done = f"{self.steps_done:,}/{self.steps:,} {self.step_name}"
        if stopped:
            return f"stopped at {done} ({self.items_done:,}/{self.items:,} {self.item_name})"
        if self.steps_done == self.steps:
            return f"{done} · {self.items:,} {self.item_name} in {_duration(seconds)} ({speed:,.0f} {self.item_name}/s)"
        eta = f"ETA {_duration((self.items - self.items_done) / speed)}" if speed else "ETA ?"
        return f"{done} · {self.items_done:,}/{self.items:,} {self.item_name} · {speed:,.0f} {self.item_name}/s · {eta}"

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
        return new_step and self.steps_done < self.steps  # the last step is drawn by close()

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
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=steps, description=self.title)
        self.label = ipywidgets.Label(self.line())
        display(ipywidgets.HBox([self.bar, self.label]))

    def draw(self, line: str, final: bool | None) -> None:
        self.bar.value = self.steps_done
        self.label.value = line
        if final is not None:
            self.bar.bar_style = "success" if final else "danger"


def progress_bar(steps: int, items: int, show: bool | None = None) -> Progress:
    """The right bar for where the code runs; ``show`` None means: only for more than one step."""
    if not (show if show is not None else steps > 1):
        return Progress(steps, items)  # draws nothing
    if _in_kernel():
        return WidgetProgress(steps, items)
    return TextProgress(steps, items)


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
