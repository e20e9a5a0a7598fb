"""The Session: one kernel's (or script's) connections, named conversations, default params and
settings, shared by every view (cells, the panel, the sidebar) and observable by them. In a notebook
it saves the conversations beside it after every change and restores them after a kernel restart
(see :mod:`.notebook_store`).

Nothing here knows IPython: the magics copy their configured settings here and call these methods;
views observe ``params`` and ``connection`` (traitlets) instead of being refreshed by hand.
"""

from __future__ import annotations

import getpass
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, HasTraits, Instance, Int, Unicode, observe

from . import errors, notebook_store
from .chat import Chat
from .connection import Connection, env_api_key, env_base_url
from .client import Client, normalize_base_url
from .conversation import Conversation
from .images import DEFAULT_MAX_SIDE
from .params import validate

DEFAULT = "default"
CHAT_SETTINGS = ("send_reasoning", "image_max_side")
"""Settings every conversation's :class:`Chat` follows."""

AskKey = Callable[[str], str]
"""Asks the user for a key, given the prompt; raises :class:`errors.AuthError` where it cannot."""


Warn = Callable[[errors.VLLMError], None]
"""Tells the user of a failure that stops nothing (an autosave that could not be written)."""


def ask_key_with_getpass(prompt: str) -> str:
    return getpass.getpass(prompt)


def warn_with_warnings(error: errors.VLLMError) -> None:
    warnings.warn(error.message, RuntimeWarning, stacklevel=3)


class Session(HasTraits):
    """Connections, conversations and defaults; ``params`` and ``connection`` are observable."""

    base_url = Unicode(None, allow_none=True, help="Server URL, with or without /v1.")
    model = Unicode(None, allow_none=True, help="Model to chat with (default: the only one served).")
    embedding_model = Unicode(
        None, allow_none=True,
        help="Model for embeddings (default: VLLM_EMBEDDING_MODEL, then the only one the embeddings server serves).",
    )
    api_key_env = Unicode(
        "", help="Environment variable holding the API key (default: VLLM_API_KEY, then OPENAI_API_KEY)."
    )
    timeout = Float(120.0, help="Seconds to wait for the server (connect, and between streamed tokens).")
    headers = Dict(help="Headers sent with every request, e.g. {'X-Org': 'analytics'} (values are never shown).")
    credentials = Unicode(
        None, allow_none=True,
        help="An importable callable, 'module:function', returning a key or a dict of headers; called at "
             "connect and again once after a 401, for gateway tokens that expire.",
    )
    params = Dict(help="Default sampling parameters of every conversation, e.g. {'temperature': 0.2}.")
    system_prompt = Unicode(None, allow_none=True, help="System prompt of new conversations.")
    render_rate = Float(15.0, help="Most display updates per second while an answer streams.")
    show_reasoning = Bool(True, help="Show the model's reasoning (a collapsible Thinking block).")
    send_reasoning = Bool(False, help="Send earlier turns' reasoning back to the server (as `reasoning`).")
    image_max_side = Int(DEFAULT_MAX_SIDE, min=0,
                         help="Images sent are shrunk so that their longer side is at most this many pixels "
                              "(0: never shrunk).")
    save_images = Bool(True, help="Saved conversations hold the images sent (as data URLs); False keeps only "
                                  "each image's hash and size.")
    autosave = Bool(True, help="Save the notebook's conversations beside it (.NAME.ipynb.vllm-chat.json) after "
                               "every change, for a restarted kernel to restore.")
    autorestore = Bool(False, help="Restore the notebook's saved conversations as the extension loads, instead "
                                   "of offering to.")
    autosave_file = Unicode(None, allow_none=True,
                            help="Where autosave writes and restore reads (default: beside the notebook the "
                                 "kernel runs; outside a notebook, nowhere).")
    context_budget = Int(2000, min=100, help="Characters at most per variable described for `%%chat --context` "
                                             "(and per cell source or traceback for `%vllm fix`).")

    connection = Instance(Connection, allow_none=True)
    embeddings = Instance(Connection, allow_none=True, help="Set by connect(embeddings_url=...); None: the chat server.")

    def __init__(self, ask_key: AskKey = ask_key_with_getpass, *, notebook: Path | None = None,
                 warn: Warn = warn_with_warnings, **settings: Any) -> None:
        super().__init__(**settings)
        self.ask_key = ask_key
        self.notebook = notebook
        """The notebook the kernel runs (see :func:`~vllm_magic.notebook_store.notebook_path`); autosave
        writes beside it."""
        self.warn = warn
        self.conversations: dict[str, Conversation] = {}
        """Every conversation by name; ``chats`` holds those a request was made on."""
        self.chats: dict[str, Chat] = {}
        self._saved: list[Conversation] | None = None  # what the file held before this session wrote it
        self.in_metadata: list[Conversation] = []
        """The conversations the notebook's metadata holds (the JupyterLab extension tells the kernel):
        restored when no file beside the notebook has any, e.g. for a notebook copied without it."""
        self.mirrors: list[Callable[[dict[str, Any]], None]] = []
        """Called with the saved conversations after each autosave: the notebook's metadata mirrors the file."""
        self._typed_keys: dict[str, str] = {}  # root URL -> a key typed in this session (memory only)
        self._replaced: dict[str, Conversation] = {}  # name -> what the last load replaced

    # -- connections -------------------------------------------------------------------------

    def connect(self, url: str | None = None, *, model: str | None = None, api_key_env: str | None = None,
                ask_key: bool = False, timeout: float | None = None, embeddings_url: str | None = None,
                embedding_model: str | None = None, headers: dict[str, str] | None = None) -> list[str]:
        """Connect (and check) the chat server, and the embeddings server or model when given.

        Returns notes worth showing (e.g. the model list was unavailable). On failure the previous
        connections stay as they were.
        """
        notes: list[str] = []
        previous = self.headers
        self.headers = {**previous, **(headers or {})}
        try:
            chat = self._open(url, model, api_key_env, ask_key, timeout, notes, embeddings=False)
            embeddings = None
            if embeddings_url or embedding_model:  # a model alone: a proxy serving both kinds at one URL
                embeddings = self._open(embeddings_url or url, embedding_model, api_key_env, ask_key, timeout,
                                        notes, embeddings=True)
        except BaseException:
            self.headers = previous  # a failed connect changes nothing
            raise
        self._use(chat, embeddings)
        return notes

    def current_connection(self) -> Connection:
        """The chat connection, connecting from the environment and settings on first use."""
        if self.connection is None:
            self._use(self._open(None, None, None, False, None, [], embeddings=False), None)
        assert self.connection is not None
        return self.connection

    def embeddings_connection(self) -> Connection:
        """Where embeddings go: the server given to ``connect(embeddings_url=...)``, else the chat server."""
        if self.embeddings is None:
            from .embeddings import embedding_connection

            self.embeddings = embedding_connection(client=self.current_connection().client,
                                                   model=self.embedding_model)
        return self.embeddings

    def _open(self, url: str | None, model: str | None, key_env: str | None, ask_key: bool,
              timeout: float | None, notes: list[str], *, embeddings: bool) -> Connection:
        """A checked connection: the server answers, the key is accepted, the model is served."""
        url = url or env_base_url() or self.base_url
        if not url:
            raise errors.ConfigError("No server URL is set.", hint="no_url")
        key_env = key_env or self.api_key_env or None
        if key_env and not env_api_key(key_env) and not ask_key:
            raise errors.ConfigError(
                f"The environment variable {key_env} is not set, so there is no API key to send.",
                hint="key_env_unset", name=key_env,
            )
        timeout = timeout or self.timeout
        root = normalize_base_url(url)
        if ask_key:
            key, source = self._typed(root, force=True), "typed in"
        elif self.credentials:
            key, source = None, f"from {self.credentials}"
        elif env_api_key(key_env):
            key, source = env_api_key(key_env), f"from {key_env or _env_key_name()}"
        elif root in self._typed_keys:
            key, source = self._typed_keys[root], "typed in"
        else:
            key, source = None, "none"
        connection = self._connection(url, key, source, timeout, model, embeddings)
        try:
            connection.check(notes)
        except errors.AuthError:
            if key is not None or self.credentials:
                raise
            connection = self._connection(url, self._typed(root, force=True), "typed in", timeout, model,
                                          embeddings)
            connection.check(notes)
        return connection

    def _connection(self, url: str, key: str | None, source: str, timeout: float, model: str | None,
                    embeddings: bool) -> Connection:
        credentials = _importable(self.credentials) if self.credentials and key is None else None
        client = Client(url, key, timeout=timeout, headers=self.headers, credentials=credentials)
        if embeddings:
            from .embeddings import embedding_connection

            connection = embedding_connection(client=client, model=model or self.embedding_model)
        else:
            connection = Connection(client=client, model=model or self.model)
        connection.key_source = source
        return connection

    def _typed(self, root: str, force: bool) -> str:
        if force or root not in self._typed_keys:
            key = self.ask_key("API key (not echoed, kept in memory for this session only): ").strip()
            self._typed_keys[root] = key
        return self._typed_keys[root]

    def _use(self, chat: Connection, embeddings: Connection | None) -> None:
        old = {c.client for c in (self.connection, self.embeddings) if c is not None}
        for client in old - {chat.client} - ({embeddings.client} if embeddings else set()):
            client.close()
        self.embeddings = embeddings
        for conversation in self.chats.values():
            conversation.connection = chat
        self.connection = chat

    # -- conversations -----------------------------------------------------------------------

    def chat(self, name: str = DEFAULT) -> Chat:
        """The named conversation (created on first use), on the current connection."""
        connection = self.current_connection()
        if name not in self.chats:
            self.chats[name] = Chat(connection=connection, conversation=self.conversation(name))
            for setting in CHAT_SETTINGS:
                setattr(self.chats[name], setting, getattr(self, setting))
        return self.chats[name]

    @observe(*CHAT_SETTINGS)
    def _chat_setting_changed(self, change: dict[str, Any]) -> None:
        for chat in self.chats.values():
            setattr(chat, change["name"], change["new"])

    def conversation(self, name: str = DEFAULT) -> Conversation:
        """The named conversation (made on first use, and saved by autosave); needs no connection."""
        if name not in self.conversations:
            self.conversations[name] = Conversation(system=self.system_prompt, name=name)
            self.conversations[name].on_change(self._autosave)
        return self.conversations[name]

    def existing_chat(self, name: str = DEFAULT) -> Chat:
        """A conversation that exists (the default one always does)."""
        if name in self.conversations or name == DEFAULT:
            return self.chat(name)
        raise errors.ConfigError(f"There is no conversation named {name!r}.", hint="no_conversation",
                                 name=name, existing=", ".join(self.conversations) or "none")

    def load(self, name: str, path: str) -> tuple[Conversation, Conversation | None]:
        """Load a saved conversation into ``name``; return it and what it replaced (if it had turns).

        What was replaced is kept, so :meth:`undo_load` can bring it back.
        """
        loaded = Conversation.load(path)
        return loaded, self._take(self.existing_chat(name).conversation, loaded)

    def _take(self, conversation: Conversation, loaded: Conversation) -> Conversation | None:
        """Put ``loaded``'s turns in ``conversation``; return what it had (if any turns), kept for :meth:`undo_load`."""
        replaced = None
        if len(conversation):
            replaced = Conversation(system=conversation.system, name=conversation.name)
            replaced.replace_with(conversation)
            self._replaced[conversation.name] = replaced
        conversation.replace_with(loaded)
        return replaced

    def undo_load(self, name: str) -> Conversation:
        if name not in self._replaced:
            raise errors.ConfigError(f"No load replaced conversation {name!r} in this session.",
                                     hint="nothing_to_undo_load")
        replaced = self._replaced.pop(name)
        self.conversation(name).replace_with(replaced)
        return replaced

    # -- the notebook's conversations, saved beside it ---------------------------------------------

    @property
    def saved_file(self) -> Path | None:
        """Where autosave writes and :meth:`restore` reads: ``autosave_file``, else beside the notebook."""
        if self.autosave_file:
            return Path(self.autosave_file).expanduser()
        return notebook_store.sidecar_path(self.notebook) if self.notebook else None

    @observe("autosave_file")
    def _saved_file_changed(self, change: dict[str, Any]) -> None:
        self._saved = None

    def saved(self) -> list[Conversation]:
        """The conversations with turns that the saved file held before this session first wrote it
        (an earlier kernel's): read once, so the conversations of this one never hide them."""
        if self._saved is None and self.saved_file is not None:
            self._saved = [c for c in notebook_store.read(self.saved_file) if len(c)]
        return self._saved or [c for c in self.in_metadata if len(c)]

    def restore(self, force: bool = False) -> list[tuple[Conversation, Conversation | None]]:
        """Bring back the notebook's saved conversations (see :meth:`saved`); return each with what it replaced.

        A conversation of this session that has turns is replaced only with ``force``, and then
        :meth:`undo_load` brings it back.
        """
        saved = self.saved()
        if not saved:
            raise self._nothing_saved()
        busy = [(c, self.conversations[c.name]) for c in saved if len(self.conversations.get(c.name, ()))]
        if busy and not force:
            replaced = "; ".join(f"{old.name!r} ({len(old)} turns) by its saved {len(new)} turns"
                                 for new, old in busy)
            raise errors.ConfigError(f"Restoring would replace {replaced}.", hint="restore_replaces")
        return [(c, self._take(self.conversation(c.name), c)) for c in saved]

    def _nothing_saved(self) -> errors.ConfigError:
        if self.saved_file is None:
            return errors.ConfigError("This kernel runs no notebook that vllm_magic knows of (JPY_SESSION_NAME "
                                      "names none), so nothing is saved beside one.", hint="no_notebook")
        return errors.ConfigError(f"{str(self.saved_file)!r} holds no saved conversation.", hint="nothing_saved")

    def _autosave(self, changed: Conversation) -> None:
        path = self.saved_file
        if not self.autosave or path is None:
            return
        try:
            self.saved()  # before the file is overwritten
        except errors.ConfigError as exc:
            self._saved = []  # an unreadable file is replaced by this session's conversations
            self.warn(exc)
        data = notebook_store.as_data(self.conversations.values(), self.save_images)
        try:
            notebook_store.write(path, data)
        except OSError as exc:
            self.warn(errors.ConfigError(f"The conversation could not be saved to {str(path)!r} ({exc}).",
                                         hint="autosave_failed"))
        for mirror in self.mirrors:
            mirror(data)

    # -- params ------------------------------------------------------------------------------

    def request_params(self, **overrides: Any) -> dict[str, Any]:
        """The session's params with ``overrides``, validated (a bad configured value fails here)."""
        return validate({**self.params, **{k: v for k, v in overrides.items() if v is not None}})[0]

    def set_params(self, given: dict[str, Any], unset: list[str] = ()) -> list[str]:  # type: ignore[assignment]
        """Update the default params; return the names passed through to the server unchecked.

        Checked before anything changes: a refused value keeps the old params.
        """
        updated = {k: v for k, v in {**self.params, **given}.items() if k not in unset}
        clean, extras = validate(updated)
        if self.connection is not None and clean.get("max_tokens") is not None:
            self.connection.check_max_tokens(clean["max_tokens"], self.connection.model)
        self.params = clean
        return [name for name in extras if name in given]


def _importable(name: str) -> Callable[[], Any]:
    """``"module:function"`` -> the function."""
    import importlib

    module, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise errors.ConfigError(f"The credentials {name!r} cannot be imported ({exc}).",
                                 hint="bad_credentials") from None
    if not callable(found):
        raise errors.ConfigError(f"The credentials {name!r} are not a function.", hint="bad_credentials")
    return found


def _env_key_name() -> str:
    return "VLLM_API_KEY" if env_api_key("VLLM_API_KEY") else "OPENAI_API_KEY"


_current: Session | None = None


def current_session() -> Session:
    """The session the notebook's magics use (made when the extension loads), else a new one."""
    global _current
    if _current is None:
        _current = Session()
    return _current


def set_current_session(session: Session) -> None:
    global _current
    _current = session
