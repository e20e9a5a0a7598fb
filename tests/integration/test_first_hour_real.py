"""The first hour's rough edges, on the real vLLM servers (with their API keys), in an IPython shell."""

from __future__ import annotations

import pytest

from tests.unit.notebook_shell import Shell
from vllm_magic import errors


def test_connect_checks_the_model_and_keeps_a_typed_key(ip: Shell, vllm_chat, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or vllm_chat.api_key)
    out = ip.fails(f"%vllm connect {vllm_chat.base_url} --model nope", errors.ConfigError)
    assert "does not serve 'nope'" in out and "Served models: tiny-chat" in out and len(asked) == 1
    out = ip.ok(f"%vllm connect {vllm_chat.base_url}")
    assert "model tiny-chat (max_model_len 512)" in out and "API key: typed in" in out and len(asked) == 1
    assert vllm_chat.api_key not in out + ip.ok("%vllm status")


def test_max_tokens_over_the_models_limit_is_refused_before_sending(ip: Shell, vllm_chat, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", vllm_chat.api_key)
    ip.ok(f"%vllm connect {vllm_chat.base_url}")
    assert "max_model_len of 512" in ip.fails("%vllm params max_tokens=100000", errors.ParamError)
    assert "--max-tokens" in ip.fails("%%chat --max-tokens 513\nhi", errors.ParamError)
    assert ip.turns == []


def test_old_guided_fields_still_constrain_a_new_vllm(ip: Shell, vllm_random, monkeypatch) -> None:
    """vLLM 0.32 ignores guided_choice; translated, the random model can only answer a choice."""
    monkeypatch.setenv("VLLM_API_KEY", vllm_random.api_key)
    ip.ok(f"%vllm connect {vllm_random.base_url}")
    ip.ok("%vllm params guided_choice='[\"alpha\", \"beta\"]' temperature=1.0 max_tokens=8")
    answers = set()
    for seed in range(6):
        out = ip.ok(f"%%chat --once\nPick (seed {seed})")
        answers.add(out.split("\n\n[")[0].split("\n")[-1])
    assert answers <= {"alpha", "beta"}, answers

