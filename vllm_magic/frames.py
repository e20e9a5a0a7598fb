"""pandas adapters for one prompt over many rows: the answers' table, filled row by row as answers
finish, and the same rows streamed to disk in chunks (a Parquet dataset or a JSON Lines file).

pandas, numpy and pyarrow are imported here, and only when a job needs them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors

BOOKKEEPING = {"finish_reason": "string", "prompt_tokens": "Int64", "completion_tokens": "Int64",
               "seconds": "Float64", "error": "string"}
"""The columns every answer table ends with, after the answer's own."""
NOT_DONE = "not done: the job stopped before this row was answered"


def pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise errors.ConfigError("A table of answers needs pandas, which is not installed here.",
                                 "Install it: `pip install 'vllm_magic[pandas]'`.") from None
    return pd


@dataclass(frozen=True)
class Layout:
    """The answer's columns and their pandas dtypes (``"category"`` ones with their categories)."""

    values: dict[str, str]
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.values) & set(BOOKKEEPING))
        if clash:
            raise errors.ConfigError(
                f"The answer's fields {', '.join(clash)} clash with the columns every answer table has "
                f"({', '.join(BOOKKEEPING)}).", "Rename those fields of the schema.")

    @property
    def dtypes(self) -> dict[str, str]:
        return {**self.values, **BOOKKEEPING}


class Table:
    """The answers of ``size`` rows as columns of Python values, one slot per row (None: no value),
    typed into a DataFrame at the end."""

    def __init__(self, layout: Layout, size: int) -> None:
        self.layout = layout
        self.columns: dict[str, list[Any]] = {name: [None] * size for name in layout.dtypes}

    def put(self, rows: Sequence[int], record: dict[str, Any]) -> None:
        """Set ``rows`` to ``record`` (column -> value; missing columns stay None)."""
        for name, values in self.columns.items():
            value = record.get(name)
            for row in rows:
                values[row] = value

    def rows_without_answer(self) -> list[int]:
        return [row for row, error in enumerate(self.columns["error"]) if error is not None]

    def frame(self, index: Any) -> Any:
        return typed_frame(self.columns, self.layout, index)

    @classmethod
    def of(cls, frame: Any, layout: Layout) -> Table:
        """A table holding what an earlier job's DataFrame holds (to resume it)."""
        missing = [name for name in layout.dtypes if name not in frame.columns]
        if missing:
            raise errors.ConfigError(
                f"The table to resume has no column {', '.join(map(repr, missing))}: it was not made by the "
                "same kind of job (the same answer shape).", hint="map_resume")
        table = cls(layout, len(frame))
        pd = pandas()
        for name in table.columns:
            table.columns[name] = [None if _missing(pd, value) else value for value in frame[name].tolist()]
        return table


def typed_frame(columns: dict[str, list[Any]], layout: Layout, index: Any) -> Any:
    """The columns as a DataFrame of the layout's dtypes (None becomes the dtype's missing value)."""
    pd = pandas()
    data: dict[str, Any] = {}
    for name, dtype in layout.dtypes.items():
        values = columns[name]
        if dtype == "category":
            data[name] = pd.Categorical(values, categories=layout.categories.get(name))
        elif dtype == "object":
            data[name] = pd.Series(values, index=index, dtype=object)
        else:
            data[name] = pd.array(values, dtype=dtype)
    return pd.DataFrame(data, index=index)


def _missing(pd: Any, value: Any) -> bool:
    return value is None or (not isinstance(value, (list, dict, tuple)) and bool(pd.isna(value)))


# -- on disk --------------------------------------------------------------------------------------


class ChunkFile:
    """Finished rows written to ``path`` a chunk at a time, in the order they finish; each chunk
    lands whole or not at all, so a job killed at any moment leaves a readable file, and the next
    job reads which rows it holds and sends only the others.

    Only answered rows are written (a failed row is sent again by the next job); each carries its
    position in the input (``row``) and its index label. Answers of structured type (lists, dicts)
    are stored as JSON text.
    """

    suffixes: tuple[str, ...] = ()

    def __init__(self, path: Path, layout: Layout, index_name: str | None, *, rows: int = 10_000,
                 seconds: float = 5.0) -> None:
        self.path = path
        self.layout = layout
        self.index_name = index_name
        self.flush_rows, self.flush_seconds = rows, seconds
        self.written = 0
        self._pending: list[tuple[int, Any, dict[str, Any]]] = []
        self._flushed = time.monotonic()

    @staticmethod
    def open(path: str | os.PathLike[str], layout: Layout, index_name: str | None) -> ChunkFile:
        """The writer for ``path``'s kind: ``.parquet`` (a folder of part files) or ``.jsonl``."""
        target = Path(path).expanduser()
        for kind in (ParquetChunks, JsonLinesChunks):
            if target.suffix.lower() in kind.suffixes:
                return kind(target, layout, index_name)
        raise errors.ConfigError(f"Cannot tell how to write {str(path)!r}: name it *.parquet or *.jsonl.",
                                 hint="map_to")

    def add(self, rows: Sequence[int], labels: Sequence[Any], record: dict[str, Any]) -> None:
        for row, label in zip(rows, labels):
            self._pending.append((row, label, record))
        if len(self._pending) >= self.flush_rows or time.monotonic() - self._flushed >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._write(self._pending)
            self.written += len(self._pending)
            self._pending = []
        self._flushed = time.monotonic()

    def done_rows(self, labels: Any) -> Any:
        """A bool per input row (``labels``: the input's index): True where the file holds that
        row's answer. Rows whose label differs from the input's mean the file was written for other
        data: refused."""
        np = _numpy()
        done = np.zeros(len(labels), dtype=bool)
        rows, stored = self._read_rows()
        if not len(rows):
            return done
        if rows.max(initial=-1) >= len(labels) or rows.min(initial=0) < 0:
            raise self._other_data(f"it holds row {int(rows.max())}, and the input has {len(labels):,}")
        expected = labels[rows].tolist()
        differ = [i for i in range(len(rows)) if stored[i] != expected[i] and str(stored[i]) != str(expected[i])]
        if differ:
            i = differ[0]
            raise self._other_data(f"its row {int(rows[i])} is labelled {stored[i]!r}, the input's {expected[i]!r}")
        done[rows] = True
        return done

    def _other_data(self, why: str) -> errors.VLLMError:
        return errors.ConfigError(f"{self.path} was written for other input rows ({why}).", hint="map_to_other",
                                  path=str(self.path))

    def _read_rows(self) -> tuple[Any, list[Any]]:
        """The positions and labels of the rows the file holds."""
        raise NotImplementedError

    def _write(self, pending: list[tuple[int, Any, dict[str, Any]]]) -> None:
        raise NotImplementedError

    def _label_column(self) -> str:
        return self.index_name or "index"

    def _columns(self) -> dict[str, str]:
        """The answer's columns and bookkeeping, without ``error`` (never set in a written row)."""
        return {name: dtype for name, dtype in self.layout.dtypes.items() if name != "error"}


class ParquetChunks(ChunkFile):
    """A folder of Parquet part files (``pandas.read_parquet(path)`` reads them as one table, indexed
    like the input). A part is written under a hidden name, then renamed."""

    suffixes = (".parquet", ".pq")

    def _write(self, pending: list[tuple[int, Any, dict[str, Any]]]) -> None:
        pd = pandas()
        columns = {name: [record.get(name) for _, _, record in pending] for name in self.layout.dtypes}
        for name, dtype in self.layout.values.items():
            if dtype == "object":
                columns[name] = [None if v is None else json.dumps(v, ensure_ascii=False) for v in columns[name]]
        layout = Layout({n: "string" if d == "object" else d for n, d in self.layout.values.items()},
                        self.layout.categories)
        index = pd.Index([label for _, label, _ in pending], name=self.index_name)
        frame = typed_frame(columns, layout, index).drop(columns="error")
        frame.insert(0, "row", pd.array([row for row, _, _ in pending], dtype="int64"))
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        hidden = self.path / f".{name}.tmp"
        frame.to_parquet(hidden)
        os.replace(hidden, self.path / name)

    def _read_rows(self) -> tuple[Any, list[Any]]:
        np = _numpy()
        if not self.path.is_dir():
            if self.path.exists():
                raise errors.ConfigError(f"{self.path} is a file; answers go to a folder of Parquet parts there.",
                                         hint="map_to")
            return np.zeros(0, dtype=np.int64), []
        for stale in self.path.glob(".part-*.tmp"):
            stale.unlink()  # a part whose writing was cut: never renamed, so never counted
        if not any(self.path.glob("part-*.parquet")):
            return np.zeros(0, dtype=np.int64), []
        import pyarrow.parquet as pq

        frame = pq.read_pandas(self.path, columns=["row"]).to_pandas()  # with the labels as the index
        return frame["row"].to_numpy(dtype=np.int64), frame.index.tolist()


class JsonLinesChunks(ChunkFile):
    """One JSON object per row in a ``.jsonl`` file, appended a chunk at a time (one write, then
    fsync); a last line cut by a kill is dropped when the file is next opened."""

    suffixes = (".jsonl", ".ndjson")

    def _write(self, pending: list[tuple[int, Any, dict[str, Any]]]) -> None:
        label = self._label_column()
        lines = []
        for row, index, record in pending:
            line = {"row": row, label: index, **{name: record.get(name) for name in self._columns()}}
            lines.append(json.dumps(line, ensure_ascii=False, default=_plain) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(lines))
            out.flush()
            os.fsync(out.fileno())

    def _read_rows(self) -> tuple[Any, list[Any]]:
        np = _numpy()
        rows: list[int] = []
        labels: list[Any] = []
        if not self.path.exists():
            return np.zeros(0, dtype=np.int64), []
        label = self._label_column()
        good = 0
        with open(self.path, "rb") as source:
            for line in source:
                if not line.endswith(b"\n"):
                    break  # cut by a kill while it was written
                try:
                    item = json.loads(line)
                    rows.append(int(item["row"]))
                except (ValueError, KeyError, TypeError):
                    break
                labels.append(item.get(label))
                good += len(line)
        if good != self.path.stat().st_size:
            os.truncate(self.path, good)
        return np.asarray(rows, dtype=np.int64), labels


def _plain(value: Any) -> Any:
    """JSON for what json does not know: numpy scalars, timestamps..."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _numpy() -> Any:
    import numpy

    return numpy
