"""Through vLLM's router (``vllm-router``, round robin) over two real tiny-chat replicas.

The last test kills a replica: it stays last in this file.
"""

from __future__ import annotations

import time

import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the root conftest

from tests.unit.notebook_shell import Shell
from vllm_magic import Chat, errors
from vllm_magic.client import Client

LONG = {"max_tokens": 480, "ignore_eos": True}  # about 2 s of tokens: time to act while it streams


def running(client: Client, replica: str) -> float:
    return sum(v for name, _, v in client.metrics(replica) if name == "vllm:num_requests_running")


def generated(client: Client, replicas: list[str]) -> float:
    return sum(v for r in replicas for name, _, v in client.metrics(r) if name == "vllm:generation_tokens_total")


def wait_idle(client: Client, replicas: list[str]) -> None:
    """Poll the replicas' own gauge (what vLLM reports, not a guess at timing) for at most 10 s."""
    deadline = time.monotonic() + 10
    while any(running(client, r) for r in replicas) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_conversation_goes_through_the_router_with_usage_and_both_replicas_answer(vllm_router, vllm_chat) -> None:
    chat = Chat(vllm_router.base_url, api_key=vllm_chat.api_key, temperature=0)
    replicas = chat.connection.client.replicas()
    assert replicas is not None and sorted(replicas) == sorted(vllm_router.workers)
    before = {r: generated(chat.connection.client, [r]) for r in replicas}
    prompts = [tiny_corpus.DATAFRAME_PROMPT, tiny_corpus.TOTAL_PROMPT, tiny_corpus.SUM_PROMPT]
    answers = [tiny_corpus.DATAFRAME_ANSWER, tiny_corpus.TOTAL_ANSWER, tiny_corpus.SUM_ANSWER]
    turns = [chat.ask(prompt) for prompt in prompts]
    assert [t.text for t in turns] == answers and {t.finish_reason for t in turns} == {"stop"}
    assert not any(t.usage_estimated for t in turns) and turns[2].prompt_tokens > turns[1].total_tokens
    assert all(generated(chat.connection.client, [r]) > before[r] for r in replicas), "round robin used both"


def test_status_shows_the_load_of_each_replica(ip: Shell, vllm_router, vllm_chat,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_KEY", vllm_chat.api_key)
    ip.ok(f"%vllm connect {vllm_router.base_url} --api-key-env ROUTER_KEY")
    out = ip.ok("%vllm status")
    table = ip.magics.shell.run_line_magic("vllm", "metrics")
    for replica in vllm_router.workers:
        assert f"load of replica {replica}: 0 running, 0 waiting" in out
    assert sorted(table.replica.unique()) == sorted(vllm_router.workers)
    assert vllm_chat.api_key not in out


def test_stopping_a_stream_reaches_the_replica(vllm_router, vllm_chat) -> None:
    """Closing our stream at once is ours to do; passing the disconnect on is the router's. Measured
    here: straight to vLLM every stop aborts the request within a token or two; through vllm-router
    most do, but about one in twelve runs on to max_tokens. So of three stops, one must abort early
    (if we did not close at once, none would) and the replicas must end idle every time."""
    chat = Chat(vllm_router.base_url, api_key=vllm_chat.api_key, temperature=0)
    client, replicas = chat.connection.client, vllm_router.workers
    generated_per_stop = []
    for _ in range(3):
        before = generated(client, replicas)
        pieces = iter(chat.stream(tiny_corpus.HELLO_PROMPT, **LONG))
        next(pieces)
        pieces.close()  # what a kernel interrupt or the Stop button does to the stream
        wait_idle(client, replicas)
        assert not any(running(client, r) for r in replicas)
        assert chat.history[-1].status.value == "interrupted"
        generated_per_stop.append(generated(client, replicas) - before)
    assert min(generated_per_stop) < 10, generated_per_stop


def test_a_replica_killed_mid_stream_is_a_cut_and_the_next_turn_goes_to_the_other(
        vllm_router, vllm_chat, vllm_chat_replica) -> None:
    chat = Chat(vllm_router.base_url, api_key=vllm_chat.api_key, temperature=0)
    client = chat.connection.client
    for _ in range(4):  # round robin: the replica to kill serves one of two consecutive streams
        pieces = iter(chat.stream(tiny_corpus.HELLO_PROMPT, **LONG))
        next(pieces)
        if running(client, vllm_chat_replica.base_url):
            break
        pieces.close()
        chat.undo()  # the probe's interrupted turn: the conversation holds only the stream to cut
        wait_idle(client, vllm_router.workers)
    else:
        pytest.fail("no stream went to the replica in four tries")
    vllm_chat_replica.kill()
    with pytest.raises(errors.StreamError) as info:
        for _ in pieces:
            pass
    assert "cut" in str(info.value) and chat.history[-1].status.value == "cut" and chat.history[-1].text
    chat.retry().text()  # what a user does after a cut: the answer replaces the cut one
    (turn,) = chat.history
    assert turn.text == tiny_corpus.HELLO_ANSWER and turn.finish_reason == "stop" and turn.complete
