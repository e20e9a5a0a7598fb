"""Context from the kernel: the notebook's variables and errors described for the model, within budgets.

    >>> pieces = describe_variables("df,x", namespace, budget=2000, is_secret=client.is_secret)
    >>> response, note = fit(pieces, lambda context: chat.stream(prompt, context=context), client)

Every piece passes the secret filter: a variable whose name looks like a secret is never described,
nor a value (or a line of a cell or traceback) that would give away the session's API key or a
header's value (:meth:`~vllm_magic.client.Client.is_secret`). :class:`ErrorLog` keeps the errors cells
raise; :class:`NotebookHistory` answers ``{In[n]}``, ``{Out[n]}``, ``{Err[n]}`` and ``{Err}``. :func:`fit`
counts the request exactly (vLLM's ``/tokenize``) and drops context, oldest first, until it fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from .lazy import instance_of
from .messages import Context, Message

if TYPE_CHECKING:
    from .client import Client
    from .conversation import Turn
    from .response import Response
    from .session import Session

IsSecret = Callable[[str], bool]

SECRET_NAME = re.compile(r"key|token|secret|password|passwd|credential", re.IGNORECASE)
WITHHELD_NAME = "(value withheld: the name looks like a secret)"
WITHHELD_VALUE = "(value withheld: it holds a credential of this session)"
WITHHELD_LINE = "(line withheld: it holds a credential of this session)"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_REFERENCE = re.compile(r"(?P<kind>In|Out|Err)\[(?P<number>\d+)\]|Err")


@dataclass(frozen=True)
class Piece:
    """One named piece of context: a variable's description, a cell's source, a traceback."""

    name: str
    text: str


def context_text(pieces: list[Piece]) -> str:
    """The pieces as the model reads them: each name, then its text, a blank line between."""
    return "\n\n".join(f"{piece.name}:\n{piece.text}" for piece in pieces)


def session_secrets(session: Session) -> IsSecret:
    """The secret filter of the session's connections (chat, and embeddings when apart)."""
    clients = [session.current_connection().client]
    if session.embeddings is not None:
        clients.append(session.embeddings.client)
    return lambda text: any(client.is_secret(text) for client in clients)


def withhold_lines(text: str, is_secret: IsSecret) -> str:
    """``text`` with each line that would give a credential away replaced by a note."""
    return "\n".join(WITHHELD_LINE if is_secret(line) else line for line in text.split("\n"))


# --- variables --------------------------------------------------------------------------------------


def describe_variables(names: str, namespace: dict[str, Any], budget: int, is_secret: IsSecret) -> list[Piece]:
    """``"df, model, x"``: each variable of ``namespace`` described in at most ``budget`` characters."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    if not wanted or not all(name.isidentifier() for name in wanted):
        raise errors.ConfigError(f"--context takes the names of variables separated by commas, not {names!r}.",
                                 hint="context_names")
    return [Piece(name, describe_variable(name, namespace, budget, is_secret)) for name in wanted]


def describe_variable(name: str, namespace: dict[str, Any], budget: int, is_secret: IsSecret) -> str:
    """One variable for the model, or why it is withheld."""
    if SECRET_NAME.search(name):
        return WITHHELD_NAME
    if name not in namespace:
        raise errors.ConfigError(f"--context names {name!r}, which is not a variable of the notebook.",
                                 hint="context_name", name=name)
    value = namespace[name]
    text = describe(value, budget)
    return WITHHELD_VALUE if is_secret(value if isinstance(value, str) else text) else text


def describe(value: Any, budget: int) -> str:
    """``value`` in at most ``budget`` characters: its type and what :func:`~vllm_magic.tools.summarise`
    makes of it (a DataFrame's shape, dtypes and first rows; an array's shape, dtype and values; else
    JSON or the repr), then a DataFrame's null counts or a numeric array's min, max and mean."""
    facts = _facts(value)
    head = "" if _self_described(value) else f"{_type_name(value)}: "
    from .tools import summarise

    body = summarise(value, max(budget - len(head) - len(facts), 0))
    return summarise(head + body + facts, budget)


def _self_described(value: Any) -> bool:
    """What :func:`summarise` already names the type of."""
    return any(instance_of(value, module, name) for module, name in
               (("pandas", "DataFrame"), ("pandas", "Series"), ("numpy", "ndarray")))


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _facts(value: Any) -> str:
    if instance_of(value, "pandas", "DataFrame"):
        counts = ", ".join(f"{column} {count:,}" for column, count in value.isna().sum().items() if count)
        return f"\nnull values: {counts or 'none'}"
    if instance_of(value, "numpy", "ndarray") and value.size and value.dtype.kind in "iuf":
        return f"\nmin {value.min():.6g}, max {value.max():.6g}, mean {value.mean():.6g}"
    return ""


# --- errors and history -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedError:
    """An error a cell raised: the cell's source, and the traceback as the notebook showed it (no colours)."""

    count: int
    source: str
    type: str
    message: str
    traceback: str


class ErrorLog:
    """The errors cells raise, by execution count, kept by an IPython ``post_run_cell`` callback."""

    def __init__(self, shell: Any) -> None:
        self._shell = shell
        self.errors: dict[int, RecordedError] = {}

    def attach(self) -> None:
        """Record the shell's cells from now on, in place of a log an earlier load of the extension left."""
        callbacks = self._shell.events.callbacks["post_run_cell"]
        for earlier in [c for c in callbacks if isinstance(getattr(c, "__self__", None), ErrorLog)]:
            callbacks.remove(earlier)
        self._shell.events.register("post_run_cell", self.record)

    def record(self, result: Any) -> None:
        """Keep the error of a cell that failed (``result`` is IPython's ExecutionResult). A silent execution
        (no ``store_history``: a front end's own requests) is no numbered cell and is not kept."""
        error = result.error_in_exec or result.error_before_exec
        if error is None or result.info is None or not result.info.store_history:
            return
        self.errors[result.execution_count] = RecordedError(
            result.execution_count, result.info.raw_cell, type(error).__name__, str(error), self._formatted(error))

    def last(self) -> RecordedError | None:
        return self.errors[max(self.errors)] if self.errors else None

    def _formatted(self, error: BaseException) -> str:
        """The traceback as IPython shows it (a vllm_magic error's paragraph, as shown), colours stripped."""
        render = getattr(error, "_render_traceback_", None)
        lines = render() if render else self._shell.InteractiveTB.structured_traceback(
            type(error), error, error.__traceback__)
        return _ANSI.sub("", "\n".join(lines))


class NotebookHistory:
    """``{In[n]}``, ``{Out[n]}``, ``{Err[n]}`` and ``{Err}`` (the last error) for ``--interpolate``: the
    shell's input and output history and the errors the log kept, lines holding a credential withheld.

    A variable's field (``{df}``) goes through the secret filter too, and a DataFrame, Series or array,
    or any value whose text is longer than ``budget``, becomes its bounded description, as ``--context``
    gives it; ``{expression}``'s text is withheld when it would give a credential away (see :meth:`guard`).
    """

    def __init__(self, shell: Any, log: ErrorLog, is_secret: IsSecret, budget: int) -> None:
        self._history = shell.history_manager
        self._namespace = shell.user_ns
        self._log = log
        self._is_secret = is_secret
        self._budget = budget

    def guard(self, text: str) -> str:
        """An expression's text as sent: withheld when it holds a credential."""
        return WITHHELD_VALUE if self._is_secret(text) else text

    def lookup(self, field: str) -> str | None:
        """The text ``field`` refers to; None when it is no history reference (an expression)."""
        match = _REFERENCE.fullmatch(field.strip())
        if match is None:
            return self._variable(field.strip())
        number = int(match["number"]) if match["number"] else None
        return withhold_lines(self._text(match["kind"] or "Err", number, field), self._is_secret)

    def _variable(self, name: str) -> str | None:
        """A variable's text, or None to evaluate the field as written (a short value, an expression)."""
        if not name.isidentifier() or name not in self._namespace:
            return None
        value = self._namespace[name]
        tabular = any(instance_of(value, module, kind) for module, kind in
                      (("pandas", "DataFrame"), ("pandas", "Series"), ("numpy", "ndarray")))
        if tabular or SECRET_NAME.search(name) or self._is_secret(str(value)) or len(str(value)) > self._budget:
            return describe_variable(name, self._namespace, self._budget, self._is_secret)
        return None

    def _text(self, kind: str, number: int | None, field: str) -> str:
        if kind == "In":
            sources = self._history.input_hist_raw
            if 0 < number < len(sources):  # type: ignore[operator]
                return sources[number]
            raise _missing(field, f"there is no cell {number} in this session's history")
        if kind == "Out":
            if number in self._history.output_hist:
                return str(self._history.output_hist[number])
            raise _missing(field, f"cell {number} has no output")
        error = self._log.last() if number is None else self._log.errors.get(number)
        if error is None:
            raise _missing(field, "no cell has raised an error since vllm_magic was loaded" if number is None
                            else f"cell {number} raised no error")
        return error.traceback


def _missing(field: str, why: str) -> errors.ConfigError:
    return errors.ConfigError(f"--interpolate found nothing for {{{field}}}: {why}.", hint="history_missing")


def error_pieces(error: RecordedError, budget: int, is_secret: IsSecret) -> list[Piece]:
    """A failed cell for the model: its source, then its traceback (the end kept when it is cut)."""
    traceback = error.traceback if len(error.traceback) <= budget else "\u2026" + error.traceback[1 - budget:]
    from .tools import summarise

    return [Piece(f"In[{error.count}] (the cell that failed)", withhold_lines(summarise(error.source, budget),
                                                                             is_secret)),
            Piece(f"Err[{error.count}] (its error)", withhold_lines(traceback, is_secret))]


# --- fitting the model's window ---------------------------------------------------------------------


def fit(pieces: list[Piece], ask: Callable[[str], Response], client: Client,
        history: Sequence[Turn] = ()) -> tuple[Response, str | None]:
    """The response to send (``ask(context)`` builds one) with as much context as fits the model's window,
    and a note naming what was left out (None when all fit).

    The whole request is counted exactly (``/tokenize`` with the chat template) with room for its
    ``max_tokens`` (else for one token). While it would overflow, the oldest context goes first: the
    context earlier turns of ``history`` sent (this request only; the turns keep theirs), then this
    prompt's ``pieces``, last first. When even none fit, the request goes as is and the server's own
    context error applies. A server without ``/tokenize`` (or failing it) is not checked. Without pieces
    nothing is counted.
    """
    response = ask(context_text(pieces))
    if not pieces:
        return response, None
    counted = _count(client, response)
    earlier = _earlier_contexts(response, history)
    kept, left_out = list(pieces), []
    while counted is not None and (earlier or kept) and counted[0] + response.body.get("max_tokens", 1) > counted[1]:
        if earlier:
            number, index, plain = earlier.pop(0)
            response.body["messages"][index] = plain
            name = f"turn {number}'s context"
        else:
            name = kept.pop().name
            response = ask(context_text(kept))
            for _, index, plain in _earlier_contexts(response, history):  # all left out already
                response.body["messages"][index] = plain
        fewer = _count(client, response)
        left_out.append(f"{name} ({counted[0] - fewer[0]:,} tokens)" if fewer else name)
        counted = fewer
    if not left_out:
        return response, None
    limit = f"{response.model}'s {counted[1]:,} tokens" if counted else f"{response.model}'s window"
    return response, f"Context left out to fit {limit}: {', '.join(left_out)}."


def _earlier_contexts(response: Response, history: Sequence[Turn]) -> list[tuple[int, int, dict[str, Any]]]:
    """For each earlier turn that sent context, oldest first: its number, the index of its user message in
    the request, and that message without the context."""
    users = [i for i, m in enumerate(response.body["messages"][:-1]) if m.get("role") == "user"]
    return [(number, index, _without_context(turn.user))
            for number, (index, turn) in enumerate(zip(users, history), 1) if turn.user.context]


def _without_context(message: Message) -> dict[str, Any]:
    return Message(message.role, [p for p in message.parts if not isinstance(p, Context)]).to_wire()


def _count(client: Client, response: Response) -> tuple[int, int] | None:
    """The request's exact prompt tokens and the model's max_model_len; None when the server cannot say."""
    try:
        counted = client.tokenize(response.model, response.body["messages"])
        return int(counted["count"]), int(counted["max_model_len"])
    except (errors.VLLMError, KeyError, TypeError, ValueError):
        return None
