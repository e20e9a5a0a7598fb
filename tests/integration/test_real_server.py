"""Smoke tests of the real vLLM servers themselves, with plain httpx.

They pin down what the rest of the suite relies on (the tiny model's names, limits, auth and
deterministic printable output), so a broken server environment shows up here first and plainly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # scripts/vllm_env.py, loaded by this folder's conftest
    from vllm_env import VLLMServer


def client(server: VLLMServer, *, authorized: bool = True) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.api_key}"} if authorized else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=60)


def test_health(vllm_chat: VLLMServer, vllm_embed: VLLMServer) -> None:
    for server in (vllm_chat, vllm_embed):
        with client(server, authorized=False) as http:
            assert http.get("/health").status_code == 200, server


def test_models_lists_tiny_chat_with_its_context_length(vllm_chat: VLLMServer) -> None:
    with client(vllm_chat) as http:
        (entry,) = http.get("/v1/models").raise_for_status().json()["data"]
    assert entry["id"] == "tiny-chat" == vllm_chat.model
    assert entry["max_model_len"] == 512


def test_missing_or_wrong_key_is_401(vllm_chat: VLLMServer, vllm_embed: VLLMServer) -> None:
    wrong = {"Authorization": "Bearer not-the-key"}
    for server in (vllm_chat, vllm_embed):
        with client(server, authorized=False) as http:
            assert http.get("/v1/models").status_code == 401, server
            assert http.get("/v1/models", headers=wrong).status_code == 401, server


def test_greedy_chat_is_repeatable_printable_and_cut_by_length(
    vllm_chat: VLLMServer,
) -> None:
    body = {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    with client(vllm_chat) as http:
        answers = [
            http.post("/v1/chat/completions", json=body).raise_for_status().json() for _ in range(2)
        ]
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert texts[0] == texts[1]
    assert texts[0] and all(" " <= ch <= "~" for ch in texts[0]), repr(texts[0])
    assert [a["choices"][0]["finish_reason"] for a in answers] == ["length", "length"]
    assert answers[0]["usage"]["completion_tokens"] == 8


def test_embeddings_are_384_dim_unit_vectors(vllm_embed: VLLMServer) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": ["Hello Jupyter", "A cat sits on the mat"]}
    with client(vllm_embed) as http:
        data = http.post("/v1/embeddings", json=body).raise_for_status().json()["data"]
    vectors = [item["embedding"] for item in data]
    assert [len(v) for v in vectors] == [384, 384]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-4)
    assert vectors[0] != vectors[1]
