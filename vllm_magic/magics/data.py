"""``%vllm`` commands that turn notebook data into DataFrames: embeddings, and one prompt over many rows."""

from __future__ import annotations

import argparse
import re
import shlex
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .. import errors
from .notebook import evaluate, split_expression, split_words
from .registry import arg, command

if TYPE_CHECKING:
    from . import VLLMMagics


@command(
    "embed", "embeddings of a str, a list of str or a Series, as a DataFrame",
    arg("--model", help="the embedding model"),
    arg("--batch-size", type=int, metavar="N", help="texts per request (512)"),
    arg("--concurrency", type=int, metavar="K", help="requests in flight (4)"),
    arg("--dimensions", type=int, metavar="D", help="shorter vectors from a Matryoshka model"),
    arg("--truncate", action="store_true", help="cut texts over the model's limit instead of failing"),
    arg("--with-text", action="store_true", help="the texts in a first column"),
    arg("--skip-missing", action="store_true", help="NaN rows for items that are not text"),
    arg("--out", metavar="VAR", help="store the DataFrame in VAR instead of showing it"),
    usage="EXPR [options]",
)
def embed(magics: VLLMMagics, args: argparse.Namespace) -> Any:  # -> pandas.DataFrame | None
    """``%vllm embed EXPR [options]``: the options are read from the end, the rest is EXPR."""
    from ..embeddings import embed as embed_texts
    from .registry import COMMANDS

    expression, options = split_expression(args.line)
    given = vars(COMMANDS["embed"].parser().parse_args(split_words(options)))
    out, model = given.pop("out", None), given.pop("model", None)
    texts = evaluate(expression, magics.shell.user_ns, "embed", "the texts")
    session = magics.session
    try:
        frame = embed_texts(texts, model or session.embedding_model, connection=session.embeddings_connection(),
                            **given)
    except KeyboardInterrupt:
        raise errors.Interrupted("Stopped: the requests in flight were cancelled and nothing was stored.",
                                 "Run the cell again when ready.") from None
    if out is None:
        return frame
    magics.shell.user_ns[out] = frame
    print(f"{out} = {len(frame):,} × {frame.shape[1]:,} embeddings DataFrame")
    return None


@command(
    "map", "one prompt over the rows of a list, a Series or a DataFrame: a DataFrame of answers",
    arg("--system", metavar="S", help="the system prompt of these requests (default: the conversation's)"),
    arg("--json", action="store_true", help="answers are JSON objects"),
    arg("--schema", metavar="SPEC", help='one column per field: a pydantic model, dataclass, TypedDict or JSON '
                                         'Schema named from the notebook, or "name str, age int"'),
    arg("--choice", metavar="CHOICES", help='a Categorical of "a|b|c" (or a list or Enum from the notebook)'),
    arg("--regex", metavar="RE", help="answers matching this regular expression"),
    arg("--grammar", metavar="G", help="answers of this grammar"),
    arg("--concurrency", type=int, metavar="K", help="requests in flight (32)"),
    arg("--max-tokens", type=int, metavar="N", help="longest answer per row, in tokens"),
    arg("--model", metavar="M", help="the model (default: the connected one)"),
    arg("--out", metavar="VAR", help="store the DataFrame in VAR instead of showing it"),
    arg("--to", metavar="PATH", help="stream answered rows to PATH (.parquet or .jsonl), sending only the rows "
                                     "it does not hold yet"),
    arg("--resume", metavar="VAR", help="send only the rows of VAR (an earlier result) that have no answer"),
    arg("--on-error", choices=("keep", "raise"), help="raise: the first row that fails stops the job (keep)"),
    usage='EXPR "TEMPLATE" [options]',
)
def map_rows(magics: VLLMMagics, args: argparse.Namespace) -> Any:  # -> pandas.DataFrame | None
    """``%vllm map EXPR "TEMPLATE" [options]``: EXPR is evaluated in the notebook; TEMPLATE names the
    columns as ``{column}`` (``{}`` or ``{text}`` for a list or Series) and reaches us as written."""
    from ..mapping import MapStopped, ask_each
    from .registry import COMMANDS

    parser = COMMANDS["map"].parser()
    if args.line.lstrip().startswith("-"):  # `-h` alone shows the help; other options alone are a mistake
        parser.parse_args(split_words(args.line))
    expression, template, options = split_template(args.line)
    given = vars(parser.parse_args(split_words(options)))
    namespace = magics.shell.user_ns
    data = evaluate(expression, namespace, "map", "the rows")
    out, to = given.pop("out", None), given.pop("to", None)
    resume = given.pop("resume", None)
    if resume is not None and resume not in namespace:
        raise UsageError(f"`--resume {resume}`: there is no variable {resume!r} in the notebook.")
    session = magics.session
    params = session.request_params(max_tokens=given.pop("max_tokens", None))
    try:
        result = ask_each(data, template, chat=session.chat(), namespace=namespace, to=to,
                          resume=namespace[resume] if resume else None, **given, **params)
    except MapStopped as stopped:
        raise _stopped(magics, stopped, out, to) from None
    except KeyboardInterrupt:
        raise errors.Interrupted("Stopped before any row was answered.", "Run the cell again when ready.") from None
    if to is not None:
        print(result)
        return None
    failed = int(result["error"].notna().sum())
    if failed:
        print(f"Note: {failed:,} of {len(result):,} rows failed; their errors are in the `error` column "
              f"(`--resume {out or 'VAR'}` sends them again).")
    if out is None:
        return result
    namespace[out] = result
    print(f"{out} = {len(result):,} rows × {result.shape[1]:,} columns of answers")
    return None


def _stopped(magics: VLLMMagics, stopped: Any, out: str | None, to: str | None) -> errors.Interrupted:
    """Where the rows answered before Ctrl-C are, and how to go on."""
    if stopped.partial is None:
        return errors.Interrupted(f"Stopped: {to} holds {stopped.answered:,} of {stopped.total:,} rows.",
                                  "Run the same command again: it sends only the rows the file does not hold.")
    name = out or PARTIAL
    magics.shell.user_ns[name] = stopped.partial
    return errors.Interrupted(
        f"Stopped after {stopped.answered:,} of {stopped.total:,} rows: they are in `{name}`, the rest marked "
        "not done in its `error` column.",
        f"Run the same command with `--resume {name}` to send only the missing rows.")


PARTIAL = "vllm_partial"
"""Where a stopped ``%vllm map`` without ``--out`` keeps its rows."""


def split_template(line: str) -> tuple[str, str, str]:
    """``EXPR "TEMPLATE" --option ...`` -> ``(EXPR, TEMPLATE, "--option ...")``.

    TEMPLATE is the quoted word before the options (shell quoting: ``\\"`` inside double quotes), and
    EXPR the complete Python expression before it; a `` --`` inside either stays in it.
    """
    ends = [m.start() for m in re.finditer(r"(?:^|\s)--[A-Za-z]", line)] + [len(line)]
    for end in ends:
        head = line[:end].rstrip()
        for quote in re.finditer(r"(?:^|(?<=\s))[\"']", head):
            expression, quoted = head[: quote.start()].strip(), head[quote.start():]
            try:
                words = shlex.split(quoted)
                compile(expression, "<expression>", "eval")
            except (ValueError, SyntaxError):
                continue
            if len(words) == 1 and quoted.endswith(quoted[0]):
                return expression, words[0], line[end:]
    raise UsageError('`%vllm map` needs the rows, then the template in quotes, e.g. '
                     '`%vllm map df "Sentiment of: {review}"`.')
