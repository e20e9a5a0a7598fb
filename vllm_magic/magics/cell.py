"""The cell magic: ``%%chat`` / ``%%vllm`` options, and streaming an answer into the cell's output."""

from __future__ import annotations

from collections.abc import Callable
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from .. import errors
from ..context import NotebookHistory, Piece, describe_variables, fit, session_secrets
from ..conversation import Turn
from ..images import current_figure
from ..messages import Message
from ..render import code_blocks, image_lines, images_html, markdown_to_html
from ..response import Response, drive
from ..structured import constraint, plain
from ..toolloop import ask_in_terminal
from ..session import DEFAULT
from ..sinks import CellSink, PlainSink
from .notebook import in_kernel, interpolate, split_words

if TYPE_CHECKING:
    from argparse import Namespace

    from ..chat import Chat
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
        argument("--logprobs", type=int, nargs="?", const=5, metavar="K",
                 help="Shade each token by its probability, with the top K alternatives (5) on hover."),
        argument("--n", type=int, metavar="N", help="N samples side by side; the first is kept (`%%vllm pick I`)."),
        argument("--seed", type=int, help="Sampling seed, for samples that can be had again."),
        argument("--tools", metavar="F,G",
                 help="Functions of the notebook the model may call (or registered with @vllm_magic.tool)."),
        argument("--tool-choice", default="auto", metavar="CHOICE",
                 help="auto, required (a call first), none, a tool's name, or json (guided JSON calls, for a "
                      "server without a tool parser)."),
        argument("--max-rounds", type=int, default=8, metavar="N", help="At most N requests in a tool loop (8)."),
        argument("--confirm", action="store_true", help="Ask before each tool call."),
        argument("-i", "--interpolate", action="store_true",
                 help="Expand {name} and {expression} from the notebook's variables ({{ and }} for braces)."),
        argument("--image", action="append", metavar="EXPR",
                 help="Send an image with the prompt (repeatable): a PIL image, matplotlib Figure, numpy array, "
                      "bytes, file path or http(s) URL from the notebook, or a file path or URL as written."),
        argument("--plot", action="store_true", help="Send the current matplotlib figure (the last one drawn)."),
        argument("--context", metavar="NAMES",
                 help="Describe these variables of the notebook to the model before the prompt (df,model,x): shape, "
                      "dtypes, null counts and first rows of a DataFrame, an array's summary, else type and repr; "
                      "each within VLLMMagics.context_budget characters, secrets withheld."),
        argument("--code", type=int, nargs="?", const=1, metavar="N",
                 help="Put the answer's first fenced code block (or the N-th) into a new cell below, not run."),
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
    if args.code is not None and args.code < 1:
        raise UsageError(f"--code takes the number of a code block, from 1 (not {args.code}).")
    session = magics.session
    chat = session.chat(args.conversation)
    namespace = magics.shell.user_ns
    if args.interpolate:
        history = NotebookHistory(magics.shell, magics.error_log, session_secrets(session), session.context_budget)
        prompt = interpolate(prompt, namespace, history.lookup, history.guard)
    params = cell_params(magics, chat, args, n=args.n, seed=args.seed)
    if args.logprobs is not None:
        params.update(logprobs=True, top_logprobs=args.logprobs)
    if args.new:
        chat.reset()
    if args.system is not None:
        chat.conversation.set_system(args.system)
    shape = constraint(json=args.json, schema=args.schema, choice=args.choice, regex=args.regex,
                       grammar=args.grammar, namespace=namespace)
    tools = None
    if args.tools:
        from ..tools import resolve  # loads pydantic-facing code only for a cell with tools

        tools = resolve(args.tools, namespace)
    images = cell_images(args, namespace)
    pieces = describe_variables(args.context, namespace, session.context_budget,
                                session_secrets(session)) if args.context else []

    def ask(context: str) -> Response:
        return chat.stream(prompt, model=args.model, record=not args.once, think=args.think, shape=shape,
                           images=images, context=context, tools=tools, tool_choice=args.tool_choice,
                           max_rounds=args.max_rounds, confirm=ask_in_terminal if args.confirm else None, **params)

    turn = show_with_context(magics, chat, pieces, ask, raw=args.raw, show_reasoning=not args.no_reasoning)
    if shape is not None and turn is not None and shape.kind in ("json", "schema"):
        show_value(turn.value)
    if args.out:
        namespace[args.out] = (turn.value if shape else turn.text) if turn else None
    if args.code is not None:
        put_code(magics.shell, turn, args.code)


def cell_images(args: Namespace, namespace: dict[str, Any]) -> list[Any]:
    """The objects of the cell's ``--image EXPR`` options, then ``--plot``'s figure."""
    images = [image_value(expression, namespace) for expression in args.image or []]
    return [*images, current_figure()] if args.plot else images


def image_value(expression: str, namespace: dict[str, Any]) -> Any:
    """``--image EXPR``'s object. A word that is no expression of the notebook but an http(s) URL or an
    existing file is taken as written (``--image photo.jpg``); the notebook's variables come first."""
    try:
        return eval(expression, namespace)  # noqa: S307 - the user's own notebook expression
    except Exception as exc:
        if expression.startswith(("http://", "https://")) or Path(expression).expanduser().is_file():
            return expression
        raise errors.ConfigError(f"--image could not evaluate {expression!r}: {type(exc).__name__}: {exc}.",
                                 hint="image_expr") from None


def cell_params(magics: VLLMMagics, chat: Chat, args: Namespace, **overrides: Any) -> dict[str, Any]:
    """The session's params with the cell's ``--temperature``, ``--max-tokens`` (checked against the
    model's limit) and ``overrides`` (None: not given)."""
    params = magics.session.request_params(temperature=args.temperature, **overrides)
    if args.max_tokens is not None:
        model = args.model or chat.model or chat.connection.resolve_model()
        chat.connection.check_max_tokens(args.max_tokens, model, hint="cell_max_tokens_over_limit")
        params["max_tokens"] = args.max_tokens
    return params


def show_with_context(magics: VLLMMagics, chat: Chat, pieces: list[Piece], ask: Callable[[str], Response],
                      **view: bool) -> Turn | None:
    """Ask with as much of the context ``pieces`` as fits the model's window (the answer's footer says
    what was left out), then :func:`show` the answer with ``view``'s options."""
    response, response.left_out = fit(pieces, ask, chat.connection.client, chat.history)
    try:
        return show(magics, response, **view)
    except errors.VLLMError:
        if response.left_out:  # no turn, so no footer to say it
            print(response.left_out)
        raise


def put_code(shell: Any, turn: Turn | None, number: int) -> None:
    """The answer's ``number``-th fenced code block (from 1) into a new cell below, not run; else one line
    saying there is none."""
    blocks = code_blocks(turn.text) if turn is not None else []
    if len(blocks) < number:
        found = f"{len(blocks)} fenced code block{'s' if len(blocks) > 1 else ''}, not {number}" if blocks \
            else "no fenced code block"
        print(f"The answer has {found}, so no cell was added.")
        return
    shell.set_next_input(blocks[number - 1].rstrip("\n"), replace=False)


def show(magics: VLLMMagics, response: Response, raw: bool = False, show_reasoning: bool = True) -> Turn | None:
    """Stream ``response`` into the cell's output; return the recorded turn. Errors keep what arrived."""
    # The turn remembers its cell for `%vllm history --cells`: the running cell's In [N] is the displayhook's
    # count (execution_count already names the next cell while one runs, since IPython 9).
    response.cell = magics.shell.displayhook.prompt_count
    for note in response.notes:
        if note not in magics.shown_notes:
            magics.shown_notes.add(note)
            print(f"Note: {note}")
    show_images(response.user)
    session = magics.session
    view = CellSink if not raw and in_kernel(magics.shell) else PlainSink
    sink = view(rate=session.render_rate, show_reasoning=session.show_reasoning and show_reasoning)
    try:
        return drive(response, sink)
    except KeyboardInterrupt:
        raise interrupted(response) from None


def show_images(message: Message) -> None:
    """The message's images as thumbnails, above the answer (text lines in a terminal)."""
    if message.images:
        from IPython.display import display

        display({"text/html": f'<div class="vllm-magic">{images_html(message)}</div>',
                 "text/plain": "\n".join(image_lines(message))}, raw=True)


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
    if not response.records:
        return errors.Interrupted(
            f"Stopped after {len(turn.text)} characters; the partial text is shown above (nothing was added to "
            "the conversation).",
            "Run the cell again for a whole answer.",
        )
    return errors.Interrupted(
        f"Stopped after {len(turn.text)} characters; the partial answer is kept in the conversation, "
        "marked interrupted.",
        "`%vllm undo` drops it; `%vllm retry` asks again.",
    )

