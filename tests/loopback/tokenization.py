"""``/tokenize``: token ids (and optionally their strings) of a prompt or of chat messages, with the
chat template applied, counted exactly as the chat and embedding endpoints count them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.loopback.errors import json_body, missing, unknown_model, validation_error
from tests.loopback.model import CLS_ID, SEP_ID, SPECIAL_IDS, chat_prompt_pieces, text_pieces, token_id, token_str
from tests.loopback.wire import Answer, RecordedRequest, fixed, render_json

if TYPE_CHECKING:
    from tests.loopback.app import FakeVLLM


def tokenize(app: FakeVLLM, request: RecordedRequest) -> Answer:
    body = json_body(request)
    if isinstance(body, Answer):
        return body
    if "messages" not in body and "prompt" not in body:
        return validation_error([missing(body, "prompt"), missing(body, "messages")], "body.prompt")
    model = body.get("model") or (app.models or app.embedding_models)[0]
    if model in app.models:
        max_len = app.max_model_len
        if "messages" in body:
            pieces = chat_prompt_pieces(body["messages"], bool(body.get("add_generation_prompt", True)))
        else:
            pieces = text_pieces(str(body["prompt"]))
        ids = [SPECIAL_IDS.get(piece) or token_id(piece, 3) for piece in pieces]
    elif model in app.embedding_models:
        max_len = app.embedding_max_model_len
        pieces = text_pieces(str(body.get("prompt", "")))
        ids = [CLS_ID, *(token_id(piece, 1000) for piece in pieces), SEP_ID]
        pieces = ["[CLS]", *pieces, "[SEP]"]
    else:
        return unknown_model(model, app.models)
    token_strs = [token_str(piece) for piece in pieces] if body.get("return_token_strs") else None
    return fixed(200, render_json({"count": len(ids), "max_model_len": max_len, "tokens": ids, "token_strs": token_strs}))
