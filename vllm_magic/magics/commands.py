"""The ``%vllm`` commands on the session: connection, parameters, conversations, views."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .. import errors
from ..client import Client, redact_url
from ..connection import Connection
from ..params import parse_assignments
from ..render import conversation_html, conversation_text
from .cell import show
from .notebook import in_kernel, preview
from .registry import CONVERSATION, arg, command

if TYPE_CHECKING:
    from . import VLLMMagics


@command(
    "connect", "connect to a server and check it (the key is never echoed)",
    arg("url", nargs="?", help="http://HOST:PORT, with or without /v1 (default: VLLM_BASE_URL)"),
    arg("--model", help="the model to chat with (default: the only one served)"),
    arg("--embeddings", metavar="URL", help="a separate server for %%vllm embed"),
    arg("--embedding-model", metavar="NAME", help="the embedding model (default: the only one served)"),
    arg("--api-key-env", metavar="NAME", help="environment variable with the key (default: VLLM_API_KEY)"),
    arg("--ask-key", action="store_true", help="type the key in (kept in memory for this session only)"),
    arg("--timeout", type=float, metavar="S", help="seconds to wait for the server"),
    arg("--header", action="append", default=[], metavar='"NAME: VALUE"',
        help="a header for every request, e.g. a gateway's (repeatable; values are never shown)"),
)
def connect(magics: VLLMMagics, args: argparse.Namespace) -> None:
    session = magics.session
    notes = session.connect(args.url, model=args.model, api_key_env=args.api_key_env, ask_key=args.ask_key,
                            timeout=args.timeout, embeddings_url=args.embeddings,
                            embedding_model=args.embedding_model, headers=_headers(args.header))
    for note in notes:
        print(f"Note: {note}")
    print(describe(session.current_connection()))
    if session.embeddings is not None:
        print(f"Embeddings: {session.embeddings.client.display_url} · model {session.embeddings.model or '?'}")


def _headers(given: list[str]) -> dict[str, str] | None:
    headers = {}
    for text in given:
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or " " in name.strip():  # what was given may be a secret: not echoed
            raise UsageError('--header takes "NAME: VALUE", e.g. --header "X-Org: analytics"; one of the '
                             "headers given has no name before a colon.")
        headers[name.strip()] = value.strip()
    return headers or None


def describe(connection: Connection) -> str:
    model = connection.model or "?"
    limit = connection.max_model_len(model) if connection.model else None
    limit_text = f" (max_model_len {limit})" if limit else ""
    names = connection.client.header_names
    headers = f" · headers: {', '.join(names)}" if names else ""
    return (f"Connected to {connection.client.display_url} · model {model}{limit_text} · "
            f"API key: {connection.key_source}{headers}")


@command("models", "the served models, as a DataFrame")
def models(magics: VLLMMagics, args: argparse.Namespace) -> Any:  # -> pandas.DataFrame
    import pandas as pd

    rows = magics.session.current_connection().models(refresh=True)
    columns = ["id", "max_model_len", "root", "parent", "owned_by"]
    return pd.DataFrame([{c: m.get(c) for c in columns} for m in rows], columns=columns)


@command(
    "params", "show or set the sampling parameters of every cell",
    arg("assignments", nargs="*", metavar="NAME=VALUE",
        help="e.g. temperature=0.7 max_tokens=512 top_k=40 (any vLLM parameter passes through)"),
    arg("--unset", action="append", default=[], metavar="NAME", help="remove a parameter (repeatable)"),
)
def params(magics: VLLMMagics, args: argparse.Namespace) -> None:
    session = magics.session
    unset = [name.replace("-", "_") for name in args.unset]
    for name in session.set_params(parse_assignments(args.assignments), unset):
        print(f"Note: `{name}` is not a parameter vllm_magic checks; it is passed to vLLM as is.")
    if not session.params:
        print("No parameters set: the server's defaults apply.")
    for name, value in session.params.items():
        print(f"{name} = {value!r}")


@command("usage", "token usage and timings per turn, as a DataFrame", CONVERSATION)
def usage(magics: VLLMMagics, args: argparse.Namespace) -> Any:  # -> pandas.DataFrame
    return magics.session.existing_chat(args.conversation).usage()


@command("history", "the conversation so far", CONVERSATION,
         arg("--cells", action="store_true",
             help="name the cell that made each turn: In [N], or panel for the panel and the sidebar"))
def history(magics: VLLMMagics, args: argparse.Namespace) -> None:
    conversation = magics.session.existing_chat(args.conversation).conversation
    if in_kernel(magics.shell):
        from IPython.display import HTML, display

        display(HTML(conversation_html(conversation, cells=args.cells)))
    else:
        print(conversation_text(conversation, cells=args.cells))


@command("pick", "keep sample I of the last turn's samples (%%chat --n N) as its answer", CONVERSATION,
         arg("index", type=int, help="the sample to keep, from 0"))
def pick(magics: VLLMMagics, args: argparse.Namespace) -> None:
    turns = magics.session.existing_chat(args.conversation).history
    if not turns:
        raise errors.ConfigError("There is no turn yet.", hint="no_samples")
    turns[-1].pick(args.index)
    text = turns[-1].text
    print(f"Kept sample {args.index}: {text[:80] + '…' if len(text) > 80 else text}")


@command("logprobs", "the last answer's tokens and their probabilities (%%chat --logprobs), as a DataFrame",
         CONVERSATION)
def logprobs(magics: VLLMMagics, args: argparse.Namespace) -> Any:  # -> pandas.DataFrame
    turns = magics.session.existing_chat(args.conversation).history
    table = turns[-1].logprobs if turns else None
    if table is None:
        raise errors.ConfigError("The last turn has no logprobs.",
                                 "Ask with `%%chat --logprobs` (or `--logprobs K` for K alternatives per token).")
    return table


@command("tools", "the functions registered with @vllm_magic.tool, which the model may call")
def tools(magics: VLLMMagics, args: argparse.Namespace) -> None:
    from ..tools import REGISTRY

    if not REGISTRY:
        print("No tools registered yet: decorate a function with `@vllm_magic.tool`, or name the notebook's "
              "functions in a cell: `%%chat --tools f,g`.")
    for name, tool in REGISTRY.items():
        arguments = ", ".join(f"{arg}: {spec.get('type', 'any')}" for arg, spec in
                              tool.parameters.get("properties", {}).items())
        print(f"{name}({arguments})" + (f" \u2014 {tool.description}" if tool.description else ""))


@command("reset", "forget the conversation (the system prompt stays)", CONVERSATION,
         arg("--all", action="store_true", help="every conversation"))
def reset(magics: VLLMMagics, args: argparse.Namespace) -> None:
    session = magics.session
    targets = (list(session.conversations.values()) if args.all
               else [session.existing_chat(args.conversation).conversation])
    for conversation in targets:
        conversation.reset()
    print(f"Conversation{'s' if len(targets) > 1 else ''} cleared.")


@command("undo", "drop the last turn", CONVERSATION)
def undo(magics: VLLMMagics, args: argparse.Namespace) -> None:
    turn = magics.session.existing_chat(args.conversation).undo()
    print("Nothing to undo." if turn is None else f"Dropped the last turn (prompt: {preview(turn.prompt)}).")


@command("retry", "ask the last prompt again (the new answer replaces the old one)", CONVERSATION)
def retry(magics: VLLMMagics, args: argparse.Namespace) -> None:
    session = magics.session
    show(magics, session.existing_chat(args.conversation).retry(**session.request_params()))


@command("system", "show or set the system prompt", CONVERSATION,
         arg("text", nargs="*", help="the new system prompt"),
         arg("--clear", action="store_true", help="remove the system prompt"))
def system(magics: VLLMMagics, args: argparse.Namespace) -> None:
    conversation = magics.session.existing_chat(args.conversation).conversation
    if args.clear:
        conversation.set_system(None)
    elif args.text:
        conversation.set_system(" ".join(args.text))
    print(f"System prompt: {conversation.system!r}" if conversation.system else "No system prompt.")


@command("save", "save the conversation as JSON (never the API key; images whole unless "
                 "VLLMMagics.save_images is False)", CONVERSATION, arg("path"))
def save(magics: VLLMMagics, args: argparse.Namespace) -> None:
    session = magics.session
    path = session.existing_chat(args.conversation).conversation.save(args.path, image_data=session.save_images)
    print(f"Saved {args.conversation!r} to {path}.")


@command("load", "load a saved conversation, replacing this one (--undo brings it back)", CONVERSATION,
         arg("path", nargs="?"),
         arg("--undo", action="store_true", help="bring back what the last load replaced"))
def load(magics: VLLMMagics, args: argparse.Namespace) -> None:
    session = magics.session
    if args.undo:
        restored = session.undo_load(args.conversation)
        print(f"Brought back {args.conversation!r} as it was before the load ({len(restored)} turns).")
        return
    if not args.path:
        raise UsageError("`%vllm load` needs a PATH (or `--undo`).")
    loaded, replaced = session.load(args.conversation, args.path)
    said = f"Loaded {len(loaded)} turns into {args.conversation!r}"
    if replaced is not None:
        said += f", replacing its {len(replaced)} turns (`%vllm load --undo` brings them back)"
    print(said + ".")


@command("status", "server health, vLLM version, models, URL (credentials hidden), conversations")
def status(magics: VLLMMagics, args: argparse.Namespace) -> None:
    session = magics.session
    connection = session.current_connection()
    print(describe(connection))
    print(_health_line(connection))
    names = _known(lambda: ", ".join(m["id"] for m in connection.models(refresh=True)))
    chats = ", ".join(f"{n} ({len(c.conversation)} turns)" for n, c in session.chats.items()) or "none yet"
    print(f"models: {names} · conversations: {chats}")
    for line in _load_lines(connection.client):
        print(line)
    if session.embeddings is not None and session.embeddings.client is not connection.client:
        embeddings = session.embeddings
        print(f"embeddings: {embeddings.client.display_url} · model {embeddings.model or '?'} · "
              + _health_line(embeddings))


def _health_line(connection: Connection) -> str:
    """What the server says of itself; a server without vLLM's /health or /version (a router, a proxy,
    llama.cpp's server) gets "unknown" and why, not a failed command."""
    client = connection.client
    health = _known(lambda: "ok" if client.health() else "NOT OK")
    return f"health: {health} · vLLM version: {_known(lambda: client.version() or 'unknown (no /version)')}"


def _load_lines(client: Client) -> list[str]:
    """The load of the server, or of each replica behind a vLLM router."""
    replicas = client.replicas()
    if not replicas:
        return [f"load: {_known(lambda: _load(client.metrics()))}"]
    return [f"load of replica {redact_url(url)}: {_known(lambda url=url: _load(client.metrics(url)))}"
            for url in replicas]


def _load(samples: list[tuple[str, dict[str, str], float]]) -> str:
    """A server's load from its /metrics, summed over its engines."""
    def total(name: str) -> float:
        return sum(value for metric, _, value in samples if metric == name)

    kv = max((value for metric, _, value in samples if metric == "vllm:kv_cache_usage_perc"), default=0.0)
    return (f"{total('vllm:num_requests_running'):.0f} running, {total('vllm:num_requests_waiting'):.0f} waiting · "
            f"KV cache {kv:.0%} · {total('vllm:generation_tokens_total'):,.0f} tokens generated")


@command("metrics", "the server's vLLM metrics (/metrics), as a DataFrame (per replica behind a router)")
def metrics(magics: VLLMMagics, args: argparse.Namespace) -> Any:  # -> pandas.DataFrame
    import pandas as pd

    client = magics.session.current_connection().client
    replicas = client.replicas()
    rows = [{"replica": replica, "metric": name, "labels": ", ".join(f"{k}={v}" for k, v in labels.items()),
             "value": value}
            for replica in replicas or [None] for name, labels, value in client.metrics(replica)]
    columns = ["replica", "metric", "labels", "value"] if replicas else ["metric", "labels", "value"]
    return pd.DataFrame(rows, columns=columns)


def _known(ask: Callable[[], str]) -> str:
    try:
        return ask()
    except errors.VLLMError as exc:
        return f"unknown ({exc.cause})"


@command("debug", "full tracebacks instead of one-paragraph errors", arg("state", choices=["on", "off"]))
def debug(magics: VLLMMagics, args: argparse.Namespace) -> None:
    errors.show_tracebacks = args.state == "on"
    print(f"Full tracebacks {args.state}.")


@command("panel", "a chat panel (widgets) on this notebook's conversation", CONVERSATION)
def panel(magics: VLLMMagics, args: argparse.Namespace) -> Any:
    _need_jupyter(magics, "panel")
    from ..panel import panel_for

    return panel_for(magics.session, args.conversation).widget


@command("sidebar", "open the chat in JupyterLab's right sidebar")
def sidebar(magics: VLLMMagics, args: argparse.Namespace) -> None:
    """Ask JupyterLab (through the sidebar extension's renderer) to open the vLLM chat sidebar."""
    _need_jupyter(magics, "sidebar")
    from IPython.display import display

    handle = display({"application/vnd.vllm-magic.command+json": {"command": "open-sidebar"},
                      "text/plain": "The vLLM chat sidebar needs JupyterLab; elsewhere use `%vllm panel`."},
                     raw=True, display_id=True)
    # The front end acts on the request as it renders it; replacing it at once with text keeps a
    # saved notebook from opening the sidebar again every time it is reopened. The kernel cannot
    # know which front end rendered it, so the text claims no more than a request.
    handle.update({"text/plain": "Asked JupyterLab to open the vLLM chat sidebar (right side); other "
                                 "front ends have no sidebar: use `%vllm panel` there."}, raw=True)


def _need_jupyter(magics: VLLMMagics, name: str) -> None:
    if not in_kernel(magics.shell):
        raise UsageError(f"`%vllm {name}` needs Jupyter (a notebook or JupyterLab): this terminal cannot "
                         "show widgets. `%%chat` cells work here.")
