"""The cell magic: ``%%chat`` / ``%%vllm`` options, and streaming an answer into the cell's output."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from .. import errors
from ..response import Response, drive
from ..session import DEFAULT
from ..sinks import CellSink, PlainSink
from .notebook import in_kernel, interpolate, split_words

if TYPE_CHECKING:
    from . import VLLMMagics


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
        argument("--think", action="store_true", default=None,
                 help="Ask a reasoning model to think first (chat_template_kwargs enable_thinking)."),
        argument("--no-think", action="store_false", dest="think", help="Ask a reasoning model not to think."),
        argument("--no-reasoning", action="store_true", help="Hide the model's reasoning for this cell (still kept)."),
        argument("-i", "--interpolate", action="store_true",
                 help="Expand {name} and {expression} from the notebook's variables ({{ and }} for braces)."),
    ]
    for option in reversed(options):
        magic = option(magic)
    return magic_arguments(name="%chat")(magic)


def run_cell(magics: VLLMMagics, line: str, cell: str) -> None:
    from . import VLLMMagics

    args = VLLMMagics.chat.parser.parse_args(split_words(line))
    prompt = cell.strip("\n")
    if not prompt.strip():
        raise UsageError("The cell has no prompt: write the message on the lines below `%%chat`.")
    if args.interpolate:
        prompt = interpolate(prompt, magics.shell.user_ns)
    session = magics.session
    chat = session.chat(args.conversation)
    params = session.request_params(temperature=args.temperature)
    if args.max_tokens is not None:
        model = args.model or chat.model or chat.connection.resolve_model()
        chat.connection.check_max_tokens(args.max_tokens, model, hint="cell_max_tokens_over_limit")
        params["max_tokens"] = args.max_tokens
    if args.new:
        chat.reset()
    if args.system is not None:
        chat.conversation.set_system(args.system)
    response = chat.stream(prompt, model=args.model, record=not args.once, think=args.think, **params)
    text = show(magics, response, raw=args.raw, show_reasoning=not args.no_reasoning)
    if args.out:
        magics.shell.user_ns[args.out] = text


def show(magics: VLLMMagics, response: Response, raw: bool = False, show_reasoning: bool = True) -> str:
    """Stream ``response`` into the cell's output; return the text. Errors keep what arrived."""
    for note in response.notes:
        if note not in magics.shown_notes:
            magics.shown_notes.add(note)
            print(f"Note: {note}")
    session = magics.session
    view = CellSink if not raw and in_kernel(magics.shell) else PlainSink
    sink = view(rate=session.render_rate, show_reasoning=session.show_reasoning and show_reasoning)
    try:
        turn = drive(response, sink)
    except KeyboardInterrupt:
        raise interrupted(response) from None
    return turn.text if turn else ""


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

