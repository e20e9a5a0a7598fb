"""Notebook functions as tools: schemas from signatures and docstrings, checked calls, summaries."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import jsonschema
import numpy as np
import pandas as pd
import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs it for a TypedDict before Python 3.12

from vllm_magic import errors, tools
from vllm_magic.errors import PYTHON_FIXES
from vllm_magic.notebook_fixes import NOTEBOOK_FIXES
from vllm_magic.tools import Outcome, Tool, describe, resolve, summarise, tool, union_schema


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Tool]]:
    """Each test registers into its own registry."""
    registry: dict[str, Tool] = {}
    monkeypatch.setattr(tools, "REGISTRY", registry)
    yield registry


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Address(pydantic.BaseModel):
    street: str
    city: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


def weather(city: str, days: int = 1, unit: Unit = Unit.CELSIUS, mode: Literal["brief", "full"] = "brief") -> str:
    """Today's weather in a city.

    Answers in one line.

    Args:
        city (str): The city's name,
            e.g. "Paris".
        days: How many days ahead.

    Returns:
        The forecast.
    """
    return f"{city}: sunny for {days} day(s) in {unit.value} ({mode})"


def schema_of(fn: Any) -> dict[str, Any]:
    return describe(fn).parameters


def properties_of(fn: Any) -> dict[str, Any]:
    return schema_of(fn)["properties"]


# --- the schema --------------------------------------------------------------------------------


def test_annotated_parameters_become_typed_properties_and_defaults_are_not_required() -> None:
    schema = schema_of(weather)

    assert schema["type"] == "object"
    assert schema["properties"]["city"]["type"] == "string"
    assert schema["properties"]["days"] == {"default": 1, "description": "How many days ahead.", "type": "integer"}
    assert schema["required"] == ["city"]
    assert schema["additionalProperties"] is False


def test_a_literal_argument_becomes_an_enum() -> None:
    assert properties_of(weather)["mode"]["enum"] == ["brief", "full"]


def test_an_enum_argument_is_described_by_its_values() -> None:
    schema = schema_of(weather)

    ref = schema["properties"]["unit"]["$ref"].rsplit("/", 1)[-1]
    assert schema["$defs"][ref]["enum"] == ["celsius", "fahrenheit"]
    assert schema["properties"]["unit"]["default"] == "celsius"


def deliver(to: Address, at: Point, movie: Movie, tags: list[str], note: Optional[str] = None) -> str:
    return ""


def test_nested_models_dataclasses_and_typeddicts_keep_their_defs() -> None:
    schema = schema_of(deliver)

    assert set(schema["$defs"]) == {"Address", "Point", "Movie"}
    assert schema["properties"]["to"] == {"$ref": "#/$defs/Address"}
    assert schema["$defs"]["Point"]["properties"]["x"]["type"] == "integer"
    assert schema["properties"]["tags"] == {"items": {"type": "string"}, "type": "array"}
    assert {"type": "null"} in schema["properties"]["note"]["anyOf"]
    jsonschema.validate({"to": {"street": "1 Main", "city": "Oslo"}, "at": {"x": 1, "y": 2},
                         "movie": {"title": "Heat", "year": 1995}, "tags": []}, schema)


def test_pydantic_titles_are_left_out_but_a_property_named_title_is_kept() -> None:
    def pick(title: str, movie: Movie) -> str:
        return title

    schema = schema_of(pick)

    assert "title" not in schema and "title" not in schema["properties"]["title"]
    assert "title" in schema["properties"] and "title" in schema["$defs"]["Movie"]["properties"]


def scaled(x: Annotated[int, pydantic.Field(ge=1, description="The factor, at least 1.")]) -> int:
    """Scale.

    Args:
        x: What the docstring says.
    """
    return x


def test_an_annotated_field_carries_its_constraint_and_its_description_wins_over_the_docstring() -> None:
    assert properties_of(scaled)["x"] == {"description": "The factor, at least 1.", "minimum": 1, "type": "integer"}


def test_spec_is_an_openai_tools_entry_and_strict_is_carried_only_when_asked() -> None:
    spec = describe(weather).spec()

    assert spec["type"] == "function"
    assert set(spec["function"]) == {"name", "description", "parameters"}
    assert spec["function"]["name"] == "weather"
    assert describe(weather).spec(strict=True)["function"]["strict"] is True
    json.dumps(spec)  # all of it goes over the wire


def test_describe_can_rename_a_function() -> None:
    assert describe(weather, name="forecast").name == "forecast"


# --- descriptions from the docstring -----------------------------------------------------------


def test_google_docstring_gives_the_description_and_each_arguments_text() -> None:
    described = describe(weather)

    assert described.description == "Today's weather in a city.\n\nAnswers in one line."
    assert described.parameters["properties"]["city"]["description"] == 'The city\'s name, e.g. "Paris".'
    assert described.parameters["properties"]["days"]["description"] == "How many days ahead."
    assert "description" not in described.parameters["properties"]["mode"]


def test_numpy_docstring_gives_each_arguments_text() -> None:
    def convert(amount: float, currency: str = "EUR") -> float:
        """Convert money.

        Parameters
        ----------
        amount : float
            How much,
            in the source currency.
        currency : str, optional
            The target currency.

        Returns
        -------
        float
            The converted amount.
        """
        return amount

    described = describe(convert)

    assert described.description == "Convert money."
    assert described.parameters["properties"]["amount"]["description"] == "How much, in the source currency."
    assert described.parameters["properties"]["currency"]["description"] == "The target currency."


def test_sphinx_docstring_gives_each_arguments_text() -> None:
    def search(query: str, limit: int = 10) -> list[str]:
        """Search the notes.

        :param query: Words to look for,
            all of them.
        :param int limit: At most this many hits.
        :returns: The matching titles.
        """
        return []

    described = describe(search)

    assert described.description == "Search the notes."
    assert described.parameters["properties"]["query"]["description"] == "Words to look for, all of them."
    assert described.parameters["properties"]["limit"]["description"] == "At most this many hits."


def test_a_function_without_a_docstring_has_an_empty_description() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    described = describe(add)

    assert described.description == ""
    assert all("description" not in p for p in described.parameters["properties"].values())


# --- functions that cannot be tools ------------------------------------------------------------


def test_an_unannotated_parameter_is_refused_naming_the_function_and_the_parameter() -> None:
    def lookup(key):
        return key

    with pytest.raises(errors.ConfigError) as caught:
        describe(lookup)

    assert "`lookup`" in str(caught.value) and "`key`" in str(caught.value)
    assert "its parameter `key` has no type annotation" in str(caught.value)
    assert caught.value.hint == "tool_signature"
    assert "Literal[...]" in caught.value.fix


@pytest.mark.parametrize("stars", ["*", "**"])
def test_star_args_are_refused(stars: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def spread(a: int, {stars}rest: int) -> None: pass", namespace)

    with pytest.raises(errors.ConfigError, match=rf"`spread`.*`{re.escape(stars)}rest`"):
        describe(namespace["spread"])


def total(table: pd.DataFrame, column: str) -> float:
    return float(table[column].sum())


def test_a_parameter_pydantic_cannot_describe_is_named_with_why_and_how_to_fix() -> None:
    with pytest.raises(errors.ConfigError) as caught:
        describe(total)

    message = str(caught.value)
    assert "`total`" in message and "`table`" in message and "`column`" not in message
    assert "DataFrame" in message and "JSON Schema" in message
    assert "arbitrary_types_allowed" not in message  # pydantic's advice does not apply to a tool
    assert caught.value.fix_in(NOTEBOOK_FIXES) != ""


class Connection:
    pass


def test_an_arbitrary_class_parameter_is_refused() -> None:
    def query(connection: Connection, sql: str) -> None:
        pass

    with pytest.raises(errors.ConfigError, match="`query`.* its parameter `connection` has the type Connection"):
        describe(query)


def test_an_async_function_is_refused_by_name() -> None:
    async def fetch(url: str) -> str:
        return url

    with pytest.raises(errors.ConfigError, match="`fetch` is async") as caught:
        describe(fetch)
    assert caught.value.hint == "sync_tool"


def test_an_annotation_naming_something_undefined_is_refused_by_function() -> None:
    def plan(route: Itinerary) -> None:  # noqa: F821 - the point of the test
        pass

    with pytest.raises(errors.ConfigError, match=r"`plan`.*undefined.*Itinerary"):
        describe(plan)


def test_a_lambda_needs_a_name() -> None:
    with pytest.raises(errors.ConfigError, match="'<lambda>'"):
        describe(lambda x: x)


# --- running a call ----------------------------------------------------------------------------


def test_run_calls_the_function_with_validated_arguments_and_times_it() -> None:
    outcome = describe(weather).run('{"city": "Oslo", "days": "3"}')  # a numeric string is accepted as int

    assert outcome.ok and outcome.error is None
    assert outcome.value == "Oslo: sunny for 3 day(s) in celsius (brief)"
    assert outcome.arguments == {"city": "Oslo", "days": "3"}
    assert 0 <= outcome.seconds < 5
    assert outcome.for_model() == outcome.value


def test_an_empty_argument_string_is_a_call_without_arguments() -> None:
    def now() -> str:
        return "noon"

    assert describe(now).run("").value == "noon"


def test_arguments_that_are_not_json_are_an_error_without_a_call() -> None:
    calls = []

    def note(text: str) -> None:
        calls.append(text)

    outcome = describe(note).run('{"text": "unterminated')

    assert not outcome.ok and outcome.arguments is None
    assert outcome.error is not None and outcome.error.startswith("the arguments are not valid JSON: ")
    assert calls == []
    assert outcome.for_model().startswith("Error: the arguments are not valid JSON")


def test_a_json_array_is_not_arguments() -> None:
    outcome = describe(weather).run('["Oslo"]')

    assert outcome.error == "the arguments are a JSON list, not an object of named arguments"


def test_a_wrong_type_is_named_in_one_line() -> None:
    outcome = describe(weather).run('{"city": "Oslo", "days": "many"}')

    assert outcome.error is not None
    assert "'days'" in outcome.error and "'many'" in outcome.error and "valid integer" in outcome.error
    assert "\n" not in outcome.error and "errors.pydantic.dev" not in outcome.error
    assert outcome.arguments == {"city": "Oslo", "days": "many"}


def test_a_missing_argument_is_named() -> None:
    assert describe(weather).run('{"days": 2}').error == "the argument 'city' is missing"


def test_an_unknown_argument_is_named_with_the_ones_the_tool_takes() -> None:
    error = describe(weather).run('{"city": "Oslo", "country": "NO"}').error

    assert error == "'country' is not an argument of weather (it takes city, days, unit, mode)"


def test_a_literal_outside_its_values_is_refused() -> None:
    error = describe(weather).run('{"city": "Oslo", "mode": "long"}').error

    assert error is not None and "'mode'" in error and "'brief' or 'full'" in error


def test_an_exception_becomes_its_type_and_message_without_traceback() -> None:
    def divide(x: float, y: float) -> float:
        if y == 0:
            raise ValueError("y must not be 0\n(you asked for x / 0)")
        return x / y

    outcome = describe(divide).run('{"x": 1, "y": 0}')

    assert outcome.error == "ValueError: y must not be 0 (you asked for x / 0)"
    assert outcome.value is None and outcome.arguments == {"x": 1, "y": 0}
    assert outcome.for_model() == "Error: ValueError: y must not be 0 (you asked for x / 0)"
    assert "Traceback" not in outcome.for_model()


def test_keyboard_interrupt_in_a_tool_propagates() -> None:
    def slow() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        describe(slow).run("{}")


def test_enum_and_model_arguments_arrive_as_instances() -> None:
    received: dict[str, Any] = {}

    def ship(to: Address, at: Point, unit: Unit, movie: Movie) -> None:
        received.update(to=to, at=at, unit=unit, movie=movie)

    outcome = describe(ship).run(json.dumps({"to": {"street": "1 Main", "city": "Oslo"}, "at": {"x": 1, "y": 2},
                                             "unit": "fahrenheit", "movie": {"title": "Heat", "year": 1995}}))

    assert outcome.ok
    assert received == {"to": Address(street="1 Main", city="Oslo"), "at": Point(1, 2), "unit": Unit.FAHRENHEIT,
                        "movie": {"title": "Heat", "year": 1995}}
    assert type(received["to"]) is Address and type(received["at"]) is Point


def test_a_nested_wrong_value_names_its_path() -> None:
    error = describe(deliver).run(json.dumps({"to": {"street": "1 Main"}, "at": {"x": 1, "y": 2},
                                              "movie": {"title": "Heat", "year": 1995}, "tags": []})).error

    assert error == "the argument 'to.city' is missing"


def test_parameters_named_like_pydantic_methods_work_silently(recwarn: pytest.WarningsRecorder) -> None:
    def render(json: str, copy: int = 1) -> str:
        return json * copy

    assert describe(render).run('{"json": "ab", "copy": 2}').value == "abab"
    assert not [w for w in recwarn if "shadows" in str(w.message)]


def test_positional_only_parameters_are_passed_by_position() -> None:
    namespace: dict[str, Any] = {}
    exec("def power(base: int, /, exponent: int = 2) -> int: return base ** exponent", namespace)

    assert describe(namespace["power"]).run('{"base": 3, "exponent": 3}').value == 27


def test_a_tool_built_by_hand_checks_its_arguments_with_its_schema() -> None:
    def echo(word: str) -> str:
        return word

    by_hand = Tool("echo", "Echo a word.", {"type": "object", "properties": {"word": {"type": "string"}},
                                            "required": ["word"], "additionalProperties": False}, echo)

    assert by_hand.run('{"word": "hi"}').value == "hi"
    assert by_hand.run('{"word": 5}').error == "the argument 'word': 5 is not of type 'string'"


# --- summaries ---------------------------------------------------------------------------------


def test_a_long_string_is_cut_to_the_budget_saying_how_much_was_cut() -> None:
    summary = summarise("x" * 5000, budget=300)

    kept = summary.index("\u2026")
    assert len(summary) == 300
    assert summary == "x" * kept + f"\u2026 [cut: {5000 - kept} more characters]"
    assert summarise("short", budget=300) == "short"


@pytest.mark.parametrize("value, expected", [(None, "null"), (True, "true"), (3, "3"), (2.5, "2.5"),
                                             (np.int64(7), "7"), (Unit.CELSIUS, '"celsius"')])
def test_scalars_are_json(value: Any, expected: str) -> None:
    assert summarise(value) == expected


def test_plain_data_models_and_dataclasses_are_json() -> None:
    assert json.loads(summarise({"a": [1, 2], "unit": Unit.CELSIUS})) == {"a": [1, 2], "unit": "celsius"}
    assert json.loads(summarise((1, "b"))) == [1, "b"]
    assert json.loads(summarise(Address(street="1 Main", city="Oslo"))) == {"street": "1 Main", "city": "Oslo"}
    assert json.loads(summarise(Point(1, 2))) == {"x": 1, "y": 2}


def test_a_big_dict_is_cut_to_the_budget() -> None:
    data = {f"key{i}": "v" * 50 for i in range(1000)}

    summary = summarise(data, budget=500)

    assert len(summary) <= 500 and summary.startswith('{"key0": "vvv')
    assert "more characters]" in summary


def test_a_big_dataframe_says_its_shape_and_dtypes_and_shows_the_first_rows_within_budget() -> None:
    df = pd.DataFrame({"id": range(10_000), "name": [f"item {i}" for i in range(10_000)],
                       "price": [i * 0.5 for i in range(10_000)]})

    summary = summarise(df, budget=800)

    assert len(summary) <= 800
    assert summary.startswith("DataFrame: 10,000 rows \u00d7 3 columns")
    assert "id (int64)" in summary and "price (float64)" in summary
    assert "item 0" in summary and "item 9999" not in summary
    assert "first " in summary


def test_a_small_dataframe_is_shown_whole() -> None:
    summary = summarise(pd.DataFrame({"a": [1, 2]}), budget=2000)

    assert "first" not in summary and summary.count("\n") >= 3


def test_a_dataframe_shrinks_its_rows_to_a_small_budget() -> None:
    df = pd.DataFrame({"text": ["word " * 20] * 50})

    assert len(summarise(df, budget=200)) <= 200
    assert len(summarise(df, budget=40)) <= 40


def test_a_series_and_an_array_say_their_shape() -> None:
    series = summarise(pd.Series(range(5000), name="n"), budget=300)
    array = summarise(np.arange(10_000, dtype=np.float32).reshape(100, 100), budget=300)

    assert series.startswith("Series 'n': 5,000 values, dtype int64") and len(series) <= 300
    assert array.startswith("array: shape (100, 100), dtype float32") and "..." in array and len(array) <= 300


def test_anything_else_is_its_repr_cut_to_the_budget() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing(" + "z" * 1000 + ")"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert summarise(Thing(), budget=100).startswith("Thing(zzz") and len(summarise(Thing(), budget=100)) <= 100
    assert "repr failed" in summarise(Broken())


def test_for_model_respects_the_budget_for_errors_too() -> None:
    assert len(Outcome(None, "E" * 5000, 0.0, {}).for_model(budget=120)) == 120
    assert Outcome("x" * 5000, None, 0.0, {}).for_model(budget=120).endswith("more characters]")


def test_importing_the_module_does_not_import_pandas_numpy_or_pydantic() -> None:
    code = "import sys, vllm_magic.tools; print(sorted(m for m in ('pandas', 'numpy', 'pydantic') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert loaded.strip() == "[]"


# --- registering and resolving -----------------------------------------------------------------


def test_the_decorator_returns_the_same_function_and_registers_it(empty_registry: dict[str, Tool]) -> None:
    def greet(name: str) -> str:
        return f"hi {name}"

    decorated = tool(greet)

    assert decorated is greet and greet("a") == "hi a"
    assert empty_registry["greet"] is greet.__vllm_tool__
    assert empty_registry["greet"].run('{"name": "b"}').value == "hi b"


def test_the_decorator_takes_a_name(empty_registry: dict[str, Tool]) -> None:
    @tool(name="say_hello")
    def greet(name: str) -> str:
        return name

    assert greet("x") == "x"
    assert list(empty_registry) == ["say_hello"]
    assert describe(greet).name == "say_hello"  # the marked tool is reused


def test_redecorating_a_function_of_the_same_name_replaces_it(empty_registry: dict[str, Tool]) -> None:
    @tool
    def greet(name: str) -> str:
        return "old"

    @tool
    def greet(name: str) -> str:  # noqa: F811 - a notebook cell run again
        return "new"

    assert len(empty_registry) == 1 and empty_registry["greet"].run('{"name": "a"}').value == "new"


def test_resolve_looks_names_up_in_the_namespace_then_the_registry() -> None:
    def lookup(key: str) -> str:
        return key

    @tool(name="registered")
    def other(x: int) -> int:
        return x

    found = resolve(" weather, lookup ,registered", {"weather": weather, "lookup": lookup})

    assert [t.name for t in found] == ["weather", "lookup", "registered"]
    assert found[1].function is lookup


def test_resolve_uses_a_decorated_functions_registered_name() -> None:
    @tool(name="lookup_v2")
    def lookup(key: str) -> str:
        return key

    assert [t.name for t in resolve("lookup", {"lookup": lookup})] == ["lookup_v2"]


def test_resolve_names_a_partial_by_its_variable() -> None:
    two_days = functools.partial(weather, days=2)

    found, = resolve("two_days", {"two_days": two_days})

    assert found.name == "two_days" and found.parameters["properties"]["days"]["default"] == 2
    assert found.run('{"city": "Oslo"}').value == "Oslo: sunny for 2 day(s) in celsius (brief)"


def test_resolve_takes_functions_and_tools_directly() -> None:
    described = describe(scaled)

    assert [t.name for t in resolve([weather, described])] == ["weather", "scaled"]


def test_an_unknown_name_is_named_and_what_is_available_is_listed() -> None:
    @tool
    def registered(x: int) -> int:
        return x

    with pytest.raises(errors.ConfigError) as caught:
        resolve("weather, nowhere", {"weather": weather, "total": total, "_private": weather, "n": 3})

    message = str(caught.value)
    assert "`nowhere`" in message
    assert "Available: registered, total, weather." in message and "_private" not in message
    assert "Available: registered, total, weather." in caught.value.fix_in(NOTEBOOK_FIXES)
    assert "%%chat --tools" in caught.value.fix_in(NOTEBOOK_FIXES)


def test_a_name_that_is_not_a_function_is_refused() -> None:
    with pytest.raises(errors.ConfigError, match="`n` is not a function"):
        resolve("n", {"n": 3})


def test_two_tools_with_one_name_are_refused() -> None:
    with pytest.raises(errors.ConfigError, match="'weather'") as caught:
        resolve([weather, describe(scaled, name="weather")])
    assert caught.value.hint == "duplicate_tool"
    with pytest.raises(errors.ConfigError, match="'weather'"):
        union_schema([describe(weather), describe(scaled, name="weather")])


def test_resolving_nothing_is_refused() -> None:
    with pytest.raises(errors.ConfigError, match="No tools were named"):
        resolve(" , ")


# --- one call of one of the tools as a schema --------------------------------------------------


def test_union_schema_accepts_a_correct_call_and_refuses_a_wrong_name_or_wrong_arguments() -> None:
    schema = union_schema(resolve([weather, scaled, deliver]))
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)

    assert validator.is_valid({"name": "weather", "arguments": {"city": "Oslo", "mode": "full"}})
    assert validator.is_valid({"name": "scaled", "arguments": {"x": 2}})
    assert validator.is_valid({"name": "deliver", "arguments": {
        "to": {"street": "1 Main", "city": "Oslo"}, "at": {"x": 1, "y": 2},
        "movie": {"title": "Heat", "year": 1995}, "tags": ["a"]}})
    assert not validator.is_valid({"name": "rain", "arguments": {"city": "Oslo"}})
    assert not validator.is_valid({"name": "weather", "arguments": {"x": 2}})  # scaled's arguments
    assert not validator.is_valid({"name": "scaled", "arguments": {"x": 0}})
    assert not validator.is_valid({"name": "weather", "arguments": {"city": "Oslo"}, "extra": 1})
    assert not validator.is_valid({"name": "deliver", "arguments": {
        "to": {"street": "1 Main"}, "at": {"x": 1, "y": 2}, "movie": {"title": "Heat", "year": 1995}, "tags": []}})


class Place(pydantic.BaseModel):
    """Described under another name than Address, renamed to clash in the test below."""

    lat: float
    lon: float


def test_union_schema_renames_defs_two_tools_define_differently() -> None:
    def here(at: Address) -> None:
        pass

    def there(at: Place) -> None:
        pass

    clashing = describe(there)
    clashing.parameters["$defs"]["Address"] = clashing.parameters["$defs"].pop("Place")
    clashing.parameters["properties"]["at"]["$ref"] = "#/$defs/Address"
    validator = jsonschema.Draft202012Validator(union_schema([describe(here), clashing]))

    assert validator.is_valid({"name": "here", "arguments": {"at": {"street": "1 Main", "city": "Oslo"}}})
    assert validator.is_valid({"name": "there", "arguments": {"at": {"lat": 1.0, "lon": 2.0}}})
    assert not validator.is_valid({"name": "there", "arguments": {"at": {"street": "1 Main", "city": "Oslo"}}})


def test_union_schema_does_not_change_the_tools_parameters() -> None:
    described = describe(deliver)
    before = json.dumps(described.parameters, sort_keys=True)

    union_schema([described])

    assert json.dumps(described.parameters, sort_keys=True) == before


def test_every_hint_the_module_gives_has_a_fix_in_both_views() -> None:
    hints = set(re.findall(r'hint="(\w+)"', Path(tools.__file__).read_text()))

    assert len(hints) >= 4
    assert hints <= set(PYTHON_FIXES) and hints <= set(NOTEBOOK_FIXES)


def test_the_trained_models_tools_are_what_describe_makes_of_two_plain_functions() -> None:
    """The tiny model was trained with these schemas in its prompt: a notebook passing the functions
    themselves must render the same prompt, key order included."""
    import tiny_corpus  # scripts/tiny_corpus.py, loaded by the root conftest

    def get_weather(city: str) -> dict:
        """Current weather in a city."""

    def convert_currency(amount: float, source: str, target: str) -> float:
        """Convert an amount of money."""

    assert [describe(f).spec() for f in (get_weather, convert_currency)] == tiny_corpus.TOOLS
    assert [list(describe(f).spec()["function"]["parameters"]) for f in (get_weather, convert_currency)] == \
        [list(t["function"]["parameters"]) for t in tiny_corpus.TOOLS]
