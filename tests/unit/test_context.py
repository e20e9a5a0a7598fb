"""Context from the kernel: ``%%chat --context``, ``{In[n]}``/``{Out[n]}``/``{Err[n]}``, ``%vllm fix``,
``--code``, the secret filter and cutting context to fit the model's window, against the loopback vLLM."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

from tests.loopback import LoopbackServer, Reply, count_chat_tokens
from tests.unit.notebook_shell import Shell, chat_bodies
from vllm_magic import context, errors
from vllm_magic.client import Client
from vllm_magic.context import WITHHELD_LINE, WITHHELD_NAME, WITHHELD_VALUE, describe
from vllm_magic.conversation import Conversation
from vllm_magic.errors import PYTHON_FIXES
from vllm_magic.magics.fix import FIX_PROMPT
from vllm_magic.notebook_fixes import NOTEBOOK_FIXES
from vllm_magic.render import conversation_html, conversation_text

KEY = "sk-loopback-7f3a9c1e5b"
HEADER_VALUE = "gateway-token-4d2e8a"
ANSWER = "The cell divides by zero.\n\n```python\nx = 1\n```\n\nOr:\n\n```python\ny = 2\n```\n"


def numbered(ip: Shell, source: str) -> int:
    """Run ``source`` as a notebook cell that counts (In/Out history, the error log); its number."""
    count = ip.shell.execution_count
    ip.shell.run_cell(source, store_history=True)
    ip.capsys.readouterr()
    return count


def sent_prompt(server: LoopbackServer) -> str:
    return chat_bodies(server)[-1]["messages"][-1]["content"]


def paths(server: LoopbackServer) -> list[str]:
    return [r.path for r in server.requests]


def usage_error(ip: Shell, source: str) -> str:
    """The message of the UsageError ``source`` raises (IPython prints it to stderr)."""
    result, _ = ip.run(source)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    return str(result.error_in_exec)


@pytest.fixture
def next_inputs(ip: Shell, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """What ``set_next_input`` received: the code put into a new cell below."""
    received: list[tuple[str, bool]] = []
    monkeypatch.setattr(ip.shell, "set_next_input", lambda text, replace=False: received.append((text, replace)))
    return received


# -- describing values ---------------------------------------------------------------------------


def test_a_dataframe_is_its_shape_dtypes_null_counts_and_first_rows() -> None:
    df = pd.DataFrame({"price": [1.5, None, 3.25], "city": ["Paris", "Oslo", None]})

    text = describe(df, 2000)

    assert text.startswith("DataFrame: 3 rows \u00d7 2 columns\ncolumns: price (float64), city (")
    assert "Oslo" in text and "3.25" in text
    assert text.endswith("null values: price 1, city 1")


def test_a_numeric_array_is_its_shape_dtype_and_min_max_mean() -> None:
    text = describe(np.arange(10, dtype=float).reshape(2, 5), 2000)

    assert text.startswith("array: shape (2, 5), dtype float64")
    assert text.endswith("min 0, max 9, mean 4.5")
    assert "min" not in describe(np.array(["a", "b"]), 2000), "no statistics of strings"


class Point:
    def __repr__(self) -> str:
        return "Point(x=1, y=2)"


def test_other_values_are_their_type_and_repr() -> None:
    assert describe(Point(), 2000) == f"{__name__}.Point: Point(x=1, y=2)"
    assert describe({"a": [1, 2]}, 2000) == 'dict: {"a": [1, 2]}'
    assert describe("hello", 2000) == "str: hello"


@pytest.mark.parametrize("value", [
    pd.DataFrame({"text": ["word " * 50] * 200, "n": range(200)}),
    np.random.default_rng(0).random((300, 300)),
    list(range(5000)),
])
def test_every_description_keeps_to_its_budget(value: object) -> None:
    text = describe(value, 300)

    assert len(text) <= 300
    assert "cut:" in text or "first" in text, "a cut says so"


# -- --context in a cell --------------------------------------------------------------------------


def test_context_goes_before_the_prompt_and_the_turn_keeps_both(ip: Shell, loopback: LoopbackServer,
                                                                tmp_path: Path) -> None:
    ip.shell.user_ns.update(df=pd.DataFrame({"a": [1, 2]}), x=41)
    ip.ok("%%chat --context df,x\nWhat is in df?")

    sent = sent_prompt(loopback)
    assert sent.startswith("Context from the notebook:\n\ndf:\nDataFrame: 2 rows \u00d7 1 columns")
    assert "\n\nx:\nint: 41\n\nWhat is in df?" in sent and sent.endswith("What is in df?")
    turn = ip.turns[-1]
    assert turn.prompt == "What is in df?" and "x:\nint: 41" in turn.user.context

    ip.ok("%%chat\nAnd then?")
    assert chat_bodies(loopback)[-1]["messages"][0]["content"] == sent, "later turns send the same context"
    saved = ip.magics.session.existing_chat().conversation.save(tmp_path / "c.json")
    assert Conversation.load(saved).messages() == ip.magics.session.existing_chat().conversation.messages()


def test_history_shows_the_context_folded_and_retry_sends_it_again(ip: Shell, loopback: LoopbackServer) -> None:
    ip.shell.user_ns.update(x=41)
    ip.ok("%%chat --context x\nHi")
    conversation = ip.magics.session.existing_chat().conversation

    assert '<details class="vm-context"><summary>Context from the notebook (' in conversation_html(conversation)
    assert "[context from the notebook: 10 characters]\nHi" in conversation_text(conversation)
    first = sent_prompt(loopback)
    ip.ok("%vllm retry")
    assert sent_prompt(loopback) == first


def test_the_context_budget_is_a_setting(ip: Shell, loopback: LoopbackServer) -> None:
    ip.shell.user_ns.update(big=list(range(5000)))
    ip.ok("%config VLLMMagics.context_budget = 300")
    ip.ok("%%chat --context big\nHi")

    assert len(ip.turns[-1].user.context) == len("big:\n") + 300


def test_context_names_must_be_variables(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.fails("%%chat --context nowhere\nHi", errors.ConfigError)
    assert "--context names 'nowhere', which is not a variable" in out and "Define nowhere in a cell" in out
    out = ip.fails("%%chat --context 'df.head()'\nHi", errors.ConfigError)
    assert "the names of variables separated by commas" in out
    assert chat_bodies(loopback) == []


# -- the secret filter ----------------------------------------------------------------------------


@pytest.fixture
def keyed(ip: Shell, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A server wanting ``KEY``, connected with a gateway header whose value is a secret too."""
    with LoopbackServer(api_key=KEY) as server:
        monkeypatch.setenv("VLLM_API_KEY", KEY)
        ip.ok(f'%vllm connect {server.base_url} --header "X-Gateway: {HEADER_VALUE}"')
        yield server


def test_secrets_are_never_described(ip: Shell, keyed: LoopbackServer) -> None:
    ip.shell.user_ns.update(api_key="anything", db_password="pw", x=KEY, settings={"auth": KEY},
                            h=HEADER_VALUE, n=5)
    ip.ok("%%chat --context api_key,db_password,x,settings,h,n\nWhat is set?")

    sent = sent_prompt(keyed)
    assert f"api_key:\n{WITHHELD_NAME}" in sent and f"db_password:\n{WITHHELD_NAME}" in sent
    assert f"x:\n{WITHHELD_VALUE}" in sent and f"settings:\n{WITHHELD_VALUE}" in sent and f"h:\n{WITHHELD_VALUE}" in sent
    assert "n:\nint: 5" in sent
    for request in keyed.requests:
        assert KEY.encode() not in request.body and HEADER_VALUE.encode() not in request.body


def test_a_traceback_line_holding_the_key_is_withheld(ip: Shell, keyed: LoopbackServer) -> None:
    numbered(ip, f'raise RuntimeError("refused " + "{KEY}")')
    ip.ok("%vllm fix")

    assert WITHHELD_LINE in sent_prompt(keyed)
    assert all(KEY.encode() not in r.body for r in keyed.requests)


def test_the_client_tells_secrets_without_giving_them() -> None:
    client = Client("http://127.0.0.1:9", KEY, headers={"X-Org": HEADER_VALUE})

    assert client.is_secret(KEY) and client.is_secret(f"token={KEY};") and client.is_secret(HEADER_VALUE)
    assert not client.is_secret("") and not client.is_secret("hello") and not client.is_secret(f"a {HEADER_VALUE}")
    assert not Client("http://127.0.0.1:9").is_secret("anything")


# -- In, Out and Err under --interpolate ----------------------------------------------------------


def test_in_out_and_err_interpolate_from_the_notebook(ip: Shell, loopback: LoopbackServer) -> None:
    assigned = numbered(ip, "a = 1")
    answered = numbered(ip, "40 + 2")
    failed = numbered(ip, "def f(x):\n    return 1 / x\nf(0)")
    ip.ok(f"%%chat -i\n{{In[{assigned}]}} | {{Out[{answered}]}} | {{Err[{failed}]}} | {{Err}}")

    first, second, third, last = sent_prompt(loopback).split(" | ")
    assert (first, second) == ("a = 1", "42")
    assert third == last and "----> 3 f(0)" in third and third.endswith("ZeroDivisionError: division by zero")
    assert "\x1b[" not in third, "colour codes are stripped"


def test_a_missing_in_out_or_err_is_one_paragraph(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.fails("%%chat -i\n{Err}", errors.ConfigError)
    assert "found nothing for {Err}: no cell has raised an error since vllm_magic was loaded" in out
    assigned = numbered(ip, "a = 1")
    out = ip.fails(f"%%chat -i\n{{Out[{assigned}]}}", errors.ConfigError)
    assert f"cell {assigned} has no output" in out and "`%history -n` lists them" in out
    assert f"cell {assigned} raised no error" in ip.fails(f"%%chat -i\n{{Err[{assigned}]}}", errors.ConfigError)
    assert "there is no cell 999999" in ip.fails("%%chat -i\n{In[999999]}", errors.ConfigError)
    assert chat_bodies(loopback) == []


# -- %vllm fix ------------------------------------------------------------------------------------


def test_fix_sends_the_cell_and_its_traceback_and_records_the_turn(ip: Shell, loopback: LoopbackServer,
                                                                   next_inputs: list) -> None:
    failed = numbered(ip, "def f(x):\n    return 1 / x\nf(0)")
    loopback.push(Reply.tokens([ANSWER], finish_reason="stop"))
    out = ip.ok("%vllm fix --code")

    sent = sent_prompt(loopback)
    assert sent.startswith(f"Context from the notebook:\n\nIn[{failed}] (the cell that failed):\ndef f(x):\n")
    assert f"Err[{failed}] (its error):\n" in sent and "ZeroDivisionError: division by zero" in sent
    assert sent.endswith("\n\n" + FIX_PROMPT)
    assert "The cell divides by zero." in out
    turn = ip.turns[-1]
    assert turn.prompt == FIX_PROMPT and "f(0)" in turn.user.context and turn.text == ANSWER
    assert next_inputs == [("x = 1", False)]


def test_fix_without_an_error_says_so(ip: Shell, loopback: LoopbackServer) -> None:
    assert usage_error(ip, "%vllm fix").startswith("No error recorded yet")
    assert chat_bodies(loopback) == []


# -- --code ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("option, code", [("--code", "x = 1"), ("--code 2", "y = 2")])
def test_code_puts_a_block_of_the_answer_into_a_new_cell(ip: Shell, loopback: LoopbackServer, next_inputs: list,
                                                         option: str, code: str) -> None:
    loopback.push(Reply.tokens([ANSWER], finish_reason="stop"))
    ip.ok(f"%%chat {option}\nWrite code")

    assert next_inputs == [(code, False)]


@pytest.mark.parametrize("answer, option, said", [
    ("No code here.", "--code", "The answer has no fenced code block, so no cell was added."),
    (ANSWER, "--code 3", "The answer has 2 fenced code blocks, not 3, so no cell was added."),
])
def test_code_without_that_block_says_so(ip: Shell, loopback: LoopbackServer, next_inputs: list, answer: str,
                                         option: str, said: str) -> None:
    loopback.push(Reply.tokens([answer], finish_reason="stop"))
    out = ip.ok(f"%%chat {option}\nWrite code")

    assert out.rstrip().endswith(said) and next_inputs == []


def test_code_takes_a_block_number_from_one(ip: Shell, loopback: LoopbackServer) -> None:
    assert "--code takes the number of a code block, from 1" in usage_error(ip, "%%chat --code 0\nHi")


# -- fitting the window ---------------------------------------------------------------------------


def test_context_that_would_overflow_is_left_out_last_first(ip: Shell, loopback: LoopbackServer) -> None:
    ip.shell.user_ns.update(small=7, big=pd.DataFrame({"text": ["a long line of words " * 8] * 100}))
    out = ip.ok("%%chat --context small,big --max-tokens 16\nSummarise")

    whole, cut = [r.json["messages"] for r in loopback.requests if r.path == "/tokenize"]
    dropped = count_chat_tokens(whole) - count_chat_tokens(cut)
    assert f"Context left out to fit tiny-chat's 512 tokens: big ({dropped:,} tokens)." in out
    assert count_chat_tokens(whole) + 16 > 512 >= count_chat_tokens(cut) + 16
    assert chat_bodies(loopback)[-1]["messages"] == cut
    assert ip.turns[-1].user.context == "small:\nint: 7"
    footer = out.strip().splitlines()[-1]
    assert footer.startswith("[tiny-chat") and footer.endswith(f"· Context left out to fit tiny-chat's 512 tokens: big ({dropped:,} tokens).]")
    assert ip.turns[-1].left_out.startswith("Context left out"), "the turn keeps it, for history"


def test_when_nothing_fits_the_request_goes_and_the_server_says_why(ip: Shell, loopback: LoopbackServer) -> None:
    ip.shell.user_ns.update(small=7)
    out = ip.fails("%%chat --context small\n" + "word " * 600, errors.ContextLengthError)

    assert re.search(r"Context left out to fit tiny-chat's 512 tokens: small \(\d+ tokens\)\.", out)
    assert not sent_prompt(loopback).startswith("Context from the notebook")


def test_a_server_without_tokenize_is_not_checked(ip: Shell) -> None:
    ip.shell.user_ns.update(big=list(range(5000)))
    with LoopbackServer(profile="openai", max_model_len=100_000) as server:
        ip.ok(f"%vllm connect {server.base_url}")
        out = ip.ok("%%chat --context big\nHi")

    assert paths(server).count("/tokenize") == 1, "asked once, answered 404"
    assert "Context left out" not in out and sent_prompt(server).startswith("Context from the notebook:\n\nbig:")


def test_no_tokenize_request_without_context(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat\nHi")
    ip.shell.user_ns.update(small=7)
    ip.ok("%%chat --context small\nHi")

    assert paths(loopback).count("/tokenize") == 1


# -- help and hints -------------------------------------------------------------------------------


def test_help_lists_fix(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.ok("%vllm help")
    assert "%vllm fix [-c NAME] [--code]" in out and "explain the last error a cell raised" in out


def test_every_hint_the_module_gives_has_a_fix_in_both_views() -> None:
    hints = set(re.findall(r'hint="(\w+)"', Path(context.__file__).read_text()))

    assert hints == {"context_names", "context_name", "history_missing"}
    assert hints <= set(PYTHON_FIXES) and hints <= set(NOTEBOOK_FIXES)


def test_earlier_turns_context_is_left_out_before_this_ones(ip: Shell, loopback: LoopbackServer) -> None:
    """Each turn keeps the context it sent, and later requests send it again: the oldest goes first."""
    ip.shell.user_ns.update(old=[f"an older line, number {i}" for i in range(400)], small=7)
    ip.ok("%config VLLMMagics.context_budget = 1800")
    first = ip.ok("%%chat --context old --max-tokens 16\nFirst")
    assert "left out" not in first
    out = ip.ok("%%chat --context small --max-tokens 16\nSecond")
    assert re.search(r"Context left out to fit tiny-chat's 512 tokens: turn 1's context \(\d+ tokens\)\.", out)
    sent = chat_bodies(loopback)[-1]["messages"]
    assert sent[0] == {"role": "user", "content": "First"}, "the first turn's prompt goes without its context"
    assert sent[-1]["content"].startswith("Context from the notebook") and "small" in sent[-1]["content"]
    assert ip.turns[0].user.context, "the turn itself keeps what it sent"


def test_interpolated_fields_pass_the_secret_filter_and_large_ones_are_described(
        ip: Shell, keyed: LoopbackServer) -> None:
    ip.shell.user_ns.update(api_token="anything", x=KEY, settings={"auth": KEY}, h=HEADER_VALUE, n=5,
                            df=pd.DataFrame({"a": range(1000), "b": ["word"] * 1000}))
    ip.ok("%%chat --interpolate\nn={n} tok={api_token} x={x} s={settings} h={h} up={x.upper().lower()} df={df}")

    sent = sent_prompt(keyed)
    assert sent.startswith("n=5 tok=" + WITHHELD_NAME), sent
    assert sent.count(WITHHELD_VALUE) == 4, "x, settings, h and an expression giving the key back"
    assert "df=DataFrame: 1,000 rows × 2 columns" in sent and len(sent) < 2600, "bounded, as --context gives it"
    assert all(KEY.encode() not in r.body and HEADER_VALUE.encode() not in r.body for r in keyed.requests)
