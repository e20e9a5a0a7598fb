"""One prompt over many rows through vLLM's router over two replicas, against one replica alone.

Two real ``vllm serve`` replicas of tiny-chat, each held to one CPU core of its own (as each replica
of a production stack has a GPU of its own), and ``vllm-router`` (round robin) over both. The job:
``ask_each`` over 400 distinct rows, short answers (``max_tokens`` 16, as a labelling job),
K = 64 requests in flight. Baseline, in the same run: the same job sent straight to the first
replica. Rounds alternate between the two, three each; the medians are compared.

Target: through the router >= 1.5x the rows/s of one replica.

Why each replica is held to one core: on this 2-core machine one unconstrained replica already
keeps both cores busy (its API server, engine core and model worker are separate processes), so a
second replica has no hardware left to add; the comparison that says how the product scales is one
replica per unit of hardware. Prints the figures and PASS/FAIL; exits non-zero on FAIL.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import reach_env  # noqa: E402
import vllm_env  # noqa: E402
from bench.harness import report  # noqa: E402
from vllm_magic import Chat, ask_each  # noqa: E402

ROWS = [f"Note {i}: the order {i * 7} arrived late." for i in range(400)]
KEY = "bench-router-key"
TARGET = 1.5


def rows_per_second(url: str) -> float:
    chat = Chat(url, api_key=KEY, temperature=0)
    started = time.perf_counter()
    table = ask_each(ROWS, "Label: {}", chat=chat, max_tokens=16, concurrency=64, progress=False)
    seconds = time.perf_counter() - started
    assert table.error.isna().all(), table.error.dropna().head()
    return len(ROWS) / seconds


def main() -> int:
    replicas = [vllm_env.start_server("chat", api_key=KEY, core=core) for core in (0, 1)]
    try:
        for replica in replicas:
            replica.wait_ready()
        with reach_env.Router([r.base_url for r in replicas], python=reach_env.ensure_router()).start() as router:
            router.wait_ready(60)
            rows_per_second(router.base_url)  # warm-up: first requests of each replica
            one, two = [], []
            for _ in range(3):
                one.append(rows_per_second(replicas[0].base_url))
                two.append(rows_per_second(router.base_url))
    finally:
        for replica in replicas:
            replica.stop()
    ratio = statistics.median(two) / statistics.median(one)
    print(f"one replica: {', '.join(f'{r:.0f}' for r in one)} rows/s; router over two: "
          f"{', '.join(f'{r:.0f}' for r in two)} rows/s")
    ok = report("map through the router", ratio >= TARGET,
                f"{ratio:.2f}x the rows/s of one replica (target >= {TARGET}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
