"""Structured answers: a constraint the server enforces (vLLM's guided decoding) and the client checks.

    >>> constraint(schema=Invoice)                  # a pydantic model -> a validated Invoice
    >>> constraint(schema="name str, age int, tags list[str]")
    >>> constraint(choice="pos|neg|neutral")        # or a list / Enum
    >>> constraint(regex=r"[0-9]{3}"), constraint(grammar=GBNF), constraint(json=True)

The request asks for the shape in the fields the server understands (``response_format`` for JSON,
vLLM's ``structured_outputs`` for choice / regex / grammar, the pre-0.12 ``guided_*`` fields for older
vLLM); the answer is then parsed and validated here, so a server that ignored the constraint never
passes an unvalidated value off as valid. pydantic and jsonschema are imported only when used.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .params import release_at_least

KINDS = ("json", "schema", "choice", "regex", "grammar")
OLD_FIELDS = {"choice": "guided_choice", "regex": "guided_regex", "grammar": "guided_grammar"}
_INLINE_FIELD = re.compile(r"^\s*([A-Za-z_]\w*)\s*:?\s+(.+?)\s*$")
_JSON_DTYPES = {"integer": "Int64", "number": "Float64", "boolean": "boolean", "string": "string"}


@dataclass(frozen=True)
class Constraint:
    """What shape an answer must have, how to ask for it, and how to check it."""

    kind: str
    schema: dict[str, Any] | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    grammar: str | None = None
    name: str = "answer"
    validate: Callable[[str], Any] | None = field(default=None, compare=False, repr=False)
    """Parses and validates JSON text into the value (a model instance, dict, list...)."""

    def request_fields(self, version: str | None) -> dict[str, Any]:
        """Body fields asking the server for this shape (``version``: vLLM's, None if unknown)."""
        if self.kind == "json":
            return {"response_format": {"type": "json_object"}}
        if self.kind == "schema":
            return {"response_format": {"type": "json_schema",
                                        "json_schema": {"name": self.name, "schema": self.schema, "strict": True}}}
        value: Any = list(self.choices) if self.kind == "choice" else self.pattern if self.kind == "regex" else self.grammar
        if version is not None and not release_at_least(version, (0, 12)):
            return {OLD_FIELDS[self.kind]: value}
        return {"structured_outputs": {self.kind: value}}

    def parse(self, text: str, finish_reason: str | None) -> Any:
        """The answer's value; :class:`errors.StructuredError` (raw text kept) when it does not fit."""
        if finish_reason == "length":
            raise errors.StructuredError(
                f"The answer was cut by max_tokens after {len(text):,} characters, before it was a complete "
                f"{self._what()}.", raw=text, hint="raise_max_tokens")
        if self.kind == "choice":
            if text not in self.choices:
                raise self._refused(text, f"it is not one of {', '.join(map(repr, self.choices))}")
            return text
        if self.kind == "regex":
            if re.fullmatch(self.pattern or "", text) is None:
                raise self._refused(text, f"it does not match {self.pattern!r}")
            return text
        if self.kind == "grammar":
            return text  # nothing to check a grammar with on this side
        try:
            value = self.validate(text) if self.validate else json.loads(text)
        except Exception as exc:  # JSON, pydantic and jsonschema errors alike
            raise self._refused(text, _first_line(exc)) from None
        if self.kind == "json" and not isinstance(value, dict):
            raise self._refused(text, f"it is a JSON {type(value).__name__}, not an object")
        return value

    def columns(self) -> dict[str, str] | None:
        """A result table's columns and pandas dtypes for this shape; None: one ``answer`` column."""
        if self.kind == "choice":
            return {"answer": "category"}
        properties = (self.schema or {}).get("properties") if self.kind == "schema" else None
        if not properties:
            return None
        return {name: "category" if "enum" in spec else _JSON_DTYPES.get(spec.get("type"), "object")
                for name, spec in properties.items()}

    def row(self, value: Any) -> dict[str, Any]:
        """The value flattened into :meth:`columns`."""
        columns = self.columns()
        if columns is None or self.kind == "choice":
            return {"answer": value}
        data = plain(value)
        return {name: data.get(name) for name in columns}

    def _what(self) -> str:
        return {"json": "JSON object", "schema": "JSON object", "choice": "choice", "regex": "match",
                "grammar": "sentence of the grammar"}[self.kind]

    def _refused(self, text: str, why: str) -> errors.StructuredError:
        shown = text if len(text) <= 200 else text[:200] + "\u2026"
        return errors.StructuredError(
            f"The answer does not have the {self.kind} shape asked for ({why}): {shown!r}. The server ignored "
            "the constraint or does not support it; the raw text is kept, marked failed.",
            raw=text, hint="constraint_ignored")


def constraint(*, json: bool = False, schema: Any = None, choice: Any = None, regex: str | None = None,
               grammar: str | None = None, namespace: Mapping[str, Any] | None = None) -> Constraint | None:
    """The constraint asked for (at most one of them), or None. ``namespace`` resolves names given as
    strings (a notebook's variables): ``schema="Invoice"``, ``choice="LABELS"``."""
    given = {kind: value for kind, value in zip(KINDS, (json or None, schema, choice, regex, grammar))
             if value is not None}
    if len(given) > 1:
        raise errors.ConfigError(f"Only one answer shape can be asked for at a time, not {' and '.join(given)}.",
                                 hint="one_constraint")
    if not given:
        return None
    (kind, value), = given.items()
    if kind == "json":
        return Constraint("json")
    if kind == "schema":
        return _schema(_resolve(value, namespace))
    if kind == "choice":
        return Constraint("choice", choices=_choices(_resolve(value, namespace)))
    if kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise errors.ConfigError(f"The regex {value!r} does not compile: {exc}.", hint="bad_regex") from None
        return Constraint("regex", pattern=value)
    return Constraint("grammar", grammar=value)


def plain(value: Any) -> Any:
    """A value as plain data (dicts, lists, scalars): what a table or a saved file holds."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _resolve(value: Any, namespace: Mapping[str, Any] | None) -> Any:
    if isinstance(value, str) and namespace is not None and value.isidentifier() and value in namespace:
        return namespace[value]
    return value


def _choices(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        choices = [c.strip() for c in value.split("|")]
    elif isinstance(value, type) and issubclass(value, enum.Enum):
        choices = [str(member.value) for member in value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        choices = [str(c) for c in value]
    else:
        raise errors.ConfigError(f"A choice is a list, an Enum or \"a|b|c\", not a {type(value).__name__}.",
                                 hint="bad_choice")
    if len([c for c in choices if c]) < 2 or len(set(choices)) != len(choices):
        raise errors.ConfigError(f"A choice needs at least two different, non-empty options; got {choices!r}.",
                                 hint="bad_choice")
    return tuple(choices)


def _schema(spec: Any) -> Constraint:
    """A JSON-schema constraint from a pydantic model, a dataclass, a TypedDict, a JSON Schema dict,
    or an inline ``"name str, age int, tags list[str]"``."""
    if isinstance(spec, str):
        model = _inline_model(spec)
        return Constraint("schema", schema=model.model_json_schema(), name="answer",
                          validate=lambda text: model.model_validate_json(text).model_dump())
    if isinstance(spec, dict):
        return _json_schema(spec)
    if isinstance(spec, type) and hasattr(spec, "model_json_schema"):  # a pydantic model
        return Constraint("schema", schema=spec.model_json_schema(), name=spec.__name__,
                          validate=spec.model_validate_json)
    if isinstance(spec, type) and (dataclasses.is_dataclass(spec) or _is_typeddict(spec)):
        from pydantic import PydanticUserError, TypeAdapter

        try:
            adapter = TypeAdapter(spec)
        except PydanticUserError as exc:
            raise errors.ConfigError(f"pydantic cannot describe {spec.__name__}: {_first_line(exc)}",
                                     hint="bad_schema") from None
        return Constraint("schema", schema=adapter.json_schema(), name=spec.__name__,
                          validate=lambda text: plain(adapter.validate_json(text)))
    raise errors.ConfigError(
        f"A schema is a pydantic model, a dataclass, a TypedDict, a dict holding a JSON Schema, or a spec "
        f"like \"name str, age int\"; not {spec!r}.", hint="bad_schema")


def _json_schema(schema: dict[str, Any]) -> Constraint:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise errors.ConfigError(f"The JSON Schema is not valid: {_first_line(exc)}.", hint="bad_schema") from None
    validator = jsonschema.validators.validator_for(schema)(schema)

    def validate(text: str) -> Any:
        value = json.loads(text)
        validator.validate(value)
        return value

    return Constraint("schema", schema=schema, name=str(schema.get("title") or "answer"), validate=validate)


def _inline_model(spec: str) -> type:
    """``"name str, age int, tags list[str], score float?"`` as a pydantic model (``?``: may be null)."""
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for part in _split_top_level(spec):
        match = _INLINE_FIELD.match(part)
        if not match:
            raise errors.ConfigError(f"{part.strip()!r} in the schema {spec!r} is not `name type`.",
                                     hint="bad_inline_schema")
        name, kind = match.groups()
        optional = kind.endswith("?")
        annotation = _inline_type(kind.rstrip("?").strip(), spec)
        fields[name] = (annotation | None, None) if optional else (annotation, ...)
    return create_model("Answer", **fields)


_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict}


def _inline_type(kind: str, spec: str) -> Any:
    if kind in _SCALARS:
        return _SCALARS[kind]
    inner = re.fullmatch(r"list\[(.+)\]", kind)
    if inner:
        return list[_inline_type(inner.group(1).strip(), spec)]  # type: ignore[misc]
    raise errors.ConfigError(f"{kind!r} in the schema {spec!r} is not a type: use str, int, float, bool, dict "
                             "or list[...].", hint="bad_inline_schema")


def _split_top_level(spec: str) -> list[str]:
    """Split at commas outside brackets (``tags list[str], x int``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return [p for p in parts if p.strip()]


def _is_typeddict(tp: type) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[:3])[:300]
