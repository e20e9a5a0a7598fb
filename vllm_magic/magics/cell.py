"""The cell magic: ``%%chat`` / ``%%vllm`` options, and streaming an answer into the cell's output."""

from __future__ import annotations

from collections.abc import Callable
import json
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from .. import errors
from ..conversation import Turn
from ..render import markdown_to_html
from ..response import Response, drive
from ..structured import constraint, plain
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
        argument("--out", metavar="VAR",
                 help="Also store the answer in variable VAR: its text, or the validated value of a structured answer."),
        argument("--raw", action="store_true", help="Show plain text instead of rendered Markdown."),
        argument("--think", action="store_true", default=None,
                 help="Ask a reasoning model to think first (chat_template_kwargs enable_thinking)."),
        argument("--no-think", action="store_false", dest="think", help="Ask a reasoning model not to think."),
        argument("--no-reasoning", action="store_true", help="Hide the model's reasoning for this cell (still kept)."),
        argument("--json", action="store_true", help="Ask for a JSON object; --out stores it as a dict."),
        argument("--schema", metavar="SPEC",
                 help="Ask for JSON of this shape: a pydantic model, dataclass, TypedDict or JSON Schema dict "
                      "named from the notebook, or \"name str, age int, tags list[str]\"."),
        argument("--choice", metavar="CHOICES", help='One of these answers: "a|b|c", or a list or Enum from the notebook.'),
        argument("--regex", metavar="RE", help="An answer matching this regular expression."),
        argument("--grammar", metavar="G", help="An answer of this grammar (as vLLM takes it, e.g. EBNF/GBNF)."),
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
    shape = constraint(json=args.json, schema=args.schema, choice=args.choice, regex=args.regex,
                       grammar=args.grammar, namespace=magics.shell.user_ns)
    response = chat.stream(prompt, model=args.model, record=not args.once, think=args.think, shape=shape, **params)
    turn = show(magics, response, raw=args.raw, show_reasoning=not args.no_reasoning)
    if shape is not None and turn is not None and shape.kind in ("json", "schema"):
        show_value(turn.value)
    if args.out:
        magics.shell.user_ns[args.out] = (turn.value if shape else turn.text) if turn else None


def show(magics: VLLMMagics, response: Response, raw: bool = False, show_reasoning: bool = True) -> Turn | None:
    """Stream ``response`` into the cell's output; return the recorded turn. Errors keep what arrived."""
    for note in response.notes:
        if note not in magics.shown_notes:
            magics.shown_notes.add(note)
            print(f"Note: {note}")
    session = magics.session
    view = CellSink if not raw and in_kernel(magics.shell) else PlainSink
    sink = view(rate=session.render_rate, show_reasoning=session.show_reasoning and show_reasoning)
    try:
        return drive(response, sink)
    except KeyboardInterrupt:
        raise interrupted(response) from None


def show_value(value: Any) -> None:
    """A structured answer's value: a one-row table when it is flat, else pretty JSON."""
    from IPython.display import display

    data = plain(value)
    if isinstance(data, dict) and data and all(not isinstance(v, (dict, list)) for v in data.values()):
        import pandas as pd

        display(pd.DataFrame([data]))
        return
    text = json.dumps(data, indent=2, ensure_ascii=False)
    rendered = markdown_to_html("```json\n" + text + "\n```")
    display({"text/html": f'<div class="vllm-magic">{rendered}</div>', "text/plain": text}, raw=True)


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

