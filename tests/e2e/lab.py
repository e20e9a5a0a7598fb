"""Helpers for driving a real JupyterLab in Chromium from the browser test tier.

The fixtures live in ``tests/e2e/conftest.py``; this module holds the plain
functions and the :class:`LabServer` handle so that tests can import them
(``from lab import open_notebook, run_all``) without importing a conftest.

Synchronisation never relies on fixed sleeps: the server exposes the
application object as ``window.jupyterapp`` (``LabApp.expose_app_in_browser``),
so every wait below asks JupyterLab itself (kernel status, execution counts,
the promise of the command) through Playwright's ``wait_for_function``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"

#: Every locator is scoped to the visible notebook panel: a restored layout can
#: keep hidden copies of panels around, and those would make locators ambiguous.
PANEL_SELECTOR = ".jp-NotebookPanel:visible"

#: Texts the widget manager shows instead of a widget that did not render.
WIDGET_FAILURE_TEXTS = ("Error displaying widget", "Loading widget...")

#: Kernel start plus the first render of JupyterLab on two shared cores.
OPEN_TIMEOUT_MS = 90_000
RUN_TIMEOUT_MS = 120_000
SERVER_START_TIMEOUT_S = 90.0

PYTHON_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


# --------------------------------------------------------------------------- server


@dataclass
class LabServer:
    """A running ``python -m jupyterlab`` process owned by the test session.

    ``env`` holds only the variables the tests asked for (``lab_env``); the
    process itself runs with the full inherited environment plus those, and
    kernels started by it inherit the same.
    """

    url: str
    root_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, method: str, path: str, body: object | None = None, timeout: float = 10.0) -> object:
        """Call the server's REST API (used for status polling and clean-up)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def shutdown_sessions(self) -> None:
        """Shut every kernel session down, so kernels do not pile up across tests.

        Each test opens its own notebook and so starts its own kernel; on two
        shared cores a growing set of idle kernels still costs memory and
        start-up time for the next one.
        """
        try:
            sessions = self.api("GET", "/api/sessions")
            for session in sessions if isinstance(sessions, list) else []:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            kernels = self.api("GET", "/api/kernels")
            for kernel in kernels if isinstance(kernels, list) else []:
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (urllib.error.URLError, OSError):
            pass  # the server is gone already; stop() reaps what is left

    def stop(self) -> None:
        """Stop the server, its kernels and anything else it spawned.

        Kernels are started in their own sessions (process groups) by
        jupyter_client, so killing the server's group alone would orphan them:
        shut them down through the API first, then terminate the group, and
        finally reap any descendant that survived.
        """
        descendants = _descendants(self.process.pid)
        if self.process.poll() is None:
            self.shutdown_sessions()
            descendants.update(_descendants(self.process.pid))
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pid, started in descendants.items():
            if _start_time(pid) != started:
                continue  # gone, or the pid now belongs to an unrelated process
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def free_port() -> int:
    """Ask the kernel for a free loopback port (tiny race, covered by a retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_lab_server(base_dir: Path, extra_env: Mapping[str, str], log_path: Path) -> LabServer:
    """Start JupyterLab as BROWSER_TESTS.md prescribes and wait for ``/api/status``.

    Every piece of Jupyter state (config, runtime, data, settings, workspaces,
    IPython profile) lives in ``base_dir`` so a developer's own setup cannot leak
    into the run, and the notification settings switch off the news pop-up that
    would otherwise cover buttons. The repository root goes first on the kernels'
    ``PYTHONPATH`` so they import the working tree's ``vllm_magic``.
    """
    for key, value in extra_env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"lab_env must map str to str, got {key!r}: {value!r}")

    root_dir = base_dir / "root"
    state = {
        "JUPYTER_CONFIG_DIR": base_dir / "config",
        "JUPYTER_RUNTIME_DIR": base_dir / "runtime",
        "JUPYTER_DATA_DIR": base_dir / "data",
        "JUPYTERLAB_SETTINGS_DIR": base_dir / "settings",
        "JUPYTERLAB_WORKSPACES_DIR": base_dir / "workspaces",
        "IPYTHONDIR": base_dir / "ipython",
    }
    for directory in (root_dir, *state.values()):
        directory.mkdir(parents=True, exist_ok=True)
    notification = state["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )

    env = dict(os.environ)
    env.update({key: str(path) for key, path in state.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("JUPYTER_TOKEN", None)
    env.update(extra_env)

    log_path.parent.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):
        port = free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    *_die_with_parent_prefix(),
                    sys.executable, "-m", "jupyterlab",
                    "--no-browser", "--allow-root",
                    "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
                    "--IdentityProvider.token=", "--ServerApp.password=",
                    f"--ServerApp.root_dir={root_dir}",
                    "--LabApp.expose_app_in_browser=True",
                    # The REST clean-up calls come without an XSRF cookie; the
                    # server is loopback-only and token-less for tests anyway.
                    "--ServerApp.disable_check_xsrf=True",
                ],
                cwd=root_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() can signal all of it
            )
        server = LabServer(
            url=f"http://127.0.0.1:{port}",
            root_dir=root_dir,
            env=dict(extra_env),
            process=process,
            log_path=log_path,
        )
        if _wait_for_status(server):
            return server
        last_error = _tail(log_path)
        server.stop()
    raise RuntimeError(f"JupyterLab did not answer /api/status; log {log_path}:\n{last_error}")


def _die_with_parent_prefix() -> list[str]:
    """Command prefix that sends the server SIGTERM if the test process dies abruptly.

    The server runs in its own session, so a SIGKILLed pytest would leave it (and,
    through it, kernels) running. util-linux's ``setpriv --pdeathsig`` sets the
    parent-death signal without a ``preexec_fn`` (unsafe once Playwright has
    started threads); on SIGTERM the server shuts its kernels down itself.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _wait_for_status(server: LabServer) -> bool:
    """Poll ``/api/status`` until it answers, the process dies, or time runs out."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            server.api("GET", "/api/status", timeout=2.0)
            return True
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.2)  # polling interval of a readiness probe, not a synchronisation sleep
    return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None  # field 22 of stat: start time in clock ticks


def _descendants(root: int) -> dict[int, str]:
    """Live descendants of ``root`` with their start times, read from /proc.

    Needed because kernels leave the server's process group; the start time
    lets :meth:`LabServer.stop` avoid killing a recycled pid.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4: ppid
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            started = _start_time(child)
            if child not in found and started is not None:
                found[child] = started
                stack.append(child)
    return found


# --------------------------------------------------------------------------- notebooks


def write_notebook(server: LabServer, name: str, sources: Sequence[str]) -> str:
    """Write a notebook of code cells into the server's root dir; returns its relpath.

    The kernelspec is set so that JupyterLab starts ``python3`` straight away
    instead of asking for a kernel in a dialog.
    """
    import nbformat  # lazily: its jsonschema import costs seconds, even for runs that deselect this tier

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(PYTHON_KERNELSPEC)
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    path = server.root_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return name


def copy_notebook(server: LabServer, src_path: str | os.PathLike[str], name: str | None = None) -> str:
    """Put a copy of ``src_path`` into the server's root dir; returns its relpath.

    A notebook without a kernelspec would make JupyterLab open a kernel chooser
    dialog and every wait would time out, so the copy gets the ``python3`` one
    when it has none; everything else is kept as it is.
    """
    import nbformat  # lazily, see write_notebook

    src = Path(src_path)
    relpath = name or src.name
    nb = nbformat.read(src, as_version=4)
    nb.metadata.setdefault("kernelspec", dict(PYTHON_KERNELSPEC))
    target = server.root_dir / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return relpath


# --------------------------------------------------------------------------- locators


def notebook_panel(page: Page) -> Locator:
    """The visible notebook panel (exactly one once :func:`open_notebook` returned)."""
    return page.locator(PANEL_SELECTOR)


def cells(page: Page) -> Locator:
    """All cells of the visible notebook, in order."""
    return notebook_panel(page).locator(".jp-Cell")


def cell(page: Page, index: int) -> Locator:
    """The ``index``-th cell (0-based, counting markdown cells too)."""
    return cells(page).nth(index)


def outputs(page: Page) -> Locator:
    """The output areas of the visible notebook: scope text look-ups here, since
    ``get_by_text`` on the whole panel also matches the cells' source code."""
    return notebook_panel(page).locator(".jp-OutputArea")


def cell_outputs(page: Page, index: int) -> Locator:
    """The output items (one per output in the model) of the ``index``-th cell."""
    return cell(page, index).locator(".jp-OutputArea-output")


# --------------------------------------------------------------------------- JupyterLab state

# A JS helper shared by the waits: the open NotebookPanel whose path is `path`
# (or the current notebook when `path` is null).
_FIND_PANEL_JS = """
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  const widgets = Array.from(app.shell.widgets('main'));
  const panels = widgets.filter(w => w && w.context && w.content && w.sessionContext);
  if (path === null) {
    const current = app.shell.currentWidget;
    return panels.includes(current) ? current : null;
  }
  return panels.find(w => w.context.path === path) || null;
}
"""

_STATE_JS = f"""
(path) => {{
  const findPanel = {_FIND_PANEL_JS};
  const panel = findPanel(path);
  const dialog = document.querySelector('.jp-Dialog');
  const state = {{
    app: !!window.jupyterapp,
    panel: !!panel,
    dialog: dialog ? dialog.innerText.slice(0, 300) : null,
  }};
  if (!panel) return state;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  state.path = panel.context.path;
  state.ready = panel.context.isReady && panel.sessionContext.isReady;
  state.kernel = kernel ? kernel.status : null;
  state.connection = kernel ? kernel.connectionStatus : null;
  const codeCells = panel.content.widgets.filter(c => c.model.type === 'code');
  state.codeCells = codeCells.length;
  state.counts = codeCells.map(c => c.model.executionCount);
  state.errors = [];
  for (const c of codeCells) {{
    const outputs = c.model.outputs;
    for (let i = 0; i < outputs.length; i++) {{
      const out = outputs.get(i).toJSON();
      if (out.output_type === 'error') state.errors.push(out.ename + ': ' + out.evalue);
    }}
  }}
  const run = window.__e2eRunAll;
  state.run = run ? {{ done: run.done, result: run.result, error: run.error }} : null;
  return state;
}}
"""


def notebook_state(page: Page, relpath: str | None = None) -> dict[str, object]:
    """A snapshot of what JupyterLab knows about a notebook (for waits and failure messages)."""
    return page.evaluate(_STATE_JS, relpath)


def open_notebook(page: Page, server: LabServer, relpath: str, timeout_ms: int = OPEN_TIMEOUT_MS) -> Locator:
    """Open ``relpath`` in a fresh layout and wait until its kernel is idle.

    ``?reset`` drops any saved workspace layout (which can leave hidden copies
    of elements). The wait is on JupyterLab's own objects: the panel for this
    path exists, its context and session are ready, and the kernel is connected
    and idle. Returns the visible notebook panel locator.
    """
    page.goto(f"{server.url}/lab/tree/{quote(relpath)}?reset")
    predicate = f"""
    (path) => {{
      const s = ({_STATE_JS})(path);
      return s.panel && s.ready && s.kernel === 'idle' && s.connection === 'connected';
    }}
    """
    try:
        page.wait_for_function(predicate, arg=relpath, timeout=timeout_ms, polling=100)
    except PlaywrightTimeoutError as exc:
        raise AssertionError(
            f"notebook {relpath!r} did not open with an idle kernel within {timeout_ms} ms; "
            f"state: {_safe_state(page, relpath)}"
        ) from exc
    panel = notebook_panel(page)
    expect(panel).to_have_count(1)
    return panel


def run_all(page: Page, timeout_ms: int = RUN_TIMEOUT_MS, allow_errors: bool = False) -> dict[str, object]:
    """Run every cell of the current notebook and wait until it has finished.

    ``notebook:run-all-cells`` returns a promise that settles when the last
    execute reply (and its iopub idle) has been handled; the wait also requires
    the kernel to be idle again and every code cell to have an execution count,
    or an error output to explain why the run stopped. Outputs are then in the
    model; their DOM rendering (widgets in particular) can lag, so assert on it
    with Playwright's auto-retrying ``expect``.

    Raises ``AssertionError`` listing the errors unless ``allow_errors``.
    Returns the final :func:`notebook_state`.
    """
    start_run_all(page)
    return wait_run_all(page, timeout_ms, allow_errors)


def start_run_all(page: Page) -> None:
    """Start running every cell without waiting (for a cell that waits on the page, e.g. a button)."""
    page.evaluate(
        """() => {
          const app = window.jupyterapp;
          const run = { done: false, result: null, error: null };
          window.__e2eRunAll = run;
          app.commands.execute('notebook:run-all-cells').then(
            (result) => { run.result = result === undefined ? null : result; run.done = true; },
            (error) => { run.error = String(error); run.done = true; },
          );
        }"""
    )


def wait_run_all(page: Page, timeout_ms: int = RUN_TIMEOUT_MS, allow_errors: bool = False) -> dict[str, object]:
    """Wait for the run :func:`start_run_all` began to finish (see :func:`run_all`)."""
    predicate = f"""
    () => {{
      const s = ({_STATE_JS})(null);
      if (!s.panel || !s.run || !s.run.done || s.kernel !== 'idle') return false;
      return s.errors.length > 0 || s.counts.every(n => n !== null && n !== undefined);
    }}
    """
    try:
        page.wait_for_function(predicate, timeout=timeout_ms, polling=100)
    except PlaywrightTimeoutError as exc:
        raise AssertionError(
            f"run-all did not finish within {timeout_ms} ms; state: {_safe_state(page, None)}"
        ) from exc
    state = notebook_state(page)
    run = state.get("run") or {}
    if isinstance(run, dict) and run.get("error"):
        raise AssertionError(f"notebook:run-all-cells failed: {run['error']}")
    if state["errors"] and not allow_errors:
        raise AssertionError(f"cells raised: {state['errors']}")
    return state


def output_count_in_model(page: Page, index: int) -> int:
    """How many outputs the ``index``-th cell's model holds (DOM-independent)."""
    return int(
        page.evaluate(
            f"""(index) => {{
              const panel = ({_FIND_PANEL_JS})(null);
              return panel.content.widgets[index].model.outputs.length;
            }}""",
            index,
        )
    )


def assert_no_widget_errors(page: Page, timeout_ms: int = 15_000) -> None:
    """Fail if a widget shows "Error displaying widget" or stays at "Loading widget...".

    "Loading widget..." is legitimately visible for a moment while the widget
    manager fetches model state, so that one is given time to disappear; an
    error text never goes away by itself.
    """
    areas = outputs(page)
    # Loading first: once it is gone every widget has either rendered or failed.
    for text in reversed(WIDGET_FAILURE_TEXTS):
        expect(
            areas.get_by_text(text).filter(visible=True),
            f"a widget shows {text!r}",
        ).to_have_count(0, timeout=timeout_ms)


def _safe_state(page: Page, relpath: str | None) -> object:
    try:
        return notebook_state(page, relpath)
    except PlaywrightError as exc:
        return f"<unavailable: {exc}>"
