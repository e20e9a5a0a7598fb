"""The error answers of vLLM 0.32 and of the FastAPI/Starlette layer under it, word for word."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tests.loopback.wire import Answer, RecordedRequest, fixed, phrase, render_json

NOT_FOUND = fixed(404, b'{"detail":"Not Found"}')
UNAUTHORIZED = fixed(401, b'{"error":"Unauthorized"}')
INTERNAL_SERVER_ERROR = fixed(500, b"Internal Server Error", "text/plain; charset=utf-8")
"""Starlette's last resort, e.g. for a request vLLM would reject in validation (wrong types)."""

_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


def method_not_allowed(allowed: str) -> Answer:
    return fixed(405, b'{"detail":"Method Not Allowed"}', headers=(("allow", allowed),))


def error_object(message: str, code: int, error_type: str | None = None, param: str | None = None) -> dict[str, Any]:
    """vLLM's error object; its ``type`` follows from the status code unless given."""
    kind = error_type or _ERROR_TYPES.get(code) or phrase(code).replace(" ", "") + "Error"
    return {"message": message, "type": kind, "param": param, "code": code}


def error(status: int, message: str, param: str | None = None, error_type: str | None = None) -> Answer:
    return fixed(status, render_json({"error": error_object(message, status, error_type, param)}))


def param_error(param: str, value: object, message: str) -> Answer:
    return error(400, f"{message} (parameter={param}, value={value})", param)


def validation_error(entries: Sequence[Mapping[str, Any]], param: str, total: int | None = None) -> Answer:
    """FastAPI's request-validation 400 as vLLM renders it: each pydantic error as a Python repr,
    at most ten of them."""
    count = len(entries) if total is None else total
    lines = [f"{count} validation error{'' if count == 1 else 's'}:"]
    lines += [f"  {entry!r}" for entry in entries[:10]]
    if count > 10:
        lines.append(f"  ...and {count - 10} more errors")
    message = "\n".join(lines)
    return fixed(400, render_json({"error": {"message": message, "type": "Bad Request", "param": param, "code": 400}}))


def missing(body: Mapping[str, Any], field: str) -> dict[str, Any]:
    """The pydantic error entry for a required field the body lacks."""
    return {"type": "missing", "loc": f"body.{field}", "msg": "Field required", "input": f"<dict of {len(body)} items>"}


def json_body(request: RecordedRequest) -> dict[str, Any] | Answer:
    """The JSON object of a request, or the 400 FastAPI answers for an unusable body."""
    if not request.body:
        return validation_error([{"type": "missing", "loc": "body", "msg": "Field required", "input": None}], "body")
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
        message = getattr(exc, "msg", str(exc))
        entry = {"type": "json_invalid", "loc": f"body.{position}", "msg": "JSON decode error",
                 "input": "<dict of 0 items>", "ctx": {"error": message}}
        return validation_error([entry], f"body.{position}")
    if not isinstance(body, dict):
        entry = {"type": "model_attributes_type", "loc": "body",
                 "msg": "Input should be a valid dictionary or object to extract fields from", "input": body}
        return validation_error([entry], "body")
    return body


def prompt_too_long(max_model_len: int, tokens: int) -> Answer:
    return param_error(
        "input_tokens", tokens,
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains at "
        f"least {tokens} input tokens, which exceeds this limit even without any output tokens. Please reduce "
        "the length of the input prompt.",
    )


def unknown_model(name: object, aliases: Sequence[str]) -> Answer:
    """404 for a model the server does not serve, naming the valid ``aliases`` when given (vLLM names
    its chat models; its embeddings endpoint names none)."""
    if not aliases:
        return error(404, f"The model `{name}` does not exist.", error_type="NotFoundError")
    return error(404, f"The model `{name}` does not exist. Valid aliases: {', '.join(aliases)}.", "model")
