"""``/health``, ``/version`` and ``/v1/models``: what the server says about itself."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from tests.loopback.wire import Answer, RecordedRequest, fixed, render_json

if TYPE_CHECKING:
    from tests.loopback.app import FakeVLLM

VLLM_VERSION = "0.32.0"
MODEL_ROOT = "/srv/models"


def health(app: FakeVLLM, request: RecordedRequest) -> Answer:
    return fixed(200, b"", content_type=None)


def version(app: FakeVLLM, request: RecordedRequest) -> Answer:
    return fixed(200, render_json({"version": app.vllm_version}))


def models(app: FakeVLLM, request: RecordedRequest) -> Answer:
    created = int(time.time())
    served = [(name, app.max_model_len) for name in app.models]
    served += [(name, app.embedding_max_model_len) for name in app.embedding_models]
    return fixed(200, render_json({"object": "list", "data": [
        {
            "id": name, "object": "model", "created": created, "owned_by": "vllm",
            "root": f"{MODEL_ROOT}/{name}", "parent": None, "max_model_len": max_len,
            "permission": [{
                "id": f"modelperm-{secrets.token_hex(8)}", "object": "model_permission", "created": created,
                "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                "organization": "*", "group": None, "is_blocking": False,
            }],
        }
        for name, max_len in served
    ]}))
