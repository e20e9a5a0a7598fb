"""Token usage and timings as a pandas DataFrame (pandas is imported here, only when asked).

One missing-value convention: pandas' nullable dtypes, so a count the server never sent is
``<NA>``, never 0, NaN or None; the ``total`` row is ``<NA>`` where no turn has a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .conversation import Turn

if TYPE_CHECKING:
    import pandas as pd

DTYPES = {
    "model": "string", "prompt_tokens": "Int64", "completion_tokens": "Int64", "reasoning_tokens": "Int64",
    "total_tokens": "Int64", "estimated": "boolean", "ttft_s": "Float64", "seconds": "Float64",
    "overall_tokens_per_s": "Float64", "finish_reason": "string", "status": "string",
}
SUMMED = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "total_tokens", "seconds")


def usage_frame(turns: Sequence[Turn]) -> pd.DataFrame:
    """One row per turn (index 1..n) plus a ``total`` row summing tokens and seconds.

    ``estimated`` marks counts taken from the pieces received because the server's usage never
    came (an interrupted or cut answer); ``overall_tokens_per_s`` is completion tokens over the
    whole request.
    """
    import pandas as pd

    rows = [
        {
            "model": t.model,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "reasoning_tokens": t.reasoning_tokens,
            "total_tokens": t.total_tokens,
            "estimated": t.usage_estimated,
            "ttft_s": t.ttft,
            "seconds": t.seconds,
            "overall_tokens_per_s": t.tokens_per_second,
            "finish_reason": t.finish_reason,
            "status": str(t.status),
        }
        for t in turns
    ]
    index = pd.RangeIndex(1, len(rows) + 1, name="turn")
    frame = pd.DataFrame(rows, columns=list(DTYPES), index=index).astype(DTYPES)
    if frame.empty:
        return frame
    totals = {c: frame[c].sum(min_count=1) for c in SUMMED}
    total_row = pd.DataFrame([{**dict.fromkeys(DTYPES), **totals, "model": "",
                               "estimated": bool(frame["estimated"].any())}], index=["total"])
    return pd.concat([frame, total_row.astype(DTYPES)])
