"""One prompt over many rows (``ask_each`` and ``%vllm map``) against the loopback vLLM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pandas as pd
import pydantic
import pytest

from tests.loopback import LoopbackServer, LoopbackTransport, Reply, completion_pieces, guided
from tests.unit.notebook_shell import ENV, Shell, ipython_shell
from vllm_magic import Chat, Client, Connection, MapStopped, ask_each, errors
from vllm_magic.frames import NOT_DONE
from vllm_magic.magics.data import PARTIAL
from vllm_magic.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
REVIEWS = pd.DataFrame({"review": ["Loved it", "Awful", "Loved it", "Fine, I guess", "Awful"],
                        "stars": [5, 1, 5, 3, 1]}, index=pd.Index(list("abcde"), name="id"))


def chat_on(transport: LoopbackTransport | LoopbackServer, **client: object) -> Chat:
    url = transport.base_url
    seam = transport if isinstance(transport, LoopbackTransport) else None
    return Chat(connection=Connection(client=Client(url, transport=seam, **client)))


def asked(server: LoopbackTransport | LoopbackServer) -> list[str]:
    """The user prompt of every chat request, in arrival order."""
    return [r.json["messages"][-1]["content"] for r in server.requests if r.path == CHAT]


def default_answer(prompt: str, tokens: int = 16) -> str:
    """What the loopback model answers a one-turn ``prompt``."""
    return "".join(completion_pieces([{"role": "user", "content": prompt}], tokens))


def answer_by_prompt(answers: Callable[[str], object]) -> Callable[[dict], object]:
    """A ``script_by`` rule: ``answers(prompt)`` is a reply, or a str answered as a finished text."""
    def rule(body: dict) -> object:
        reply = answers(body["messages"][-1]["content"])
        return Reply.tokens([reply], finish_reason="stop") if isinstance(reply, str) else reply
    return rule


def sentiment(prompt: str) -> str:
    return "pos" if "Loved" in prompt else "neg" if "Awful" in prompt else "neutral"


@pytest.fixture
def transport() -> LoopbackTransport:
    return LoopbackTransport()


@pytest.fixture
def chat(transport: LoopbackTransport) -> Chat:
    return chat_on(transport)


# -- rows, templates and what is sent ---------------------------------------------------------------


def test_each_row_is_one_request_and_the_table_is_indexed_like_the_input(chat: Chat, transport: LoopbackTransport) -> None:
    table = ask_each(REVIEWS, "Review ({stars} stars): {review}", chat=chat, progress=False)
    assert table.index.equals(REVIEWS.index)
    assert table.columns.tolist() == ["answer", "finish_reason", "prompt_tokens", "completion_tokens", "seconds", "error"]
    assert table.dtypes.astype(str).tolist() == ["string", "string", "Int64", "Int64", "Float64", "string"]
    prompts = [f"Review ({s} stars): {r}" for r, s in zip(REVIEWS.review, REVIEWS.stars)]
    assert table.answer.tolist() == [default_answer(p) for p in prompts]
    assert table.finish_reason.tolist() == ["length"] * 5 and table.completion_tokens.tolist() == [16] * 5
    assert table.error.isna().all() and (table.seconds > 0).all()
    bodies = [r.json for r in transport.requests if r.path == CHAT]
    assert all(body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}] for body in bodies)
    assert all("stream" not in body for body in bodies), "one JSON answer per row, not a stream"


def test_identical_prompts_are_sent_once(chat: Chat, transport: LoopbackTransport) -> None:
    table = ask_each(REVIEWS, "Sentiment of: {review}", chat=chat, progress=False)
    assert sorted(asked(transport)) == ["Sentiment of: Awful", "Sentiment of: Fine, I guess", "Sentiment of: Loved it"]
    assert table.answer["a"] == table.answer["c"] and table.answer["b"] == table.answer["e"]
    assert table.error.isna().all()


def test_a_list_and_a_series_are_named_by_braces_or_text(chat: Chat, transport: LoopbackTransport) -> None:
    table = ask_each(["one", "two"], "Say {} and {text}", chat=chat, progress=False)
    assert table.index.tolist() == [0, 1] and asked(transport) == ["Say one and one", "Say two and two"] or \
        sorted(asked(transport)) == ["Say one and one", "Say two and two"]
    series = pd.Series(["x"], index=[10], name="word")
    assert ask_each(series, "Spell {word}", chat=chat, progress=False).index.tolist() == [10]
    assert asked(transport)[-1] == "Spell x"


def test_braces_that_name_nothing_stay_as_written(chat: Chat, transport: LoopbackTransport) -> None:
    template = 'Answer as {"label": "pos"}, in {3} words, with {{review}} for: {review}'
    ask_each(REVIEWS.head(1), template, chat=chat, progress=False)
    assert asked(transport) == ['Answer as {"label": "pos"}, in {3} words, with {review} for: Loved it']


def test_a_template_naming_no_column_is_refused_before_any_request(chat: Chat, transport: LoopbackTransport) -> None:
    with pytest.raises(errors.ConfigError) as info:
        ask_each(REVIEWS, "Sentiment of {reveiw}", chat=chat)
    assert "names {reveiw}, which is not in the rows (they have {review}, {stars})" in str(info.value)
    assert "write a literal brace as {{ or }}" in str(info.value)
    with pytest.raises(errors.ConfigError, match="names nothing from the rows"):
        ask_each(REVIEWS, "Always the same", chat=chat)
    with pytest.raises(errors.ConfigError, match=r"names \{\}"):
        ask_each(REVIEWS, "Which? {}", chat=chat)
    with pytest.raises(errors.ConfigError, match="a list of str, a pandas Series or a DataFrame, not a dict"):
        ask_each({"a": 1}, "{}", chat=chat)
    assert transport.requests == []


def test_a_row_missing_a_value_fails_alone_without_a_request(chat: Chat, transport: LoopbackTransport) -> None:
    rows = pd.DataFrame({"review": ["ok", None, float("nan")]})
    table = ask_each(rows, "Rate: {review}", chat=chat, progress=False)
    assert table.error.tolist()[1:] == ["The row has no value in 'review'."] * 2 and pd.isna(table.answer[1])
    assert asked(transport) == ["Rate: ok"]
    with pytest.raises(errors.ConfigError) as info:
        ask_each(rows, "Rate: {review}", chat=chat, on_error="raise", concurrency=1, progress=False)
    assert str(info.value).startswith("Row 1 failed: The row has no value in 'review'.") and "dropna" in str(info.value)


def test_system_prompt_params_and_max_tokens_apply_and_the_conversation_is_untouched(transport: LoopbackTransport) -> None:
    chat = chat_on(transport)
    chat.conversation.set_system("Be terse.")
    chat.params["temperature"] = 0.1
    ask_each(["a"], "{}", chat=chat, max_tokens=3, seed=7, progress=False)
    body = transport.requests[-1].json
    assert body["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "a"}]
    assert body["temperature"] == 0.1 and body["max_tokens"] == 3 and body["seed"] == 7
    ask_each(["a"], "{}", chat=chat, system="Be loud.", progress=False)
    assert transport.requests[-1].json["messages"][0] == {"role": "system", "content": "Be loud."}
    assert chat.history == [] and chat.conversation.system == "Be terse."


# -- structured answers -----------------------------------------------------------------------------


def test_a_choice_is_a_categorical_of_the_choices(chat: Chat, transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(sentiment))
    table = ask_each(REVIEWS, "Sentiment of: {review}", chat=chat, choice="pos|neg|neutral", progress=False)
    assert isinstance(table.answer.dtype, pd.CategoricalDtype)
    assert table.answer.cat.categories.tolist() == ["pos", "neg", "neutral"]
    assert table.answer.tolist() == ["pos", "neg", "pos", "neutral", "neg"]
    assert table.answer.value_counts().to_dict() == {"pos": 2, "neg": 2, "neutral": 1}
    assert transport.requests[-1].json["structured_outputs"] == {"choice": ["pos", "neg", "neutral"]}


def test_a_schema_gives_one_typed_column_per_field(chat: Chat, transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(lambda p: json.dumps({"name": p.upper(), "age": len(p), "happy": "a" in p})))
    table = ask_each(["ada", "bob"], "{}", chat=chat, schema="name str, age int, happy bool", progress=False)
    assert table.columns.tolist()[:3] == ["name", "age", "happy"]
    assert table.dtypes.astype(str).tolist()[:3] == ["string", "Int64", "boolean"]
    assert table[["name", "age", "happy"]].to_dict("list") == {"name": ["ADA", "BOB"], "age": [3, 3],
                                                            "happy": [True, False]}
    fields = transport.requests[-1].json["response_format"]
    assert fields["type"] == "json_schema" and set(fields["json_schema"]["schema"]["properties"]) == {"name", "age", "happy"}


class Ticket(pydantic.BaseModel):
    urgent: bool
    sentiment: Literal["positive", "negative", "neutral"]
    stars: int = pydantic.Field(ge=1, le=5)


def test_a_pydantic_schema_with_a_literal_field_gives_a_categorical_column(chat: Chat, transport: LoopbackTransport) -> None:
    transport.script_by(guided)
    table = ask_each(REVIEWS, "Read: {review}", chat=chat, schema=Ticket, progress=False)
    assert table.dtypes[["urgent", "sentiment", "stars"]].astype(str).tolist() == ["boolean", "category", "Int64"]
    assert table.sentiment.cat.categories.tolist() == ["positive", "negative", "neutral"]
    assert table.stars.between(1, 5).all() and table.error.isna().all()
    assert table.loc["a"].tolist()[:3] == table.loc["c"].tolist()[:3], "the same review, the same answer"


def test_answers_that_do_not_fit_are_their_rows_errors_with_what_the_answer_told(chat: Chat, transport: LoopbackTransport) -> None:
    replies = {"ok": Reply.tokens(['{"n": 1}'], finish_reason="stop"),
               "ignored": Reply.tokens(["Sure! n is 2."], finish_reason="stop"),
               "cut": Reply.tokens(['{"n": '], finish_reason="length")}
    transport.script_by(answer_by_prompt(replies.get))
    table = ask_each(list(replies), "{}", chat=chat, schema="n int", progress=False)
    assert table.n.tolist() == [1, pd.NA, pd.NA] and table.error.isna().tolist() == [True, False, False]
    assert "does not have the schema shape asked for" in table.error[1] and "'Sure! n is 2.'" in table.error[1]
    assert "cut by max_tokens" in table.error[2]
    assert table.finish_reason.tolist() == ["stop", "stop", "length"] and table.completion_tokens.notna().all()


def test_a_grammar_reaches_the_server_and_its_answer_is_the_text(chat: Chat, transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(lambda p: "yes"))
    table = ask_each(["q"], "{}", chat=chat, grammar='root ::= "yes" | "no"', progress=False)
    assert table.answer.tolist() == ["yes"]
    assert transport.requests[-1].json["structured_outputs"] == {"grammar": 'root ::= "yes" | "no"'}


def test_json_and_regex_answers_are_checked_text(chat: Chat, transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(lambda p: '{"a": 1}' if p == "j" else "123"))
    assert ask_each(["j"], "{}", chat=chat, json=True, progress=False).answer.tolist() == ['{"a": 1}']
    table = ask_each(["r"], "{}", chat=chat, regex=r"[0-9]{3}", progress=False)
    assert table.answer.tolist() == ["123"] and transport.requests[-1].json["structured_outputs"] == {"regex": "[0-9]{3}"}


# -- failures ---------------------------------------------------------------------------------------


def test_a_rows_400_is_its_error_and_the_other_rows_go_on(chat: Chat, transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(
        lambda p: Reply.status(400, body_json={"error": {"message": "Bad row", "type": "BadRequestError", "code": 400}})
        if "Awful" in p else sentiment(p)))
    table = ask_each(REVIEWS, "Sentiment of: {review}", chat=chat, progress=False)
    assert table.answer.tolist() == ["pos", pd.NA, "pos", "neutral", pd.NA]
    assert table.error.notna().tolist() == [False, True, False, False, True]
    assert "HTTP 400" in table.error["b"] and "Bad row" in table.error["b"]


def test_on_error_raise_stops_at_the_first_failed_row_and_names_it(transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(lambda p: Reply.status(400) if p == "bad" else "fine"))
    with pytest.raises(errors.BadRequestError) as info:
        ask_each(pd.Series(["good", "bad"], index=["x", "y"]), "{}", chat=chat_on(transport), on_error="raise",
                 concurrency=1, progress=False)
    message = str(info.value)
    assert message.startswith("Row 'y' failed (asking 'bad'): ") and "HTTP 400" in message
    with pytest.raises(errors.ConfigError, match='`on_error` must be "keep" or "raise", not \'stop\''):
        ask_each(["a"], "{}", chat=chat_on(transport), on_error="stop")


def test_errors_of_the_whole_job_stop_it_even_when_rows_keep_their_errors() -> None:
    with LoopbackServer(api_key="right") as locked:
        with pytest.raises(errors.AuthError, match="HTTP 401"):
            ask_each(["a", "b", "c"], "{}", base_url=locked.base_url, api_key="wrong", model="tiny-chat", progress=False)
        assert len(asked(locked)) <= 3


def test_credentials_renewed_after_a_401_serve_the_rest_of_the_job() -> None:
    with LoopbackServer(api_key="fresh") as server:
        given = []

        def token() -> str:
            given.append(1)
            return "expired" if len(given) == 1 else "fresh"

        chat = Chat(server.base_url, "tiny-chat", credentials=token)
        table = ask_each([f"r{i}" for i in range(20)], "{}", chat=chat, concurrency=1, progress=False)
        assert table.error.isna().all() and len(given) == 2, "asked once more, and only once"
        assert len(asked(server)) == 21, "one request refused, then every row once"


def test_a_hanging_row_times_out_alone(transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(lambda p: Reply.hang(30) if p == "slow" else "ok"))
    started = time.monotonic()
    table = ask_each(["a", "slow", "b"], "{}", chat=chat_on(transport, timeout=0.5), progress=False)
    assert time.monotonic() - started < 5
    assert table.answer.tolist() == ["ok", pd.NA, "ok"]
    assert "Timed out after 0.5 s" in table.error[1]


def test_a_connection_dropped_without_an_answer_is_tried_once_more(transport: LoopbackTransport) -> None:
    dropped = []

    def rule(body: dict) -> object:
        if body["messages"][-1]["content"] == "b" and len(dropped) < 1:
            dropped.append(1)
            return Reply.hang(0)  # the server closes the connection without a word
        return Reply.tokens(["ok"], finish_reason="stop")

    transport.script_by(rule)
    table = ask_each(["a", "b", "c"], "{}", chat=chat_on(transport), progress=False)
    assert table.answer.tolist() == ["ok"] * 3 and asked(transport).count("b") == 2


def test_a_server_that_is_gone_stops_the_job() -> None:
    with LoopbackServer() as gone:
        chat = chat_on(gone)
        chat.connection.resolve_model()
    with pytest.raises(errors.ConnectError, match="Could not connect"):
        ask_each([f"r{i}" for i in range(50)], "{}", chat=chat, progress=False)


def test_a_429_storm_slows_the_whole_job_instead_of_multiplying_requests(transport: LoopbackTransport) -> None:
    """For 0.6 s the server answers 429 (retry after 0.1 s). Each of 8 requests in flight retrying
    on its own would send about 8 x 6 = 48 requests meanwhile; sharing the backoff, the job sends
    one request per delay once the storm is seen."""
    storm_ends = time.monotonic() + 0.6
    refused = []

    def rule(body: dict) -> object:
        if time.monotonic() < storm_ends:
            refused.append(1)
            return Reply.status(429, headers={"retry-after": "0.1"})
        return Reply.tokens(["ok"], finish_reason="stop")

    transport.script_by(rule)
    rows = [f"row {i}" for i in range(40)]
    table = ask_each(rows, "{}", chat=chat_on(transport, max_retries=20), concurrency=8, progress=False)
    assert table.error.isna().all() and table.answer.eq("ok").all()
    assert len(asked(transport)) == 40 + len(refused), "every row answered once; every other request was a 429"
    assert len(refused) <= 8 + 6 + 3, f"{len(refused)} requests refused during the storm"


def test_requests_run_concurrently_up_to_the_bound() -> None:
    slow = LoopbackTransport(chat_delay=0.2)
    started = time.monotonic()
    table = ask_each([f"r{i}" for i in range(20)], "{}", chat=chat_on(slow), concurrency=10, progress=False)
    took = time.monotonic() - started
    assert table.error.isna().all() and 0.4 <= took < 1.5, f"20 rows of 0.2 s at 10 in flight took {took:.2f} s"


class CountingTransport(LoopbackTransport):
    """Counts the requests in flight at once (answered after ``chat_delay``)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def handle_request(self, request):  # type: ignore[no-untyped-def]
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().handle_request(request)
        finally:
            with self.lock:
                self.now -= 1


def test_a_slow_server_gets_as_many_requests_at_once_as_allowed_and_no_more() -> None:
    slow = CountingTransport(chat_delay=0.05)
    ask_each([f"r{i}" for i in range(120)], "{}", chat=chat_on(slow), concurrency=12, progress=False)
    assert slow.most == 12


# -- Ctrl-C and resuming ----------------------------------------------------------------------------


def press_ctrl_c_once(server: LoopbackServer, requests: int, after: float = 0.3) -> None:
    """Send this process SIGINT, like Ctrl-C or a kernel interrupt, ``after`` seconds once the server
    holds ``requests`` (time for the quick ones to be answered)."""
    def press() -> None:
        if server.wait_for_requests(requests, CHAT):
            time.sleep(after)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=press, daemon=True).start()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def test_ctrl_c_keeps_the_rows_done_and_resume_sends_only_the_rest(server: LoopbackServer) -> None:
    rows = pd.Series([f"row {i}" for i in range(12)], index=[f"k{i}" for i in range(12)])
    server.script_by(answer_by_prompt(lambda p: Reply.hang(60) if int(p.split()[1]) >= 4 else "done"))
    press_ctrl_c_once(server, 4 + 4)  # the quick rows, and four that hang
    with pytest.raises(MapStopped) as info:
        ask_each(rows, "{}", chat=chat_on(server), concurrency=4, progress=False)
    stopped = info.value
    assert isinstance(stopped, KeyboardInterrupt) and stopped.answered == 4 and stopped.total == 12
    partial = stopped.partial
    assert partial.index.equals(rows.index) and partial.answer.tolist()[:4] == ["done"] * 4
    assert partial.error.tolist()[4:] == [NOT_DONE] * 8 and partial.error[:4].isna().all()
    assert server.client_disconnected.wait(5), "the hanging requests' connections were closed"
    sent_before = len(asked(server))
    assert sent_before == 8, "no request after Ctrl-C"
    server.script_by(answer_by_prompt(lambda p: "later"))
    table = ask_each(rows, "{}", chat=chat_on(server), resume=partial, progress=False)
    assert sorted(asked(server)[sent_before:]) == sorted(rows[4:]), "only the rows without an answer"
    assert table.answer.tolist() == ["done"] * 4 + ["later"] * 8 and table.error.isna().all()
    with pytest.raises(errors.ConfigError, match="not an earlier answer table for these 3 rows"):
        ask_each(rows.head(3), "{}", chat=chat_on(server), resume=partial)


def test_resume_sends_failed_rows_again(chat: Chat, transport: LoopbackTransport) -> None:
    transport.script_by(answer_by_prompt(lambda p: Reply.status(500) if p == "b" else "ok"))
    first = ask_each(["a", "b"], "{}", chat=chat, progress=False)
    assert first.error.notna().tolist() == [False, True]
    transport.script_by(answer_by_prompt(lambda p: "fixed"))
    count = len(asked(transport))
    again = ask_each(["a", "b"], "{}", chat=chat, resume=first, progress=False)
    assert asked(transport)[count:] == ["b"] and again.answer.tolist() == ["ok", "fixed"]


# -- streaming to a file ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["answers.parquet", "answers.jsonl"])
def test_to_a_file_writes_answered_rows_and_resumes_from_it(name: str, tmp_path: Path, chat: Chat,
                                                            transport: LoopbackTransport) -> None:
    path = tmp_path / name
    rows = pd.Series([f"r{i}" for i in range(30)], index=pd.Index([f"k{i}" for i in range(30)], name="key"))
    transport.script_by(answer_by_prompt(lambda p: Reply.status(400) if p in ("r3", "r4") else sentiment(p)))
    written = ask_each(rows, "{}", chat=chat, choice="pos|neg|neutral", to=path, progress=False)
    assert (written.rows, written.held, written.failed) == (30, 28, 2)
    assert "28 of 30 rows answered" in str(written) and "2 failed" in str(written)
    transport.script_by(answer_by_prompt(lambda p: "neg"))
    count = len(asked(transport))
    written = ask_each(rows, "{}", chat=chat, choice="pos|neg|neutral", to=path, progress=False)
    assert sorted(asked(transport)[count:]) == ["r3", "r4"] and written.held == 30
    stored = read_back(path)
    assert sorted(stored.index) == sorted(rows.index) and stored.row.tolist() == sorted(stored.row)
    assert stored.loc[["k0", "k3"], "answer"].tolist() == ["neutral", "neg"]
    if name.endswith(".parquet"):
        assert isinstance(stored.answer.dtype, pd.CategoricalDtype)
        assert stored.answer.cat.categories.tolist() == ["pos", "neg", "neutral"]


def read_back(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        stored = pd.read_parquet(path)
    else:
        stored = pd.read_json(path, lines=True).set_index("key")
    return stored.sort_values("row")


def test_a_file_of_other_rows_is_refused(tmp_path: Path, chat: Chat) -> None:
    path = tmp_path / "a.jsonl"
    ask_each(pd.Series(["x"], index=["one"]), "{}", chat=chat, to=path, progress=False)
    with pytest.raises(errors.ConfigError, match=r"was written for other input rows \(its row 0 is labelled 'one'"):
        ask_each(pd.Series(["x"], index=["two"]), "{}", chat=chat, to=path, progress=False)
    with pytest.raises(errors.ConfigError, match=r"name it \*.parquet or \*.jsonl"):
        ask_each(["x"], "{}", chat=chat, to=tmp_path / "a.csv")


def test_a_last_line_cut_by_a_kill_is_dropped(tmp_path: Path, chat: Chat, transport: LoopbackTransport) -> None:
    path = tmp_path / "a.jsonl"
    ask_each(["a", "b"], "{}", chat=chat, to=path, progress=False)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"row": 2, "ind')
    count = len(asked(transport))
    ask_each(["a", "b", "c"], "{}", chat=chat, to=path, progress=False)
    assert asked(transport)[count:] == ["c"]
    assert [json.loads(line)["row"] for line in path.read_text().splitlines()] == [0, 1, 2] or \
        sorted(json.loads(line)["row"] for line in path.read_text().splitlines()) == [0, 1, 2]


KILLED_JOB = """
import sys
from vllm_magic import ask_each
ask_each([f"row {i}" for i in range(int(sys.argv[3]))], "{}", base_url=sys.argv[1], model="tiny-chat",
         to=sys.argv[2], concurrency=4, progress=False)
"""


@pytest.mark.parametrize("name", ["answers.parquet", "answers.jsonl"])
def test_a_killed_job_goes_on_from_its_file(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    with LoopbackServer(chat_delay=0.05) as slow:
        job = subprocess.Popen([sys.executable, "-c", KILLED_JOB.replace("to=sys.argv[2]",
                                                                          "to=sys.argv[2]") , slow.base_url, str(path),
                                "400"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 30
            while written_rows(path) < 40 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            job.kill()  # SIGKILL: no cleanup, as a kernel restart or an OOM kill
            job.wait()
        held = written_rows(path)
        assert 40 <= held < 400, held
        sent = len(asked(slow))
        slow.chat_delay = 0
        written = ask_each([f"row {i}" for i in range(400)], "{}", base_url=slow.base_url, model="tiny-chat",
                           to=path, progress=False)
        assert written.held == 400 and len(asked(slow)) - sent == 400 - held
    rows = read_back(path).row.tolist() if name.endswith(".parquet") else \
        sorted(json.loads(line)["row"] for line in path.read_text().splitlines())
    assert sorted(rows) == list(range(400)), "every row exactly once"


def written_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return sum(len(pd.read_parquet(part)) for part in path.glob("part-*.parquet")) if path.exists() else 0
    return path.read_bytes().count(b"\n") if path.exists() else 0


# -- progress ---------------------------------------------------------------------------------------


def test_progress_of_rows_shows_speed_tokens_failures_and_eta() -> None:
    progress = Progress(100, 100, title="Asking", step_name=None, item_name="rows")
    progress.update(40, 40, tokens=800, errors=2)
    line = progress.line()
    assert line.startswith("40/100 rows · ") and " rows/s · " in line and " tokens/s · 2 failed · ETA " in line
    assert progress.line(stopped=True) == "stopped at 40/100 rows (2 failed)"
    progress.update(100, 100, tokens=2000, errors=2)
    assert progress.line().startswith("100 rows in ") and progress.line().endswith(" tokens/s, 2 failed)")


def test_progress_on_a_log_is_a_line_every_few_seconds(chat: Chat, capsys: pytest.CaptureFixture[str]) -> None:
    ask_each([f"r{i}" for i in range(50)], "{}", chat=chat)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("Asking: 0/50 rows") and lines[-1].startswith("Asking: 50 rows in ")
    assert len(lines) == 2, "a fast job on a log file: the start and the end"


# -- the magic --------------------------------------------------------------------------------------


@pytest.fixture
def ip(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Shell]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VLLM_BASE_URL", server.base_url)
    shell = ipython_shell()
    shell.user_ns["reviews"] = REVIEWS
    yield Shell(shell, capsys)
    errors.show_tracebacks = False
    shell.config.pop("VLLMMagics", None)
    for name in ("reviews", "labels", "review", "stored", PARTIAL, "LABELS"):
        shell.user_ns.pop(name, None)


@pytest.mark.parametrize("line, expected", [
    ('df "Sentiment of: {review}" --choice "a|b"', ("df", "Sentiment of: {review}", ' --choice "a|b"')),
    ("""df[df.lang == "en"] 'Say "hi" to {name}'""", ('df[df.lang == "en"]', 'Say "hi" to {name}', "")),
    (r'["a --b", "c"] "He said \"{}\" -- twice" --concurrency 2',
     ('["a --b", "c"]', 'He said "{}" -- twice', " --concurrency 2")),
])
def test_the_magic_line_splits_into_rows_template_and_options(line: str, expected: tuple[str, str, str]) -> None:
    from vllm_magic.magics.data import split_template

    assert split_template(line) == expected


def test_magic_maps_a_frame_with_a_choice(ip: Shell, server: LoopbackServer) -> None:
    server.script_by(answer_by_prompt(sentiment))
    ip.shell.user_ns["review"] = "a notebook variable that must not leak into the template"
    ip.ok('labels = %vllm map reviews "Sentiment of: {review}" --choice "pos|neg|neutral" --concurrency 2')
    labels = ip.shell.user_ns["labels"]
    assert labels.answer.tolist() == ["pos", "neg", "pos", "neutral", "neg"] and labels.index.equals(REVIEWS.index)
    assert sorted(asked(server)) == ["Sentiment of: Awful", "Sentiment of: Fine, I guess", "Sentiment of: Loved it"]


def test_magic_options_reach_the_requests(ip: Shell, server: LoopbackServer) -> None:
    ip.shell.user_ns["LABELS"] = ["yes", "no"]
    server.script_by(answer_by_prompt(lambda p: "yes"))
    out = ip.ok('%vllm map reviews[reviews.stars > 2] "Is {review} --good?" --choice LABELS --system "Be terse." '
                '--max-tokens 5 --model tiny-chat --out stored')
    assert "stored = 3 rows × 6 columns of answers" in out
    body = server.requests[-1].json
    assert body["messages"][0] == {"role": "system", "content": "Be terse."} and body["max_tokens"] == 5
    assert body["structured_outputs"] == {"choice": ["yes", "no"]} and body["model"] == "tiny-chat"
    assert body["messages"][1]["content"].endswith(" --good?")
    ip.ok('%vllm map ["ab"] "Digits for {}" --regex "[0-9]{3}"')
    assert server.requests[-1].json["structured_outputs"] == {"regex": "[0-9]{3}"}


def test_magic_shapes_json_schema_and_grammar(ip: Shell, server: LoopbackServer) -> None:
    server.script_by(guided)
    ip.ok('%vllm map ["ada", "bob"] "Who is {}?" --schema "name str, age int" --out stored')
    stored = ip.shell.user_ns["stored"]
    assert stored.columns.tolist()[:2] == ["name", "age"] and stored.dtypes["age"] == "Int64"
    assert server.requests[-1].json["response_format"]["type"] == "json_schema"
    ip.ok('%vllm map ["x"] "Facts about {} as JSON" --json --out stored')
    assert ip.shell.user_ns["stored"].answer.tolist() == ["{}"]
    server.script_by(answer_by_prompt(lambda p: "yes"))
    ip.ok('%vllm map ["x"] "{}" --grammar "root ::= \\"yes\\" | \\"no\\"" --out stored')
    assert server.requests[-1].json["structured_outputs"] == {"grammar": 'root ::= "yes" | "no"'}
    assert ip.shell.user_ns["stored"].answer.tolist() == ["yes"]


def test_magic_notes_failed_rows_and_raises_on_request(ip: Shell, server: LoopbackServer) -> None:
    server.script_by(answer_by_prompt(lambda p: Reply.status(400) if "Awful" in p else "ok"))
    result, out = ip.run('%vllm map reviews "{review}" --out labels')
    assert result.success and "Note: 2 of 5 rows failed; their errors are in the `error` column" in out
    out = ip.fails('%vllm map reviews "{review}" --on-error raise --concurrency 1', errors.BadRequestError)
    assert "Rows 'b' and 'e' failed (asking 'Awful')" in out, "one request for both"
    out = ip.fails('%vllm map reviews "{reveiw}"', errors.ConfigError)
    assert "(they have {review}, {stars})" in out
    out = ip.fails('%vllm map reviews "{review}" --concurrency 0', errors.ConfigError)
    assert "`--concurrency 32`" in out and "concurrency=32" not in out, "the fix in notebook words"
    assert "needs the rows, then the template in quotes" in str(ip.run("%vllm map reviews")[0].error_in_exec)


def test_magic_ctrl_c_stores_the_rows_done_and_resume_finishes(ip: Shell, server: LoopbackServer) -> None:
    server.script_by(answer_by_prompt(lambda p: Reply.hang(60) if "Fine" in p else sentiment(p)))
    press_ctrl_c_once(server, 3)
    out = ip.fails('labels = %vllm map reviews "Sentiment: {review}" --choice "pos|neg|neutral"', errors.Interrupted)
    assert f"Stopped after 4 of 5 rows: they are in `{PARTIAL}`" in out and f"--resume {PARTIAL}" in out
    partial = ip.shell.user_ns[PARTIAL]
    assert partial.error["d"] == NOT_DONE and partial.answer.tolist()[:3] == ["pos", "neg", "pos"]
    assert "labels" not in ip.shell.user_ns
    server.script_by(answer_by_prompt(sentiment))
    count = len(asked(server))
    ip.ok(f'labels = %vllm map reviews "Sentiment: {{review}}" --choice "pos|neg|neutral" --resume {PARTIAL}')
    assert asked(server)[count:] == ["Sentiment: Fine, I guess"]
    assert ip.shell.user_ns["labels"].answer.tolist() == ["pos", "neg", "pos", "neutral", "neg"]


def test_magic_to_a_file(ip: Shell, tmp_path: Path) -> None:
    out = ip.ok(f'%vllm map reviews "{{review}}" --to {tmp_path / "a.jsonl"}')
    assert f"5 of 5 rows answered in {tmp_path / 'a.jsonl'}" in out


# -- the notebook -----------------------------------------------------------------------------------


def test_the_extract_notebook_runs(server: LoopbackServer) -> None:
    import nbformat
    from nbclient import NotebookClient

    server.script_by(guided)
    notebook = nbformat.read(ROOT / "notebooks" / "extract.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(
        env={**env, "VLLM_BASE_URL": server.base_url})
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert printed.count("0 of 8 rows failed") == 2 and "categories: ['billing', 'bug', 'praise']" in printed
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "linear-gradient" in html, "the label counts are drawn as bars"
    assert "mood" in html and "stars" in html, "the extracted fields are shown"
    bodies = [r.json for r in server.requests if r.path == CHAT]
    assert any(b.get("structured_outputs") == {"choice": ["billing", "bug", "praise"]} for b in bodies)
    assert any(b.get("response_format", {}).get("json_schema", {}).get("name") == "Ticket" for b in bodies)
