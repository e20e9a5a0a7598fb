"""A tool card and a logprobs token in real JupyterLab (Chromium): the trained tiny model calls the
notebook's function; the card opens on a click; hovering a shaded token shows its alternatives."""

from __future__ import annotations

import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the tests' conftest
from lab import (
    ARTIFACTS_DIR, LabServer, cell_outputs, open_notebook, run_all, start_run_all, wait_run_all, write_notebook,
)
from playwright.sync_api import Page, expect

TOOLS = '''
def get_weather(city: str) -> dict:
    """Current weather in a city."""
    return {"city": city, "temperature_c": 18, "sky": "cloudy"}

def convert_currency(amount: float, source: str, target: str) -> float:
    """Convert an amount of money."""
    return amount
'''


@pytest.fixture(scope="module")
def lab_env(vllm_chat) -> dict[str, str]:
    return {"VLLM_BASE_URL": vllm_chat.base_url, "VLLM_API_KEY": vllm_chat.api_key}


def test_a_tool_card_opens_and_a_token_shows_its_alternatives(page: Page, lab_server: LabServer) -> None:
    cells = ["%load_ext vllm_magic", TOOLS,
             f"%%chat --tools get_weather,convert_currency --temperature 0\n{tiny_corpus.WEATHER_PROMPT}",
             f"%%chat --logprobs 3 --temperature 0 --new\n{tiny_corpus.HELLO_PROMPT}"]
    open_notebook(page, lab_server, write_notebook(lab_server, "tools.ipynb", cells))
    run_all(page)
    answer = cell_outputs(page, 2)
    card = answer.locator("details.vm-tool")
    expect(card).to_have_count(1)
    expect(card.locator("summary")).to_contain_text("get_weather")
    expect(card.locator("summary")).to_contain_text("done in")
    expect(card.locator("pre").first).not_to_be_visible()  # folded until clicked
    card.locator("summary").click()
    expect(card.locator("pre").first).to_have_text('{"city": "Paris"}')
    expect(card.locator("pre").nth(1)).to_contain_text('"temperature_c": 18')
    expect(answer.filter(has_text="It is 18 °C and cloudy in Paris right now.")).to_have_count(1)
    shaded = cell_outputs(page, 3).locator(".vm-logprobs .vm-lp")
    expect(shaded.first).to_be_visible()
    assert shaded.count() >= 5
    token = shaded.first
    token.hover()
    hint = token.evaluate("el => getComputedStyle(el, '::after').content")
    assert "p = " in hint and "%" in hint, hint
    before = cell_outputs(page, 3).locator(".vm-lp").nth(1).evaluate(
        "el => getComputedStyle(el, '::after').content")
    assert before in ("none", "normal", ""), "only the hovered token shows its alternatives"
    card.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS_DIR / "tools-card-and-logprobs.png"))


def test_confirm_asks_in_jupyters_input_box_while_the_cell_runs(page: Page, lab_server: LabServer) -> None:
    cells = ["%load_ext vllm_magic", TOOLS,
             f"%%chat --tools get_weather,convert_currency --confirm --temperature 0\n{tiny_corpus.WEATHER_PROMPT}",
             f"%%chat --tools get_weather,convert_currency --confirm --temperature 0 --new\n{tiny_corpus.WEATHER_PROMPT}"]
    open_notebook(page, lab_server, write_notebook(lab_server, "confirm.ipynb", cells))
    start_run_all(page)
    for index, answer in ((2, "y"), (3, "n")):
        box = cell_outputs(page, index).locator("input.jp-Stdin-input")
        expect(box).to_be_visible(timeout=60_000)
        expect(cell_outputs(page, index).filter(has_text='Run get_weather({"city": "Paris"})? [y/N]')).to_have_count(1)
        box.fill(answer)
        box.press("Enter")
    wait_run_all(page)
    first, second = cell_outputs(page, 2), cell_outputs(page, 3)
    expect(first.filter(has_text="It is 18 °C and cloudy in Paris right now.")).to_have_count(1)
    expect(second.locator("details.vm-tool summary")).to_contain_text("the user declined this call")
