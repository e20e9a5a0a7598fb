"""Through LiteLLM's proxy (master key, no database) in front of the real vLLM chat and embedding
servers: what a user of a company gateway meets."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the root conftest

from tests.unit.notebook_shell import Shell
from vllm_magic import embed, errors


@pytest.fixture
def proxy_key(litellm_proxy, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PROXY_KEY", litellm_proxy.api_key)
    return litellm_proxy.api_key


def test_chat_usage_and_models_through_the_proxy(ip: Shell, litellm_proxy, proxy_key: str) -> None:
    out = ip.ok(f"%vllm connect {litellm_proxy.base_url} --api-key-env PROXY_KEY --model tiny-chat")
    assert "(max_model_len 512)" in out, "LiteLLM's max_input_tokens is the model's limit"
    out += ip.ok(f"%%chat --temperature 0\n{tiny_corpus.DATAFRAME_PROMPT}")
    out += ip.ok(f"%%chat --temperature 0\n{tiny_corpus.TOTAL_PROMPT}")
    assert [t.text for t in ip.turns] == [tiny_corpus.DATAFRAME_ANSWER, tiny_corpus.TOTAL_ANSWER]
    usage = ip.magics.shell.run_line_magic("vllm", "usage")
    assert usage.loc[[1, 2], "prompt_tokens"].notna().all() and not usage.loc[[1, 2], "estimated"].any()
    out += ip.ok("%vllm models") + ip.ok("%vllm status")
    assert "tiny-chat" in out and "all-MiniLM-L6-v2" in out and "vLLM version: unknown" in out
    assert proxy_key not in out


def test_the_proxys_errors_say_what_happened(ip: Shell, litellm_proxy, proxy_key: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRONG_KEY", "sk-not-the-proxys-key")
    out = ip.fails(f"%vllm connect {litellm_proxy.base_url} --api-key-env WRONG_KEY", errors.AuthError)
    assert "HTTP 400: No connected db." in out and "the key is the likely cause" in out
    assert "sk-not-the-proxys-key" not in out
    ip.ok(f"%vllm connect {litellm_proxy.base_url} --api-key-env PROXY_KEY --model tiny-chat")
    out = ip.fails("%%chat --model nope\nhi", errors.NotFoundError)
    assert "Invalid model name passed in model=nope" in out and "%vllm params" not in out
    out = ip.fails("%%chat\n" + "word " * 600, errors.ContextLengthError)
    assert "maximum context length is 512 tokens" in out and "litellm" not in out.lower()
    assert ip.turns == [], "nothing half-made was recorded"


def test_embeddings_through_the_proxy_match_vllms_own(ip: Shell, litellm_proxy, proxy_key: str, vllm_embed) -> None:
    texts = ["a cat sat on the mat", "stock prices fell", "a kitten on a rug"]
    direct = embed(texts, base_url=vllm_embed.base_url, api_key=vllm_embed.api_key, as_="array")
    ip.shell.user_ns["texts"] = texts
    ip.ok(f"%vllm connect {litellm_proxy.base_url} --api-key-env PROXY_KEY --model tiny-chat "
          f"--embedding-model {vllm_embed.model}")
    ip.ok("%vllm embed texts --out vectors")
    vectors = ip.shell.user_ns.pop("vectors")
    assert vectors.shape == (3, 384) and np.allclose(vectors.to_numpy(), direct, atol=1e-5)
    out = ip.fails("%vllm embed texts --dimensions 16", errors.BadRequestError)
    assert "does not support Matryoshka embeddings" in out
