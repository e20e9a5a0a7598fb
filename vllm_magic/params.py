"""Sampling parameters: the common ones typed and validated before sending, vLLM's extras passed on.

Validation happens locally so a typo costs no round trip and the message can say exactly what is
allowed. Anything not listed here (``min_tokens``, ``ignore_eos``, ``chat_template_kwargs``,
``structured_outputs``...) goes to vLLM as an extra body field: vLLM checks it and its own message
is shown if it refuses.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ParamError


@dataclass(frozen=True)
class Spec:
    kind: type
    check: Callable[[Any], bool]
    allowed: str


def _number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: (lo < v if lo_open else lo <= v) and v <= hi


KNOWN: dict[str, Spec] = {
    "temperature": Spec(float, _number(0), "a number >= 0 (0 is greedy)"),
    "top_p": Spec(float, _number(0, 1, lo_open=True), "a number in (0, 1]"),
    "top_k": Spec(int, lambda v: v == -1 or v >= 0, "an integer >= 0, or -1 for no limit"),
    "min_p": Spec(float, _number(0, 1), "a number in [0, 1]"),
    "max_tokens": Spec(int, _number(1), "an integer >= 1"),
    "seed": Spec(int, lambda v: True, "an integer"),
    "stop": Spec(list, lambda v: all(isinstance(s, str) and s for s in v), "a string or a list of strings"),
    "presence_penalty": Spec(float, _number(-2, 2), "a number in [-2, 2]"),
    "frequency_penalty": Spec(float, _number(-2, 2), "a number in [-2, 2]"),
    "repetition_penalty": Spec(float, _number(0, lo_open=True), "a number > 0 (1 means none)"),
    "n": Spec(int, _number(1), "an integer >= 1 (several samples: the first is kept, `%vllm pick I` keeps another)"),
    "logprobs": Spec(bool, lambda v: True, "true or false"),
    "top_logprobs": Spec(int, _number(0, 20), "an integer in [0, 20]"),
}

# Keys the engine owns: setting them as params would break the conversation or the stream.
RESERVED = {
    "stream": "streaming is always on (it is how answers reach the notebook).",
    "stream_options": "usage reporting is always requested.",
    "messages": "the conversation supplies the messages.",
    "model": "the model is chosen apart from the sampling parameters.",
}
RESERVED_HINTS = {"model": "reserved_model"}


GUIDED = {"guided_json": "json", "guided_choice": "choice", "guided_regex": "regex", "guided_grammar": "grammar"}
"""vLLM's constraint fields before 0.12 -> their keys in ``structured_outputs`` since."""


def translate_guided(params: dict[str, Any], version: str | None) -> tuple[dict[str, Any], list[str]]:
    """Move the old ``guided_*`` fields into ``structured_outputs`` for vLLM 0.12 and newer.

    Those servers ignore the old fields silently (HTTP 200, unconstrained output), so an old
    notebook would lose its constraint without a word. Returns the params and the names moved.
    """
    old = [name for name in GUIDED if name in params]
    if not old or not release_at_least(version, (0, 12)):
        return params, []
    moved = {name: value for name, value in params.items() if name not in GUIDED}
    moved["structured_outputs"] = {**(params.get("structured_outputs") or {}),
                                   **{GUIDED[name]: params[name] for name in old}}
    return moved, old


def release_at_least(version: str | None, release: tuple[int, ...]) -> bool:
    numbers = []
    for part in (version or "").split("+")[0].split(".")[: len(release)]:
        if not part.isdigit():
            return False
        numbers.append(int(part))
    return bool(numbers) and tuple(numbers) >= release


def parse_value(text: str) -> Any:
    """``0.7`` -> 0.7, ``true`` -> True, ``["a","b"]`` -> list, anything else stays a string."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def parse_assignments(tokens: Iterable[str]) -> dict[str, Any]:
    """``["temperature=0.2", "stop=[\\"\\\\n\\"]"]`` -> ``{"temperature": 0.2, "stop": ["\\n"]}``."""
    result: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ParamError(f"{token!r} is not a `name=value` pair.", hint="name_value")
        result[key] = parse_value(value.strip())
    return result


def validate(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check and normalise ``params``; return them with the names that pass through unchecked.

    Raises :class:`ParamError` naming the first bad value and what is allowed.
    """
    clean: dict[str, Any] = {}
    extras: list[str] = []
    for name, value in params.items():
        if name in RESERVED:
            raise ParamError(f"The parameter `{name}` cannot be set here: {RESERVED[name]}",
                             hint=RESERVED_HINTS.get(name))
        spec = KNOWN.get(name)
        if spec is None:
            extras.append(name)
            clean[name] = value
        elif value is None:
            clean[name] = None
        else:
            clean[name] = _coerce(name, value, spec)
    return clean, extras


def _coerce(name: str, value: Any, spec: Spec) -> Any:
    converted: Any = None
    if spec.kind is list:
        converted = [value] if isinstance(value, str) else value
        if not isinstance(converted, (list, tuple)):
            converted = None
        else:
            converted = list(converted)
    elif spec.kind is bool:
        converted = value if isinstance(value, bool) else None
    elif isinstance(value, bool):
        converted = None
    elif spec.kind is int and isinstance(value, int):
        converted = value
    elif spec.kind is int and isinstance(value, float) and value.is_integer():
        converted = int(value)
    elif spec.kind is float and isinstance(value, (int, float)) and math.isfinite(value):
        converted = float(value)
    if converted is None or not spec.check(converted):
        raise ParamError(f"`{name}` must be {spec.allowed}, got {value!r}.", hint="bad_param",
                         name=name, example=_example(name))
    return converted


def _example(name: str) -> str:
    return {
        "temperature": "0.7",
        "top_p": "0.9",
        "top_k": "40",
        "min_p": "0.05",
        "max_tokens": "512",
        "seed": "42",
        "n": "3",
        "logprobs": "True",
        "top_logprobs": "5",
        "stop": '\'["\\n\\n"]\'',
        "repetition_penalty": "1.1",
    }.get(name, "0")
