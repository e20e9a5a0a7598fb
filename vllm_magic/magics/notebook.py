"""Notebook helpers for the magics: splitting a line, evaluating and interpolating the user's
expressions, and telling a kernel (widgets, rich output) from a terminal."""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError

from .. import errors


def in_kernel(shell: Any) -> bool:
    """True in a Jupyter kernel (rich output and widgets show), False in terminal IPython."""
    return getattr(shell, "kernel", None) is not None


def split_words(line: str) -> list[str]:
    """Shell-like words: quotes group words and are removed (``--system "Be terse."``)."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"Could not read the options {line!r}: {exc}.") from None


def split_expression(line: str) -> tuple[str, str]:
    """``EXPR --option ...`` -> ``(EXPR, "--option ...")``.

    The options start at the first `` --name`` with a complete Python expression before it, so
    `` --`` inside a string of the expression stays in it.
    """
    for match in re.finditer(r"(?:^|\s)--[A-Za-z]", line):
        head = line[: match.start()].strip()
        try:
            compile(head, "<expression>", "eval")
        except SyntaxError:
            continue
        return head, line[match.start() :]
    return line.strip(), ""


def evaluate(expression: str, namespace: dict[str, Any], command: str, what: str) -> Any:
    """The value of the user's notebook ``expression`` (``what`` it holds) for ``%vllm command``."""
    if not expression:
        raise UsageError(f"`%vllm {command}` needs {what} first, e.g. `%vllm {command} df.text`.")
    try:
        return eval(expression, namespace)  # noqa: S307 - the user's own notebook expression
    except Exception as exc:
        raise errors.ConfigError(
            f"`%vllm {command}` could not evaluate {expression!r}: {type(exc).__name__}: {exc}.",
            f"Write the expression first, then the options, e.g. `%vllm {command} df.text --model NAME`; "
            f'quote literal text: `%vllm {command} "some text"`.',
        ) from None


def interpolate(template: str, namespace: dict[str, Any],
                lookup: Callable[[str], str | None] = lambda field: None,
                guard: Callable[[str], str] = lambda text: text) -> str:
    """Expand ``{expr}`` (with optional ``!r`` and ``:spec``) from ``namespace``; ``{{`` is a brace.

    ``lookup(field)`` is asked first: the text of a field it knows (``{In[3]}``, ``{Err}``, a large or
    secret variable), else None. ``guard`` sees each evaluated field's text (the secret filter).
    """
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise errors.ConfigError(
            f"--interpolate could not read the prompt's braces ({exc}).",
            "Write a literal brace as {{ or }}, or drop --interpolate to send the prompt as written.",
        ) from None
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        value = lookup(field)
        if value is None:
            value = _evaluate_field(field, namespace)
        if conversion:
            value = {"r": repr, "s": str, "a": ascii}[conversion](value)
        out.append(guard(format(value, spec or "")))
    return "".join(out)


def _evaluate_field(field: str, namespace: dict[str, Any]) -> Any:
    try:
        return eval(field, namespace)  # noqa: S307 - the user's own notebook expression
    except Exception as exc:
        raise errors.ConfigError(
            f"--interpolate could not evaluate {{{field}}}: {type(exc).__name__}: {exc}.",
            "Define the variable first, write a literal brace as {{ or }}, or drop --interpolate.",
        ) from None


def preview(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "\u2026")
