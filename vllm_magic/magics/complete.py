"""``%%vllm complete``: a base model continues the cell's text (``/v1/completions``).

The completion streams like a chat answer (same sinks, footer, errors and Ctrl-C), as plain text unless
``--markdown``; nothing is added to the conversation.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from .cell import cell_params, show
from .registry import arg, command

if TYPE_CHECKING:
    from . import VLLMMagics

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def stop_string(text: str) -> str:
    r"""A ``--stop`` value: ``\n``, ``\t`` and ``\\`` in it are a newline, a tab and a backslash (a
    magic's line cannot hold the first two, and completions often stop at a blank line)."""
    return re.sub(r"\\([nt\\])", lambda found: _ESCAPES[found.group(1)], text)


@command(
    "complete", "a base model continues the cell's text (/v1/completions): plain text, nothing recorded",
    arg("-m", "--model", metavar="M", help="model for this cell (default: the connected one)"),
    arg("-t", "--temperature", type=float, metavar="T", help="sampling temperature for this cell"),
    arg("--max-tokens", type=int, metavar="N", help="longest completion, in tokens (vLLM's default is 16)"),
    arg("--stop", action="append", type=stop_string, metavar="S",
        help=r"stop before this text (repeatable; \n is a newline)"),
    arg("--echo", action="store_true", help="the server sends the prompt back before the completion"),
    arg("--markdown", action="store_true", help="render the text as Markdown instead of plain text"),
    arg("--out", metavar="VAR", help="also store the text in variable VAR"),
    cell=True,
)
def complete(magics: VLLMMagics, args: argparse.Namespace) -> None:
    prompt = args.cell.strip("\n")
    if not prompt.strip():
        raise UsageError("The cell has no prompt: write the text to continue on the lines below `%%vllm complete`.")
    chat = magics.session.chat()
    params = cell_params(magics, chat, args, stop=args.stop, echo=args.echo or None)
    turn = show(magics, chat.complete(prompt, model=args.model, **params), raw=not args.markdown)
    if args.out:
        magics.shell.user_ns[args.out] = turn.text if turn else None
