"""What `import vllm_magic` + `%load_ext vllm_magic` add over importing the dependencies.

Each measurement is a fresh interpreter (so nothing is cached in sys.modules), repeated and
reduced to the median. Bytecode caching is on, as for an installed package (a warm-up run writes
the .pyc files even where PYTHONDONTWRITEBYTECODE is set). Target: at most 30 ms added.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

DEPS = "import httpx, markdown_it, traitlets, IPython, ipywidgets; from IPython.core.interactiveshell import InteractiveShell; ip = InteractiveShell.instance()"
OURS = "import vllm_magic; vllm_magic.load_ipython_extension(ip)"
TIMER = """
import time
t0 = time.perf_counter()
{deps}
t1 = time.perf_counter()
{ours}
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def measure(repeats: int = 15) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    added = []
    deps = []
    for _ in range(repeats + 1):
        out = subprocess.run([sys.executable, "-c", TIMER.format(deps=DEPS, ours=OURS)],
                             capture_output=True, text=True, check=True, env=env).stdout.split()
        deps.append(float(out[0]))
        added.append(float(out[1]))
    deps, added = deps[1:], added[1:]  # the first run wrote the bytecode
    leaked = subprocess.run(
        [sys.executable, "-c", f"{DEPS}\n{OURS}\nimport sys; print(sorted(m for m in ('pandas', 'numpy', 'pygments.lexers') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip()
    return {"deps_ms": statistics.median(deps) * 1000, "added_ms": statistics.median(added) * 1000,
            "heavy_modules_loaded": leaked}


if __name__ == "__main__":
    result = measure()
    ok = result["added_ms"] <= 30 and result["heavy_modules_loaded"] == "[]"
    print(f"import deps: {result['deps_ms']:.1f} ms; vllm_magic + load_ext adds {result['added_ms']:.1f} ms "
          f"(target <= 30 ms); heavy modules loaded: {result['heavy_modules_loaded']} -> {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)
