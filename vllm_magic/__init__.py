"""vllm_magic: talk to a vLLM (or any OpenAI-compatible) server from Jupyter.

In a notebook: ``%load_ext vllm_magic``, then ``%%chat`` cells and ``%vllm`` commands.
In Python: ``Chat(base_url).ask("hi")``, ``models(base_url)``, ``embed(texts)``, ``ask_each(df, "... {column}")``,
``complete("def fib(n):", max_tokens=64)`` (a base model continues a prompt),
and ``@tool`` for functions the model may call (``chat.ask("...", tools=[f])``).
"""

from __future__ import annotations

from typing import Any

from .chat import Chat
from .connection import Connection
from .client import Client
from .conversation import Conversation, Turn
from .embeddings import embed
from .errors import VLLMError
from .messages import Message
from .response import Response, drive
from .session import Session

__all__ = [
    "Chat", "Client", "Connection", "Conversation", "MapStopped", "Message", "Response", "Session", "Turn",
    "VLLMError", "Written", "ask_each", "complete", "drive", "embed", "models", "load_ipython_extension", "tool",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``ask_each``, ``MapStopped``, ``Written`` and ``tool`` load on first use: `%load_ext vllm_magic`
    stays fast."""
    if name in ("ask_each", "MapStopped", "Written"):
        from . import mapping

        return getattr(mapping, name)
    if name == "tool":
        from .tools import tool

        return tool
    raise AttributeError(f"module 'vllm_magic' has no attribute {name!r}")


def models(base_url: str | None = None, api_key: str | None = None) -> list[dict[str, Any]]:
    """The models a server serves (``/v1/models`` entries: id, max_model_len, root, parent...)."""
    return Connection(base_url, api_key=api_key).models()


def complete(prompt: str, *, base_url: str | None = None, api_key: str | None = None, model: str | None = None,
             timeout: float = 120.0, **params: Any) -> str:
    """A base model's continuation of ``prompt`` (``/v1/completions``), as text.

    The server is ``base_url`` (else VLLM_BASE_URL) with ``api_key`` (else VLLM_API_KEY); ``params`` as for
    :meth:`Chat.complete` (``max_tokens``, ``stop``, ``echo``...), which also streams it and tells its usage.
    """
    return Chat(base_url, model, api_key=api_key, timeout=timeout).complete(prompt, **params).text()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext vllm_magic``: register ``%%chat``, ``%%vllm`` and ``%vllm``, and offer the notebook's
    conversations saved before a kernel restart (``%vllm restore``)."""
    from .magics import VLLMMagics
    from .magics.metadata import mirror_to_metadata
    from .magics.restore import offer_saved

    magics = VLLMMagics(shell=ipython)
    owner = ipython.magics_manager.magics["cell"].get("chat")
    if owner is not None and not isinstance(getattr(owner, "__self__", None), VLLMMagics):
        del magics.magics["cell"]["chat"]
        print("vllm_magic: %%chat belongs to another extension here, so use %%vllm (same options).")
    ipython.register_magics(magics)
    mirror_to_metadata(magics)
    offer_saved(magics)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt "vLLM chat" sidebar, for JupyterLab's tools (wheels install it as shared-data)."""
    return [{"src": "labextension", "dest": "vllm-magic-sidebar"}]
