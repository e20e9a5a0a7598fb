"""vllm_magic: talk to a vLLM (or any OpenAI-compatible) server from Jupyter.

In a notebook: ``%load_ext vllm_magic``, then ``%%chat`` cells and ``%vllm`` commands.
In Python: ``Chat(base_url).ask("hi")``, ``models(base_url)``, ``embed(texts)``, ``ask_each(df, "... {column}")``.
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
    "VLLMError", "Written", "ask_each", "drive", "embed", "models", "load_ipython_extension",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``ask_each``, ``MapStopped`` and ``Written`` load on first use: `%load_ext vllm_magic` stays fast."""
    if name in ("ask_each", "MapStopped", "Written"):
        from . import mapping

        return getattr(mapping, name)
    raise AttributeError(f"module 'vllm_magic' has no attribute {name!r}")


def models(base_url: str | None = None, api_key: str | None = None) -> list[dict[str, Any]]:
    """The models a server serves (``/v1/models`` entries: id, max_model_len, root, parent...)."""
    return Connection(base_url, api_key=api_key).models()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext vllm_magic``: register ``%%chat``, ``%%vllm`` and ``%vllm``."""
    from .magics import VLLMMagics

    magics = VLLMMagics(shell=ipython)
    owner = ipython.magics_manager.magics["cell"].get("chat")
    if owner is not None and not isinstance(getattr(owner, "__self__", None), VLLMMagics):
        del magics.magics["cell"]["chat"]
        print("vllm_magic: %%chat belongs to another extension here, so use %%vllm (same options).")
    ipython.register_magics(magics)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt "vLLM chat" sidebar, for JupyterLab's tools (wheels install it as shared-data)."""
    return [{"src": "labextension", "dest": "vllm-magic-sidebar"}]
