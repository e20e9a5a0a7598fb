"""Embedding throughput and memory: ``embed`` against what a user writes with the openai client.

Baseline, measured in the same run against the same server: ``client.embeddings.create(model=...,
input=batch)`` in a loop over batches of 256 texts, the vectors collected into a DataFrame.
Ours: ``vllm_magic.embed(texts)`` with its defaults (a DataFrame indexed like the input).

(a) The loopback server answering canned 1024-dim vectors, 20,000 distinct texts:
    ours >= 3x the baseline's rows/s.
(b) A real vLLM (CPU build) serving all-MiniLM-L6-v2, 5,000 distinct texts: the server is the
    limit there (its model worker runs one core flat out for either client), so the targets are
    what the client controls: client CPU per 1,000 rows <= 1/3 of the baseline's, and rows/s
    >= 0.95x the baseline's. Started here with scripts/vllm_env.py unless ``--embed-url URL``
    names one (key in VLLM_API_KEY).
(c) Peak memory embedding 100,000 x 1024 from the loopback server, in a fresh process: the
    resident-set high-water mark (VmHWM, reset after the imports and the texts) minus the resident
    set at that point <= 1.5x the final float32 matrix.

The loopback server runs in a process of its own, so its work does not share the client's GIL.
Prints the figures and PASS/FAIL; exits non-zero on FAIL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import loopback_process, memory, real_vllm, report  # noqa: E402
from vllm_magic import embed  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
SERVE_LOOPBACK = """
import sys
from tests.loopback import LoopbackServer
with LoopbackServer(models=(), embedding_models=(sys.argv[1],), embedding_dims=int(sys.argv[2]),
                    canned_embeddings=True) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
"""


def texts(count: int) -> list[str]:
    """Distinct sentences of ordinary length (so deduplication gives ours no edge)."""
    nouns = ("cat", "river", "market", "engine", "garden", "violin", "harbour", "library")
    verbs = ("watches", "follows", "crosses", "repairs", "paints", "describes")
    return [f"Sentence {i}: the {nouns[i % 8]} {verbs[i % 6]} the {nouns[(i // 8) % 8]} near the old "
            f"{nouns[(i // 64) % 8]} on day {i % 365}." for i in range(count)]


def baseline(url: str, key: str | None, batch: list[str]) -> pd.DataFrame:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key=key or "none", max_retries=0)
    rows: list[list[float]] = []
    for start in range(0, len(batch), 256):
        response = client.embeddings.create(model=MODEL, input=batch[start : start + 256])
        rows.extend(item.embedding for item in response.data)
    client.close()
    return pd.DataFrame(rows)


def ours(url: str, key: str | None, batch: list[str]) -> pd.DataFrame:
    return embed(batch, MODEL, base_url=url, api_key=key, progress=False)


def compare(url: str, key: str | None, batch: list[str], repeats: int) -> dict[str, float]:
    """Median rows/s and client CPU seconds per 1,000 rows of each, run alternately so drift in
    machine load hits both alike (the servers run in processes of their own)."""
    speeds: dict[str, list[float]] = {"baseline": [], "ours": []}
    cpu: dict[str, list[float]] = {"baseline": [], "ours": []}
    results = {}
    for _ in range(repeats):
        for name, run in (("baseline", baseline), ("ours", ours)):
            started, clock = time.perf_counter(), time.process_time()
            results[name] = run(url, key, batch)
            speeds[name].append(len(batch) / (time.perf_counter() - started))
            cpu[name].append((time.process_time() - clock) / len(batch) * 1000)
    diff = np.abs(results["ours"].to_numpy() - results["baseline"].to_numpy()).max()
    assert results["ours"].shape == results["baseline"].shape and diff < 1e-6, ("results differ", diff)
    figures = {name: statistics.median(values) for name, values in speeds.items()}
    figures |= {f"{name}_cpu": statistics.median(values) for name, values in cpu.items()}
    figures["ratio"] = figures["ours"] / figures["baseline"]
    figures["cpu_ratio"] = figures["ours_cpu"] / figures["baseline_cpu"]
    return figures


@contextmanager
def loopback(dims: int) -> Iterator[str]:
    with loopback_process(SERVE_LOOPBACK, MODEL, str(dims)) as url:
        yield url


def memory_child(url: str, count: int) -> None:
    """Run in a fresh process: print the RSS baseline, the high-water mark and the matrix size."""
    batch = texts(count)


    embed(batch[:10], MODEL, base_url=url, progress=False)  # warm: lazy imports, first connection
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = memory("VmRSS:")
    frame = embed(batch, MODEL, base_url=url, progress=False)
    peak = memory("VmHWM:")
    print(json.dumps({"start": start, "peak": peak, "matrix": frame.to_numpy().nbytes}))


def measure_memory(url: str, count: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--memory-child", url, str(count)],
                          capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout)
    figures["ratio"] = (figures["peak"] - figures["start"]) / figures["matrix"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embed-url", help="a running vLLM embedding server for (b)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="abc", help="which cases to run, e.g. 'b'")
    parser.add_argument("--memory-child", nargs=2, metavar=("URL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0

    def speed(f: dict) -> str:
        return (f"baseline {f['baseline']:,.0f} rows/s, ours {f['ours']:,.0f} rows/s: "
                f"{f['ratio']:.2f}x")

    results = []
    if "a" in args.only or "c" in args.only:
        with loopback(dims=1024) as url:
            if "a" in args.only:
                f = compare(url, None, texts(20_000), args.repeats)
                results.append(report("a", f["ratio"] >= 3, f"loopback, 20,000 x 1024: {speed(f)} (target >= 3x)"))
            if "c" in args.only:
                f = measure_memory(url, 100_000)
                results.append(report("c", f["ratio"] <= 1.5, (
                    f"peak memory, 100,000 x 1024: {(f['peak'] - f['start']) / 2**20:,.0f} MiB above the start for a "
                    f"{f['matrix'] / 2**20:,.0f} MiB matrix: {f['ratio']:.2f}x (target <= 1.5x)")))
    if "b" in args.only:
        with real_vllm(args.embed_url, "embed") as (url, key):
            f = compare(url, key, texts(5_000), args.repeats)
            results.append(report("b", f["cpu_ratio"] <= 1 / 3 and f["ratio"] >= 0.95, (
                f"real vLLM, 5,000 x 384: {speed(f)}; client CPU per 1,000 rows: baseline {f['baseline_cpu']:.2f} s, "
                f"ours {f['ours_cpu']:.2f} s = {f['cpu_ratio']:.2f}x (targets: <= 1/3 CPU, >= 0.95x rows/s)")))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
