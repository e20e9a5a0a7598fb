"""One prompt over many rows: each row of a list, a Series or a DataFrame filled into a template and
asked as a request of its own; the answers come back as a DataFrame indexed like the input.

    >>> labels = ask_each(df, "Sentiment of: {review}", choice="pos|neg|neutral")
    >>> people = ask_each(df.text, "Who is in this text? {}", schema="name str, age int")
    >>> ask_each(big, "Summarise: {text}", to="summaries.parquet")   # rows streamed to disk

Rows are independent one-turn requests (a chat's system prompt and params apply, its conversation
is not touched), sent through the one batch runner (:func:`vllm_magic.batch.run_batch`): at most
``concurrency`` at a time, a 429/503 slowing the whole job, a progress bar, and Ctrl-C cutting the
requests in flight while keeping the rows already answered. Identical prompts are sent once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors
from .batch import JobConnections, name_rows, run_batch
from .chat import Chat
from .frames import NOT_DONE, ChunkFile, Layout, Table, pandas
from .progress import progress_bar
from .structured import Constraint, constraint

CONCURRENCY = 32
"""Requests in flight: vLLM batches them on the GPU, so dozens at once cost little more than one."""
WINDOW = 10_000
"""Rows planned at a time when the answers go to a file, so a job never holds all its prompts."""
CHAT_PATH = "/v1/chat/completions"


class MapStopped(KeyboardInterrupt):
    """Ctrl-C stopped the job. ``partial`` is the table so far, rows not answered marked in ``error``
    (None when the answers went to a file, which keeps them); pass it back as ``resume=``."""

    def __init__(self, message: str, partial: Any, answered: int, total: int) -> None:
        super().__init__(message)
        self.partial, self.answered, self.total = partial, answered, total


@dataclass(frozen=True)
class Written:
    """What a job that streamed its answers to a file did."""

    path: Path
    rows: int
    """Rows in the input."""
    held: int
    """Rows the file holds answers for, now."""
    failed: int
    """Rows that failed in this job; the next job on the same file sends them again."""
    first_error: str | None = None

    def __str__(self) -> str:
        text = f"{self.held:,} of {self.rows:,} rows answered in {self.path}"
        if self.failed:
            text += f"; {self.failed:,} failed and will be sent again by the next run (the first: {self.first_error})"
        return text


def ask_each(
    data: Any,
    template: str,
    *,
    chat: Chat | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    system: str | None = None,
    json: bool = False,
    schema: Any = None,
    choice: Any = None,
    regex: str | None = None,
    grammar: str | None = None,
    namespace: dict[str, Any] | None = None,
    concurrency: int = CONCURRENCY,
    max_tokens: int | None = None,
    on_error: str = "keep",
    to: str | Path | None = None,
    resume: Any = None,
    progress: bool | None = None,
    timeout: float = 120.0,
    **params: Any,
) -> Any:  # pandas.DataFrame | Written
    """Ask ``template`` filled with each row of ``data``; a DataFrame indexed like ``data``.

    ``data`` is a list of str, a Series or a DataFrame. ``template`` names a DataFrame's columns as
    ``{column}``, or the item of a list or Series as ``{}`` or ``{text}``; ``{{`` and ``}}`` are
    braces, and braces around anything that is not a name (JSON in the prompt) stay as written.

    The table has the answer (an ``answer`` text column; with ``schema`` one column per field; with
    ``choice`` a Categorical of the choices), then per row ``finish_reason``, ``prompt_tokens``,
    ``completion_tokens``, ``seconds`` and ``error``: a row that failed for good has its error there
    and missing values, unless ``on_error="raise"`` makes the first failure stop the job. Rows with the
    same prompt share one request (and show its tokens).

    The server is ``chat``'s (its system prompt and params apply; its conversation is not touched),
    else one at ``base_url`` with ``api_key``. ``system`` replaces the system prompt; ``params`` and
    ``max_tokens`` are sampling parameters; ``json`` / ``schema`` / ``choice`` / ``regex`` /
    ``grammar`` ask for a structured answer (names in ``namespace`` resolve). ``concurrency`` bounds
    the requests in flight.

    Ctrl-C raises :class:`MapStopped`, whose ``partial`` table holds the rows answered; pass it as
    ``resume`` to send only the rows without an answer. ``to`` (``*.parquet`` or ``*.jsonl``) streams
    the answered rows to that file in chunks instead of returning them, and sends only the rows the
    file does not hold yet: a job that was stopped or killed goes on where it was. Returns a
    :class:`Written` then.
    """
    _check_options(concurrency, on_error, to, resume)
    rows = _Rows.of(data)
    prompt = Template(template, rows.names)
    shape = constraint(json=json, schema=schema, choice=choice, regex=regex, grammar=grammar, namespace=namespace)
    layout = _layout(shape)
    owned = chat is None
    if chat is None:
        chat = Chat(base_url, model, api_key=api_key, timeout=timeout)
    try:
        job = _Job(chat, rows, prompt, shape, layout, on_error)
        if to is not None:
            return job.to_file(ChunkFile.open(to, layout, rows.index_name), concurrency, progress,
                               model=model, system=system, max_tokens=max_tokens, **params)
        return job.to_table(resume, concurrency, progress, model=model, system=system, max_tokens=max_tokens,
                            **params)
    finally:
        if owned:
            chat.connection.client.close()


def _check_options(concurrency: int, on_error: str, to: Any, resume: Any) -> None:
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise errors.ConfigError(f"`concurrency` must be a whole number of at least 1, not {concurrency!r}.",
                                 hint="map_option", name="concurrency", example="32", flag="--concurrency 32")
    if on_error not in ("keep", "raise"):
        raise errors.ConfigError(f'`on_error` must be "keep" or "raise", not {on_error!r}.',
                                 hint="map_option", name="on_error", example='"raise"', flag="--on-error raise")
    if to is not None and resume is not None:
        raise errors.ConfigError("A job resumes either from its file or from a table, not both.",
                                 hint="map_to_and_resume")


# -- the input ------------------------------------------------------------------------------------


class _Rows:
    """The input as rows: its size, labels (the index), and the values of the columns a template names."""

    def __init__(self, data: Any, size: int, index: Any, names: dict[str, Any]) -> None:
        self.data = data
        self.size = size
        self.index = index
        """A pandas index, or None for a list (rows are named by position)."""
        self.names = names
        """How a template may name a value -> the column holding it (None: the item itself)."""

    @classmethod
    def of(cls, data: Any) -> _Rows:
        if isinstance(data, str):
            data = [data]
        if isinstance(data, (list, tuple)):
            return cls(list(data), len(data), None, {"": None, "text": None})
        pd = pandas()
        if isinstance(data, pd.Series):
            names = {"": None, "text": None}
            if isinstance(data.name, str):
                names[data.name] = None
            return cls(data, len(data), data.index, names)
        if isinstance(data, pd.DataFrame):
            return cls(data, len(data), data.index, {str(column): column for column in data.columns})
        raise errors.ConfigError(f"The rows must be a list of str, a pandas Series or a DataFrame, not a "
                                 f"{type(data).__name__}.", hint="map_input")

    @property
    def index_name(self) -> str | None:
        return None if self.index is None else self.index.name

    def labels(self, rows: Sequence[int]) -> list[Any]:
        return list(rows) if self.index is None else [self.index[row] for row in rows]

    def values(self, start: int, stop: int, columns: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The named columns' values of rows ``start:stop``, one tuple per row."""
        if self.index is None:
            return [(item,) for item in self.data[start:stop]]
        if columns == [None]:
            return [(item,) for item in self.data.iloc[start:stop].tolist()]
        return list(zip(*(self.data[column].iloc[start:stop].tolist() for column in columns)))


class Template:
    """``"Sentiment of: {review}"`` -> one prompt per row: ``{name}`` takes the row's value, ``{{`` and
    ``}}`` are braces; braces around what is not a name (JSON, a regex's ``{3}``) stay as written."""

    _FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")

    def __init__(self, text: str, names: dict[str, Any]) -> None:
        if not isinstance(text, str):
            raise errors.ConfigError(f"The template must be a str, not a {type(text).__name__}.", hint="map_template",
                                     names=_list_names(names))
        self.text = text
        self.names: list[str] = []
        self.columns: list[Any] = []
        pieces, end = [], 0
        for match in self._FIELD.finditer(text):
            pieces.append(_escape(text[end:match.start()]))
            end = match.end()
            token, name = match.group(0), match.group(1)
            if name is None:
                pieces.append(token)  # {{ or }}: already a brace in format syntax
            elif name.strip() in names:
                pieces.append(f"{{{self._slot(name.strip(), names)}}}")
            elif name.isidentifier() or not name.strip():
                raise errors.ConfigError(f"The template names {{{name}}}, which is not in the rows "
                                         f"(they have {_list_names(names)}).", hint="map_template",
                                         names=_list_names(names))
            else:
                pieces.append(_escape(token))
        pieces.append(_escape(text[end:]))
        if not self.columns:
            raise errors.ConfigError(f"The template {text!r} names nothing from the rows, so every row would "
                                     f"ask the same ({_list_names(names)} are there).", hint="map_template",
                                     names=_list_names(names))
        self._format = "".join(pieces).format

    def _slot(self, name: str, names: dict[str, Any]) -> int:
        column = names[name]
        if column not in self.columns:
            self.columns.append(column)
            self.names.append(name or "text")
        return self.columns.index(column)

    def render(self, values: tuple[Any, ...]) -> str:
        return self._format(*values)


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _list_names(names: dict[str, Any]) -> str:
    shown = [f"{{{name}}}" for name in names]
    return ", ".join(shown[:12]) + (f" and {len(shown) - 12} more" if len(shown) > 12 else "")


def _missing(value: Any) -> bool:
    if value is None or (isinstance(value, float) and value != value):
        return True
    pd = pandas()
    return value is pd.NA or value is pd.NaT


# -- the job --------------------------------------------------------------------------------------


class _Ask:
    """One request: a prompt and the rows that share it; ``error`` set for rows that cannot be asked."""

    __slots__ = ("prompt", "rows", "error")

    def __init__(self, prompt: str, rows: list[int], error: errors.VLLMError | None = None) -> None:
        self.prompt, self.rows, self.error = prompt, rows, error


class _Unusable(Exception):
    """An answer that came but is not a valid value: its error, and what the answer did tell."""

    def __init__(self, error: errors.VLLMError, record: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.error, self.record = error, record


def _layout(shape: Constraint | None) -> Layout:
    columns = shape.columns() if shape is not None else None
    if columns is None:
        return Layout({"answer": "string"})
    categories = {}
    for name, dtype in columns.items():
        if dtype == "category":
            spec = ((shape.schema or {}).get("properties") or {}).get(name) or {}
            categories[name] = shape.choices if shape.kind == "choice" else tuple(spec.get("enum") or ())
    return Layout(columns, categories)


class _Job:
    """Plans the requests, sends them through the batch runner and files each answer by its rows."""

    def __init__(self, chat: Chat, rows: _Rows, template: Template, shape: Constraint | None, layout: Layout,
                 on_error: str) -> None:
        self.chat, self.rows, self.template = chat, rows, template
        self.shape, self.layout, self.on_error = shape, layout, on_error
        self.flat = layout.values.keys() == {"answer"} and (shape is None or shape.columns() is None)
        """The answer's text is the value (no parsing into columns)."""
        self.body: dict[str, Any] = {}
        self.system: list[dict[str, str]] = []
        self.failed = 0
        self.first_error: str | None = None

    # -- where the answers go

    def to_table(self, resume: Any, concurrency: int, progress: bool | None, **request: Any) -> Any:
        if resume is not None:
            table = self._resumed(resume)
            todo = table.rows_without_answer()
        else:
            table = Table(self.layout, self.rows.size)
            todo = list(range(self.rows.size))
        for row in todo:
            table.columns["error"][row] = NOT_DONE
        answered = self.rows.size - len(todo)
        try:
            for ask, record in self._run(todo, len(todo), concurrency, progress, request):
                table.put(ask.rows, record)
                answered += len(ask.rows)
        except KeyboardInterrupt:
            partial = table.frame(self._index())
            raise MapStopped(
                f"Stopped after {answered:,} of {self.rows.size:,} rows: `.partial` holds them, the rest marked "
                f"{NOT_DONE!r}; ask again with `resume=` that table to send only the rows without an answer.",
                partial, answered, self.rows.size) from None
        return table.frame(self._index())

    def to_file(self, file: ChunkFile, concurrency: int, progress: bool | None, **request: Any) -> Written:
        done = file.done_rows(self._index())
        held = int(done.sum())
        todo = (row for row in range(self.rows.size) if not done[row])
        try:
            for ask, record in self._run(todo, self.rows.size - held, concurrency, progress, request):
                if record.get("error") is None:
                    file.add(ask.rows, self.rows.labels(ask.rows), record)
        except KeyboardInterrupt:
            file.flush()
            total = held + file.written
            raise MapStopped(f"Stopped: {file.path} holds {total:,} of {self.rows.size:,} rows; ask again with the "
                             "same file to send the rest.", None, total, self.rows.size) from None
        file.flush()
        return Written(file.path, self.rows.size, held + file.written, self.failed, self.first_error)

    def _resumed(self, resume: Any) -> Table:
        pd = pandas()
        if not isinstance(resume, pd.DataFrame) or len(resume) != self.rows.size or \
                not resume.index.equals(self._index()):
            raise errors.ConfigError(
                f"The table to resume ({type(resume).__name__} of {len(resume) if hasattr(resume, '__len__') else '?'} "
                f"rows) is not an earlier answer table for these {self.rows.size:,} rows (the same index).",
                hint="map_resume")
        return Table.of(resume, self.layout)

    def _index(self) -> Any:
        return self.rows.index if self.rows.index is not None else pandas().RangeIndex(self.rows.size)

    # -- the requests

    def _run(self, todo: Iterator[int] | list[int], count: int, concurrency: int, progress: bool | None,
             request: dict[str, Any]) -> Iterator[tuple[_Ask, dict[str, Any]]]:
        """Each planned request's rows and record (the answer, or the error in ``error``), as they finish."""
        if not count:
            return
        self._prepare(**request)
        bar = progress_bar(count, count, show=progress, title="Asking", step_name=None, item_name="rows",
                           log_every=5.0)
        window = count if isinstance(todo, list) else WINDOW
        for done in run_batch(self.chat.connection.client, self._plan(todo, window), self._ask,
                              concurrency=min(concurrency, count), progress=bar, size=_size, tokens=_tokens):
            if done.error is None:
                yield done.task, {**done.value, "seconds": done.seconds}
                continue
            error = done.error.error if isinstance(done.error, _Unusable) else done.error
            if not isinstance(error, errors.VLLMError) or self.on_error == "raise" or _for_every_row(error):
                raise self._explain(error, done.task)
            self.failed += len(done.task.rows)
            if self.first_error is None:
                self.first_error = f"{name_rows(done.task.rows, self.rows.index)}: {error.cause}"
            record = done.error.record if isinstance(done.error, _Unusable) else {}
            yield done.task, {**record, "seconds": done.seconds, "error": _said(error)}

    def _prepare(self, model: str | None, system: str | None, max_tokens: int | None, **params: Any) -> None:
        """The request body every row shares, built as a chat builds its own (params checked, model
        resolved, the constraint's fields for this server), and the system message."""
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        self.body = self.chat.stream("", model=model, record=False, shape=self.shape, **params).body
        system = system if system is not None else self.chat.conversation.system
        self.system = [{"role": "system", "content": system}] if system else []
        del self.body["messages"]

    def _plan(self, todo: Iterator[int] | list[int], window: int) -> Iterator[_Ask]:
        """The requests, ``window`` rows at a time: identical prompts in a window share one request;
        a row missing a value the template names fails without a request."""
        todo = iter(todo)
        while batch := [row for _, row in zip(range(window), todo)]:
            asks: dict[str, _Ask] = {}
            start = batch[0]
            values = self.rows.values(start, batch[-1] + 1, self.template.columns)
            for row in batch:
                row_values = values[row - start]
                gap = next((name for name, value in zip(self.template.names, row_values) if _missing(value)), None)
                if gap is not None:
                    yield _Ask("", [row], errors.ConfigError(f"The row has no value in {gap!r}.", hint="map_missing"))
                    continue
                prompt = self.template.render(row_values)
                ask = asks.get(prompt)
                if ask is None:
                    asks[prompt] = _Ask(prompt, [row])
                else:
                    ask.rows.append(row)
            yield from asks.values()

    def _ask(self, connections: JobConnections, ask: _Ask) -> dict[str, Any]:
        """One request, in a worker thread: the answer as a record of the table's columns."""
        if ask.error is not None:
            raise ask.error
        body = {**self.body, "messages": [*self.system, {"role": "user", "content": ask.prompt}]}
        answer = connections.post(CHAT_PATH, body)
        try:
            choice = answer["choices"][0]
            text = choice["message"].get("content") or ""
            finish = choice.get("finish_reason")
            usage = answer.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise errors.UnexpectedResponse(
                f"The server at {connections.client.display_url} answered in an unexpected shape "
                f"({str(answer)[:120]}).", "Check that the URL points at a vLLM or OpenAI-compatible server.",
            ) from None
        record = {"finish_reason": finish, "prompt_tokens": usage.get("prompt_tokens"),
                  "completion_tokens": usage.get("completion_tokens")}
        if self.flat and self.shape is None:
            return {"answer": text, **record}
        try:
            value = self.shape.parse(text, finish)  # type: ignore[union-attr]
        except errors.StructuredError as exc:
            raise _Unusable(exc, record) from None
        return {**({"answer": text} if self.flat else self.shape.row(value)), **record}  # type: ignore[union-attr]

    def _explain(self, error: BaseException, ask: _Ask) -> BaseException:
        """A row's error as the job's: which rows, what they asked, then the error's own words."""
        if not isinstance(error, errors.VLLMError):
            return error
        rows = name_rows(ask.rows, self.rows.index)
        kw = {"status": error.status, "server_message": error.server_message}
        if isinstance(error, errors.ContextLengthError):
            return errors.ContextLengthError(
                f"The prompt of {rows} is too long for the model. The server said: {error.server_message}",
                hint="map_prompt_too_long", **kw)
        if _for_every_row(error):
            return error
        asked = f" (asking {_preview(ask.prompt)})" if ask.prompt else ""
        return type(error)(f"{rows[0].upper()}{rows[1:]} failed{asked}: {error.cause}", error.fix,
                           hint=error.hint, **kw, **error.hint_args)


def _size(ask: _Ask) -> int:
    return len(ask.rows)


def _tokens(record: dict[str, Any]) -> int:
    return record.get("completion_tokens") or 0


def _for_every_row(error: errors.VLLMError) -> bool:
    """Errors of the job, not of a row (a wrong key, no server, an unknown model): they stop it."""
    return isinstance(error, (errors.AuthError, errors.ConnectError, errors.NotFoundError))


def _said(error: errors.VLLMError) -> str:
    """A row's error as its ``error`` cell holds it: the cause, with the server's own words."""
    return error.cause


def _preview(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "\u2026")
