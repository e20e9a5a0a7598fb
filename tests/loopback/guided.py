"""Guided decoding, played: answers that hold to the request's constraint, as vLLM's structured outputs
make even a random-weight model's answers hold.

Opt in with ``server.script_by(guided)``: a ``structured_outputs.choice`` gets one of the choices, a
``json_schema`` response format a value built from the schema (enums, bounded integers, booleans,
short strings, nested objects and ``$ref``; of a top-level ``anyOf`` the first branch, or the last
once a tool's result came), a ``json_object`` one an empty object, and ``tool_choice`` "required" or
a named function a call with arguments built from the tool's schema. Requests without
one of those get the default answer. The pick depends only on the last user message, so repeated
prompts agree, like the default model's answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tests.loopback.model import message_text, text_pieces
from tests.loopback.script import Reply, StreamReply

WORDS = ("alpha", "bravo", "charlie", "delta", "echo")


def guided(body: Mapping[str, Any]) -> StreamReply | None:
    """The constrained answer to a chat request's ``body``, or None when it asks for no shape."""
    messages = body.get("messages") or []
    prompt = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    seed = _stable_int(prompt)
    outputs = body.get("structured_outputs") or {}
    response_format = body.get("response_format") or {}
    forced = _forced_call(body, seed)
    if forced is not None:
        return forced
    if "choice" in outputs:
        text = outputs["choice"][seed % len(outputs["choice"])]
    elif response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
        if "anyOf" in schema and messages and messages[-1].get("role") == "tool":
            schema = {**schema, "anyOf": schema["anyOf"][-1:]}  # a tool's result came: the last branch
        text = json.dumps(_value(schema, schema, seed))
    elif response_format.get("type") == "json_object":
        text = "{}"
    else:
        return None
    return Reply.tokens(text_pieces(text), finish_reason="stop")


def _forced_call(body: Mapping[str, Any], seed: int) -> StreamReply | None:
    """``tool_choice`` "required" or a named function: vLLM forces a call by guided decoding."""
    choice = body.get("tool_choice")
    tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or ()}
    if not tools or not (choice == "required" or isinstance(choice, dict)):
        return None
    name = choice["function"]["name"] if isinstance(choice, dict) else sorted(tools)[seed % len(tools)]
    parameters = tools[name].get("parameters") or {}
    return Reply.tool_calls((name, _value(parameters, parameters, seed)))


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def _value(spec: Mapping[str, Any], root: Mapping[str, Any], seed: int) -> Any:
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return _value(root.get("$defs", {})[name], root, seed)
    if "enum" in spec:
        return spec["enum"][seed % len(spec["enum"])]
    if "anyOf" in spec:
        return _value(spec["anyOf"][0], root, seed)
    kind = spec.get("type", "object")
    if kind == "object":
        return {name: _value(field, root, _stable_int(seed, name))
                for name, field in (spec.get("properties") or {}).items()}
    if kind == "array":
        return [_value(spec.get("items") or {}, root, seed)]
    if kind == "integer":
        low, high = spec.get("minimum", 0), spec.get("maximum", 100)
        return low + seed % (high - low + 1)
    if kind == "number":
        return float(spec.get("minimum", 0)) + (seed % 1000) / 100
    if kind == "boolean":
        return bool(seed % 2)
    if kind == "null":
        return None
    return WORDS[seed % len(WORDS)]
