"""IPython glue: ``%%chat`` / ``%%vllm`` cells and ``%vllm`` line commands.

Only argument parsing, calling the engine and choosing where output goes live here; HTTP, SSE and
rendering live in their own modules.
"""

from __future__ import annotations

import argparse
import getpass
import re
import shlex
import string
from collections.abc import Callable
from functools import partial
from typing import Any

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Dict, Float, Unicode, observe

from . import errors
from .chat import Chat, Connection, Response, env_api_key, env_base_url
from .client import Client
from .conversation import Conversation
from .params import parse_assignments, validate
from .render import conversation_html, conversation_text
from .sinks import CellSink, PlainSink

DEFAULT = "default"


def chat_options(magic: Callable) -> Callable:
    """The options of ``%%chat`` and ``%%vllm`` (shown by ``%%chat?``)."""
    options = [
        argument("-m", "--model", help="Model for this cell (default: the connected one)."),
        argument("-t", "--temperature", type=float, help="Sampling temperature for this cell."),
        argument("--max-tokens", type=int, help="Longest answer for this cell, in tokens."),
        argument("-s", "--system", help="Set this conversation's system prompt (kept for later turns)."),
        argument("--new", action="store_true", help="Start the conversation afresh before sending."),
        argument("--once", action="store_true", help="Send without history and record nothing."),
        argument("-c", "--conversation", default=DEFAULT, metavar="NAME", help="Use a named side conversation."),
        argument("--out", metavar="VAR", help="Also store the answer text in variable VAR."),
        argument("--raw", action="store_true", help="Show plain text instead of rendered Markdown."),
        argument("-i", "--interpolate", action="store_true",
                 help="Expand {name} and {expression} from the notebook's variables ({{ and }} for braces)."),
    ]
    for option in reversed(options):
        magic = option(magic)
    return magic_arguments()(magic)


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as a short UsageError instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"%vllm {self.prog}: {message}. See `%vllm?` for the commands.")


@magics_class
class VLLMMagics(Magics):
    """Chat with a vLLM (or OpenAI-compatible) server from notebook cells.

    Settings (``%config VLLMMagics.<name> = value`` or ipython_config.py); environment variables
    VLLM_BASE_URL, VLLM_API_KEY, VLLM_MODEL (then OPENAI_BASE_URL, OPENAI_API_KEY) come first.
    """

    base_url = Unicode(None, allow_none=True, help="Server URL, with or without /v1.").tag(config=True)
    model = Unicode(None, allow_none=True, help="Model to chat with (default: the only one served).").tag(config=True)
    embedding_model = Unicode(
        None, allow_none=True,
        help="Model for %vllm embed (default: VLLM_EMBEDDING_MODEL, then the only one the embeddings server serves).",
    ).tag(config=True)
    api_key_env = Unicode(
        "", help="Environment variable holding the API key (default: VLLM_API_KEY, then OPENAI_API_KEY)."
    ).tag(config=True)
    timeout = Float(120.0, help="Seconds to wait for the server (connect, and between streamed tokens).").tag(config=True)
    params = Dict(help="Default sampling parameters, e.g. {'temperature': 0.2, 'max_tokens': 512}.").tag(config=True)
    system_prompt = Unicode(None, allow_none=True, help="System prompt of new conversations.").tag(config=True)
    render_rate = Float(15.0, help="Most display updates per second while an answer streams.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.connection: Connection | None = None
        self.embeddings: Connection | None = None
        """Set by `connect --embeddings URL`; None: embeddings go to the chat server."""
        self.chats: dict[str, Chat] = {}
        self.panels: dict[str, Any] = {}  # name -> panel.ChatPanel, made by `%vllm panel`
        # Checked when used (each cell validates), so a bad %config value fails a cell visibly
        # instead of vanishing into %config's log.
        self.session_params: dict[str, Any] = dict(self.params)
        self._commands: dict[str, Callable[[list[str]], Any]] = {
            "connect": self._connect, "models": self._models, "params": self._params,
            "usage": self._usage, "history": self._history, "reset": self._reset,
            "undo": self._undo, "retry": self._retry, "system": self._system,
            "save": self._save, "load": self._load, "status": self._status, "debug": self._debug,
            "panel": self._panel, "sidebar": self._sidebar,
        }

    @observe("params")
    def _params_configured(self, change: dict[str, Any]) -> None:
        """``%config VLLMMagics.params = {...}`` replaces the session's params."""
        self.session_params = dict(change["new"])

    # -- the cell magic ----------------------------------------------------------------------------

    @chat_options
    @line_cell_magic
    def vllm(self, line: str, cell: str | None = None) -> Any:
        """Line: ``%vllm COMMAND ...``; cell: ``%%vllm [options]`` (same as ``%%chat``) + prompt.

        Commands::

          connect URL [--model M] [--embeddings URL] [--api-key-env NAME] [--ask-key] [--timeout S]
          models                      served models as a DataFrame
          embed EXPR [--model M] [--batch-size N] [--concurrency K] [--dimensions D] [--truncate]
                [--with-text] [--skip-missing] [--out VAR]
                                      embeddings of a str, list of str or Series as a DataFrame
          params [k=v ...] [--unset k ...]   show or set sampling parameters for every cell
          usage [-c NAME]             token usage and timings per turn, as a DataFrame
          history [-c NAME]           the conversation so far
          reset [-c NAME] [--all]     forget the conversation (keeps the system prompt)
          undo [-c NAME]              drop the last turn
          retry [-c NAME]             ask the last prompt again
          system [TEXT] [--clear]     show or set the system prompt
          save PATH / load PATH       the conversation as JSON (never the API key)
          status                      server health, version, models, URL, model
          debug on|off                show full tracebacks instead of one-paragraph errors
          panel [-c NAME]             a chat panel on this notebook's conversation
          sidebar                     open the chat in JupyterLab's right sidebar

        The prompt is sent exactly as written; braces are only expanded with ``--interpolate``.
        """
        if cell is None:
            return self._line(line)
        return self._cell(line, cell)

    @chat_options
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell to the model and stream the answer as rendered Markdown.

        The conversation continues across cells (one per notebook); ``-c NAME`` keeps side
        conversations. The prompt is sent exactly as written; braces are only expanded with
        ``--interpolate``. ``%vllm?`` lists the line commands (connect, params, usage...).
        """
        self._cell(line, cell)

    def _cell(self, line: str, cell: str) -> None:
        args = self.chat.parser.parse_args(split_words(line))
        prompt = cell.strip("\n")
        if not prompt.strip():
            raise UsageError("The cell has no prompt: write the message on the lines below `%%chat`.")
        if args.interpolate:
            prompt = interpolate(prompt, self.shell.user_ns)
        chat = self.chat_for(args.conversation)
        if args.new:
            chat.reset()
        if args.system is not None:
            chat.conversation.set_system(args.system)
        overrides = {"temperature": args.temperature, "max_tokens": args.max_tokens}
        params = {**self.session_params, **{k: v for k, v in overrides.items() if v is not None}}
        response = chat.stream(prompt, model=args.model, record=not args.once, **params)
        text = self.show(response, raw=args.raw)
        if args.out:
            self.shell.user_ns[args.out] = text

    def show(self, response: Response, raw: bool = False) -> str:
        """Stream ``response`` into the cell's output; return the text. Errors keep what arrived."""
        rich = not raw and getattr(self.shell, "kernel", None) is not None
        sink = CellSink(rate=self.render_rate) if rich else PlainSink(rate=self.render_rate)
        sink.start()
        try:
            for piece in response:
                sink.feed(piece)
        except KeyboardInterrupt:
            sink.close(response.turn)
            raise interrupted(response) from None
        except errors.VLLMError:
            sink.close(response.turn)
            raise
        sink.close(response.turn)
        return response.turn.text if response.turn else ""

    # -- the line commands ---------------------------------------------------------------------

    def _line(self, line: str) -> Any:
        name, _, rest = line.strip().partition(" ")
        if name == "embed":  # takes a Python expression, which shell-like splitting would mangle
            return self._embed(rest)
        words = split_words(line)
        if not words:
            return self._status([])
        command = self._commands.get(words[0])
        if command is None:
            raise UsageError(
                f"`%vllm {words[0]}` is not a command. Commands: {', '.join([*self._commands, 'embed'])}. "
                "See `%vllm?`."
            )
        return command(words[1:])

    def _connect(self, words: list[str]) -> None:
        p = _Parser(prog="connect")
        p.add_argument("url", nargs="?")
        p.add_argument("--model")
        p.add_argument("--api-key-env", metavar="NAME")
        p.add_argument("--ask-key", action="store_true")
        p.add_argument("--timeout", type=float)
        p.add_argument("--embeddings", metavar="URL")
        args = p.parse_args(words)
        connection = self.make_connection(args.url, args.model, args.api_key_env, args.ask_key, args.timeout)
        embeddings = None
        if args.embeddings:
            embeddings = self.make_connection(args.embeddings, None, args.api_key_env, args.ask_key,
                                              args.timeout, embeddings=True)
        self._use_embeddings(embeddings)
        self._use(connection)
        print(describe(connection, key_source=self._key_source(args.api_key_env, args.ask_key)))
        if embeddings:
            print(f"Embeddings: {embeddings.client.display_url} · model {embeddings.model}")

    def make_connection(self, url: str | None = None, model: str | None = None, key_env: str | None = None,
                        ask_key: bool = False, timeout: float | None = None, embeddings: bool = False) -> Connection:
        """A checked connection: the server answers ``/v1/models`` and the model is resolved.

        ``embeddings``: the model comes from the embedding settings (see :mod:`.embeddings`).
        """
        open_connection = partial(Connection, model=model or self.model)
        if embeddings:
            from .embeddings import embedding_connection

            open_connection = partial(embedding_connection, model=model or self.embedding_model)
        url = url or env_base_url() or self.base_url
        if not url:
            raise errors.ConfigError(
                "No server URL is set.",
                "Connect with `%vllm connect http://HOST:8000`, or set VLLM_BASE_URL before starting "
                "the kernel, or `%config VLLMMagics.base_url = 'http://HOST:8000'`.",
            )
        if key_env and not env_api_key(key_env) and not ask_key:
            raise errors.ConfigError(
                f"The environment variable {key_env} is not set, so there is no API key to send.",
                f"Set {key_env} before starting the kernel, or use `--ask-key` to type it in.",
            )
        key = self._ask_key() if ask_key else env_api_key(key_env or self.api_key_env or None)
        client = Client(url, key, timeout=timeout or self.timeout)
        connection = open_connection(client=client)
        try:
            connection.models()
        except errors.AuthError:
            if key is not None or ask_key:
                raise
            connection = open_connection(client=Client(url, self._ask_key(), timeout=timeout or self.timeout))
            connection.models()
        connection.resolve_model()
        return connection

    def _ask_key(self) -> str:
        try:
            key = getpass.getpass("API key (not echoed, not stored): ")
        except StdinNotImplementedError:
            raise errors.AuthError(
                "The server wants an API key and none was found in VLLM_API_KEY or OPENAI_API_KEY; "
                "this kernel cannot prompt for one.",
                "Set VLLM_API_KEY before starting the kernel, or name another variable with "
                "`%vllm connect URL --api-key-env NAME`.",
            ) from None
        return key.strip()

    def _key_source(self, key_env: str | None, asked: bool) -> str:
        if asked:
            return "typed in"
        for name in [key_env or self.api_key_env or "VLLM_API_KEY", "OPENAI_API_KEY"]:
            if name and env_api_key(name):
                return f"from {name}"
        return "none"

    def _use(self, connection: Connection) -> None:
        if self.connection is not None and self.connection.client is not connection.client:
            self.connection.client.close()
        self.connection = connection
        for chat in self.chats.values():
            chat.connection = connection

    def _use_embeddings(self, connection: Connection | None) -> None:
        chat_client = self.connection.client if self.connection else None
        if self.embeddings is not None and self.embeddings.client is not chat_client:
            self.embeddings.client.close()
        self.embeddings = connection

    def embeddings_connection(self) -> Connection:
        """Where embeddings go: the server of `connect --embeddings`, else the chat server."""
        if self.embeddings is None:
            from .embeddings import embedding_connection

            self.embeddings = embedding_connection(client=self.current_connection().client)
        return self.embeddings

    def _embed(self, line: str) -> Any:  # -> pandas.DataFrame | None
        """``%vllm embed EXPR [options]``: the options are read from the end, the rest is EXPR."""
        from .embeddings import embed

        expression, options = split_expression(line)
        p = _Parser(prog="embed", argument_default=argparse.SUPPRESS)
        p.add_argument("--model")
        p.add_argument("--batch-size", type=int)
        p.add_argument("--concurrency", type=int)
        p.add_argument("--dimensions", type=int)
        p.add_argument("--truncate", action="store_true")
        p.add_argument("--with-text", action="store_true")
        p.add_argument("--skip-missing", action="store_true")
        p.add_argument("--out", metavar="VAR")
        given = vars(p.parse_args(split_words(options)))
        out, model = given.pop("out", None), given.pop("model", None)
        texts = evaluate(expression, self.shell.user_ns)
        try:
            frame = embed(texts, model or self.embedding_model, connection=self.embeddings_connection(), **given)
        except KeyboardInterrupt:
            raise errors.Interrupted("Stopped: the requests in flight were cancelled and nothing was stored.",
                                     "Run the cell again when ready.") from None
        if out is None:
            return frame
        self.shell.user_ns[out] = frame
        print(f"{out} = {len(frame):,} × {frame.shape[1]:,} embeddings DataFrame")
        return None

    def current_connection(self) -> Connection:
        if self.connection is None:
            self._use(self.make_connection())
        assert self.connection is not None
        return self.connection

    def chat_for(self, name: str = DEFAULT) -> Chat:
        """The named conversation of this kernel (created on first use), on the current connection."""
        connection = self.current_connection()
        if name not in self.chats:
            self.chats[name] = Chat(connection=connection,
                                    conversation=Conversation(system=self.system_prompt, name=name))
        return self.chats[name]

    def _conversation_args(self, prog: str, words: list[str], *extra: tuple[tuple[str, ...], dict]) -> argparse.Namespace:
        p = _Parser(prog=prog)
        p.add_argument("-c", "--conversation", default=DEFAULT, metavar="NAME")
        for flags, kwargs in extra:
            p.add_argument(*flags, **kwargs)
        return p.parse_args(words)

    def _models(self, words: list[str]):  # -> pandas.DataFrame
        import pandas as pd

        _Parser(prog="models").parse_args(words)
        rows = self.current_connection().models(refresh=True)
        columns = ["id", "max_model_len", "root", "parent", "owned_by"]
        return pd.DataFrame([{c: m.get(c) for c in columns} for m in rows], columns=columns)

    def _params(self, words: list[str]) -> None:
        assignments, unset = [], []
        queue = iter(words)
        for word in queue:
            if word == "--unset":
                name = next(queue, None)
                if name is None:
                    raise UsageError("`--unset` needs a name, e.g. `%vllm params --unset temperature`.")
                unset.append(name.replace("-", "_"))
            else:
                assignments.append(word)
        given = parse_assignments(assignments)
        updated = {k: v for k, v in {**self.session_params, **given}.items() if k not in unset}
        self.session_params, extras = validate(updated)
        for name in extras:
            if name in given:
                print(f"Note: `{name}` is not a parameter vllm_magic checks; it is passed to vLLM as is.")
        for panel in self.panels.values():
            panel.refresh()
        if not self.session_params:
            print("No parameters set: the server's defaults apply.")
        for name, value in self.session_params.items():
            print(f"{name} = {value!r}")

    def _usage(self, words: list[str]):  # -> pandas.DataFrame
        args = self._conversation_args("usage", words)
        return self._existing_chat(args.conversation).usage()

    def _existing_chat(self, name: str) -> Chat:
        if name in self.chats:
            return self.chats[name]
        if name == DEFAULT:
            return self.chat_for(name)
        raise errors.ConfigError(
            f"There is no conversation named {name!r}.",
            f"Existing ones: {', '.join(self.chats) or 'none'}; `%%chat -c {name}` starts it.",
        )

    def _history(self, words: list[str]) -> None:
        args = self._conversation_args("history", words)
        conversation = self._existing_chat(args.conversation).conversation
        if getattr(self.shell, "kernel", None) is not None:
            from IPython.display import HTML, display

            display(HTML(conversation_html(conversation)))
        else:
            print(conversation_text(conversation))

    def _reset(self, words: list[str]) -> None:
        args = self._conversation_args("reset", words, (("--all",), {"action": "store_true"}))
        targets = list(self.chats.values()) if args.all else [self._existing_chat(args.conversation)]
        for chat in targets:
            chat.reset()
        print(f"Conversation{'s' if len(targets) > 1 else ''} cleared.")

    def _undo(self, words: list[str]) -> None:
        args = self._conversation_args("undo", words)
        turn = self._existing_chat(args.conversation).undo()
        print("Nothing to undo." if turn is None else f"Dropped the last turn (prompt: {_preview(turn.prompt)}).")

    def _retry(self, words: list[str]) -> None:
        args = self._conversation_args("retry", words)
        chat = self._existing_chat(args.conversation)
        self.show(chat.retry(**self.session_params))

    def _system(self, words: list[str]) -> None:
        args = self._conversation_args("system", words, (("text",), {"nargs": "*"}),
                                       (("--clear",), {"action": "store_true"}))
        conversation = self._existing_chat(args.conversation).conversation
        if args.clear:
            conversation.set_system(None)
        elif args.text:
            conversation.set_system(" ".join(args.text))
        print(f"System prompt: {conversation.system!r}" if conversation.system else "No system prompt.")

    def _save(self, words: list[str]) -> None:
        args = self._conversation_args("save", words, (("path",), {}))
        path = self._existing_chat(args.conversation).conversation.save(args.path)
        print(f"Saved {args.conversation!r} to {path}.")

    def _load(self, words: list[str]) -> None:
        args = self._conversation_args("load", words, (("path",), {}))
        loaded = Conversation.load(args.path)
        self._existing_chat(args.conversation).conversation.replace_with(loaded)
        print(f"Loaded {len(loaded)} turns into {args.conversation!r}.")

    def _status(self, words: list[str]) -> None:
        _Parser(prog="status").parse_args(words)
        connection = self.current_connection()
        client = connection.client
        healthy = client.health()
        print(describe(connection, key_source="set" if client.has_api_key else "none"))
        print(f"health: {'ok' if healthy else 'NOT OK'} · vLLM version: {client.version() or 'unknown'}")
        names = ", ".join(m["id"] for m in connection.models(refresh=True))
        print(f"models: {names} · conversations: "
              + (", ".join(f"{n} ({len(c.conversation)} turns)" for n, c in self.chats.items()) or "none yet"))

    def _panel(self, words: list[str]) -> Any:
        from .panel import panel_for

        args = self._conversation_args("panel", words)
        return panel_for(self, args.conversation).widget

    def _sidebar(self, words: list[str]) -> None:
        """Ask JupyterLab (through the sidebar extension's renderer) to open the vLLM chat sidebar."""
        from IPython.display import display

        _Parser(prog="sidebar").parse_args(words)
        handle = display({"application/vnd.vllm-magic.command+json": {"command": "open-sidebar"},
                          "text/plain": "The vLLM chat sidebar opens in JupyterLab (right side)."},
                         raw=True, display_id=True)
        # The front end acts on the request as it renders it; replacing it at once with text keeps
        # a saved notebook from opening the sidebar again every time it is reopened.
        handle.update({"text/plain": "Opened the vLLM chat sidebar (JupyterLab, right side)."}, raw=True)

    def _debug(self, words: list[str]) -> None:
        if words not in (["on"], ["off"]):
            raise UsageError("Use `%vllm debug on` or `%vllm debug off`.")
        errors.show_tracebacks = words[0] == "on"
        print(f"Full tracebacks {'on' if errors.show_tracebacks else 'off'}.")


def split_words(line: str) -> list[str]:
    """Shell-like words: quotes group words and are removed (``--system "Be terse."``)."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"Could not read the options {line!r}: {exc}.") from None


def split_expression(line: str) -> tuple[str, str]:
    """``EXPR --option ...`` -> ``(EXPR, "--option ...")``.

    The options start at the first `` --name`` with a complete Python expression before it, so
    `` --`` inside a string of the expression stays in it.
    """
    for match in re.finditer(r"(?:^|\s)--[A-Za-z]", line):
        head = line[: match.start()].strip()
        try:
            compile(head, "<embed>", "eval")
        except SyntaxError:
            continue
        return head, line[match.start() :]
    return line.strip(), ""


def evaluate(expression: str, namespace: dict[str, Any]) -> Any:
    """The value of the user's notebook ``expression``, or a one-paragraph error."""
    if not expression:
        raise UsageError("`%vllm embed` needs the texts first, e.g. `%vllm embed df.text --model NAME`.")
    try:
        return eval(expression, namespace)  # noqa: S307 - the user's own notebook expression
    except Exception as exc:
        raise errors.ConfigError(
            f"`%vllm embed` could not evaluate {expression!r}: {type(exc).__name__}: {exc}.",
            "Write the expression first, then the options, e.g. `%vllm embed df.text --truncate`; "
            'quote literal text: `%vllm embed "some text"`.',
        ) from None


def describe(connection: Connection, key_source: str) -> str:
    model = connection.model or "?"
    limit = connection.max_model_len(model) if connection.model else None
    limit_text = f" (max_model_len {limit})" if limit else ""
    return f"Connected to {connection.client.display_url} · model {model}{limit_text} · API key: {key_source}"


def interrupted(response: Response) -> errors.Interrupted:
    turn = response.turn
    if turn is None or not turn.text:
        return errors.Interrupted(
            "Stopped before the server sent any text; nothing was added to the conversation.",
            "Run the cell again when ready.",
        )
    return errors.Interrupted(
        f"Stopped after {len(turn.text)} characters; the partial answer is kept in the conversation, "
        "marked interrupted.",
        "`%vllm undo` drops it; `%vllm retry` asks again.",
    )


def interpolate(template: str, namespace: dict[str, Any]) -> str:
    """Expand ``{expr}`` (with optional ``!r`` and ``:spec``) from ``namespace``; ``{{`` is a brace."""
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise errors.ConfigError(
            f"--interpolate could not read the prompt's braces ({exc}).",
            "Write a literal brace as {{ or }}, or drop --interpolate to send the prompt as written.",
        ) from None
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        try:
            value = eval(field, namespace)  # noqa: S307 - the user's own notebook expression
        except Exception as exc:
            raise errors.ConfigError(
                f"--interpolate could not evaluate {{{field}}}: {type(exc).__name__}: {exc}.",
                "Define the variable first, write a literal brace as {{ or }}, or drop --interpolate.",
            ) from None
        if conversion:
            value = {"r": repr, "s": str, "a": ascii}[conversion](value)
        out.append(format(value, spec or ""))
    return "".join(out)


def _preview(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "\u2026")
