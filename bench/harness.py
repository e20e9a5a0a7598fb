"""What the benchmarks share: a loopback server in a process of its own, the real vLLM, the
process's memory figures, and the PASS/FAIL line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def loopback_process(script: str, *args: str) -> Iterator[str]:
    """Run ``script`` (Python that prints the server's URL, then serves until stdin closes) with
    ``args``; yields the URL. Its own process, so the server never competes with the client's GIL."""
    server = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield server.stdout.readline().strip()
    finally:
        server.stdin.close()
        server.wait(timeout=30)


@contextmanager
def real_vllm(url: str | None, kind: str) -> Iterator[tuple[str, str | None]]:
    """``url`` (key from VLLM_API_KEY) when given, else the project's own ``vllm serve`` of ``kind``."""
    if url:
        yield url, os.environ.get("VLLM_API_KEY")
        return
    spec = importlib.util.spec_from_file_location("vllm_env", ROOT / "scripts" / "vllm_env.py")
    vllm_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vllm_env)
    with vllm_env.start_server(kind) as server:
        yield server.wait_ready().base_url, None


def memory(field: str) -> int:
    """``VmRSS:`` or ``VmHWM:`` (the high-water mark) of this process, in bytes."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024


def report(name: str, ok: bool, text: str) -> bool:
    print(f"({name}) {text} -> {'PASS' if ok else 'FAIL'}", flush=True)
    return ok
