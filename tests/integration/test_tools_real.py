"""Notebook functions as tools, against real vLLM servers: the trained model calling a tool on its own
(hermes parser), a named and a required choice whose arguments vLLM holds to the schema, and the
guided-JSON fallback on a server without a tool parser (where even the random model's calls are valid
by construction)."""

from __future__ import annotations

import re

from typing import Annotated, Any, Literal

import pytest
import tiny_corpus  # scripts/tiny_corpus.py, loaded by the root conftest
from pydantic import Field

from vllm_magic import Chat
from vllm_magic.toolloop import ToolCalled, ToolNote

CALLS: list[tuple[str, Any]] = []


def get_weather(city: str) -> dict:
    """Current weather in a city."""
    CALLS.append(("get_weather", city))
    return tiny_corpus.WEATHER_RESULT


def convert_currency(amount: float, source: str, target: str) -> float:
    """Convert an amount of money."""
    CALLS.append(("convert_currency", (amount, source, target)))
    return amount


def pick(color: Literal["red", "green", "blue"], count: Annotated[int, Field(ge=1, le=9)]) -> str:
    """Pick a number of coloured balls."""
    CALLS.append(("pick", (color, count)))
    return f"{count} {color}"


@pytest.fixture(autouse=True)
def clean() -> None:
    CALLS.clear()


def parts(turn) -> list[str]:
    return [type(p).__name__ for m in turn.replies for p in m.parts]


def test_the_trained_model_calls_a_tool_and_answers_with_its_result(vllm_chat) -> None:
    chat = Chat(vllm_chat.base_url, api_key=vllm_chat.api_key, temperature=0)
    turn = chat.ask(tiny_corpus.WEATHER_PROMPT, tools=[get_weather, convert_currency])
    assert CALLS == [("get_weather", "Paris")]
    assert turn.text == tiny_corpus.WEATHER_ANSWER and turn.finish_reason == "stop"
    assert parts(turn) == ["ToolCall", "ToolResult", "Text"] and not turn.usage_estimated


@pytest.mark.parametrize("choice", ["pick", "required"])
def test_a_forced_call_of_an_unknown_tool_holds_to_its_schema(vllm_chat, choice: str) -> None:
    """The model never saw `pick`: vLLM's guided decoding (strict: true) makes its arguments valid."""
    chat = Chat(vllm_chat.base_url, api_key=vllm_chat.api_key, temperature=1.0)
    turn = chat.ask(tiny_corpus.HELLO_PROMPT, tools=[pick], tool_choice=choice, max_rounds=2, max_tokens=450)
    assert [name for name, _ in CALLS] == ["pick"]
    color, count = CALLS[0][1]
    assert color in ("red", "green", "blue") and 1 <= count <= 9
    assert parts(turn)[:2] == ["ToolCall", "ToolResult"] and turn.replies[1].parts[0].error is None


def test_without_a_tool_parser_calls_come_as_guided_json(vllm_random) -> None:
    chat = Chat(vllm_random.base_url, api_key=vllm_random.api_key, temperature=1.0)
    events = list(chat.stream("Pick some.", tools=[pick], tool_choice="required", max_rounds=2,
                              max_tokens=450).events())
    (note,) = [e for e in events if type(e) is ToolNote]
    assert "no tool parser" in note.text
    (called,) = [e for e in events if type(e) is ToolCalled]
    assert called.result.error is None and [name for name, _ in CALLS] == ["pick"]
    color, count = CALLS[0][1]
    assert color in ("red", "green", "blue") and 1 <= count <= 9
    turn = chat.history[-1]
    assert parts(turn)[:2] == ["ToolCall", "ToolResult"]


def test_the_tools_and_images_notebook_runs_on_the_real_servers(vllm_chat, vllm_vision) -> None:
    import os
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[2]
    notebook = nbformat.read(root / "notebooks" / "tools_and_images.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    env.update(VLLM_BASE_URL=vllm_chat.base_url, VLLM_API_KEY=vllm_chat.api_key,
               VLLM_VISION_URL=vllm_vision.base_url, VLLM_VISION_API_KEY=vllm_vision.api_key)
    NotebookClient(notebook, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute(env=env)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert 'class="vm-tool"' in shown and tiny_corpus.WEATHER_ANSWER in shown
    assert 'class="vm-lp"' in shown and 'class="vm-samples"' in shown and "Kept sample 2" in printed
    counts = re.search(r"prompt tokens: (\d+) without the image, (\d+) with it", printed)
    assert counts and int(counts.group(2)) > int(counts.group(1)), printed
    assert vllm_chat.api_key not in nbformat.writes(notebook)
