"""IPython glue: ``%%chat`` / ``%%vllm`` cells and ``%vllm`` line commands over one :class:`Session`.

Only argument parsing, notebook helpers and choosing where output goes live here; HTTP, SSE and
rendering live in the engine. ``%config VLLMMagics.<name>`` settings flow into the session.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import StdinNotImplementedError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Dict, Float, Int, Unicode, dlink

from .. import errors
from ..context import ErrorLog
from ..images import remember_figure
from ..notebook_store import notebook_path
from ..session import Session, ask_key_with_getpass, set_current_session
from . import commands, complete, data, fix, restore  # noqa: F401 - they register the %vllm commands
from .cell import chat_options, run_cell
from .registry import run_line, synopsis, takes_cell
from ..notebook_fixes import NOTEBOOK_FIXES

SETTINGS = ("base_url", "model", "embedding_model", "api_key_env", "timeout", "headers", "credentials", "params",
            "system_prompt",
            "render_rate", "show_reasoning", "send_reasoning", "image_max_side", "save_images", "context_budget",
            "autosave", "autorestore", "autosave_file")


def in_notebook_words(method: Callable) -> Callable:
    """Errors leaving a magic say their fix in magic syntax."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except errors.VLLMError as exc:
            raise exc.speak(NOTEBOOK_FIXES) from exc.__cause__

    return wrapper


def _trait_of_session(name: str) -> Any:
    """The session's trait ``name`` as a configurable trait of the magics (same default and help)."""
    trait = Session.class_traits()[name]
    kind = {Unicode: Unicode, Float: Float, Dict: Dict, Bool: Bool, Int: Int}[type(trait)]
    return kind(trait.default_value, allow_none=trait.allow_none, help=trait.help).tag(config=True)


def _keep_figures(shell: Any) -> None:
    """After each cell, remember pyplot's current figure for ``%%chat --plot``.

    It must run before the inline backend's own ``post_execute`` callback, which closes the figures
    it shows, so it goes first in the list (the backend may have registered before us).
    """
    callbacks = shell.events.callbacks["post_execute"]
    if remember_figure not in callbacks:
        callbacks.insert(0, remember_figure)


@magics_class
class VLLMMagics(Magics):
    """Chat with a vLLM (or OpenAI-compatible) server from notebook cells.

    Settings (``%config VLLMMagics.<name> = value`` or ipython_config.py); environment variables
    VLLM_BASE_URL, VLLM_API_KEY, VLLM_MODEL (then OPENAI_BASE_URL, OPENAI_API_KEY) come first.
    """

    base_url = _trait_of_session("base_url")
    model = _trait_of_session("model")
    embedding_model = _trait_of_session("embedding_model")
    api_key_env = _trait_of_session("api_key_env")
    timeout = _trait_of_session("timeout")
    headers = _trait_of_session("headers")
    credentials = _trait_of_session("credentials")
    params = _trait_of_session("params")
    system_prompt = _trait_of_session("system_prompt")
    render_rate = _trait_of_session("render_rate")
    show_reasoning = _trait_of_session("show_reasoning")
    send_reasoning = _trait_of_session("send_reasoning")
    image_max_side = _trait_of_session("image_max_side")
    save_images = _trait_of_session("save_images")
    context_budget = _trait_of_session("context_budget")
    autosave = _trait_of_session("autosave")
    autorestore = _trait_of_session("autorestore")
    autosave_file = _trait_of_session("autosave_file")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.session = Session(ask_key=self._ask_key, notebook=notebook_path(), warn=self._warn)
        for name in SETTINGS:
            dlink((self, name), (self.session, name))
        self.shown_notes: set[str] = set()
        set_current_session(self.session)
        self.error_log = ErrorLog(shell)
        """The errors cells raise, for `%vllm fix` and ``{Err}``."""
        if shell is not None:
            _keep_figures(shell)
            self.error_log.attach()

    def _ask_key(self, prompt: str) -> str:
        try:
            return ask_key_with_getpass(prompt)
        except StdinNotImplementedError:
            raise errors.AuthError(
                "The server wants an API key and none was found in VLLM_API_KEY or OPENAI_API_KEY; "
                "this kernel cannot prompt for one.",
                hint="cannot_ask_key",
            ) from None

    def _warn(self, error: errors.VLLMError) -> None:
        print(f"vllm_magic: {error.speak(NOTEBOOK_FIXES).message}", file=sys.stderr)

    # Templates and regexes must arrive as written: IPython would expand {column} and {3} in the line.
    @no_var_expand
    @line_cell_magic
    @in_notebook_words
    def vllm(self, line: str, cell: str | None = None) -> Any:
        if cell is None or takes_cell(line):
            return run_line(self, line, cell)
        return run_cell(self, line, cell)

    @chat_options
    @no_var_expand
    @cell_magic
    @in_notebook_words
    def chat(self, line: str, cell: str) -> None:
        """Send the cell to the model and stream the answer as rendered Markdown.

        The conversation continues across cells (one per notebook); ``-c NAME`` keeps side
        conversations. The prompt is sent exactly as written; braces are only expanded with
        ``--interpolate``. ``%vllm help`` lists the line commands (connect, params, usage...).
        """
        run_cell(self, line, cell)


VLLMMagics.vllm.__doc__ = synopsis(usage=False)
