"""The notebook's metadata as a second home for its conversations, through the JupyterLab extension.

After each autosave the kernel sends the saved conversations over a comm (target
``vllm_magic.notebook``) to the extension, which keeps them in the notebook's metadata (key
``vllm_magic``), saved with the notebook. When the comm opens, the extension answers with what the
metadata held; :meth:`~vllm_magic.session.Session.saved` falls back to it when no file beside the
notebook has any (a notebook copied without its hidden file). The answer arrives once the cell
that loaded the extension has finished (a kernel hears the front end between cells), so it serves
``%vllm restore``, not the line ``%load_ext`` prints. Without the extension nothing is kept there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import notebook_store
from .notebook import in_kernel

if TYPE_CHECKING:
    from ..session import Session
    from . import VLLMMagics

TARGET = "vllm_magic.notebook"


def mirror_to_metadata(magics: VLLMMagics) -> None:
    """Open the comm to the extension (in a kernel running a notebook) and mirror every autosave into it."""
    session = magics.session
    if not in_kernel(magics.shell) or session.notebook is None:
        return
    from comm import create_comm  # ipykernel's own dependency: present wherever a kernel runs

    channel = create_comm(target_name=TARGET, data={})
    channel.on_msg(lambda message: _heard(session, message["content"]["data"]))
    session.mirrors.append(lambda data: channel.send({"save": data}))


def _heard(session: Session, data: dict[str, Any]) -> None:
    try:
        session.in_metadata = notebook_store.from_data(data["saved"]) if data.get("saved") else []
    except (ValueError, KeyError, TypeError, AttributeError):
        session.in_metadata = []  # metadata another version wrote, or edited by hand: not ours to trust
