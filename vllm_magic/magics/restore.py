"""``%vllm restore``: the notebook's conversations, saved beside it, back after a kernel restart; and
the line that offers them when the extension loads (or restores them, with ``autorestore``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .. import errors
from ..notebook_fixes import NOTEBOOK_FIXES
from ..notebook_store import describe
from .registry import arg, command

if TYPE_CHECKING:
    from . import VLLMMagics


@command("restore", "bring back this notebook's conversations, saved beside it before the kernel restarted",
         arg("--force", action="store_true",
             help="replace conversations that have turns (`%%vllm load --undo -c NAME` brings one back)"))
def restore(magics: VLLMMagics, args: argparse.Namespace) -> None:
    for restored, replaced in magics.session.restore(force=args.force):
        said = f"Restored {restored.name!r} ({describe([restored])})"
        if replaced is not None:
            said += f", replacing its {len(replaced)} turns (`%vllm load --undo -c {restored.name}` brings them back)"
        print(said + ".")


def offer_saved(magics: VLLMMagics) -> None:
    """Say that the notebook has saved conversations, or restore them at once with ``autorestore``.

    Loading the extension never fails for it: an unreadable file is said in one line.
    """
    session = magics.session
    try:
        saved = session.saved()
        if saved and session.autorestore:
            session.restore()
            print(f"Restored this notebook's saved conversation ({describe(saved)}).")
        elif saved:
            print(f"This notebook has a saved conversation ({describe(saved)}): `%vllm restore` brings it back.")
    except errors.VLLMError as exc:
        print(f"vllm_magic: {exc.speak(NOTEBOOK_FIXES).message}")
