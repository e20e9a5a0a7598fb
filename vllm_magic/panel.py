"""The chat panel: an ipywidgets view of a notebook conversation, also hosted by the sidebar.

It is the same conversation the ``%%chat`` cells use: a cell's turn appears here, and a turn sent
here is what the next cell continues. Answers stream on the kernel's event loop (the async side
of the one client), so the kernel keeps running cells meanwhile and Stop cancels at once.
"""

from __future__ import annotations

import asyncio
import html
import weakref
from typing import TYPE_CHECKING, Any

import anywidget
import ipywidgets as widgets
import traitlets

from . import errors
from .conversation import Turn
from .notebook_fixes import NOTEBOOK_FIXES
from .params import parse_value
from .render import CSS, answer_html, footer_text, user_html
from .response import adrive
from .sinks import CellSink

if TYPE_CHECKING:
    from .response import Response
    from .session import Session

PANEL_CSS = """<style>
.vllm-magic-panel .vm-user{background:var(--jp-layout-color2,#eee);border-radius:6px;padding:.3em .7em;margin:.4em 0 .2em 15%}
.vllm-magic-panel .vm-assistant{padding:.1em .4em;border-left:3px solid var(--jp-brand-color1,#2196f3);margin:.2em 15% .4em 0}
.vllm-magic-panel .vm-usage{font-size:.85em;line-height:1.3;color:var(--jp-ui-font-color2,#777)}
.vllm-magic-panel .vm-error{color:var(--jp-error-color1,#d32f2f);background:var(--jp-error-color3,#fdecea);padding:.4em .7em;border-radius:4px}
</style>"""


class ChatInput(anywidget.AnyWidget):
    """A multi-line box: Enter sends, Shift+Enter starts a new line (ipywidgets has no key events)."""

    # The box clears itself when it sends, so text typed while the kernel starts the answer stays;
    # while ``busy`` (an answer is streaming) Enter keeps the text where it is.
    _esm = """
    function render({ model, el }) {
      const area = document.createElement("textarea");
      area.className = "vllm-magic-input";
      area.rows = 3;
      area.placeholder = "Message the model (Enter sends, Shift+Enter for a new line)";
      area.value = model.get("value");
      area.addEventListener("input", () => { model.set("value", area.value); model.save_changes(); });
      area.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          if (model.get("busy") || !area.value.trim()) return;
          const text = area.value;
          area.value = "";
          model.set("value", "");
          model.save_changes();
          model.send({ type: "submit", text });
        }
      });
      model.on("change:value", () => { if (area.value !== model.get("value")) area.value = model.get("value"); });
      el.appendChild(area);
    }
    export default { render };
    """
    _css = """
    .vllm-magic-input { width: 100%; box-sizing: border-box; font-family: var(--jp-ui-font-family);
      font-size: var(--jp-ui-font-size1); padding: 6px; resize: vertical;
      color: var(--jp-ui-font-color1); background: var(--jp-layout-color0);
      border: 1px solid var(--jp-border-color1); border-radius: 4px; }
    """
    value = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)


class ChatPanel:
    """Widgets over one named conversation of the notebook; ``.widget`` is what gets displayed."""

    def __init__(self, session: Session, name: str = "default") -> None:
        self._session = session
        self.chat = session.chat(name)
        self._task: asyncio.Task | None = None
        self._gauge_asked = 0  # how many context counts were asked for
        self._stopping = False  # set by Stop, so a cancellation from elsewhere is told apart
        self._live: widgets.VBox | None = None  # the answer being streamed
        self._live_views: dict[str, widgets.HTML] = {}  # its outputs, by CellSink display id
        self._turn_views: dict[int, widgets.HTML] = {}

        self.model = widgets.Dropdown(description="model", layout=widgets.Layout(width="auto"))
        self._show_models()
        self.temperature = self._param_box("temperature")
        self.max_tokens = self._param_box("max_tokens")
        self.clear = widgets.Button(description="Clear", icon="trash", tooltip="Forget this conversation")
        self.gauge = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="160px"))
        self.gauge_label = widgets.HTML()
        self.usage = widgets.HTML()
        self.transcript = widgets.Box(layout=widgets.Layout(
            display="flex", flex_flow="column-reverse", overflow="auto", height="360px",
            border="1px solid var(--jp-border-color2)", padding="4px"))
        self.error = widgets.HTML()
        self.input = ChatInput()
        self.send = widgets.Button(description="Send", icon="paper-plane", button_style="primary")
        self.stop = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.widget = widgets.VBox([
            widgets.HTML(CSS + PANEL_CSS),
            widgets.HBox([self.model, self.temperature, self.max_tokens, self.clear]),
            widgets.HBox([self.gauge, self.gauge_label, self.usage]),
            self.transcript, self.error, self.input, widgets.HBox([self.send, self.stop]),
        ])
        self.widget.add_class("vllm-magic-panel")

        self.model.observe(self._model_changed, "value")
        self.clear.on_click(lambda _: self.chat.reset())
        self.send.on_click(lambda _: self._send_typed())
        self.stop.on_click(lambda _: self.cancel())
        self.input.on_msg(lambda _, content, __: self.submit(content.get("text", "")))
        self.chat.conversation.on_change(lambda _: self.refresh())
        session.observe(lambda _: self._show_params(), "params")
        session.observe(lambda _: self._connection_changed(), "connection")
        self.refresh()

    # -- actions -------------------------------------------------------------------------------

    def submit(self, text: str) -> None:
        """Send ``text`` as the next turn; the answer streams in while the kernel stays free."""
        if not text.strip():
            return
        if self.streaming:
            self.error.value = '<div class="vllm-magic-panel"><div class="vm-error">Still answering: press Stop first.</div></div>'
            return
        self.error.value = ""
        try:
            response = self.chat.stream(text, **self._session.request_params())
        except errors.VLLMError as exc:
            self._show_error(exc)
            return
        self.stop.disabled, self.send.disabled, self.input.busy = False, True, True
        self._task = asyncio.ensure_future(self._stream(response))
        self._task.add_done_callback(self._finished)

    def _send_typed(self) -> None:
        """The Send button: what the box holds becomes the next turn, unless an answer is streaming."""
        if self.streaming or not self.input.value.strip():
            return
        text, self.input.value = self.input.value, ""
        self.submit(text)

    def cancel(self) -> None:
        """Stop the answer now; the connection closes and the partial answer is kept."""
        if self.streaming:
            self._stopping = True
            self._task.cancel()

    @property
    def streaming(self) -> bool:
        """An answer is on its way (until the panel is ready for the next one)."""
        return self._task is not None

    async def _stream(self, response: Response) -> None:
        answer = widgets.VBox()
        answer.add_class("vm-live")
        self._live = widgets.VBox([widgets.HTML(f'<div class="vm-user">{user_html(response.user)}</div>'), answer])
        sink = CellSink(rate=self._session.render_rate, publish=self._publish,
                        show_reasoning=self._session.show_reasoning)
        self.refresh()
        try:
            await adrive(response, sink)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        except errors.VLLMError as exc:
            self._show_error(exc)
        except Exception as exc:  # shown, never swallowed: the panel has no traceback area
            self._show_error(errors.VLLMError(f"The panel failed: {type(exc).__name__}: {exc}.",
                                              "Please report this; `%%chat` cells still work."))

    def _finished(self, task: asyncio.Task) -> None:
        """However the answer ended (also when Stop came before it started), the panel is ready again."""
        if task.cancelled() and not self._stopping:  # not our Stop button: the kernel cancelled it
            self._show_error(errors.Interrupted("The answer was cancelled by the kernel.", "Send the message again."))
        self._task, self._stopping = None, False
        self._live, self._live_views = None, {}
        self.stop.disabled, self.send.disabled, self.input.busy = True, False, False
        self.refresh()

    def _publish(self, display_id: str, bundle: dict[str, Any], update: bool) -> None:
        """CellSink's outputs become HTML widgets inside the live answer."""
        assert self._live is not None
        if update:
            self._live_views[display_id].value = bundle["text/html"]
        else:
            self._live_views[display_id] = widgets.HTML(bundle["text/html"])
            answer = self._live.children[1]
            answer.children += (self._live_views[display_id],)

    # -- views ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Show the conversation as it is (the newest first: the box is laid out bottom-up)."""
        turns = self.chat.conversation.turns
        views = [self._turn_view(turn) for turn in turns]
        if self._live is not None:
            views.append(self._live)
        self.transcript.children = tuple(reversed(views))
        self._turn_views = {id(turn): view for turn, view in zip(turns, views)}
        last = turns[-1] if turns else None
        self.usage.value = (f"<div class='vm-usage'>last turn: {html.escape(footer_text(last))}</div>"
                            if last else "")
        self._show_params()
        asyncio.ensure_future(self._update_gauge())

    def _turn_view(self, turn: Turn) -> widgets.HTML:
        view = self._turn_views.get(id(turn))
        if view is None:
            view = widgets.HTML(
                f'<div class="vllm-magic"><div class="vm-user">{user_html(turn.user)}</div>'
                f'<div class="vm-assistant">{answer_html(turn, self._session.show_reasoning)}</div></div>'
            )
        return view

    async def _update_gauge(self) -> None:
        """Tokens the conversation holds against max_model_len, counted by vLLM's /tokenize.

        Counts finish in any order: only the one asked last is shown.
        """
        self._gauge_asked += 1
        asked, model, messages = self._gauge_asked, self.model.value, self.chat.conversation.messages()
        try:
            if messages:
                counted = await self.chat.connection.client.atokenize(model, messages)
            else:  # nothing to count (and vLLM refuses to template an empty conversation)
                counted = {"count": 0, "max_model_len": self.chat.connection.max_model_len(model) or 0}
        except errors.NotFoundError:
            counted = {"error": "the server has no /tokenize"}
        except errors.VLLMError as exc:
            counted = {"error": exc.cause}
        if asked != self._gauge_asked:
            return
        if "error" in counted:
            self.gauge_label.value = f"<small>context: n/a ({html.escape(counted['error'])})</small>"
            return
        count, limit = counted["count"], counted["max_model_len"]
        self.gauge.max = max(limit, 1)
        self.gauge.value = min(count, self.gauge.max)
        over = count >= limit
        self.gauge.bar_style = "danger" if over else ""
        warning = (" <span class='vm-warn'>\u26a0 over the limit: the next message will be refused. "
                   "Clear the conversation, or drop turns with %vllm undo.</span>") if over else ""
        self.gauge_label.value = f"<small style='white-space:nowrap'>{count} / {limit} tokens{warning}</small>"

    def _show_error(self, error: errors.VLLMError) -> None:
        message = error.speak(NOTEBOOK_FIXES).message
        self.error.value = f'<div class="vllm-magic-panel"><div class="vm-error">{html.escape(message)}</div></div>'

    # -- params: the same ones as %vllm params ---------------------------------------------------

    def _param_box(self, name: str) -> widgets.Text:
        box = widgets.Text(description=name.replace("_", " "), placeholder="server default",
                           continuous_update=False, layout=widgets.Layout(width="200px"),
                           style={"description_width": "initial"})
        box.observe(lambda change: self._param_changed(name, change["new"]), "value")
        return box

    def _param_changed(self, name: str, text: str) -> None:
        try:
            if text.strip():
                self._session.set_params({name: parse_value(text.strip())})
            else:
                self._session.set_params({}, unset=[name])
        except errors.ParamError as exc:
            self._show_error(exc)
            return
        self.error.value = ""

    def _show_params(self) -> None:
        for name, box in (("temperature", self.temperature), ("max_tokens", self.max_tokens)):
            value = self._session.params.get(name)
            box.value = "" if value is None else str(value)

    def _show_models(self) -> None:
        connection = self.chat.connection
        self.model.options = [m["id"] for m in connection.models()]
        self.model.value = self.chat.model or connection.resolve_model()

    def _connection_changed(self) -> None:
        self.chat.model = None  # a model of the old server means nothing to the new one
        self._show_models()

    def _model_changed(self, change: dict[str, Any]) -> None:
        """This conversation's own model: other conversations keep theirs."""
        if change["new"] is not None and change["new"] != self.chat.connection.resolve_model():
            self.chat.model = change["new"]
        else:
            self.chat.model = None
        asyncio.ensure_future(self._update_gauge())


_panels: weakref.WeakKeyDictionary[Session, dict[str, ChatPanel]] = weakref.WeakKeyDictionary()


def panel_for(session: Session, name: str = "default") -> ChatPanel:
    """The session's panel for conversation ``name`` (made once: every display shows the same one)."""
    panels = _panels.setdefault(session, {})
    if name not in panels:
        panels[name] = ChatPanel(session, name)
    return panels[name]


def sidebar_model_id() -> str:
    """The model id of this kernel's panel, for the JupyterLab sidebar to render (its contract)."""
    from .session import current_session

    return panel_for(current_session()).widget.model_id

