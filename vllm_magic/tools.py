"""Notebook functions as tools: a Python function described for the OpenAI tools API, one call of it
checked and run, and its result summarised for the model.

    >>> @tool
    ... def weather(city: str, unit: Literal["C", "F"] = "C") -> dict:
    ...     '''Today's weather in a city.
    ...
    ...     Args:
    ...         city: The city's name, e.g. "Paris".
    ...     '''
    >>> REGISTRY["weather"].spec()                  # {"type": "function", "function": {...}}
    >>> REGISTRY["weather"].run('{"city": "Paris"}').for_model()

The arguments' JSON Schema comes from the signature through pydantic (imported only when used), their
descriptions from the docstring (Google, numpy or Sphinx style). The model's arguments are validated by
the same pydantic model before the function runs, so the function gets the types it declared. There is
no HTTP and no loop here: whoever talks to the server sends :meth:`Tool.spec` and answers each call
with :meth:`Outcome.for_model`.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import inspect
import json
import re
import time
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .lazy import instance_of

REGISTRY: dict[str, Tool] = {}
"""Tools registered with :func:`tool`, by name."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the OpenAI API accepts as a function name
_TABLE_ROWS = 20  # at most this many rows of a DataFrame / Series go to the model


@dataclass(frozen=True)
class Outcome:
    """One call of a tool: its value, or why it did not run / what it raised (one line)."""

    value: Any
    error: str | None
    seconds: float
    arguments: dict[str, Any] | None
    """The arguments as parsed; None when they were not a JSON object."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def for_model(self, budget: int = 2000) -> str:
        """The tool message's content: the value summarised, or ``Error: ...``; at most ``budget`` characters."""
        return summarise(self.value, budget) if self.ok else _cut(f"Error: {self.error}", budget)


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, description and arguments' JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    model: Any = field(default=None, compare=False, repr=False)
    """The pydantic model checking the arguments (:func:`describe` builds it); without one they are
    checked against :attr:`parameters` with jsonschema."""
    positional: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """Positional-only parameters, passed by position."""

    def spec(self, strict: bool = False) -> dict[str, Any]:
        """The entry of a request's ``tools`` list."""
        function: dict[str, Any] = {"name": self.name, "description": self.description,
                                    "parameters": self.parameters}
        if strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    def run(self, arguments: str | Mapping[str, Any]) -> Outcome:
        """Call the function with the arguments the model wrote (JSON text); never raises for a bad
        call or for what the function raises, only for KeyboardInterrupt and the like."""
        try:
            parsed = _parse_arguments(arguments)
        except ValueError as exc:
            return Outcome(None, str(exc), 0.0, None)
        try:
            args, kwargs = self._validated(parsed)
        except _Refused as exc:
            return Outcome(None, str(exc), 0.0, parsed)
        start = time.perf_counter()
        try:
            value = self.function(*args, **kwargs)
        except Exception as exc:  # BaseException (KeyboardInterrupt, SystemExit) goes through
            return Outcome(None, _exception_line(exc), time.perf_counter() - start, parsed)
        return Outcome(value, None, time.perf_counter() - start, parsed)

    def _validated(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        if self.model is None:
            values = _checked_by_schema(arguments, self.parameters)
        else:
            from pydantic import ValidationError

            try:
                instance = self.model.model_validate(arguments)
            except ValidationError as exc:
                raise _Refused(_validation_line(exc, self)) from None
            # getattr, not model_dump: nested models and Enums reach the function as instances
            values = {name: getattr(instance, name) for name in type(instance).model_fields}
        args = [values.pop(name) for name in self.positional if name in values]
        return args, values


class _Refused(Exception):
    """The arguments do not fit the tool's parameters (the message says which, in one line)."""


def describe(fn: Callable[..., Any], name: str | None = None) -> Tool:
    """``fn`` as a tool: every parameter annotated with a type pydantic can describe in JSON Schema.

    :class:`errors.ConfigError` names the function and the parameter that cannot be described."""
    marked = getattr(fn, "__vllm_tool__", None)
    if isinstance(marked, Tool) and name in (None, marked.name):
        return marked
    tool_name = _tool_name(fn, name)
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn) \
            or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        raise errors.ConfigError(f"The function `{tool_name}` is async (`async def`); tools run as plain "
                                 "functions.", hint="sync_tool")
    doc = inspect.getdoc(fn) or ""
    model, schema, positional = _arguments_model(fn, tool_name)
    parameters = _without_titles(schema)
    for parameter, text in _parameter_docs(doc).items():
        described = parameters.get("properties", {}).get(parameter)
        if described is not None and text:
            described.setdefault("description", text)  # an Annotated Field(description=...) wins
    return Tool(tool_name, _summary(doc), parameters, fn, model=model, positional=positional)


@typing.overload
def tool(fn: Callable[..., Any], *, name: str | None = None) -> Callable[..., Any]: ...


@typing.overload
def tool(fn: None = None, *, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Register a function as a tool (``@tool`` or ``@tool(name="lookup")``); the function itself is
    returned unchanged, its :class:`Tool` in ``__vllm_tool__`` and in :data:`REGISTRY`."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        described = describe(function, name)
        try:
            function.__vllm_tool__ = described  # type: ignore[attr-defined]
        except AttributeError:  # a bound method or a builtin: the registry still has it
            pass
        REGISTRY[described.name] = described
        return function

    return register if fn is None else register(fn)


def resolve(specs: str | Iterable[Any], namespace: Mapping[str, Any] | None = None) -> list[Tool]:
    """Tools from ``"f, g"`` (names looked up in ``namespace``, then :data:`REGISTRY`) or from an
    iterable of functions, :class:`Tool` objects and names."""
    items: Iterable[Any] = [part.strip() for part in specs.split(",") if part.strip()] \
        if isinstance(specs, str) else specs
    tools = [_one_tool(item, namespace) for item in items]
    if not tools:
        raise errors.ConfigError(f"No tools were named (got {specs!r}).", hint="unknown_tool",
                                 available=_available(namespace))
    _check_unique(tools)
    return tools


def union_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """JSON Schema of one call of one of ``tools``: ``{"name": ..., "arguments": {...}}``. For guided
    decoding when the server has no tool parser; each tool's ``$defs`` move to the top (vLLM resolves
    ``$ref`` from there), renamed ``tool.Name`` where two tools define a name differently."""
    if not tools:
        raise errors.ConfigError("There are no tools to choose from.")
    _check_unique(tools)
    defs: dict[str, Any] = {}
    branches = []
    for one in tools:
        parameters = copy.deepcopy(one.parameters)
        own = parameters.pop("$defs", {})
        if any(n in defs and defs[n] != s for n, s in own.items()):
            renames = {n: f"{one.name}.{n}" for n in own}
            parameters, own = _renamed_refs(parameters, renames), {
                renames[n]: _renamed_refs(s, renames) for n, s in own.items()}
        defs.update(own)
        branches.append({"type": "object",
                         "properties": {"name": {"type": "string", "enum": [one.name]}, "arguments": parameters},
                         "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = {"type": "object", "anyOf": branches}
    if defs:
        schema["$defs"] = defs
    return schema


def summarise(value: Any, budget: int = 2000) -> str:
    """``value`` as text for the model, at most ``budget`` characters: JSON for plain data and models,
    shape + first rows for a DataFrame / Series, shape + a few values for an array, else its repr."""
    if isinstance(value, str):
        return _cut(value, budget)
    if instance_of(value, "pandas", "DataFrame"):
        return _frame(value, budget)
    if instance_of(value, "pandas", "Series"):
        return _series(value, budget)
    if instance_of(value, "numpy", "ndarray"):
        return _array(value, budget)
    if instance_of(value, "numpy", "generic"):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, dict, list, tuple, enum.Enum)) or _is_model(value):
        return _cut(_json(value), budget)
    return _cut(_repr(value), budget)


# --- describing a function ---------------------------------------------------------------------


def _tool_name(fn: Callable[..., Any], name: str | None) -> str:
    tool_name = name or getattr(fn, "__name__", None)
    if not tool_name or not _NAME.match(tool_name):
        shown = f"named {tool_name!r}" if tool_name else f"without a name ({fn!r})"
        raise errors.ConfigError(f"A tool {shown} cannot be offered: a tool's name is 1 to 64 letters, digits, "
                                 "_ or -.", hint="tool_name")
    return tool_name


def _arguments_model(fn: Callable[..., Any], tool_name: str) -> tuple[Any, dict[str, Any], tuple[str, ...]]:
    """The pydantic model of ``fn``'s arguments, its JSON Schema, and the positional-only parameters."""
    from pydantic import ConfigDict, create_model

    try:
        signature = inspect.signature(fn, eval_str=True)
        hints = _type_hints(fn)
    except NameError as exc:
        raise _signature_error(tool_name, f"its annotations name something undefined ({exc})") from None
    except ValueError as exc:  # a builtin without a signature
        raise _signature_error(tool_name, f"its signature cannot be read ({exc})") from None
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            stars = "*" if parameter.kind is parameter.VAR_POSITIONAL else "**"
            raise _signature_error(tool_name, f"its parameter `{stars}{parameter.name}` takes any number of "
                                   "arguments, which JSON Schema cannot describe")
        annotation = hints.get(parameter.name, parameter.annotation)
        if annotation is parameter.empty:
            raise _signature_error(tool_name, f"its parameter `{parameter.name}` has no type annotation")
        fields[parameter.name] = (annotation, ... if parameter.default is parameter.empty else parameter.default)
    positional = tuple(p.name for p in signature.parameters.values() if p.kind is p.POSITIONAL_ONLY)
    config = ConfigDict(extra="forbid", protected_namespaces=())
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*shadows an attribute")  # a `json` or `copy` argument
            model = create_model(f"{tool_name}_arguments", __config__=config, **fields)
            schema = model.model_json_schema()
    except Exception as exc:  # pydantic's errors for undescribable types vary; name the parameter
        raise _undescribable(tool_name, fields, exc) from None
    return model, schema, positional


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations, ``Annotated`` kept. For a partial, a callable object or a class
    (whose hints would be its attributes') the signature's own annotations serve instead."""
    if not inspect.isroutine(fn):
        return {}
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except TypeError:
        return {}


def _undescribable(tool_name: str, fields: dict[str, Any], exc: Exception) -> errors.ConfigError:
    """The error for a model pydantic could not build, naming the first parameter that fails alone."""
    from pydantic import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError, create_model

    for parameter, spec in fields.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                create_model("Probe", probe=spec).model_json_schema()
        except Exception as alone:
            kind = _type_name(spec[0])
            if isinstance(alone, (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema)):
                why = f"has the type {kind}, which JSON Schema cannot describe (the model only sends JSON values)"
            else:
                why = f"has the type {kind}, which pydantic cannot use: {_first_sentence(alone)}"
            return _signature_error(tool_name, f"its parameter `{parameter}` {why}")
    return _signature_error(tool_name, f"pydantic cannot describe its arguments: {_first_sentence(exc)}")


def _signature_error(tool_name: str, why: str) -> errors.ConfigError:
    return errors.ConfigError(f"The function `{tool_name}` cannot be offered as a tool: {why}.",
                              hint="tool_signature")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation).replace("typing.", "")


def _first_sentence(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.split(". ")[0].rstrip(".")[:300]


_LITERAL_KEYS = {"default", "const", "enum", "examples"}
_NAME_MAPS = {"properties", "$defs", "definitions", "patternProperties"}


def _without_titles(node: Any) -> Any:
    """The schema without pydantic's ``title`` keywords (tokens the model does not need); a property
    *named* title and titles inside default values are kept."""
    if isinstance(node, list):
        return [_without_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _LITERAL_KEYS:
            kept[key] = value
        elif key in _NAME_MAPS and isinstance(value, dict):
            kept[key] = {name: _without_titles(sub) for name, sub in value.items()}
        else:
            kept[key] = _without_titles(value)
    return kept


def _renamed_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_renamed_refs(item, renames) for item in node]
    if not isinstance(node, dict):
        return node
    renamed = {key: _renamed_refs(value, renames) for key, value in node.items()}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[len("#/$defs/"):] in renames:
        renamed["$ref"] = "#/$defs/" + renames[ref[len("#/$defs/"):]]
    return renamed


# --- docstrings --------------------------------------------------------------------------------

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|"
                      r"Returns?|Yields?|Raises|Examples?|Notes?|Attributes|See Also|Warnings?|References|Todo)"
                      r":\s*$")
_GOOGLE_ARGS = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|"
                          r"Other Parameters):\s*$")
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARGS = {"Parameters", "Other Parameters", "Keyword Arguments", "Arguments"}
_RULE = re.compile(r"^\s*-{3,}\s*$")
_SPHINX_FIELD = re.compile(r"^:\w+")
_SPHINX_PARAM = re.compile(r"^:(?:param|parameter|arg|argument|key|keyword)\s+([^:]*?)\s*:\s*(.*)$")


def _summary(doc: str) -> str:
    """The docstring's text before its first section (Google, numpy or Sphinx)."""
    lines = doc.splitlines()
    kept = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        numpy_header = bool(stripped) and i + 1 < len(lines) and bool(_RULE.match(lines[i + 1]))
        if _SECTION.match(stripped) or _SPHINX_FIELD.match(stripped) or numpy_header:
            break
        kept.append(line)
    return "\n".join(kept).strip()


def _parameter_docs(doc: str) -> dict[str, str]:
    """Each parameter's description, whichever of the three styles the docstring uses."""
    lines = doc.splitlines()
    return {**_sphinx_docs(lines), **_numpy_docs(lines), **_google_docs(lines)}


def _google_docs(lines: list[str]) -> dict[str, str]:
    """``Args:`` then ``name (type): text`` / ``name: text``, continuation lines indented deeper."""
    docs: dict[str, str] = {}
    section_indent: int | None = None
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        if _GOOGLE_ARGS.match(line.strip()):
            section_indent, entry_indent, current = _indent(line), None, None
            continue
        if section_indent is None or not line.strip():
            continue
        indent = _indent(line)
        if indent <= section_indent:  # the section ended
            section_indent = None
            continue
        entry_indent = indent if entry_indent is None else entry_indent
        entry = _GOOGLE_ENTRY.match(line.strip()) if indent <= entry_indent else None
        if entry:
            current = entry.group(1)
            docs[current] = entry.group(2).strip()
        elif current:
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs


def _numpy_docs(lines: list[str]) -> dict[str, str]:
    """``Parameters`` underlined with dashes, then ``name : type`` and the text indented under it."""
    docs: dict[str, str] = {}
    for i in range(len(lines) - 1):
        if lines[i].strip() not in _NUMPY_ARGS or not _RULE.match(lines[i + 1]):
            continue
        base = _indent(lines[i])
        names: list[str] = []
        for j in range(i + 2, len(lines)):
            line = lines[j]
            if not line.strip():
                continue
            if j + 1 < len(lines) and _RULE.match(lines[j + 1]):  # the next section's header
                break
            if _indent(line) <= base:
                names = [n.strip().lstrip("*") for n in line.split(":")[0].split(",")]
                docs.update({n: "" for n in names})
            else:
                docs.update({n: f"{docs[n]} {line.strip()}".strip() for n in names})
    return docs


def _sphinx_docs(lines: list[str]) -> dict[str, str]:
    """``:param name: text`` (or ``:param type name: text``), continuation lines indented deeper."""
    docs: dict[str, str] = {}
    current: str | None = None
    base = 0
    for line in lines:
        field_ = _SPHINX_PARAM.match(line.strip())
        if field_ and field_.group(1):
            current, base = field_.group(1).split()[-1].lstrip("*"), _indent(line)
            docs[current] = field_.group(2).strip()
        elif current and line.strip() and _indent(line) > base:
            docs[current] = f"{docs[current]} {line.strip()}".strip()
        else:
            current = None
    return docs


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# --- running a call ----------------------------------------------------------------------------


def _parse_arguments(arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not arguments.strip():  # some models send "" for a call without arguments
        return {}
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the arguments are not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"the arguments are a JSON {type(parsed).__name__}, not an object of named arguments")
    return parsed


def _validation_line(error: Any, tool_: Tool) -> str:
    """pydantic's ValidationError in one line, each problem naming its argument."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "missing":
            problems.append(f"the argument '{where}' is missing")
        elif problem["type"] == "extra_forbidden":
            takes = ", ".join(tool_.parameters.get("properties", {})) or "no arguments"
            problems.append(f"'{where}' is not an argument of {tool_.name} (it takes {takes})")
        else:
            shown = _cut(_repr(problem.get("input")), 60)
            problems.append(f"the argument '{where}' (got {shown}): {problem['msg']}")
    return "; ".join(problems)


def _checked_by_schema(arguments: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """For a Tool built by hand (no pydantic model): its JSON Schema checks the arguments."""
    import jsonschema

    problem = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema)
                                               .iter_errors(arguments))
    if problem is not None:
        where = ".".join(str(part) for part in problem.absolute_path)
        raise _Refused(f"the argument '{where}': {problem.message}" if where else problem.message)
    return dict(arguments)


def _exception_line(exc: Exception) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _one_tool(item: Any, namespace: Mapping[str, Any] | None) -> Tool:
    if isinstance(item, Tool):
        return item
    if isinstance(item, str):
        return _named_tool(item, namespace)
    if callable(item):
        return describe(item)
    raise errors.ConfigError(f"{item!r} is not a function, a Tool or a name.", hint="unknown_tool",
                             available=_available(namespace))


def _named_tool(name: str, namespace: Mapping[str, Any] | None) -> Tool:
    if namespace is not None and name in namespace:
        value = namespace[name]
        if isinstance(value, Tool):
            return value
        if isinstance(getattr(value, "__vllm_tool__", None), Tool):
            return value.__vllm_tool__
        if callable(value):
            return describe(value, name)
        raise errors.ConfigError(f"`{name}` is not a function (it is of type {type(value).__name__}).",
                                 hint="unknown_tool",
                                 available=_available(namespace))
    if name in REGISTRY:
        return REGISTRY[name]
    raise errors.ConfigError(f"There is no function named `{name}` to offer as a tool.", hint="unknown_tool",
                             available=_available(namespace))


def _check_unique(tools: Sequence[Tool]) -> None:
    names = [t.name for t in tools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise errors.ConfigError(f"Two tools are named {', '.join(map(repr, twice))}; the model could not tell "
                                 "them apart.", hint="duplicate_tool")


def _available(namespace: Mapping[str, Any] | None) -> str:
    """The tools one could name: those registered, then the namespace's public functions."""
    functions = sorted(name for name, value in (namespace or {}).items()
                       if inspect.isfunction(value) and not name.startswith("_") and name not in REGISTRY)
    names = sorted(REGISTRY) + functions
    if not names:
        return "none"
    shown = ", ".join(names[:30])
    return shown + (f" and {len(names) - 30} more" if len(names) > 30 else "")


# --- summarising a value -----------------------------------------------------------------------


def _cut(text: str, budget: int) -> str:
    """``text`` cut to ``budget`` characters, the cut said at the end."""
    if len(text) <= budget:
        return text
    dropped = len(text) - budget
    while True:  # the marker's length depends on the count it states
        marker = f"\u2026 [cut: {dropped} more characters]"
        kept = budget - len(marker)
        if kept < 0:
            return text[:budget]
        if len(text) - kept == dropped:
            return text[:kept] + marker
        dropped = len(text) - kept


def _is_model(value: Any) -> bool:
    """A pydantic model or dataclass instance."""
    if isinstance(value, type):
        return False
    return hasattr(value, "model_dump") or dataclasses.is_dataclass(value)


def _json(value: Any) -> str:
    try:
        return json.dumps(_jsonable(value), ensure_ascii=False, default=_jsonable_or_str)
    except (TypeError, ValueError):  # keys JSON cannot have, a circular structure
        return _repr(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, type):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if instance_of(value, "numpy", "generic"):
        return value.item()
    return value


def _jsonable_or_str(value: Any) -> Any:
    converted = _jsonable(value)
    return str(value) if converted is value else converted


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break the tool loop
        return f"<{type(value).__name__} object; repr failed: {_exception_line(exc)}>"


def _frame(df: Any, budget: int) -> str:
    rows, columns = df.shape
    dtypes = ", ".join(f"{name} ({dtype})" for name, dtype in df.dtypes.items())
    intro = f"DataFrame: {rows:,} rows \u00d7 {columns} columns\n" + _cut(f"columns: {dtypes}", max(budget // 3, 60))
    return _with_rows(intro, lambda n: _table(df.head(n)), rows, budget, "rows")


def _series(series: Any, budget: int) -> str:
    named = f" {series.name!r}" if series.name is not None else ""
    intro = f"Series{named}: {len(series):,} values, dtype {series.dtype}"
    return _with_rows(intro, lambda n: _table(series.head(n)), len(series), budget, "values")


def _with_rows(intro: str, render: Callable[[int], str], total: int, budget: int, what: str) -> str:
    """``intro`` and as many first rows as fit in ``budget`` (halved until they do)."""
    shown = min(total, _TABLE_ROWS)
    while True:
        note = f"first {shown} {what}:\n" if shown < total else ""
        text = f"{intro}\n{note}{render(shown)}" if shown else intro
        if len(text) <= budget or shown <= 1:
            return _cut(text, budget)
        shown //= 2


def _table(data: Any) -> str:
    try:
        return str(data.to_markdown())
    except ImportError:  # to_markdown needs tabulate
        return str(data.to_string())


def _array(array: Any, budget: int) -> str:
    import numpy

    values = numpy.array2string(array, threshold=20, edgeitems=3, max_line_width=100)
    return _cut(f"array: shape {array.shape}, dtype {array.dtype}\n{values}", budget)
