"""One prompt over many rows: ``ask_each`` against what a skilled user writes with the openai client.

Baseline, measured in the same run against the same server: ``openai.AsyncOpenAI`` with an
``asyncio.Semaphore(K)`` around ``client.chat.completions.create(...)``, ``asyncio.gather`` over the
rows, each answer validated with pydantic (``Model.model_validate_json``) or checked against the
choices, collected into a DataFrame. Ours: ``vllm_magic.ask_each(rows, template, ...)`` (a DataFrame
indexed like the input, typed columns, tokens and seconds per row). Both at K = 32 requests in
flight (our default) unless said.

(a) The loopback server answering at once, 20,000 distinct rows with a 3-field schema: ours >= 2x
    the baseline's rows/s, and client CPU per row <= 0.5x the baseline's.
(b) The loopback server taking 200 ms per request (like a busy GPU), K = 64: ours >= 0.9x the
    physical limit of K / 0.2 s = 320 rows/s.
(c) A real vLLM (CPU build) serving the random-weight tiny model, 300 rows with a choice (guided
    decoding): ours >= 0.95x the baseline's rows/s (the server is the limit). Started here with
    scripts/vllm_env.py unless ``--chat-url URL`` names one (key in VLLM_API_KEY).
(d) Peak memory of 200,000 rows streamed to a Parquet folder (``to=``), in a fresh process: the
    resident-set high-water mark above the start (after the imports and the input) stays bounded:
    <= 1.5x the figure for 50,000 rows, and under 100 MiB.

The loopback server runs in a process of its own, so its work does not share the client's GIL.
Prints the figures and PASS/FAIL; exits non-zero on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import pydantic  # noqa: E402

from harness import loopback_process, memory, real_vllm, report  # noqa: E402
from vllm_magic import Chat, ask_each  # noqa: E402

SCHEMA = "name str, age int, happy bool"
CHOICES = ["pos", "neg", "neutral"]
SERVE_LOOPBACK = """
import json, sys
from tests.loopback import LoopbackServer, Reply

answer = Reply.tokens([json.dumps({"name": "Ada Lovelace", "age": 36, "happy": True})], finish_reason="stop")
with LoopbackServer(chat_delay=float(sys.argv[1])) as server:
    server.script_by(lambda body: answer)
    print(server.base_url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
"""


class Person(pydantic.BaseModel):
    name: str
    age: int
    happy: bool


def rows(count: int) -> pd.DataFrame:
    """Distinct short texts (so deduplication gives ours no edge)."""
    return pd.DataFrame({"text": [f"Note {i}: met someone at the market on day {i % 365}." for i in range(count)]})


TEMPLATE = "Who is in this note? {text}"


def baseline(url: str, key: str | None, model: str, frame: pd.DataFrame, concurrency: int,
             choice: bool = False) -> pd.DataFrame:
    import openai

    async def main() -> list[dict]:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key or "none", max_retries=2)
        limit = asyncio.Semaphore(concurrency)
        if choice:
            extra = {"structured_outputs": {"choice": CHOICES}}
        else:
            extra = {"response_format": {"type": "json_schema", "json_schema": {
                "name": "Person", "schema": Person.model_json_schema(), "strict": True}}}

        async def one(text: str) -> dict:
            async with limit:
                answer = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": TEMPLATE.format(text=text)}],
                    max_tokens=16, temperature=0, extra_body=extra)
            content = answer.choices[0].message.content or ""
            if choice:
                value = {"answer": content if content in CHOICES else None}
            else:
                value = Person.model_validate_json(content).model_dump()
            return {**value, "finish_reason": answer.choices[0].finish_reason,
                    "prompt_tokens": answer.usage.prompt_tokens, "completion_tokens": answer.usage.completion_tokens}

        try:
            return await asyncio.gather(*(one(text) for text in frame.text))
        finally:
            await client.close()

    return pd.DataFrame(asyncio.run(main()), index=frame.index)


def ours(url: str, key: str | None, model: str, frame: pd.DataFrame, concurrency: int,
         choice: bool = False) -> pd.DataFrame:
    shape = {"choice": CHOICES} if choice else {"schema": SCHEMA}
    chat = Chat(url, model, api_key=key)
    try:
        return ask_each(frame, TEMPLATE, chat=chat, concurrency=concurrency, max_tokens=16, temperature=0,
                        progress=False, **shape)
    finally:
        chat.connection.client.close()


def compare(url: str, key: str | None, model: str, frame: pd.DataFrame, concurrency: int, repeats: int,
            choice: bool = False) -> dict[str, float]:
    """Median rows/s and client CPU per row of each, run alternately so drift in load hits both alike."""
    speeds: dict[str, list[float]] = {"baseline": [], "ours": []}
    cpu: dict[str, list[float]] = {"baseline": [], "ours": []}
    results = {}
    for _ in range(repeats):
        for name, run in (("baseline", baseline), ("ours", ours)):
            wall, clock = time.perf_counter(), time.process_time()
            results[name] = run(url, key, model, frame, concurrency, choice)
            speeds[name].append(len(frame) / (time.perf_counter() - wall))
            cpu[name].append((time.process_time() - clock) / len(frame))
    assert len(results["ours"]) == len(results["baseline"]) == len(frame)
    assert results["ours"]["error"].isna().all(), results["ours"]["error"].dropna().head()
    if not choice:
        assert results["ours"][["name", "age", "happy"]].astype(object).equals(
            results["baseline"][["name", "age", "happy"]].astype(object)), "the answers differ"
    figures = {f"{name}_rows_s": statistics.median(values) for name, values in speeds.items()}
    figures |= {f"{name}_cpu_ms": statistics.median(values) * 1000 for name, values in cpu.items()}
    figures["speed"] = figures["ours_rows_s"] / figures["baseline_rows_s"]
    figures["cpu"] = figures["ours_cpu_ms"] / figures["baseline_cpu_ms"]
    return figures


@contextmanager
def loopback(delay: float = 0.0) -> Iterator[str]:
    with loopback_process(SERVE_LOOPBACK, str(delay)) as url:
        yield url


def memory_child(url: str, count: int) -> None:
    """Run in a fresh process: print the RSS at the start and its high-water mark, in bytes."""
    frame = rows(count)


    with tempfile.TemporaryDirectory() as folder:
        ask_each(frame.head(50), TEMPLATE, base_url=url, model="tiny-chat", schema=SCHEMA,
                 to=Path(folder) / "warm.parquet", progress=False)  # lazy imports, first connection
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start = memory("VmRSS:")
        written = ask_each(frame, TEMPLATE, base_url=url, model="tiny-chat", schema=SCHEMA,
                           to=Path(folder) / "answers.parquet", progress=False)
        peak = memory("VmHWM:")
        assert written.held == count and not written.failed, written
    print(json.dumps({"start": start, "peak": peak}))


def measure_memory(url: str, count: int) -> float:
    """MiB above the start at the high-water mark."""
    done = subprocess.run([sys.executable, __file__, "--memory-child", url, str(count)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the memory run of {count:,} rows failed:\n{done.stderr[-2000:]}")
    figures = json.loads(done.stdout)
    return (figures["peak"] - figures["start"]) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chat-url", help="a running vLLM chat server for (c) (its model: the only one served)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="abcd", help="which cases to run, e.g. 'ab'")
    parser.add_argument("--memory-child", nargs=2, metavar=("URL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0

    def speed(f: dict, what: str = "rows/s") -> str:
        return (f"baseline {f['baseline_rows_s']:,.0f} {what} ({f['baseline_cpu_ms']:.2f} ms CPU/row), ours "
                f"{f['ours_rows_s']:,.0f} ({f['ours_cpu_ms']:.2f} ms CPU/row): {f['speed']:.2f}x rows/s, "
                f"{f['cpu']:.2f}x CPU per row")

    results = []
    if "a" in args.only or "d" in args.only:
        with loopback() as url:
            if "a" in args.only:
                f = compare(url, None, "tiny-chat", rows(20_000), 32, args.repeats)
                results.append(report("a", f["speed"] >= 2 and f["cpu"] <= 0.5,
                                      f"loopback, 20,000 rows, 3-field schema, K=32: {speed(f)} "
                                      "(target >= 2x rows/s, <= 0.5x CPU)"))
            if "d" in args.only:
                small, big = measure_memory(url, 50_000), measure_memory(url, 200_000)
                results.append(report("d", big <= 1.5 * max(small, 1.0) and big < 100,
                                      f"peak memory streaming to Parquet: {small:.1f} MiB above the start for 50,000 "
                                      f"rows, {big:.1f} MiB for 200,000 (target: <= 1.5x the 50,000 figure, < 100 MiB)"))
    if "b" in args.only:
        with loopback(delay=0.2) as url:
            frame = rows(64 * 40)
            wall = time.perf_counter()
            table = ours(url, None, "tiny-chat", frame, 64)
            rate = len(frame) / (time.perf_counter() - wall)
            assert table["error"].isna().all()
            results.append(report("b", rate >= 0.9 * 320, f"loopback taking 200 ms per request, K=64, "
                                  f"{len(frame):,} rows: {rate:,.0f} rows/s = {rate / 320:.2f}x of 320 (target >= 0.9x)"))
    if "c" in args.only:
        with real_vllm(args.chat_url, "random") as (url, key):
            model = Chat(url, api_key=key).connection.resolve_model()
            f = compare(url, key, model, rows(300), 32, args.repeats, choice=True)
            results.append(report("c", f["speed"] >= 0.95, f"real vLLM ({model}), 300 rows with a choice, K=32: "
                                  f"{speed(f)} (target >= 0.95x rows/s)"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
