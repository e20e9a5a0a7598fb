"""Image content in chat messages, checked as vLLM 0.32 checks it, in its words.

Each ``{"type": "image_url", "image_url": {"url": ...}}`` part must have that shape (pydantic's
400s, recorded in ``vllm-samples/chat/err_image_url_*.http``); a model without image input then
refuses any image (``err_image_to_text_model.http``); a model with it refuses a ``data:`` URL whose
base64 is broken or whose bytes are no image (``vllm-samples/vision/``). An http(s) URL is accepted
without being fetched.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from tests.loopback.errors import error
from tests.loopback.wire import Answer

PYDANTIC_DOCS = "https://errors.pydantic.dev/2.14/v"
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF")


def image_refused(messages: Any, model: str, vision_models: Sequence[str]) -> Answer | None:
    """The 400 vLLM answers for the image parts of ``messages``, or None when it takes them."""
    parts = _image_parts(messages)
    for part in parts:
        if (refused := _shape_refused(part.get("image_url"))) is not None:
            return refused
    if parts and model not in vision_models:
        return error(400, f"{model} is not a multimodal model")
    for part in parts:
        if (refused := _data_refused(part["image_url"]["url"])) is not None:
            return refused
    return None


def _image_parts(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        return []
    return [part for message in messages if isinstance(message, dict) and isinstance(message.get("content"), list)
            for part in message["content"] if isinstance(part, dict) and part.get("type") == "image_url"]


def _shape_refused(image_url: Any) -> Answer | None:
    if not isinstance(image_url, dict):
        return _validation_error("image_url", "Input should be a valid dictionary", "dict_type", image_url)
    if "url" not in image_url:
        return _validation_error("image_url.url", "Field required", "missing", image_url)
    if not isinstance(image_url["url"], str):
        return _validation_error("image_url.url", "Input should be a valid string", "string_type", image_url["url"])
    return None


def _validation_error(location: str, message: str, kind: str, value: Any) -> Answer:
    """pydantic's error for one field of ``ChatCompletionContentPartImageParam``, as vLLM passes it on."""
    shown = repr(value) if len(repr(value)) <= 50 else f"{repr(value)[:25]}...{repr(value)[-24:]}"
    return error(400, f"1 validation error for ChatCompletionContentPartImageParam\n{location}\n  {message} "
                      f"[type={kind}, input_value={shown}, input_type={type(value).__name__}]\n"
                      f"    For further information visit {PYDANTIC_DOCS}/{kind}")


def _data_refused(url: str) -> Answer | None:
    if not url.startswith("data:"):
        return None
    header, _, payload = url.partition(",")
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
    except binascii.Error:
        return error(400, "Non-base64 digit found")  # vLLM's words for bad characters and bad padding alike
    if not data.startswith(IMAGE_MAGIC):
        return error(400, "Failed to load image: cannot identify image file <_io.BytesIO object>")
    return None
