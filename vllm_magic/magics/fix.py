"""``%vllm fix``: the last error a cell raised, explained by the model, with the corrected cell."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from ..context import error_pieces, session_secrets
from .cell import put_code, show_with_context
from .registry import CONVERSATION, arg, command

if TYPE_CHECKING:
    from . import VLLMMagics

FIX_PROMPT = "Explain the error in one paragraph, then give the corrected cell as one fenced python code block."


@command("fix", "explain the last error a cell raised and give the corrected cell", CONVERSATION,
         arg("--code", action="store_true", help="put the corrected cell into a new cell below (not run)"))
def fix(magics: VLLMMagics, args: argparse.Namespace) -> None:
    """The failing cell's source and traceback go to the model as context with :data:`FIX_PROMPT`; the
    answer streams and is recorded like a ``%%chat`` cell's."""
    error = magics.error_log.last()
    if error is None:
        raise UsageError("No error recorded yet: `%vllm fix` explains the last error a cell raised after "
                         "`%load_ext vllm_magic`.")
    session = magics.session
    chat = session.existing_chat(args.conversation)
    pieces = error_pieces(error, session.context_budget, session_secrets(session))
    params = session.request_params()
    turn = show_with_context(magics, chat, pieces, lambda context: chat.stream(FIX_PROMPT, context=context, **params))
    if args.code:
        put_code(magics.shell, turn, 1)
