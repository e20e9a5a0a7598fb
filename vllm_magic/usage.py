"""Token usage and timings as a pandas DataFrame (pandas is imported here, only when asked)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .conversation import Turn

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = [
    "model", "prompt_tokens", "completion_tokens", "total_tokens",
    "ttft_s", "seconds", "tokens_per_s", "finish_reason", "status",
]


def usage_frame(turns: Sequence[Turn]) -> pd.DataFrame:
    """One row per turn (index 1..n) plus a ``total`` row summing tokens and seconds."""
    import pandas as pd

    rows = [
        {
            "model": t.model,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "total_tokens": t.total_tokens,
            "ttft_s": t.ttft,
            "seconds": t.seconds,
            "tokens_per_s": t.tokens_per_second,
            "finish_reason": t.finish_reason,
            "status": t.status,
        }
        for t in turns
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS, index=pd.RangeIndex(1, len(rows) + 1, name="turn"))
    for column in ("prompt_tokens", "completion_tokens", "total_tokens"):
        frame[column] = frame[column].astype("Int64")
    totals = {c: frame[c].sum() for c in ("prompt_tokens", "completion_tokens", "total_tokens", "seconds")}
    total_row = pd.DataFrame([{**dict.fromkeys(COLUMNS), **totals, "model": ""}], index=["total"])
    if frame.empty:
        return frame
    return pd.concat([frame, total_row.astype(frame.dtypes.to_dict())])
