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
    if app.profile != "vllm":
        return fixed(200, render_json({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": app.profile}
            for name, _ in served
        ]}))
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


def metrics(app: FakeVLLM, request: RecordedRequest) -> Answer:
    """vLLM's Prometheus text, with the gauges and counters ``%vllm status`` reads."""
    chats = sum(r.path == "/v1/chat/completions" for r in app.requests)
    labels = '{engine="0",model_name="%s"}' % app.models[0] if app.models else '{engine="0"}'
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{labels} 0.0",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{labels} 0.0",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{labels} 0.0",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{labels} {16.0 * chats}",
    ]
    return fixed(200, ("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4; charset=utf-8")
