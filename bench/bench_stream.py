"""Streaming throughput: the %%chat pipeline against the openai client and a bare httpx loop.

The loopback server streams 20,000 chunks as fast as it can. Three consumers read the same stream
in the same run:

* openai: ``client.chat.completions.create(stream=True)`` iterated, reading ``delta.content``;
* bare: ``httpx`` ``iter_lines()`` + ``json.loads`` per ``data:`` line (the floor of any parser);
* ours: ``Chat.stream`` -> ``CellSink`` (parse + incremental Markdown render + display calls), with the
  display messages captured in a list instead of sent to a front end.

Targets: ours >= 5x openai's chunks/s and >= 0.5x the bare loop's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.loopback import LoopbackServer, Reply  # noqa: E402
from vllm_magic import Chat, drive  # noqa: E402
from vllm_magic.sinks import CellSink  # noqa: E402

CHUNKS = 20_000
BODY = {"model": "tiny-chat", "messages": [{"role": "user", "content": "go"}], "stream": True}


def run_openai(server: LoopbackServer) -> int:
    import openai

    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none")
    count = 0
    for chunk in client.chat.completions.create(model="tiny-chat", messages=BODY["messages"], stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            count += 1
    return count


def run_bare(server: LoopbackServer) -> int:
    count = 0
    with httpx.Client() as client, client.stream("POST", server.base_url + "/v1/chat/completions", json=BODY) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    count += 1
    return count


def run_ours(server: LoopbackServer) -> int:
    messages: list = []
    chat = Chat(server.base_url, model="tiny-chat")
    sink = CellSink(rate=15, publish=lambda display_id, bundle, update: messages.append(bundle))
    turn = drive(chat.stream("go"), sink)
    assert messages, "display messages were produced"
    return turn.completion_tokens


def rate(server: LoopbackServer, consumer, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        server.push(Reply.many(CHUNKS, piece="tok "))
        started = time.perf_counter()
        count = consumer(server)
        rates.append(count / (time.perf_counter() - started))
        assert count == CHUNKS, (consumer.__name__, count)
    return statistics.median(rates)


def measure(repeats: int = 5) -> dict[str, float]:
    with LoopbackServer() as server:
        run_ours(server.push(Reply.many(100)) or server)  # warm imports and connections
        results = {name: rate(server, fn, repeats) for name, fn in
                   (("openai", run_openai), ("bare", run_bare), ("ours", run_ours))}
    results["vs_openai"] = results["ours"] / results["openai"]
    results["vs_bare"] = results["ours"] / results["bare"]
    return results


if __name__ == "__main__":
    r = measure()
    ok = r["vs_openai"] >= 5 and r["vs_bare"] >= 0.5
    print(f"chunks/s: openai {r['openai']:,.0f}, bare httpx loop {r['bare']:,.0f}, %%chat pipeline {r['ours']:,.0f}")
    print(f"ours/openai = {r['vs_openai']:.1f}x (target >= 5), ours/bare = {r['vs_bare']:.2f}x (target >= 0.5) "
          f"-> {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)
