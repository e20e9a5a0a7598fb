"""Smoke tests of the real vLLM servers themselves, with plain httpx.

They pin down what the rest of the suite relies on (the tiny models' names, limits and auth; the
trained model's exact answers, parsed tool calls and reasoning; the random model's deterministic
printable output), so a broken server environment shows up here first and plainly.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import httpx
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest

if TYPE_CHECKING:  # scripts/vllm_env.py, loaded by this folder's conftest
    from vllm_env import VLLMServer


def client(server: VLLMServer, *, authorized: bool = True) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.api_key}"} if authorized else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=60)


def test_health(vllm_chat: VLLMServer, vllm_random: VLLMServer, vllm_embed: VLLMServer) -> None:
    for server in (vllm_chat, vllm_random, vllm_embed):
        with client(server, authorized=False) as http:
            assert http.get("/health").status_code == 200, server


def test_models_lists_the_tiny_models_with_their_context_length(
    vllm_chat: VLLMServer, vllm_random: VLLMServer
) -> None:
    for server, name in ((vllm_chat, "tiny-chat"), (vllm_random, "tiny-random")):
        with client(server) as http:
            (entry,) = http.get("/v1/models").raise_for_status().json()["data"]
        assert entry["id"] == name == server.model
        assert entry["max_model_len"] == 512


def test_missing_or_wrong_key_is_401(
    vllm_chat: VLLMServer, vllm_random: VLLMServer, vllm_embed: VLLMServer
) -> None:
    wrong = {"Authorization": "Bearer not-the-key"}
    for server in (vllm_chat, vllm_random, vllm_embed):
        with client(server, authorized=False) as http:
            assert http.get("/v1/models").status_code == 401, server
            assert http.get("/v1/models", headers=wrong).status_code == 401, server


def test_random_model_greedy_chat_is_repeatable_printable_and_cut_by_length(
    vllm_random: VLLMServer,
) -> None:
    body = {
        "model": "tiny-random",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    with client(vllm_random) as http:
        answers = [
            http.post("/v1/chat/completions", json=body).raise_for_status().json() for _ in range(2)
        ]
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert texts[0] == texts[1]
    assert texts[0] and all(" " <= ch <= "~" for ch in texts[0]), repr(texts[0])
    assert [a["choices"][0]["finish_reason"] for a in answers] == ["length", "length"]
    assert answers[0]["usage"]["completion_tokens"] == 8


def chat_body(model: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A greedy request for a corpus history; tool calls' arguments go out as JSON strings, as
    the OpenAI API has them."""
    sent = []
    for message in messages:
        if message.get("tool_calls"):
            calls = [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                     for c in message["tool_calls"]]
            message = {**message, "tool_calls": calls}
        sent.append(message)
    return {"model": model, "messages": sent, "temperature": 0, **extra}


def stream_deltas(http: httpx.Client, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The choice deltas of a streamed request, and its finish_reason."""
    deltas, finish = [], None
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:])["choices"]:
                    deltas.append(choice["delta"])
                    finish = choice.get("finish_reason") or finish
    return deltas, finish


def joined(deltas: list[dict[str, Any]], field: str) -> str:
    return "".join(d.get(field) or "" for d in deltas)


def test_trained_model_gives_every_corpus_answer_and_stops(vllm_chat: VLLMServer) -> None:
    """Each trained answer, streamed and not, token for token, then EOS ("stop")."""
    with client(vllm_chat) as http:
        for example in tiny_corpus.examples():
            if example["message"].get("tool_calls") or "<think>" in example["answer"]:
                continue  # parsed into tool_calls here, and <think> has its own test
            body = chat_body("tiny-chat", example["messages"], tools=example["tools"],
                             chat_template_kwargs=example["chat_template_kwargs"])
            answer = http.post("/v1/chat/completions", json=body).raise_for_status().json()
            choice = answer["choices"][0]
            assert choice["message"]["content"] == example["answer"], example["messages"]
            assert choice["finish_reason"] == "stop" and not choice["message"].get("reasoning")
            deltas, finish = stream_deltas(http, body)
            assert joined(deltas, "content") == example["answer"] and finish == "stop"
        count = http.post("/tokenize", json={"model": "tiny-chat", "prompt": tiny_corpus.HELLO_ANSWER,
                                             "add_special_tokens": False}).raise_for_status().json()["count"]
        body = chat_body("tiny-chat", [tiny_corpus.user(tiny_corpus.HELLO_PROMPT)])
        usage = http.post("/v1/chat/completions", json=body).raise_for_status().json()["usage"]
        assert usage["completion_tokens"] == count + 1, "the answer's tokens and the closing <|im_end|>"


def test_think_answer_is_content_on_the_chat_server_and_reasoning_behind_the_qwen3_parser(
    vllm_chat: VLLMServer, vllm_reasoning: VLLMServer
) -> None:
    messages = [tiny_corpus.user(tiny_corpus.THINK_PROMPT)]
    trained = tiny_corpus.answer_for(messages)
    assert trained.startswith("<think>\n") and "</think>" in trained
    with client(vllm_chat) as http:
        message = http.post("/v1/chat/completions", json=chat_body("tiny-chat", messages)).raise_for_status().json()[
            "choices"][0]["message"]
    assert message["content"] == trained and not message.get("reasoning")

    reasoning = f"\n{tiny_corpus.THINK_REASONING}\n"  # what the parser keeps between the tags
    content = f"\n\n{tiny_corpus.THINK_ANSWER}"
    body = chat_body("tiny-chat-reasoning", messages)
    with client(vllm_reasoning) as http:
        answer = http.post("/v1/chat/completions", json=body).raise_for_status().json()
        deltas, finish = stream_deltas(http, body)
        plain = http.post("/v1/chat/completions", json=chat_body(
            "tiny-chat-reasoning", [tiny_corpus.user(tiny_corpus.PRIME_PROMPT)],
            chat_template_kwargs={"enable_thinking": False})).raise_for_status().json()
    choice = answer["choices"][0]
    assert (choice["message"]["reasoning"], choice["message"]["content"]) == (reasoning, content)
    assert choice["finish_reason"] == "stop"
    assert (joined(deltas, "reasoning"), joined(deltas, "content"), finish) == (reasoning, content, "stop")
    # Thinking switched off: the template ends the prompt with an empty think block, the model
    # answers directly and the parser leaves it all as content.
    assert plain["choices"][0]["message"]["content"] == tiny_corpus.PRIME_ANSWER
    assert not plain["choices"][0]["message"].get("reasoning")


def test_tool_call_is_parsed_and_its_result_answered(vllm_chat: VLLMServer) -> None:
    (conversation,) = [c for c in tiny_corpus.CONVERSATIONS
                       if c["messages"][0]["content"] == tiny_corpus.WEATHER_PROMPT]
    request, call, result, reply = conversation["messages"]
    body = chat_body("tiny-chat", [request], tools=tiny_corpus.TOOLS)
    with client(vllm_chat) as http:
        choice = http.post("/v1/chat/completions", json=body).raise_for_status().json()["choices"][0]
        deltas, finish = stream_deltas(http, body)
        follow_up = http.post("/v1/chat/completions", json=chat_body(
            "tiny-chat", [request, call, result], tools=tiny_corpus.TOOLS)).raise_for_status().json()
    assert choice["finish_reason"] == "tool_calls" and not choice["message"]["content"]
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["function"] == {"name": "get_weather", "arguments": json.dumps(tiny_corpus.WEATHER_ARGUMENTS)}
    streamed = [c for d in deltas for c in d.get("tool_calls") or []]
    assert streamed[0]["function"]["name"] == "get_weather" and finish == "tool_calls"
    assert json.loads("".join(c["function"].get("arguments") or "" for c in streamed)) == tiny_corpus.WEATHER_ARGUMENTS
    assert not joined(deltas, "content")
    assert follow_up["choices"][0]["message"]["content"] == reply["content"] == tiny_corpus.WEATHER_ANSWER
    assert follow_up["choices"][0]["finish_reason"] == "stop"
    # With the same tools, a request that needs none is answered in text.
    with client(vllm_chat) as http:
        plain = http.post("/v1/chat/completions", json=chat_body(
            "tiny-chat", [tiny_corpus.user(tiny_corpus.HELLO_PROMPT)], tools=tiny_corpus.TOOLS)).raise_for_status().json()
    assert plain["choices"][0]["message"]["content"] == tiny_corpus.HELLO_ANSWER
    assert not plain["choices"][0]["message"].get("tool_calls")


def test_embeddings_are_384_dim_unit_vectors(vllm_embed: VLLMServer) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": ["Hello Jupyter", "A cat sits on the mat"]}
    with client(vllm_embed) as http:
        data = http.post("/v1/embeddings", json=body).raise_for_status().json()["data"]
    vectors = [item["embedding"] for item in data]
    assert [len(v) for v in vectors] == [384, 384]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-4)
    assert vectors[0] != vectors[1]
