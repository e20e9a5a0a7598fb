"""``/v1/embeddings``: vLLM's pooling answers (float or base64 vectors, token usage, truncation, its
validation errors), then the script's disturbances."""

from __future__ import annotations

import base64
import functools
import itertools
import secrets
import struct
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tests.loopback.errors import error, json_body, missing, prompt_too_long, unknown_model, validation_error
from tests.loopback.model import CLS_ID, SEP_ID, count_text_tokens, embedding_vector, text_pieces, token_id
from tests.loopback.script import HangReply, StatusReply, StreamReply, cut_in_half, hung, next_script, status_answer
from tests.loopback.wire import Answer, RecordedRequest, Silence, fixed, render_json

if TYPE_CHECKING:
    from tests.loopback.app import FakeVLLM

ENCODING_FORMATS = ("float", "base64", "bytes", "bytes_only")


def embeddings(app: FakeVLLM, request: RecordedRequest) -> Answer | Silence:
    script = next_script(app.embedding_script)
    if isinstance(script, StatusReply):
        return status_answer(script)
    answer = _default(app, request)
    if isinstance(script, HangReply):
        return hung(answer, script)
    return cut_in_half(answer) if isinstance(script, StreamReply) else answer


def _default(app: FakeVLLM, request: RecordedRequest) -> Answer:
    body = json_body(request)
    if isinstance(body, Answer):
        return body
    if "input" not in body:
        return validation_error([missing(body, "input")], "body.input")
    model = body.get("model") or app.embedding_models[0]
    if model not in app.embedding_models:
        return unknown_model(model, ())
    encoding = body.get("encoding_format", "float")
    if encoding not in app.embedding_encodings:
        return _bad_encoding_format(body, app.embedding_encodings)
    if body.get("dimensions") is not None and app.profile != "llama.cpp":  # llama.cpp ignores it
        return error(400, f"Model '{model}' does not support Matryoshka embeddings; dimensions must be unset "
                          f"(received dimensions={body['dimensions']}).")
    inputs = _inputs(body["input"], app.canned_embeddings)
    if not inputs:
        return error(400, "You must pass at least one prompt")
    limit = app.embedding_max_model_len
    truncate = body.get("truncate_prompt_tokens")
    if truncate is not None:
        keep = limit if truncate < 0 else min(truncate, limit)
        inputs = [ids[len(ids) - keep :] for ids in inputs]
    if (longest := max(map(len, inputs))) > limit:
        return prompt_too_long(limit, longest)
    if encoding not in ("float", "base64"):
        return error(500, f"encoding_format={encoding!r} is not simulated by the loopback server")
    data = [{"index": index, "object": "embedding", "embedding": _embedding(ids, app, encoding)}
            for index, ids in enumerate(inputs)]
    tokens = sum(map(len, inputs))
    return fixed(200, render_json({
        "id": f"embd-{secrets.token_hex(8)}", "object": "list", "created": int(time.time()), "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                  "prompt_tokens_details": None, "completion_tokens_details": None},
    }))


def _inputs(raw: Any, canned: bool) -> list[list[int]]:
    """Token ids of each input: a text, a list of texts, token ids, or lists of token ids."""
    def text_ids(text: str) -> list[int]:
        if canned:  # the canned vector ignores the ids: only their number counts
            return [CLS_ID, *itertools.repeat(1000, count_text_tokens(text)), SEP_ID]
        return [CLS_ID, *(token_id(piece, 1000) for piece in text_pieces(text)), SEP_ID]

    if isinstance(raw, str):
        return [text_ids(raw)]
    if raw and all(isinstance(item, int) for item in raw):
        return [list(raw)]
    return [text_ids(item) if isinstance(item, str) else list(item) for item in raw]


def _embedding(token_ids: Sequence[int], app: FakeVLLM, encoding: str) -> list[float] | str:
    if app.canned_embeddings:
        return _canned(app.embedding_dims, encoding)
    return _encoded(embedding_vector(token_ids, app.embedding_dims), encoding)


@functools.cache
def _canned(dims: int, encoding: str) -> list[float] | str:
    """One precomputed vector for every input, so a benchmark measures the client, not this server."""
    return _encoded(embedding_vector([CLS_ID, SEP_ID], dims), encoding)


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    """As vLLM sends it: a list of floats, or with ``base64`` the little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if encoding == "base64" else vector


def _bad_encoding_format(body: Mapping[str, Any], accepted: Sequence[str]) -> Answer:
    """The union-of-request-types validation error vLLM answers for an unknown ``encoding_format``
    (recorded with a string input; eleven errors, ten shown).  ``accepted`` narrows the formats,
    to play a server that does not know base64."""
    value = body.get("encoding_format")
    quoted = [f"'{name}'" for name in accepted]
    expected = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
    literal = {"type": "literal_error", "loc": "body.encoding_format",
               "msg": f"Input should be {expected}", "input": value, "ctx": {"expected": expected}}
    missing_messages = missing(body, "messages")
    not_list = {"type": "list_type", "loc": "body.input", "msg": "Input should be a valid list", "input": body.get("input")}
    entries = [literal, literal, missing_messages, literal, missing_messages, literal, missing_messages, not_list,
               literal, missing_messages]
    return validation_error(entries, "body.encoding_format", total=11)
