"""Embeddings straight into pandas: batched, concurrent, exact, and safe on big inputs.

    >>> emb = embed(df.text)          # DataFrame indexed like df.text, float32 columns 0..d-1
    >>> emb.to_numpy()                # the (rows, d) float32 matrix itself, not a copy

Identical texts are sent once. The others go out in batches bounded by count and by characters,
``concurrency`` batches at a time, as ``encoding_format: base64``; numpy decodes each vector
straight into the row of its text in one preallocated float32 matrix, so the order is exact
whatever order the answers arrive in. Ctrl-C, or a batch that fails for good, cuts every request
in flight and returns nothing. numpy and pandas are imported only when embedding.
"""

from __future__ import annotations

import base64
import binascii
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .connection import Connection
from .batch import JobConnections, name_rows, run_batch
from .client import Client
from .progress import Progress, progress_bar

EMBEDDING_MODEL_ENV = "VLLM_EMBEDDING_MODEL"
BATCH_SIZE = 512
BATCH_CHARS = 100_000
"""A batch stops at this many characters too, so long texts make smaller requests."""
CONCURRENCY = 4


def embedding_connection(
    base_url: str | None = None,
    model: str | None = None,
    *,
    api_key: str | None = None,
    timeout: float = 120.0,
    client: Client | None = None,
) -> Connection:
    """A :class:`Connection` for embeddings: its default model comes from VLLM_EMBEDDING_MODEL."""
    return Connection(base_url, model, api_key=api_key, timeout=timeout, client=client,
                      model_env=EMBEDDING_MODEL_ENV, choose_hint="choose_embedding_model")


def embed(
    texts: Any,
    model: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    connection: Connection | None = None,
    batch_size: int = BATCH_SIZE,
    batch_chars: int = BATCH_CHARS,
    concurrency: int = CONCURRENCY,
    dimensions: int | None = None,
    truncate: bool = False,
    with_text: bool = False,
    skip_missing: bool = False,
    as_: str = "frame",
    progress: bool | None = None,
    timeout: float = 120.0,
) -> Any:
    """Embed ``texts`` (a str, a list or tuple of str, or a pandas Series) with an embedding model.

    Returns a DataFrame indexed like the input (a Series keeps its index) with float32 columns
    ``0..d-1``, so ``.to_numpy()`` is the matrix; ``with_text`` puts the texts in a first column
    ``text``. ``as_="array"`` returns the float32 matrix alone.

    The model is ``model``, else VLLM_EMBEDDING_MODEL, else the only model the server serves. The
    server is ``connection``, else ``base_url`` (else VLLM_BASE_URL) with ``api_key`` (else
    VLLM_API_KEY). ``truncate`` cuts texts longer than the model's limit instead of failing
    (vLLM's ``truncate_prompt_tokens: -1``); ``dimensions`` asks a Matryoshka model for shorter
    vectors; ``skip_missing`` leaves NaN rows for items that are not text instead of failing.
    ``progress`` None shows a bar when there is more than one batch.
    """
    _check_options(batch_size, batch_chars, concurrency, dimensions, as_, with_text)
    np = _numpy()
    items, index = _items(texts)
    plan = _plan(items, index, skip_missing)
    if not plan.texts:  # nothing to send: no request at all
        matrix = np.full((len(items), dimensions or 0), np.nan, dtype=np.float32)
    else:
        with _connected(connection, base_url, api_key, timeout) as connection:
            body = _request_body(connection.resolve_model(model), dimensions, truncate)
            batches = _batches(plan.texts, batch_size, batch_chars)
            bar = progress_bar(len(batches), len(plan.texts), show=progress)
            matrix = _Job(connection.client, body, plan, batches).run(concurrency, bar)
    if as_ == "array":
        return matrix
    return _frame(matrix, items if with_text else None, index)


@contextmanager
def _connected(connection: Connection | None, base_url: str | None, api_key: str | None,
               timeout: float) -> Iterator[Connection]:
    """The given connection, else a new one that is closed after use."""
    if connection is not None:
        yield connection
        return
    connection = embedding_connection(base_url, api_key=api_key, timeout=timeout)
    try:
        yield connection
    finally:
        connection.client.close()


# -- the input ------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What to send and where each answer goes.

    ``texts`` are the distinct texts in order of first appearance and ``rows`` the row of each
    one's first appearance; every later row with the same text is in ``copies`` (row -> the row it
    copies); ``missing`` rows hold no text.
    """

    size: int
    labels: Any
    """The input's index (a Series') or None: rows are named by these labels in messages."""
    texts: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    copies: dict[int, int] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)

    def name_rows(self, rows: Sequence[int]) -> str:
        """``rows 3, 17 and 40`` (index labels for a Series), cut short after five."""
        return name_rows(rows, self.labels)


def _items(texts: Any) -> tuple[list[Any], Any]:
    """The input as a list of items, plus its index when it is a pandas Series."""
    if isinstance(texts, str):
        return [texts], None
    if isinstance(texts, (list, tuple)):
        return list(texts), None
    pandas = sys.modules.get("pandas")  # a Series can only exist once pandas was imported
    if pandas is not None and isinstance(texts, pandas.Series):
        return texts.tolist(), texts.index
    hint = " (pick the column of texts, e.g. `df.text`)" if pandas and isinstance(texts, pandas.DataFrame) else ""
    raise errors.ConfigError(
        f"embed takes a str, a list or tuple of str, or a pandas Series, not a {type(texts).__name__}{hint}.",
        hint="embed_input",
    )


def _plan(items: list[Any], labels: Any, skip_missing: bool) -> _Plan:
    """Find the distinct texts, the duplicates and the items that are not text."""
    plan = _Plan(len(items), labels)
    first: dict[str, int] = {}
    for row, item in enumerate(items):
        if not isinstance(item, str):
            plan.missing.append(row)
        elif (seen := first.setdefault(item, row)) != row:
            plan.copies[row] = seen
    if plan.missing and not skip_missing:
        row = plan.missing[0]
        raise errors.ConfigError(
            f"{len(plan.missing):,} of the {len(items):,} items to embed are not text: "
            f"{plan.name_rows(plan.missing)} (the first is {items[row]!r}, a {type(items[row]).__name__}).",
            "Drop or fill them first (e.g. `df.text.dropna()` or `df.text.fillna('')`), or pass "
            "`--skip-missing` (Python: `skip_missing=True`) to get rows of NaN for them.",
        )
    plan.texts = list(first)
    plan.rows = list(first.values())
    return plan


def _batches(texts: Sequence[str], size: int, chars: int) -> list[range]:
    """Consecutive ranges of ``texts`` holding at most ``size`` texts and ``chars`` characters (a
    longer text goes alone)."""
    batches: list[range] = []
    start = total = 0
    for i, text in enumerate(texts):
        if i > start and (i - start == size or total + len(text) > chars):
            batches.append(range(start, i))
            start, total = i, 0
        total += len(text)
    batches.append(range(start, len(texts)))
    return batches


def _request_body(model: str, dimensions: int | None, truncate: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    if dimensions is not None:
        body["dimensions"] = dimensions
    if truncate:
        body["truncate_prompt_tokens"] = -1  # vLLM: cut to the model's own limit
    return body


def _check_options(batch_size: int, batch_chars: int, concurrency: int, dimensions: int | None,
                   as_: str, with_text: bool) -> None:
    for name, value in (("batch_size", batch_size), ("batch_chars", batch_chars),
                        ("concurrency", concurrency), ("dimensions", dimensions)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise errors.ConfigError(f"`{name}` must be a whole number of at least 1, not {value!r}.",
                                     f"Give e.g. `{name}=256` (magic: `--{name.replace('_', '-')} 256`).")
    if as_ not in ("frame", "array"):
        raise errors.ConfigError(f'`as_` must be "frame" or "array", not {as_!r}.',
                                 'Use as_="frame" for a DataFrame or as_="array" for the float32 matrix.')
    if with_text and as_ == "array":
        raise errors.ConfigError("`with_text` needs a DataFrame: an array holds only the vectors.",
                                 'Drop with_text, or use as_="frame".')


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise errors.ConfigError("Embeddings need numpy and pandas, which are not installed here.",
                                 "Install them: `pip install 'vllm_magic[pandas]'`.") from None
    return numpy


# -- the requests ---------------------------------------------------------------------------------


class _Job:
    """Sends the batches through the batch runner (:func:`~vllm_magic.batch.run_batch`) and writes
    each vector into the row of its text, from the worker thread that received it. The matrix is
    allocated when the first answer tells the vector size. A batch that fails for good stops the
    job: the runner cuts the requests in flight, as it does on Ctrl-C.
    """

    def __init__(self, client: Client, body: dict[str, Any], plan: _Plan, batches: list[range]) -> None:
        self.client = client
        self.body = body
        self.plan = plan
        self.batches = batches
        self.matrix: Any = None
        self._encoding = "base64"
        self._lock = threading.Lock()

    def run(self, concurrency: int, progress: Progress) -> Any:
        """Every batch done, duplicates copied and missing rows NaN: the full matrix."""
        for done in run_batch(self.client, self.batches, self._embed, concurrency=min(concurrency, len(self.batches)),
                              progress=progress):
            if done.error is not None:
                raise self._explain(done.error, done.task)
        return self._finish()

    def _embed(self, client: JobConnections, batch: range) -> None:
        np = _numpy()
        answer = self._post(client, self.plan.texts[batch.start : batch.stop])
        try:
            data = answer["data"]
            if sorted(item["index"] for item in data) != list(range(len(batch))):
                raise ValueError(f"{len(data)} vectors for {len(batch)} texts, or indexes that do not match")
            for item in data:
                raw = item["embedding"]
                if isinstance(raw, str):
                    vector = np.frombuffer(base64.b64decode(raw), "<f4")
                else:
                    vector = np.asarray(raw, dtype=np.float32)
                self._check_width(len(vector))
                self._matrix(len(vector))[self.plan.rows[batch.start + item["index"]]] = vector
        except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as exc:
            raise errors.ServerError(
                f"The answer of {self.client.display_url} is not a list of embeddings ({exc}).",
                "Check that the URL points at a vLLM or OpenAI-compatible server.",
            ) from None

    def _post(self, client: JobConnections, texts: list[str]) -> dict[str, Any]:
        """One request; if the server rejects base64, this and later batches ask for floats."""
        body = {**self.body, "input": texts}
        if self._encoding == "base64":
            try:
                return client.embeddings({**body, "encoding_format": "base64"})
            except errors.BadRequestError as exc:
                said = exc.server_message or ""
                if "encoding_format" not in said and "base64" not in said:
                    raise
                self._encoding = "float"
        return client.embeddings({**body, "encoding_format": "float"})

    def _check_width(self, dims: int) -> None:
        """Some servers (llama.cpp's) ignore ``dimensions`` and return whole vectors: never silently."""
        asked = self.body.get("dimensions")
        if asked is not None and dims != asked:
            raise errors.UnexpectedResponse(
                f"The server at {self.client.display_url} returned vectors of {dims} numbers, not the {asked} "
                "asked for: it ignores `dimensions`.",
                "Drop `--dimensions` (Python: `dimensions=`) and keep the first columns yourself if the model is "
                f"a Matryoshka model (`vectors.iloc[:, :{asked}]`, then normalise), or use a server that honours "
                "it (vLLM does).",
            )

    def _matrix(self, dims: int) -> Any:
        if self.matrix is None:
            with self._lock:
                if self.matrix is None:
                    self.matrix = _numpy().empty((self.plan.size, dims), dtype="float32")
        if self.matrix.shape[1] != dims:
            raise ValueError(f"vectors of {dims} and {self.matrix.shape[1]} numbers")
        return self.matrix

    def _finish(self) -> Any:
        np = _numpy()
        matrix = self.matrix
        if self.plan.copies:
            rows = np.fromiter(self.plan.copies, dtype=np.intp, count=len(self.plan.copies))
            matrix[rows] = matrix[np.fromiter(self.plan.copies.values(), dtype=np.intp, count=len(rows))]
        matrix[self.plan.missing] = np.nan
        return matrix

    def _explain(self, error: BaseException, batch: range) -> BaseException:
        """The batch's error as the user should read it: what failed (which rows) and what to do."""
        if not isinstance(error, errors.VLLMError):
            return error
        model = self.body["model"]
        rows = self.plan.name_rows(self.plan.rows[batch.start : batch.stop])
        said = error.server_message
        kw = {"status": error.status, "server_message": said}
        if isinstance(error, errors.ContextLengthError):
            return errors.ContextLengthError(
                f"The texts at {rows} include one longer than {model} accepts. The server said: {said}",
                "Shorten those texts, or pass `--truncate` (Python: `truncate=True`) to cut each one "
                "to the model's limit (vLLM's `truncate_prompt_tokens: -1`).",
                **kw,
            )
        if isinstance(error, errors.NotFoundError) and said == "Not Found":
            return errors.NotFoundError(
                f"The server at {self.client.display_url} has no embeddings endpoint (HTTP 404, {said}): "
                f"{model} is not served as an embedding model there.",
                hint="no_embeddings_endpoint", **kw,
            )
        if isinstance(error, errors.BadRequestError) and "dimensions" in (said or ""):
            return errors.BadRequestError(
                f"{model} cannot return vectors of {self.body.get('dimensions')} numbers. The server said: {said}",
                "Drop `--dimensions` (Python: `dimensions=`): only Matryoshka models can shorten their vectors.",
                **kw,
            )
        if isinstance(error, errors.AuthError):
            return error
        return type(error)(f"Embedding the texts at {rows} failed. {error.cause}", error.fix, **kw)


def _frame(matrix: Any, texts: list[Any] | None, index: Any) -> Any:
    """The matrix as a DataFrame without copying it; the text column first when given."""
    try:
        import pandas as pd
    except ImportError:
        raise errors.ConfigError("A DataFrame needs pandas, which is not installed here.",
                                 'Install it (`pip install pandas`), or ask for as_="array".') from None
    frame = pd.DataFrame(matrix, index=index, columns=pd.RangeIndex(matrix.shape[1]), copy=False)
    if texts is not None:
        frame.insert(0, "text", texts)
    return frame
