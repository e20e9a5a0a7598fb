"""The tool loop: the model calls the notebook's functions, their results go back, the answer comes."""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest

import vllm_magic
from tests.loopback import LoopbackServer, Reply
from tests.loopback.guided import guided
from tests.unit.notebook_shell import Shell, chat_bodies
from tests.unit.test_render import FakeClock, Recorder
from vllm_magic import Chat, Conversation, errors, tools
from vllm_magic.response import drive
from vllm_magic.sinks import CellSink

CALLED: list[tuple[str, object]] = []


class Unit(Enum):
    C = "C"
    F = "F"


def weather(city: str, unit: Unit = Unit.C) -> dict:
    """Today's weather in a city.

    Args:
        city: The city's name.
    """
    CALLED.append(("weather", (city, unit)))
    return {"city": city, "temperature": 18, "unit": unit.value}


def divide(a: float, b: float) -> float:
    """a divided by b."""
    CALLED.append(("divide", (a, b)))
    return a / b


def table(rows: int) -> pd.DataFrame:
    """A table of that many rows."""
    return pd.DataFrame({"n": range(rows), "square": [i * i for i in range(rows)]})


@pytest.fixture
def parser() -> Iterator[LoopbackServer]:
    """A server started with a tool parser (vLLM's --enable-auto-tool-choice --tool-call-parser hermes)."""
    with LoopbackServer(tool_call_parser="hermes") as server:
        yield server


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    CALLED.clear()
    yield
    tools.REGISTRY.clear()


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def test_a_call_runs_and_its_result_goes_back_before_the_answer(parser: LoopbackServer) -> None:
    parser.push(Reply.tool_calls(("weather", {"city": "Paris"})))
    parser.push(Reply.tokens(["It is 18 °C in Paris."], finish_reason="stop"))
    chat = Chat(parser.base_url)
    turn = chat.ask("Weather in Paris?", tools=[weather])
    assert CALLED == [("weather", ("Paris", Unit.C))], "the Enum argument arrives as the Enum"
    assert turn.text == "It is 18 °C in Paris." and turn.complete and turn.finish_reason == "stop"
    first, second = chat_bodies(parser)
    spec = first["tools"][0]["function"]
    assert spec["name"] == "weather" and spec["strict"] is True and first["tool_choice"] == "auto"
    assert spec["parameters"]["properties"]["city"]["description"] == "The city's name."
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert tool_messages(second) == [{"role": "tool", "tool_call_id": call["id"],
                                      "content": '{"city": "Paris", "temperature": 18, "unit": "C"}'}]
    assert turn.prompt_tokens == first_usage(parser, 0) + first_usage(parser, 1), "usage summed over requests"
    chat.ask("And tomorrow?")
    assert tool_messages(chat_bodies(parser)[2]) == tool_messages(second), "the next turn has the calls"


def first_usage(server: LoopbackServer, index: int) -> int:
    from tests.loopback.model import count_chat_tokens

    return count_chat_tokens(chat_bodies(server)[index]["messages"])


def test_parallel_calls_run_in_order_and_failures_go_back_to_the_model(parser: LoopbackServer) -> None:
    parser.push(Reply.tool_calls(("divide", {"a": 1, "b": 0}), ("divide", '{"a": "x"}'), ("nope", "{}"),
                                 ("weather", "{not json"), ("divide", {"a": 6, "b": 3})))
    parser.push(Reply.tokens(["done"], finish_reason="stop"))
    turn = Chat(parser.base_url).ask("Compute.", tools=[divide, weather])
    results = [m["content"] for m in tool_messages(chat_bodies(parser)[1])]
    assert results[0] == "Error: ZeroDivisionError: float division by zero"
    assert results[1].startswith("Error: ") and "'a'" in results[1] and "'b'" in results[1]
    assert results[2].startswith("Error: there is no tool named 'nope'")
    assert results[3].startswith("Error: the arguments are not valid JSON")
    assert results[4] == "2.0" and turn.text == "done"
    assert "Traceback" not in "".join(results)
    assert CALLED == [("divide", (1.0, 0.0)), ("divide", (6.0, 3.0))]


def test_the_loop_stops_after_max_rounds_with_an_answer(parser: LoopbackServer) -> None:
    for _ in range(3):
        parser.push(Reply.tool_calls(("divide", {"a": 1, "b": 1})))
    events = list(Chat(parser.base_url).stream("Loop.", tools=[divide], max_rounds=3).events())
    choices = [body["tool_choice"] for body in chat_bodies(parser)]
    assert choices == ["auto", "auto", "none"], "the last request must answer"
    assert len(CALLED) == 3, "a call the model made anyway is answered, so the history stays consistent"
    assert "stopped after 3 requests" in events[-1].text and "--max-rounds" in events[-1].text


def test_a_named_or_required_choice_forces_the_first_call_only(parser: LoopbackServer) -> None:
    parser.script_by(guided)
    Chat(parser.base_url).ask("Go.", tools=[weather, divide], tool_choice="weather", max_rounds=2)
    first, second = (body["tool_choice"] for body in chat_bodies(parser))
    assert first == {"type": "function", "function": {"name": "weather"}} and second == "none"
    assert [name for name, _ in CALLED] == ["weather"]


def test_a_server_without_a_tool_parser_gets_guided_json_calls(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.script_by(guided)
    ip.shell.user_ns["weather"] = weather
    out = ip.ok("%%chat --tools weather\nWeather in Paris?")
    assert "no tool parser" in out and "--enable-auto-tool-choice --tool-call-parser" in out
    assert "[tool] weather(" in out and '"name"' not in out, "the guided JSON itself is not shown"
    refused, call, answer = chat_bodies(loopback)
    assert "tools" in refused and "tools" not in call
    schema = call["response_format"]["json_schema"]["schema"]
    assert [b["properties"].get("name", {}).get("enum") for b in schema["anyOf"]] == [["weather"], None]
    assert tool_messages(answer) and ip.turns[-1].text == "bravo" and len(CALLED) == 1
    assert [type(p).__name__ for m in ip.turns[-1].replies for p in m.parts] == ["ToolCall", "ToolResult", "Text"]


def test_required_falls_back_too_and_its_first_call_is_forced(loopback: LoopbackServer) -> None:
    loopback.script_by(guided)
    Chat(loopback.base_url).ask("Go.", tools=[weather, divide], tool_choice="divide", max_rounds=2)
    Chat(loopback.base_url).ask("Go.", tools=[weather, divide], tool_choice="required", max_rounds=2)
    bodies = chat_bodies(loopback)
    assert [b.get("tool_choice") for b in bodies] == [{"type": "function", "function": {"name": "divide"}}, None,
                                                      None, "required", None, None]
    named, required = (bodies[i]["response_format"]["json_schema"]["schema"]["anyOf"] for i in (1, 4))
    assert [b["properties"]["name"]["enum"] for b in named] == [["divide"]]
    assert len(required) == 2 and all("name" in branch["properties"] for branch in required), "a call, no answer"
    assert "response_format" not in bodies[2] and "response_format" not in bodies[5], "the last answers freely"
    assert CALLED[0][0] == "divide" and len(CALLED) == 2, "the named call, then one of the two"


def test_json_on_request_sends_no_tools_field(loopback: LoopbackServer) -> None:
    loopback.script_by(guided)
    Chat(loopback.base_url).ask("Go.", tools=[weather], tool_choice="json")
    assert [("tools" in b, "response_format" in b) for b in chat_bodies(loopback)] == [(False, True), (False, True)]


def test_a_declined_call_is_reported_to_the_model(ip: Shell, parser: LoopbackServer, monkeypatch) -> None:
    parser.push(Reply.tool_calls(("weather", {"city": "Paris"})))
    parser.push(Reply.tokens(["ok"], finish_reason="stop"))
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    ip.shell.user_ns["weather"] = weather
    ip.ok(f"%vllm connect {parser.base_url}")
    ip.ok("%%chat --tools weather --confirm\nWeather?")
    assert asked == ['Run weather({"city": "Paris"})? [y/N] '] and CALLED == []
    assert tool_messages(chat_bodies(parser)[1])[0]["content"] == "Error: the user declined this call"


def test_ctrl_c_in_a_tool_stops_the_loop_and_keeps_what_happened(ip: Shell, parser: LoopbackServer) -> None:
    def slow(seconds: int) -> str:
        """Wait."""
        raise KeyboardInterrupt

    parser.push(Reply.tool_calls(("slow", {"seconds": 5}), pieces=["Let me wait."]))
    ip.shell.user_ns["slow"] = slow
    ip.ok(f"%vllm connect {parser.base_url}")
    out = ip.fails("%%chat --tools slow\nWait.", errors.Interrupted)
    (turn,) = ip.turns
    assert turn.status == "interrupted" and "Let me wait." in out
    assert [type(p).__name__ for m in turn.replies for p in m.parts] == ["Text", "ToolCall"]
    assert len(chat_bodies(parser)) == 1


def test_a_table_is_summarised_for_the_model_and_kept_whole(parser: LoopbackServer, tmp_path: Path) -> None:
    parser.push(Reply.tool_calls(("table", {"rows": 5000})))
    parser.push(Reply.tokens(["ok"], finish_reason="stop"))
    chat = Chat(parser.base_url)
    turn = chat.ask("Table?", tools=[table])
    sent = tool_messages(chat_bodies(parser)[1])[0]["content"]
    assert sent.startswith("DataFrame: 5,000 rows × 2 columns") and len(sent) <= 2000
    kept = turn.replies[1].parts[0].value
    assert isinstance(kept, pd.DataFrame) and len(kept) == 5000
    chat.conversation.save(tmp_path / "c.json")
    again = Conversation.load(tmp_path / "c.json").turns[0]
    assert again.replies[1].parts[0].content == sent and again.replies[1].parts[0].value is None
    assert again.messages() == turn.messages(), "the saved turn sends the same history"


def test_registered_tools_are_listed_and_found_by_name(ip: Shell, parser: LoopbackServer) -> None:
    @vllm_magic.tool
    def lookup(key: Literal["a", "b"]) -> str:
        """Look a key up."""
        return key.upper()

    out = ip.ok("%vllm tools")
    assert "lookup(key: string) — Look a key up." in out
    parser.push(Reply.tool_calls(("lookup", {"key": "b"})))
    parser.push(Reply.tokens(["B"], finish_reason="stop"))
    ip.ok(f"%vllm connect {parser.base_url}")
    ip.ok("%%chat --tools lookup\nLook b up.")
    assert tool_messages(chat_bodies(parser)[1])[0]["content"] == "B"


def test_bad_tool_options_are_one_paragraph_in_the_notebooks_words(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.fails("%%chat --tools nosuch\nhi", errors.ConfigError)
    assert "nosuch" in out and "%%chat --tools f,g" in out
    ip.shell.user_ns["weather"] = weather
    out = ip.fails("%%chat --tools weather --tool-choice sometimes\nhi", errors.ConfigError)
    assert "'sometimes'" in out and "--tool-choice" in out
    assert chat_bodies(loopback) == [], "nothing was sent"


def test_a_cell_shows_each_call_as_a_card_between_the_texts() -> None:
    with LoopbackServer(tool_call_parser="hermes") as server:
        server.push(Reply.tool_calls(("weather", {"city": "Paris"}), pieces=["Checking."]))
        server.push(Reply.tokens(["It is **18 °C**."], finish_reason="stop"))
        recorder = Recorder()
        drive(Chat(server.base_url).stream("Weather?", tools=[weather]),
              CellSink(publish=recorder, clock=FakeClock()))
    outputs = [bundle["text/html"] for bundle in recorder.final_outputs().values()]
    texts = [o for o in outputs if "Checking." in o or "<strong>18 °C</strong>" in o or "vm-tool" in o]
    assert len(texts) == 3 and "Checking." in texts[0] and "<strong>18 °C</strong>" in texts[2]
    card = texts[1]
    assert "<code>weather</code>" in card and "done in" in card and "&quot;temperature&quot;: 18" in card
    assert "running" not in "".join(outputs), "every card shows its result at the end"
