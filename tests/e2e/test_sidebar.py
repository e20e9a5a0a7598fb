"""The "vLLM chat" right sidebar (our prebuilt labextension) in real JupyterLab.

The sidebar renders the kernel's own chat panel (``vllm_magic.panel.sidebar_model_id()``) with the
notebook's widget manager; the kernels here talk to the loopback vLLM look-alike. Screenshots
are in test-artifacts/ (plus test_sidebar_not_loaded.png, the sidebar offering to load the extension).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab import ARTIFACTS_DIR, LabServer, assert_no_widget_errors, cell_outputs, open_notebook, run_all, write_notebook
from playwright.sync_api import Locator, Page, expect

from tests.loopback import LoopbackServer

SIDEBAR = "#vllm-magic-sidebar"
NOT_LOADED = "This notebook's kernel has not loaded vllm_magic."


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


@pytest.fixture(scope="module")
def lab_env(loopback: LoopbackServer) -> dict[str, str]:
    """This module's kernels talk to the loopback server."""
    return {"VLLM_BASE_URL": loopback.base_url}


def sidebar(page: Page) -> Locator:
    return page.locator(SIDEBAR)


def shown(page: Page) -> Locator:
    """The sidebar's view of the current notebook: its chat panel, or why it cannot be shown."""
    return sidebar(page).locator(".jp-vllm-NotebookChat:visible")


def chat_panel(page: Page) -> Locator:
    return shown(page).locator(".vllm-magic-panel")


def open_sidebar_from_palette(page: Page) -> None:
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Open vLLM chat sidebar")
    page.locator(".lm-CommandPalette-item", has_text="Open vLLM chat sidebar").first.click()
    expect(sidebar(page)).to_be_visible()


def open_sidebar(page: Page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('vllm-magic:open-sidebar')")


def open_another_notebook(page: Page, relpath: str) -> None:
    """Open a second notebook in the same layout, as a tab beside the first, and wait for its kernel."""
    page.evaluate("(path) => window.jupyterapp.commands.execute('docmanager:open', {path})", relpath)
    page.wait_for_function(
        """(path) => {
          const panel = window.jupyterapp.shell.currentWidget;
          const kernel = panel && panel.context && panel.context.path === path
            && panel.sessionContext.session && panel.sessionContext.session.kernel;
          return !!kernel && panel.sessionContext.isReady && kernel.status === 'idle';
        }""",
        arg=relpath,
        timeout=90_000,
    )


def switch_to(page: Page, relpath: str) -> None:
    page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text=relpath).click()


def assert_sidebar_widgets_render(page: Page) -> None:
    for text in ("Loading widget...", "Error displaying widget"):
        expect(sidebar(page).get_by_text(text)).to_have_count(0)


def test_sidebar_offers_to_load_the_extension_then_hosts_a_working_chat(page: Page, lab_server: LabServer) -> None:
    name = write_notebook(lab_server, "sidebar_load.ipynb", [])
    open_notebook(page, lab_server, name)
    tab = page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{SIDEBAR[1:]}"]')
    expect(tab.locator("svg")).to_be_visible()

    open_sidebar_from_palette(page)
    expect(shown(page).locator(".jp-vllm-NotebookChat-header")).to_have_text(name)
    expect(shown(page).get_by_text(NOT_LOADED)).to_be_visible()
    page.screenshot(path=str(ARTIFACTS_DIR / "test_sidebar_not_loaded.png"))
    shown(page).get_by_role("button", name="Load vllm_magic").click()

    expect(chat_panel(page)).to_be_visible()
    expect(shown(page).get_by_text(NOT_LOADED)).to_have_count(0)
    chat_panel(page).locator("textarea").fill("Hello from the sidebar")
    chat_panel(page).locator("textarea").press("Enter")
    expect(chat_panel(page).locator(".vm-user", has_text="Hello from the sidebar")).to_be_visible()
    expect(chat_panel(page).locator(".vm-assistant")).to_contain_text("tokens")  # its footer: the answer is done
    assert_sidebar_widgets_render(page)


def test_sidebar_follows_the_active_notebook(page: Page, lab_server: LabServer) -> None:
    """Each notebook's own conversation (here, the turn of its %%chat cell) shows while it is active."""
    paths = {
        name: write_notebook(lab_server, f"{name}.ipynb", ["%load_ext vllm_magic", f"%%chat\nQuestion from {name}"])
        for name in ("first", "second")
    }
    open_notebook(page, lab_server, paths["first"])
    run_all(page)
    open_another_notebook(page, paths["second"])
    run_all(page)

    open_sidebar(page)
    for current, other in (("second", "first"), ("first", "second"), ("second", "first")):
        switch_to(page, paths[current])
        expect(shown(page).locator(".jp-vllm-NotebookChat-header")).to_have_text(paths[current])
        expect(chat_panel(page).get_by_text(f"Question from {current}")).to_be_visible()
        expect(chat_panel(page).get_by_text(f"Question from {other}")).to_have_count(0)
    assert_sidebar_widgets_render(page)

    page.evaluate("() => window.jupyterapp.shell.currentWidget.dispose()")  # close "second", unsaved
    expect(shown(page).locator(".jp-vllm-NotebookChat-header")).to_have_text(paths["first"])
    expect(sidebar(page).locator(".jp-vllm-NotebookChat")).to_have_count(1)  # second's view went with it


def test_a_cell_opens_the_sidebar(page: Page, lab_server: LabServer) -> None:
    name = write_notebook(lab_server, "sidebar_cell.ipynb", ["%load_ext vllm_magic", "%vllm sidebar"])
    open_notebook(page, lab_server, name)
    expect(sidebar(page)).to_be_hidden()
    run_all(page)

    expect(chat_panel(page)).to_be_visible()
    # The request was replaced by text once rendered: saving the notebook does not keep it.
    expect(cell_outputs(page, 1)).to_have_text("Asked JupyterLab to open the vLLM chat sidebar (right side); other front ends have no sidebar: use `%vllm panel` there.")
    assert_sidebar_widgets_render(page)
    assert_no_widget_errors(page)


def test_after_a_kernel_restart_the_sidebar_offers_to_load_again(page: Page, lab_server: LabServer) -> None:
    name = write_notebook(lab_server, "sidebar_restart.ipynb", ["%load_ext vllm_magic"])
    open_notebook(page, lab_server, name)
    run_all(page)
    open_sidebar(page)
    expect(chat_panel(page)).to_be_visible()

    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.restartKernel()")
    expect(shown(page).get_by_text(NOT_LOADED)).to_be_visible(timeout=60_000)
    shown(page).get_by_role("button", name="Load vllm_magic").click()
    expect(chat_panel(page)).to_be_visible()
    assert_sidebar_widgets_render(page)
