"""``%vllm`` commands that turn notebook data into DataFrames (embeddings)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

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
