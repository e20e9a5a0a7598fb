"""End-to-end proof of the browser harness itself, independent of vllm_magic.

Each behaviour the real tests rely on is exercised once on a notebook built
here with nbformat: in-place display updates (what a streaming ``%%chat``
does), an ipywidgets round trip through a button click, and environment
variables reaching the kernel through ``lab_env`` (how tests point the kernel
at a vLLM server).
"""

from __future__ import annotations

import pytest
from lab import (
    LabServer,
    assert_no_widget_errors,
    cell_outputs,
    open_notebook,
    output_count_in_model,
    outputs,
    run_all,
    write_notebook,
)
from playwright.sync_api import Page, expect

PROBE_VAR = "VLLM_MAGIC_E2E_PROBE"
PROBE_VALUE = "probe-value-7f3a"


@pytest.fixture(scope="session")
def lab_env() -> dict[str, str]:
    """Give this module's server (and so its kernels) a variable to look for."""
    return {PROBE_VAR: PROBE_VALUE}


DISPLAY_UPDATE_CELL = """\
from IPython.display import HTML, Markdown, display

h = display(Markdown("*working...*"), display_id=True)
for step in range(5):
    h.update(HTML(f"<p>step {step}</p>"))
h.update(HTML(
    "<h3>Done</h3>"
    "<table class='e2e-result'><tr><th>metric</th><th>value</th></tr>"
    "<tr><td>tokens</td><td>42</td></tr></table>"
))
"""

WIDGET_CELL = """\
import ipywidgets as widgets
from IPython.display import display

status = widgets.HTML("<b>waiting for a click</b>")
button = widgets.Button(description="Press me")
clicks = []

def on_click(_button):
    clicks.append(1)
    status.value = f"<b>pressed {len(clicks)} time(s)</b>"

button.on_click(on_click)
display(widgets.VBox([status, button]))
"""

ENV_CELL = f"""\
import os
print("probe=" + os.environ["{PROBE_VAR}"])
"""


def test_display_updates_render_in_place(page: Page, lab_server: LabServer) -> None:
    """Repeated ``h.update(...)`` leaves one output holding the final HTML."""
    name = write_notebook(lab_server, "display_update.ipynb", [DISPLAY_UPDATE_CELL])
    open_notebook(page, lab_server, name)
    run_all(page)

    items = cell_outputs(page, 0)
    expect(items.locator("h3", has_text="Done")).to_be_visible()
    table = items.locator("table.e2e-result")
    expect(table).to_be_visible()
    expect(table.locator("td", has_text="42")).to_be_visible()
    expect(items).to_have_count(1)
    expect(items.get_by_text("working...")).to_have_count(0)
    expect(items.get_by_text("step 4")).to_have_count(0)
    assert output_count_in_model(page, 0) == 1


def test_widget_button_click_updates_html(page: Page, lab_server: LabServer) -> None:
    """A click on an ipywidgets Button reaches the kernel and the HTML widget re-renders."""
    name = write_notebook(lab_server, "widgets.ipynb", [WIDGET_CELL])
    open_notebook(page, lab_server, name)
    run_all(page)

    rendered = outputs(page)
    expect(rendered.get_by_text("waiting for a click")).to_be_visible()
    assert_no_widget_errors(page)

    rendered.get_by_role("button", name="Press me").click()
    expect(rendered.get_by_text("pressed 1 time(s)")).to_be_visible()
    expect(rendered.get_by_text("waiting for a click")).to_have_count(0)
    assert_no_widget_errors(page)


def test_lab_env_reaches_the_kernel(page: Page, lab_server: LabServer) -> None:
    """Variables from ``lab_env`` are in the kernel's ``os.environ``."""
    assert lab_server.env == {PROBE_VAR: PROBE_VALUE}
    name = write_notebook(lab_server, "env_probe.ipynb", [ENV_CELL])
    open_notebook(page, lab_server, name)
    run_all(page)

    expect(cell_outputs(page, 0).get_by_text(f"probe={PROBE_VALUE}")).to_be_visible()
