"""The chat panel's pace in a real browser, against %%chat and against a code cell run alone.

Real vLLM (the random tiny model: its answers run to max_tokens, so a long one is still streaming
while the code cell runs), real JupyterLab, Debian's Chromium. Times are taken in the page with
``performance.now()`` and a MutationObserver, from the action to the first visible change:

* time to first visible token: Enter in the panel vs running a ``%%chat`` cell with the same
  prompt and parameters, alternating, median of each (target: the panel within 100 ms of the cell);
* a code cell's run time (execute -> its output shows) alone, and while the panel streams a long
  answer (target: within 200 ms of alone).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "scripts")]

import vllm_env  # noqa: E402
from lab import open_notebook, run_all, start_lab_server, write_notebook  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
CELLS = [
    "%load_ext vllm_magic\n%vllm connect\n%vllm params temperature=0 max_tokens=16",
    "%vllm panel",
    "%%chat\nTell me about notebooks",
    "print(sum(range(300000)))",
]

# Resolves with the ms from calling `act` to the first time `done()` is true after a DOM change.
MEASURE = """async ([act, done]) => {
  const actFn = new Function(act), doneFn = new Function(done);
  return await new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (doneFn()) { observer.disconnect(); resolve(performance.now() - start); }
    });
    observer.observe(document.body, {childList: true, subtree: true, characterData: true});
    const start = performance.now();
    actFn();
  });
}"""
PANEL = "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .vllm-magic-panel')"
SEND_IN_PANEL = f"""
  const box = {PANEL}.querySelector('textarea.vllm-magic-input');
  box.value = 'Tell me about notebooks'; box.dispatchEvent(new Event('input'));
  box.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter', bubbles: true}}));"""
PANEL_TEXT_SEEN = f"""
  const live = {PANEL}.querySelector('.vm-live');
  return !!live && /\\S/.test(live.textContent);"""


def run_cell(index: int) -> str:
    return f"""
  const app = window.jupyterapp, panel = app.shell.currentWidget;
  panel.content.activeCellIndex = {index};
  app.commands.execute('notebook:run-cell');"""


def cell_output_seen(index: int, selector: str) -> str:
    return f"""
  const cell = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell')[{index}];
  const out = cell && cell.querySelector('{selector}');
  return !!out && /\\S/.test(out.textContent) && !cell.querySelector('.jp-InputPrompt').textContent.includes('*');"""


def cell_first_text(index: int) -> str:
    return f"""
  const cell = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell')[{index}];
  const out = cell && cell.querySelector('.jp-OutputArea-output .vllm-magic');
  return !!out && /\\S/.test(out.textContent);"""


def wait_idle(page) -> None:
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
                           " && !document.querySelector('.vm-live')", polling=50, timeout=120_000)


def measure(repeats: int = 5) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, vllm_env.start_server("random") as server:
        server.wait_ready()
        lab = start_lab_server(Path(tmp), {"VLLM_BASE_URL": server.base_url}, Path(tmp) / "lab.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                open_notebook(page, lab, write_notebook(lab, "bench.ipynb", CELLS))
                run_all(page)
                cell_ttft, panel_ttft, alone, during = [], [], [], []
                for _ in range(repeats):
                    cell_ttft.append(page.evaluate(MEASURE, [run_cell(2), cell_first_text(2)]))
                    wait_idle(page)
                    panel_ttft.append(page.evaluate(MEASURE, [SEND_IN_PANEL, PANEL_TEXT_SEEN]))
                    wait_idle(page)
                    alone.append(page.evaluate(MEASURE, [run_cell(3), cell_output_seen(3, ".jp-OutputArea-output")]))
                    wait_idle(page)
                page.locator(".vllm-magic-panel .widget-text", has_text="max tokens").locator("input").fill("480")
                page.keyboard.press("Enter")
                for _ in range(repeats):
                    page.evaluate(MEASURE, [SEND_IN_PANEL, PANEL_TEXT_SEEN])  # a long answer is streaming
                    during.append(page.evaluate(MEASURE, [run_cell(3), cell_output_seen(3, ".jp-OutputArea-output")]))
                    page.evaluate(f"() => {{ const stop = [...{PANEL}.querySelectorAll('button')]"
                                  ".find(b => b.title === 'Stop' || b.textContent.includes('Stop'));"
                                  " if (!stop.disabled) stop.click(); }")
                    wait_idle(page)
                browser.close()
        finally:
            lab.stop()
    return {"cell_ttft_ms": statistics.median(cell_ttft), "panel_ttft_ms": statistics.median(panel_ttft),
            "cell_alone_ms": statistics.median(alone), "cell_during_stream_ms": statistics.median(during)}


if __name__ == "__main__":
    r = measure()
    ttft_gap = r["panel_ttft_ms"] - r["cell_ttft_ms"]
    cell_gap = r["cell_during_stream_ms"] - r["cell_alone_ms"]
    ok = ttft_gap <= 100 and cell_gap <= 200
    print(f"first visible token: panel {r['panel_ttft_ms']:.0f} ms, %%chat cell {r['cell_ttft_ms']:.0f} ms "
          f"-> panel {ttft_gap:+.0f} ms (target <= +100)")
    print(f"code cell: alone {r['cell_alone_ms']:.0f} ms, during a panel stream {r['cell_during_stream_ms']:.0f} ms "
          f"-> {cell_gap:+.0f} ms (target <= +200) -> {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)
