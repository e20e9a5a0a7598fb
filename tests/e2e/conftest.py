"""Fixtures for the browser tier: a real JupyterLab server driven by Playwright in Chromium.

Everything here follows /work/shared/BROWSER_TESTS.md (measured on this machine
kind): Debian's Chromium at ``/usr/bin/chromium`` (installed by
``scripts/install_browser.sh``, never by ``playwright install``, which cannot
download here), a token-less JupyterLab on 127.0.0.1 with its state in temp
dirs, and ``window.jupyterapp`` exposed so tests wait on JupyterLab's own state.

Fixtures
--------
``lab_env`` (session, ``{}``)
    Extra environment for the server and so for its kernels, e.g.
    ``{"VLLM_BASE_URL": ..., "VLLM_API_KEY": ...}``. Override it in a test module
    or a sub-directory conftest (at session or module scope).
``lab_server`` (module)
    A :class:`lab.LabServer` (``.url``, ``.root_dir``, ``.env``) started with
    ``lab_env``. Servers live for the whole session and are shared by every
    module that asks for the same ``lab_env``; the fixture is module-scoped only
    so that different modules may override ``lab_env`` differently and still get
    a server that really has their variables (a plain session fixture would
    silently hand the first module's server to all of them).
``browser`` (session)
    Headless Chromium launched through Playwright's sync API.
``page`` (function)
    A fresh context and page (1400x900). At teardown a screenshot is always
    written to ``test-artifacts/<test name>.png`` (and browser console errors to
    ``<test name>.console.txt``), pass or fail.

Helpers (``open_notebook``, ``run_all``, ``copy_notebook``, ...) are in ``lab.py``.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

E2E_DIR = Path(__file__).resolve().parent
# pytest's default "prepend" import mode already puts this directory on sys.path
# (tests/e2e has no __init__.py); do it explicitly so `import lab` also works
# under --import-mode=importlib, for this conftest and for the test modules.
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))

from lab import ARTIFACTS_DIR, REPO_ROOT, LabServer, start_lab_server  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_browser.sh"

#: From BROWSER_TESTS.md: without the background-networking flags Chromium floods
#: the closed network with refused connections; no sandbox because tests run as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 900}

#: Playwright's default of 5 s for ``expect`` is too tight for widget rendering on
#: two cores shared with a JupyterLab server, its kernels and Chromium.
EXPECT_TIMEOUT_MS = 20_000
ACTION_TIMEOUT_MS = 30_000
NAVIGATION_TIMEOUT_MS = 60_000
expect.set_options(timeout=EXPECT_TIMEOUT_MS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e as ``browser`` so ``-m "not browser"`` skips the tier.

    The hook sees the whole session's items, so it only touches ours.
    """
    for item in items:
        if E2E_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)


# --------------------------------------------------------------------------- server


class _LabServerPool:
    """Session-wide JupyterLab servers, one per distinct ``lab_env``."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._servers: dict[frozenset[tuple[str, str]], LabServer] = {}

    def get(self, extra_env: Mapping[str, str]) -> LabServer:
        key = frozenset(extra_env.items())
        server = self._servers.get(key)
        if server is None or server.process.poll() is not None:
            index = len(self._servers)
            log_path = ARTIFACTS_DIR / f"jupyterlab-server-{index}.log"
            log_path.unlink(missing_ok=True)
            server = start_lab_server(self._tmp_path_factory.mktemp(f"lab{index}"), extra_env, log_path)
            self._servers[key] = server
        return server

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


@pytest.fixture(scope="session")
def lab_env() -> dict[str, str]:
    """Extra environment variables for the JupyterLab server and its kernels (override me)."""
    return {}


@pytest.fixture(scope="session")
def _lab_server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_LabServerPool]:
    pool = _LabServerPool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="module")
def lab_server(_lab_server_pool: _LabServerPool, lab_env: Mapping[str, str]) -> LabServer:
    """The running JupyterLab for this module's ``lab_env`` (started once per session)."""
    return _lab_server_pool.get(lab_env)


@pytest.fixture(autouse=True)
def _shutdown_kernels_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shut the test's kernels down after it (and after its screenshot), if it used a server.

    Autouse fixtures are set up first and so torn down last, after ``page``.
    """
    yield
    if "lab_server" in request.fixturenames:
        server: LabServer = request.getfixturevalue("lab_server")
        server.shutdown_sessions()


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def _playwright() -> Iterator[Playwright]:
    playwright = sync_playwright().start()
    try:
        yield playwright
    finally:
        playwright.stop()


@pytest.fixture(scope="session")
def browser(_playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless, with the flags BROWSER_TESTS.md found necessary."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: run `bash {INSTALL_SCRIPT.relative_to(REPO_ROOT)}` "
            "(apt-get install chromium). Do not run `playwright install`: it cannot download here.",
            pytrace=False,
        )
    browser = _playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


def _artifact_stem(node_name: str) -> str:
    """A file-name-safe form of the test name (parametrized ids contain brackets etc.)."""
    return re.sub(r"[^\w.-]+", "_", node_name).strip("_") or "test"


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; its screenshot is saved at teardown whether the test passed or not."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    page = context.new_page()
    console: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            console.append(f"[{message.type}] {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: console.append(f"[pageerror] {error}"))
    try:
        yield page
    finally:
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        stem = _artifact_stem(request.node.name)
        try:
            page.screenshot(path=str(ARTIFACTS_DIR / f"{stem}.png"))
        except PlaywrightError as exc:  # a crashed page must not hide the test's own failure
            warnings.warn(f"could not save screenshot for {request.node.nodeid}: {exc}", stacklevel=1)
        console_path = ARTIFACTS_DIR / f"{stem}.console.txt"
        if console:
            console_path.write_text("\n".join(console) + "\n")
        else:
            console_path.unlink(missing_ok=True)
        context.close()
