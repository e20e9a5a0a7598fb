"""Structured answers: constraints asked of the server, answers validated here, values into Python."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs it for a TypedDict before Python 3.12

from tests.loopback import LoopbackTransport, Reply
from tests.unit.notebook_shell import Shell, chat_bodies
from vllm_magic import Chat, Client, Connection, Conversation, errors
from vllm_magic.conversation import Status
from vllm_magic.structured import constraint


class Person(pydantic.BaseModel):
    name: str
    age: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


def chat_on(transport: LoopbackTransport) -> Chat:
    return Chat(connection=Connection(client=Client(transport.base_url, transport=transport)))


@pytest.mark.parametrize("spec, text, expected", [
    (Person, '{"name": "Ada", "age": 36}', Person(name="Ada", age=36)),
    (Point, '{"x": 1, "y": 2}', {"x": 1, "y": 2}),
    (Movie, '{"title": "Up", "year": 2009}', {"title": "Up", "year": 2009}),
    ({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}, '{"n": 3}', {"n": 3}),
    ("name str, age int, tags list[str], score float?", '{"name": "a", "age": 1, "tags": ["x"], "score": null}',
     {"name": "a", "age": 1, "tags": ["x"], "score": None}),
])
def test_schemas_from_models_dataclasses_typeddicts_json_schema_and_inline(spec, text, expected) -> None:
    shape = constraint(schema=spec)
    fields = shape.request_fields("0.32.0")["response_format"]
    assert fields["type"] == "json_schema" and fields["json_schema"]["schema"]["type"] == "object"
    value = shape.parse(text, "stop")
    assert (value.model_dump() if isinstance(value, pydantic.BaseModel) else value) == \
        (expected.model_dump() if isinstance(expected, pydantic.BaseModel) else expected)
    assert type(value) is type(expected)


def test_an_answer_that_does_not_validate_is_never_returned_as_valid() -> None:
    shape = constraint(schema=Person)
    for text in ('{"name": "Ada"}', '{"name": "Ada", "age": "old"}', "not json at all", '["list"]'):
        with pytest.raises(errors.StructuredError) as info:
            shape.parse(text, "stop")
        assert info.value.raw == text and "raw text is kept" in str(info.value)
    with pytest.raises(errors.StructuredError, match="cut by max_tokens") as info:
        shape.parse('{"name": "Ad', "length")
    assert "max_tokens" in info.value.fix
    with pytest.raises(errors.StructuredError, match="not an object"):
        constraint(json=True).parse("[1, 2]", "stop")


def test_choice_regex_and_grammar_ask_vllm_in_the_fields_its_version_understands() -> None:
    choice = constraint(choice="pos|neg|neutral")
    assert choice.request_fields("0.32.0") == {"structured_outputs": {"choice": ["pos", "neg", "neutral"]}}
    assert choice.request_fields("0.10.2") == {"guided_choice": ["pos", "neg", "neutral"]}
    assert choice.request_fields(None) == {"structured_outputs": {"choice": ["pos", "neg", "neutral"]}}
    assert constraint(choice=Mood).choices == ("happy", "sad")
    assert constraint(choice="LABELS", namespace={"LABELS": ["a", "b"]}).choices == ("a", "b")
    with pytest.raises(errors.StructuredError, match="not one of"):
        choice.parse("positive", "stop")
    regex = constraint(regex=r"[0-9]{3}")
    assert regex.request_fields("0.32.0") == {"structured_outputs": {"regex": "[0-9]{3}"}}
    assert regex.parse("123", "stop") == "123"
    with pytest.raises(errors.StructuredError, match="does not match"):
        regex.parse("12a", "stop")
    assert constraint(grammar='root ::= "yes" | "no"').request_fields("0.11.0") == {"guided_grammar": 'root ::= "yes" | "no"'}
    assert constraint(json=True).request_fields(None) == {"response_format": {"type": "json_object"}}


@pytest.mark.parametrize("kwargs, words", [
    ({"json": True, "choice": "a|b"}, "Only one answer shape"),
    ({"regex": "[0-9"}, "does not compile"),
    ({"choice": "only"}, "at least two"),
    ({"schema": "name strng"}, "is not a type"),
    ({"schema": 42}, "A schema is"),
    ({"schema": {"type": "objekt"}}, "not valid"),
])
def test_bad_constraints_are_clear_errors(kwargs, words) -> None:
    with pytest.raises(errors.ConfigError, match=words):
        constraint(**kwargs)


def test_columns_and_rows_for_tables() -> None:
    assert constraint(schema=Person).columns() == {"name": "string", "age": "Int64"}
    assert constraint(schema=Person).row(Person(name="a", age=1)) == {"name": "a", "age": 1}
    assert constraint(choice="x|y").columns() == {"answer": "category"}
    assert constraint(regex="a+").columns() is None and constraint(regex="a+").row("aa") == {"answer": "aa"}


def test_ask_with_a_schema_gives_a_turn_whose_value_is_the_model(tmp_path: Path) -> None:
    transport = LoopbackTransport()
    transport.push(Reply.tokens(['{"name": ', '"Ada", "age": 36}'], finish_reason="stop"))
    chat = chat_on(transport)
    turn = chat.ask("Who?", schema=Person)
    assert turn.value == Person(name="Ada", age=36) and turn.text == '{"name": "Ada", "age": 36}'
    sent = transport.requests[-1].json
    assert sent["response_format"]["json_schema"]["name"] == "Person"
    saved = chat.conversation.save(tmp_path / "c.json")
    assert Conversation.load(saved).turns[0].value == {"name": "Ada", "age": 36}, "saved as plain data"


def test_a_server_that_ignores_the_constraint_gives_an_error_and_keeps_the_raw_text() -> None:
    transport = LoopbackTransport()
    transport.push(Reply.tokens(["Sure! Ada is 36."], finish_reason="stop"))
    chat = chat_on(transport)
    with pytest.raises(errors.StructuredError) as info:
        chat.ask("Who?", schema=Person)
    assert "chat.undo()" in str(info.value)
    (turn,) = chat.history
    assert turn.status == Status.FAILED and turn.text == "Sure! Ada is 36." and turn.value is None


def test_choice_reaches_an_old_vllm_as_guided_choice() -> None:
    transport = LoopbackTransport(vllm_version="0.10.1")
    transport.push(Reply.tokens(["pos"], finish_reason="stop"))
    chat = chat_on(transport)
    assert chat.ask("Mood?", choice=["pos", "neg"]).value == "pos"
    assert transport.requests[-1].json["guided_choice"] == ["pos", "neg"]


def test_cells_ask_for_shapes_and_store_values(ip: Shell, loopback) -> None:
    ip.shell.user_ns.update(Person=Person, LABELS=["yes", "no"])
    loopback.push(Reply.tokens(['{"name": "Ada", "age": 36}'], finish_reason="stop"))
    out = ip.ok("%%chat --schema Person --out person\nWho?")
    assert ip.shell.user_ns["person"] == Person(name="Ada", age=36)
    assert "Ada" in out.split("]")[-1], "the value is shown after the streamed text"
    loopback.push(Reply.tokens(["yes"], finish_reason="stop"))
    ip.ok("%%chat --choice LABELS --out answer\nOK?")
    assert chat_bodies(loopback)[-1]["structured_outputs"] == {"choice": ["yes", "no"]}
    assert ip.shell.user_ns["answer"] == "yes"
    loopback.push(Reply.tokens(["123"], finish_reason="stop"))
    ip.ok("%%chat --regex [0-9]{3} --once\nA number")
    assert chat_bodies(loopback)[-1]["structured_outputs"] == {"regex": "[0-9]{3}"}, "the regex arrives verbatim"
    loopback.push(Reply.tokens(['{"a": [1, {"b": 2}]}'], finish_reason="stop"))
    out = ip.ok("%%chat --json --out data\nNested")
    assert ip.shell.user_ns["data"] == {"a": [1, {"b": 2}]} and '"b": 2' in out
    out = ip.fails("%%chat --json --choice LABELS\nBoth?", errors.ConfigError)
    assert "--json, --schema" in out, "the fix in the cell's own words"
