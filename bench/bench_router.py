"""``map`` and ``embed`` through vLLM's router over two replicas, against one replica alone.

Two real ``vllm serve`` replicas, each held to one CPU core of its own (as each replica of a
production stack has a GPU of its own), and ``vllm-router`` (round robin) over both. Baseline, in
the same run: the same job sent straight to the first replica. Rounds alternate between the two,
three each; the medians are compared.

- map: two tiny-chat replicas; ``ask_each`` over 400 distinct rows, short answers (``max_tokens``
  16, as a labelling job), K = 64 requests in flight. Target: >= 1.5x the rows/s of one replica.
- embed: two all-MiniLM-L6-v2 replicas; ``embed`` of 20,000 distinct texts with its defaults
  (batches of 512, 4 in flight). Reported, no target.

Why each replica is held to one core: on this 2-core machine one unconstrained replica already
keeps both cores busy (its API server, engine core and model worker are separate processes), so a
second replica has no hardware left to add; the comparison that says how the product scales is one
replica per unit of hardware. Prints the figures and PASS/FAIL; exits non-zero on FAIL.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import reach_env  # noqa: E402
import vllm_env  # noqa: E402
from bench.harness import report  # noqa: E402
from vllm_magic import Chat, ask_each, embed  # noqa: E402

ROWS = [f"Note {i}: the order {i * 7} arrived late." for i in range(400)]
TEXTS = [f"text number {i}: the order {i * 7} arrived late at depot {i % 97}." for i in range(20_000)]
KEY = "bench-router-key"
TARGET = 1.5


def map_rows_per_second(url: str) -> float:
    chat = Chat(url, api_key=KEY, temperature=0)
    started = time.perf_counter()
    table = ask_each(ROWS, "Label: {}", chat=chat, max_tokens=16, concurrency=64, progress=False)
    seconds = time.perf_counter() - started
    assert table.error.isna().all(), table.error.dropna().head()
    return len(ROWS) / seconds


def embed_rows_per_second(url: str) -> float:
    started = time.perf_counter()
    vectors = embed(TEXTS, base_url=url, api_key=KEY, as_="array", progress=False)
    seconds = time.perf_counter() - started
    assert vectors.shape == (len(TEXTS), 384)
    return len(TEXTS) / seconds


def compare(kind: str, job: Callable[[str], float]) -> tuple[list[float], list[float]]:
    """Rows/s of ``job`` against one replica of ``kind`` and through the router over two."""
    replicas = [vllm_env.start_server(kind, api_key=KEY, core=core) for core in (0, 1)]
    try:
        for replica in replicas:
            replica.wait_ready()
        with reach_env.Router([r.base_url for r in replicas], python=reach_env.ensure_router()).start() as router:
            router.wait_ready(60)
            job(router.base_url)  # warm-up: first requests of each replica
            one, two = [], []
            for _ in range(3):
                one.append(job(replicas[0].base_url))
                two.append(job(router.base_url))
    finally:
        for replica in replicas:
            replica.stop()
    print(f"{kind}: one replica {', '.join(f'{r:.0f}' for r in one)} rows/s; router over two "
          f"{', '.join(f'{r:.0f}' for r in two)} rows/s")
    return one, two


def ratio(one: list[float], two: list[float]) -> float:
    return statistics.median(two) / statistics.median(one)


def main() -> int:
    mapped = ratio(*compare("chat", map_rows_per_second))
    embedded = ratio(*compare("embed", embed_rows_per_second))
    print(f"(embed through the router) {embedded:.2f}x the texts/s of one replica (no target)")
    ok = report("map through the router", mapped >= TARGET,
                f"{mapped:.2f}x the rows/s of one replica (target >= {TARGET}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
