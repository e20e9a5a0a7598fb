"""%%chat and %vllm in a real IPython shell against the loopback vLLM server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

import vllm_magic
from tests.loopback import LoopbackServer, Reply
from tests.unit.notebook_shell import ENV, Shell, chat_bodies, ipython_shell
from tests.unit.stub_server import stub_server
from vllm_magic import errors
from vllm_magic.sinks import PlainSink
from vllm_magic.stream import Event


# -- the happy path ------------------------------------------------------------------------------


def test_load_registers_chat_vllm_and_line_magic(ip: Shell) -> None:
    magics = ip.shell.magics_manager.magics
    assert "chat" in magics["cell"] and "vllm" in magics["cell"] and "vllm" in magics["line"]


def test_another_chat_magic_is_left_alone(ip: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    def other_chat(line: str, cell: str) -> str:
        return "other"

    ip.shell.register_magic_function(other_chat, "cell", "chat")
    capsys.readouterr()
    vllm_magic.load_ipython_extension(ip.shell)
    assert "%%chat belongs to another extension" in capsys.readouterr().out
    assert ip.shell.magics_manager.magics["cell"]["chat"] is other_chat
    assert "vllm" in ip.shell.magics_manager.magics["cell"]
    ip.shell.magics_manager.magics["cell"].pop("chat")


def test_chat_streams_and_the_conversation_continues(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["Hello", " there"], finish_reason="stop"))
    out = ip.ok("%%chat\nHi!")
    assert out.startswith("Hello there\n\n[tiny-chat")
    loopback.push(Reply.tokens(["Again"], finish_reason="stop"))
    ip.ok("%%vllm\nOnce more")
    second = chat_bodies(loopback)[-1]
    assert second["messages"] == [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "Once more"},
    ]
    assert second["stream"] is True and second["stream_options"] == {"include_usage": True}
    assert second["model"] == "tiny-chat"
    assert [t.text for t in ip.turns] == ["Hello there", "Again"]


def test_prompts_with_braces_are_sent_as_written(ip: Shell, loopback: LoopbackServer) -> None:
    prompt = 'Fix this: {"a": {x}} and f"{y!r}" and {{z}} and {'
    ip.ok(f"%%chat\n{prompt}")
    assert chat_bodies(loopback)[-1]["messages"][-1]["content"] == prompt


def test_interpolate_expands_expressions_from_the_namespace(ip: Shell, loopback: LoopbackServer) -> None:
    ip.shell.user_ns.update(rows=3, cols=["x", "y"])
    ip.ok("%%chat --interpolate\n{rows} rows, {cols!r}, {rows * 2:03d}, {{literal}}")
    assert chat_bodies(loopback)[-1]["messages"][-1]["content"] == "3 rows, ['x', 'y'], 006, {literal}"
    out = ip.fails("%%chat -i\n{undefined_name}", errors.ConfigError)
    assert "could not evaluate {undefined_name}" in out and "NameError" in out


def test_once_new_named_system_and_out(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat\nfirst")
    ip.ok("%%chat --once --out answer\nside question")
    assert chat_bodies(loopback)[-1]["messages"] == [{"role": "user", "content": "side question"}]
    assert len(ip.turns) == 1 and ip.shell.user_ns["answer"]
    ip.ok("%%chat -c other --system 'Be terse.'\nhello other")
    assert chat_bodies(loopback)[-1]["messages"] == [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello other"},
    ]
    assert len(ip.turns) == 1
    ip.ok("%%chat --new\nfresh start")
    assert chat_bodies(loopback)[-1]["messages"] == [{"role": "user", "content": "fresh start"}]


def test_cell_options_and_session_params_reach_the_server(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.ok("%vllm params temperature=0.3 top_k=40 min_tokens=2 stop='[\"END\"]'")
    assert "`min_tokens` is not a parameter vllm_magic checks" in out and "top_k = 40" in out
    ip.ok("%%chat --max-tokens 5 --temperature 0\nhi")
    body = chat_bodies(loopback)[-1]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 5 and body["top_k"] == 40
    assert body["min_tokens"] == 2 and body["stop"] == ["END"]
    out = ip.ok("%vllm params --unset top_k --unset min_tokens")
    assert "top_k" not in out and "temperature = 0.3" in out
    ip.ok("%%chat\nhi")
    assert "top_k" not in chat_bodies(loopback)[-1]


def test_config_traits_apply(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%config VLLMMagics.params = {'temperature': 0.1, 'max_tokens': 3}")
    ip.ok("%config VLLMMagics.system_prompt = 'Configured system.'")
    ip.ok("%%chat\nhi")
    body = chat_bodies(loopback)[-1]
    assert body["temperature"] == 0.1 and body["max_tokens"] == 3
    assert body["messages"][0] == {"role": "system", "content": "Configured system."}
    ip.ok("%config VLLMMagics.params = {'top_p': 7}")
    out = ip.fails("%%chat\nhi", errors.ParamError)
    assert "`top_p` must be a number in (0, 1]" in out, "a bad configured value fails the next cell visibly"
    ip.ok("%config VLLMMagics.params = {}")
    ip.ok("%config VLLMMagics.system_prompt = None")


@pytest.mark.parametrize("line, named", [
    ("temperature=-1", "temperature"), ("n=0", "n"), ("top_logprobs=50", "top_logprobs"), ("max_tokens=lots", "max_tokens"), ("top_p=2", "top_p"),
])
def test_bad_params_are_refused_locally(ip: Shell, loopback: LoopbackServer, line: str, named: str) -> None:
    ip.ok("%vllm params temperature=0.5")
    out = ip.fails(f"%vllm params {line}", errors.ParamError)
    assert f"`{named}`" in out
    assert "temperature = 0.5" in ip.ok("%vllm params"), "a refused change keeps the old params"
    out = ip.fails("%%chat --temperature -2\nhi", errors.ParamError)
    assert not chat_bodies(loopback), "nothing is sent when a param is bad"


def test_usage_matches_the_server(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat --max-tokens 4\none")
    ip.ok("%%chat --max-tokens 6\ntwo")
    usage = ip.shell.run_line_magic("vllm", "usage")
    assert list(usage.index) == [1, 2, "total"]
    assert list(usage["completion_tokens"][:2]) == [4, 6]
    assert usage.loc["total", "completion_tokens"] == 10
    assert usage.loc[2, "prompt_tokens"] > usage.loc[1, "total_tokens"], "turn 2 carries turn 1"
    assert usage.loc[1, "finish_reason"] == "length"


def test_models_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with LoopbackServer(models=("tiny-chat", "other")) as server:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        shell = Shell(ipython_shell(), capsys)
        out = shell.fails(f"%vllm connect {server.base_url}", errors.ConfigError)
        assert "serves 2 models: tiny-chat, other" in out and "--model" in out
        shell.ok(f"%vllm connect {server.base_url}/v1 --model other")
        table = shell.shell.run_line_magic("vllm", "models")
        assert list(table["id"]) == ["tiny-chat", "other"]
        assert list(table.columns) == ["id", "max_model_len", "root", "parent", "owned_by"]
        assert table.loc[0, "max_model_len"] == 512
        shell.ok("%%chat\nhi")
        assert chat_bodies(server)[-1]["model"] == "other"


def test_history_undo_retry_reset_system(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["A1"], finish_reason="stop"))
    ip.ok("%%chat\nQ1")
    loopback.push(Reply.tokens(["A2"], finish_reason="stop"))
    ip.ok("%%chat\nQ2")
    out = ip.ok("%vllm history")
    assert out.index("Q1") < out.index("A1") < out.index("Q2") < out.index("A2")
    loopback.push(Reply.tokens(["A2 again"], finish_reason="stop"))
    ip.ok("%vllm retry")
    assert [t.text for t in ip.turns] == ["A1", "A2 again"]
    assert chat_bodies(loopback)[-1]["messages"][-1] == {"role": "user", "content": "Q2"}
    assert len(chat_bodies(loopback)[-1]["messages"]) == 3
    assert "Dropped the last turn" in ip.ok("%vllm undo")
    assert [t.text for t in ip.turns] == ["A1"]
    assert "System prompt: 'You are terse.'" in ip.ok('%vllm system "You are terse."')
    ip.ok("%vllm reset")
    assert ip.turns == []
    ip.ok("%%chat\nQ3")
    assert chat_bodies(loopback)[-1]["messages"][0] == {"role": "system", "content": "You are terse."}
    assert "Nothing to undo" not in ip.ok("%vllm undo")
    assert "Nothing to undo" in ip.ok("%vllm undo")


def test_failed_retry_keeps_the_old_turn(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["kept"], finish_reason="stop"))
    ip.ok("%%chat\nQ")
    loopback.push(Reply.status(500, {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}))
    ip.fails("%vllm retry", errors.ServerError)
    assert [t.text for t in ip.turns] == ["kept"]


def test_save_and_load_never_store_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    key = "sk-secret-1234567890"
    with LoopbackServer(api_key=key) as server:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("VLLM_API_KEY", key)
        shell = Shell(ipython_shell(), capsys)
        outputs = [shell.ok(f"%vllm connect {server.base_url}"), shell.ok("%%chat\nhello"),
                   shell.ok(f"%vllm save {tmp_path / 'c.json'}"), shell.ok("%vllm status"),
                   repr(shell.magics.session.connection), repr(shell.magics.session.chat()),
                   repr(shell.magics.session.connection.client)]
        saved = (tmp_path / "c.json").read_text()
        assert key not in saved and all(key not in o for o in outputs)
        assert "API key: from VLLM_API_KEY" in outputs[0]
        shell.ok("%vllm reset")
        assert "Loaded 1 turns" in shell.ok(f"%vllm load {tmp_path / 'c.json'}")
        assert json.loads(saved)["turns"][0]["user"]["parts"] == [{"type": "Text", "text": "hello"}]
        assert len(shell.turns) == 1


def test_status_hides_url_credentials(ip: Shell, loopback: LoopbackServer) -> None:
    url = loopback.base_url.replace("http://", "http://alice:pa55word@")
    out = ip.ok(f"%vllm connect {url}") + ip.ok("%vllm status")
    assert "pa55word" not in out and "alice" not in out and "***@127.0.0.1" in out
    assert "health: ok" in out and "vLLM version: 0.32.0" in out and "models: tiny-chat" in out


def test_unknown_command_and_bad_options_are_usage_errors(ip: Shell) -> None:
    from IPython.core.error import UsageError

    for source in ("%vllm frobnicate", "%vllm connect --bogus", "%%chat --bogus\nhi", "%%chat\n   \n"):
        result, _ = ip.run(source)
        assert isinstance(result.error_in_exec, UsageError), source


# -- failures: each gives one paragraph, the cell fails, history stays consistent ------------------


def test_server_unreachable(ip: Shell) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = ip.fails(f"%vllm connect http://127.0.0.1:{port}", errors.ConnectError)
    assert f"Could not connect to http://127.0.0.1:{port}/v1" in out and "vllm serve" in out


def test_dns_failure(ip: Shell) -> None:
    out = ip.fails("%vllm connect http://no-such-host.invalid:8000", errors.ConnectError)
    assert "Could not resolve the host name 'no-such-host.invalid'" in out


def test_connection_failure_keeps_the_previous_connection(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat\nfirst")
    ip.fails("%vllm connect http://no-such-host.invalid:8000", errors.ConnectError)
    ip.ok("%%chat\nsecond")
    assert len(ip.turns) == 2


def test_wrong_api_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with LoopbackServer(api_key="right-key") as server:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MY_KEY", "wrong-key")
        shell = Shell(ipython_shell(), capsys)
        out = shell.fails(f"%vllm connect {server.base_url} --api-key-env MY_KEY", errors.AuthError)
        assert "HTTP 401" in out and "Unauthorized" in out and "wrong-key" not in out
        out = shell.fails(f"%vllm connect {server.base_url} --api-key-env UNSET_VAR", errors.ConfigError)
        assert "UNSET_VAR is not set" in out


def test_missing_key_is_asked_for_with_getpass(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with LoopbackServer(api_key="typed-key") as server:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr("getpass.getpass", lambda prompt: "typed-key")
        shell = Shell(ipython_shell(), capsys)
        out = shell.ok(f"%vllm connect {server.base_url}")
        assert "API key: typed in" in out and "typed-key" not in out
        shell.ok("%%chat\nhi")
        monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("asked for the key again"))
        out = shell.ok(f"%vllm connect {server.base_url}/v1")
        assert "API key: typed in" in out, "a typed key is kept for the session"
        assert "typed-key" not in out + shell.ok("%vllm status")


def test_unknown_model_lists_the_valid_ones(ip: Shell) -> None:
    out = ip.fails("%%chat --model nope\nhi", errors.NotFoundError)
    assert "The model `nope` does not exist. Valid aliases: tiny-chat." in out and "%vllm models" in out
    assert ip.turns == []


def test_context_too_long_says_how_big_the_conversation_is(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat\nshort question")
    out = ip.fails("%%chat\n" + "word " * 3000, errors.ContextLengthError)
    assert "max_model_len of 512" in out and "The conversation holds" in out
    assert "maximum context length is 512 tokens" in out, "the server's words are shown verbatim"
    assert "%vllm reset" in out and "%vllm undo" in out
    assert len(ip.turns) == 1


def test_rate_limit_is_retried_before_any_token(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.status(429, headers={"retry-after": "0"}))
    loopback.push(Reply.status(503, headers={"retry-after": "0"}))
    loopback.push(Reply.tokens(["finally"], finish_reason="stop"))
    assert ip.ok("%%chat\nhi").startswith("finally")
    assert len(chat_bodies(loopback)) == 3 and len(ip.turns) == 1


def test_rate_limit_retries_are_bounded(ip: Shell, loopback: LoopbackServer) -> None:
    for _ in range(4):
        loopback.push(Reply.status(429, {"error": {"message": "slow down", "type": "RateLimitError", "code": 429}},
                                   headers={"retry-after": "0"}))
    out = ip.fails("%%chat\nhi", errors.RateLimitError)
    assert "slow down" in out and len(chat_bodies(loopback)) == 4 and ip.turns == []


@pytest.mark.parametrize("reply, shown", [
    (Reply.status(500, {"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}}), "engine dead"),
    (Reply.status(502, body="<html><body><h1>502 Bad Gateway</h1></body></html>"), "502 Bad Gateway"),
])
def test_server_errors_show_the_servers_words(ip: Shell, loopback: LoopbackServer, reply, shown: str) -> None:
    loopback.push(reply)
    out = ip.fails("%%chat\nhi", errors.ServerError)
    assert shown in out and "<html>" not in out and ip.turns == []


@pytest.mark.parametrize("reply, error, words", [
    (Reply.cut_after(3, pieces=["a", "b", "c", "d"]), errors.StreamError, "was cut"),
    (Reply.malformed_line(after=3, pieces=["a", "b", "c", "d"]), errors.StreamError, "malformed"),
    (Reply.error_event(after=3, message="KV cache exhausted", pieces=["a", "b", "c", "d"]), errors.StreamError,
     "KV cache exhausted"),
])
def test_broken_streams_keep_the_partial_answer(ip: Shell, loopback: LoopbackServer, reply, error, words) -> None:
    loopback.push(reply)
    out = ip.fails("%%chat\nhi", error)
    assert words in out and "partial answer is kept" in out
    assert out.startswith("abc"), "what arrived stays on screen"
    assert [(t.text, t.status) for t in ip.turns] == [("abc", "cut")]
    loopback.push(Reply.tokens(["next"], finish_reason="stop"))
    ip.ok("%%chat\ncontinue")
    assert chat_bodies(loopback)[-1]["messages"][1] == {"role": "assistant", "content": "abc"}


def test_read_timeout(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%config VLLMMagics.timeout = 0.3")
    ip.ok("%vllm connect")
    loopback.push(Reply.hang(5, send_headers=True))
    out = ip.fails("%%chat\nhi", errors.TimeoutError)
    assert "Timed out after 0.3 s" in out and "VLLMMagics.timeout" in out and ip.turns == []


def test_interrupt_closes_the_connection_and_keeps_the_partial_answer(
    ip: Shell, loopback: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces_seen = []

    def show_then_interrupt(self: PlainSink, event: Event) -> None:
        pieces_seen.append(event)
        if len(pieces_seen) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(PlainSink, "on_event", show_then_interrupt)
    loopback.push(Reply.until_disconnect("tok ", delay=0.001))
    out = ip.fails("%%chat\nhi", errors.Interrupted)
    assert loopback.client_disconnected.wait(5), "the HTTP connection is closed at once"
    assert "partial answer is kept" in out and "%vllm retry" in out
    assert [(t.text, t.status) for t in ip.turns] == [("tok " * 5, "interrupted")]
    usage = ip.shell.run_line_magic("vllm", "usage")
    assert usage.loc[1, "completion_tokens"] == 5 and bool(usage.loc[1, "estimated"]), "counted as received"
    assert usage.loc["total", "completion_tokens"] == 5 and usage.loc["total", "prompt_tokens"] is pd.NA


def test_debug_on_shows_tracebacks(ip: Shell) -> None:
    ip.ok("%vllm debug on")
    result, out = ip.run("%vllm connect http://no-such-host.invalid:8000")
    assert isinstance(result.error_in_exec, errors.ConnectError) and "Traceback" in out
    ip.ok("%vllm debug off")


# -- the first hour's rough edges ------------------------------------------------------------------


def test_panel_and_sidebar_need_jupyter_and_break_nothing_in_a_terminal(ip: Shell) -> None:
    from IPython.core.error import UsageError

    for line in ("%vllm panel", "%vllm sidebar"):
        result, out = ip.run(line)
        assert isinstance(result.error_in_exec, UsageError) and "needs Jupyter" in str(result.error_in_exec)
        assert "opened" not in (out + str(result.error_in_exec)).lower()
    ip.ok("%%chat\nstill works")
    ip.ok("%vllm retry")
    assert "Dropped the last turn" in ip.ok("%vllm undo")


def test_connect_checks_the_model_against_the_served_list(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.fails(f"%vllm connect {loopback.base_url} --model nope", errors.ConfigError)
    assert "does not serve 'nope'" in out and "Served models: tiny-chat" in out and "--model" in out
    assert "model tiny-chat" in ip.ok(f"%vllm connect {loopback.base_url} --model tiny-chat")


def test_a_server_without_a_model_list_is_accepted_with_a_note(ip: Shell) -> None:
    with stub_server(lambda method, path: (404, b'{"detail": "Not Found"}')) as url:
        out = ip.ok(f"%vllm connect {url} --model tiny-chat")
    assert "Note: The server's model list is unavailable" in out and "using 'tiny-chat' as given" in out



def test_max_tokens_is_checked_against_the_models_limit(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok(f"%vllm connect {loopback.base_url}")
    out = ip.fails("%vllm params max_tokens=100000", errors.ParamError)
    assert "max_model_len of 512" in out and "%vllm params max_tokens=N" in out and "at most 512" in out
    assert "max_tokens" not in ip.ok("%vllm params"), "a refused value is not kept"
    out = ip.fails("%%chat --max-tokens 100000\nhi", errors.ParamError)
    assert "--max-tokens" in out and "%vllm params" not in out
    assert not chat_bodies(loopback), "nothing was sent"


def test_old_guided_fields_reach_a_new_vllm_as_structured_outputs(ip: Shell, loopback: LoopbackServer) -> None:
    out = ip.ok("%vllm params guided_choice='[\"yes\", \"no\"]'")
    out = ip.ok("%%chat\nyes or no?") + ip.ok("%%chat\nagain?")
    body = chat_bodies(loopback)[-1]
    assert body["structured_outputs"] == {"choice": ["yes", "no"]} and "guided_choice" not in body
    assert out.count("Note: guided_choice moved into `structured_outputs`") == 1, "said once"


def test_load_says_what_it_replaced_and_can_bring_it_back(ip: Shell, tmp_path: Path) -> None:
    ip.ok("%%chat\nsaved turn")
    ip.ok(f"%vllm save {tmp_path / 'c.json'}")
    ip.ok("%%chat\nsecond")
    ip.ok("%%chat\nthird")
    out = ip.ok(f"%vllm load {tmp_path / 'c.json'}")
    assert "Loaded 1 turns" in out and "replacing its 3 turns" in out and "--undo" in out
    assert [t.prompt for t in ip.turns] == ["saved turn"]
    assert "3 turns" in ip.ok("%vllm load --undo")
    assert [t.prompt for t in ip.turns] == ["saved turn", "second", "third"]


def test_help_for_the_commands_and_the_cell(ip: Shell) -> None:
    synopsis = ip.ok("%vllm help")
    assert "%vllm connect" in synopsis and "%vllm params" in synopsis and "--temperature" not in synopsis
    assert ip.ok("%vllm help params") == ip.ok("%vllm params -h")
    assert "--unset NAME" in ip.ok("%vllm params -h")
    assert "%vllm connect" in ip.shell.find_line_magic("vllm").__doc__
    assert ip.shell.find_cell_magic("chat").__doc__.lstrip(": \n").startswith("%%chat")


def test_status_shows_the_embeddings_server(ip: Shell, loopback: LoopbackServer) -> None:
    with LoopbackServer(models=(), embedding_models=("emb",)) as embeddings:
        ip.ok(f"%vllm connect {loopback.base_url} --embeddings {embeddings.base_url}")
        out = ip.ok("%vllm status")
    assert f"embeddings: {embeddings.base_url}/v1 · model emb · health: ok" in out


def test_a_stream_that_ends_without_a_finish_reason_is_cut(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.tokens(["preempted ", "half"], finish_reason=None))
    out = ip.fails("%%chat\nhi", errors.StreamError)
    assert "without a finish reason" in out and "%vllm retry" in out
    assert [(t.text, t.status) for t in ip.turns] == [("preempted half", "cut")]


def test_a_failing_tokenize_is_asked_once_and_the_context_error_still_comes(ip: Shell) -> None:
    """vllm-router answers /tokenize with 503 when no worker tokenizes: a diagnostic is never retried."""
    asked: list[str] = []

    def router(method: str, path: str) -> tuple[int, bytes]:
        if method == "GET":
            return 200, json.dumps({"object": "list", "data": [{"id": "tiny-chat", "max_model_len": 512}]}).encode()
        asked.append(path)
        if path == "/tokenize":
            return 503, b'{"error": "No available workers: 0 prefill, 0 decode"}'
        return 400, json.dumps({"error": {"message": "This model's maximum context length is 512 tokens.",
                                          "type": "BadRequestError", "code": 400}}).encode()

    with stub_server(router) as url:
        ip.ok(f"%vllm connect {url}")
        out = ip.fails("%%chat\nlong prompt", errors.ContextLengthError)
    assert asked == ["/v1/chat/completions", "/tokenize"], "the diagnostic was asked once"
    assert "maximum context length is 512 tokens" in out



def test_status_says_what_a_server_without_health_or_version_does_not_tell(ip: Shell) -> None:
    def router(method: str, path: str) -> tuple[int, bytes]:
        if path == "/v1/models":
            return 200, b'{"object": "list", "data": [{"id": "tiny-chat"}]}'
        if path == "/version":
            return 405, b"Only POST requests are supported for transparent proxy"
        return 404, b'{"detail": "Not Found"}'

    with stub_server(router) as url:
        ip.ok(f"%vllm connect {url}")
        out = ip.ok("%vllm status")
    assert "health: unknown (" in out and "HTTP 404" in out
    assert "vLLM version: unknown (" in out and "Only POST requests are supported" in out
    assert "models: tiny-chat" in out



def test_a_wrong_key_a_proxy_answers_with_400_is_reported_at_connect(ip: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteLLM without a database answers a wrong key with 400 "No connected db.", never 401."""
    monkeypatch.setenv("PROXY_KEY", "sk-wrong-key-123")
    with stub_server(lambda method, path: (400, b'{"error": {"message": "No connected db.", "code": "400"}}')) as url:
        out = ip.fails(f"%vllm connect {url} --api-key PROXY_KEY", errors.AuthError)
    assert "refused to list its models (HTTP 400: No connected db.)" in out and "the key is the likely cause" in out
    assert "sk-wrong-key-123" not in out and "%vllm connect" in out and "%vllm params" not in out


def test_status_reads_each_replica_behind_a_router(ip: Shell) -> None:
    """vllm-router forwards /metrics to one replica of its choosing; /workers names them all."""
    replicas: dict[str, str] = {}

    def replica(running: int) -> Callable[[str, str], tuple[int, bytes]]:
        return lambda method, path: (200, f"vllm:num_requests_running{{engine=\"0\"}} {running}.0\n"
                                          f"vllm:generation_tokens_total{{engine=\"0\"}} {running * 100}.0\n".encode())

    def router(method: str, path: str) -> tuple[int, bytes]:
        if path == "/v1/models":
            return 200, b'{"object": "list", "data": [{"id": "tiny-chat"}]}'
        if path == "/workers":
            return 200, json.dumps({"workers": [{"url": url, "is_healthy": True} for url in replicas.values()]}).encode()
        return 404, b'{"detail": "Not Found"}'

    with stub_server(replica(2)) as first, stub_server(replica(5)) as second, stub_server(router) as url:
        replicas.update(a=first, b=second)
        ip.ok(f"%vllm connect {url}")
        out = ip.ok("%vllm status")
        table = ip.magics.shell.run_line_magic("vllm", "metrics")
    assert f"load of replica {first}: 2 running, 0 waiting" in out and f"load of replica {second}: 5 running" in out
    assert "500 tokens generated" in out
    running = table[table.metric == "vllm:num_requests_running"].set_index("replica").value
    assert running.to_dict() == {first: 2.0, second: 5.0}


def test_a_proxys_unknown_model_400_is_an_unknown_model(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.status(400, {"error": {"message": "Invalid model name passed in model=nope. Call `/v1/models` "
                                               "to view available models for your key.", "type": "invalid_request_error",
                                               "code": "400"}}))
    out = ip.fails("%%chat\nhi", errors.NotFoundError)
    assert "Invalid model name passed in model=nope" in out and "%vllm models" in out and "%vllm params" not in out


def test_a_cut_before_any_text_promises_no_partial_answer(ip: Shell, loopback: LoopbackServer) -> None:
    loopback.push(Reply.cut_after(0, pieces=["a", "b"]))
    out = ip.fails("%%chat\nhi", errors.StreamError)
    assert "nothing was recorded" in out and "partial answer" not in out and ip.turns == []


def test_a_proxys_wrapped_context_error_shows_the_servers_own_words(ip: Shell, loopback: LoopbackServer) -> None:
    inner = ("This model's maximum context length is 512 tokens. However, your request has 700 input tokens. "
             "Please reduce the length of the input messages. None")
    wrapped = ("litellm.ContextWindowExceededError: litellm.BadRequestError: Hosted_vllmException - "
               + json.dumps({"error": {"message": inner, "type": "BadRequestError", "code": 400}})
               + "\nmodel=tiny-chat. context_window_fallbacks=None. fallbacks=None.")
    loopback.push(Reply.status(400, {"error": {"message": wrapped, "type": None, "param": None, "code": "400"}}))
    out = ip.fails("%%chat\nhi", errors.ContextLengthError)
    assert inner in out and "litellm" not in out and "fallbacks" not in out


def test_a_proxys_max_input_tokens_is_the_models_limit(ip: Shell) -> None:
    listing = json.dumps({"object": "list", "data": [{"id": "tiny-chat", "max_input_tokens": 300}]}).encode()
    with stub_server(lambda method, path: (200, listing)) as url:
        out = ip.ok(f"%vllm connect {url}")
        refused = ip.fails("%vllm params max_tokens=400", errors.ParamError)
    assert "(max_model_len 300)" in out and "max_model_len of 300" in refused



def test_gateway_headers_go_with_every_request_and_are_never_shown(ip: Shell, tmp_path: Path) -> None:
    with LoopbackServer(embedding_models=("emb",)) as server:
        out = ip.ok(f'%vllm connect {server.base_url} --model tiny-chat --header "X-Org: analytics" '
                    f'--header "X-Gateway-Token: s3cr3t-value"')
        out += ip.ok("%%chat\nhi") + ip.ok("%vllm status") + ip.ok(f"%vllm save {tmp_path / 'c.json'}")
        ip.ok("%vllm embed 'some text' --model emb")
        out += repr(ip.magics.session.connection.client) + (tmp_path / "c.json").read_text()
        sent = [r for r in server.requests if r.path in ("/v1/chat/completions", "/v1/embeddings")]
        ip.fails('%vllm connect http://no-such-host.invalid --header "X-Other: x"', errors.ConnectError)
        again = ip.ok(f"%vllm connect {server.base_url} --model tiny-chat")
    assert "X-Other" not in again and "X-Org" in again, "a failed connect keeps the headers as they were"
    assert all(r.headers.get("x-gateway-token") == "s3cr3t-value" for r in sent) and len(sent) == 2
    assert all(r.headers.get("x-org") == "analytics" for r in sent)
    assert "headers: X-Org, X-Gateway-Token" in out and "s3cr3t-value" not in out and "analytics" not in out
    result, printed = ip.run('%vllm connect http://127.0.0.1:1 --header "s3cr3t-only"')
    assert "NAME: VALUE" in str(result.error_in_exec) and "s3cr3t" not in str(result.error_in_exec) + printed


def test_python_chats_send_headers_too(loopback: LoopbackServer) -> None:
    chat = vllm_magic.Chat(loopback.base_url, headers={"X-Org": "analytics"})
    chat.ask("hi")
    assert chat_bodies(loopback) and loopback.requests[-1].headers["x-org"] == "analytics"
    assert "analytics" not in repr(chat) + repr(chat.connection.client)


TOKENS: list[str] = []


def next_token() -> str:
    """A gateway's short-lived token: each call hands out the next one."""
    return TOKENS.pop(0)


def test_expiring_credentials_are_asked_again_once_after_a_401() -> None:
    with LoopbackServer(api_key="fresh-token") as server:
        TOKENS[:] = ["expired-token", "fresh-token"]
        chat = vllm_magic.Chat(server.base_url, credentials=next_token)
        assert chat.ask("hi").text and TOKENS == [], "refreshed once, and the request went through"
        assert "fresh-token" not in repr(chat) + repr(chat.connection.client)
        TOKENS[:] = ["wrong-1", "wrong-2", "never-asked"]
        with pytest.raises(errors.AuthError) as info:
            vllm_magic.Chat(server.base_url, credentials=next_token).ask("hi")
        assert TOKENS == ["never-asked"] and "wrong" not in str(info.value), "one refresh, then the error"


def test_credentials_named_in_config_serve_the_magics(ip: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(api_key="fresh-token") as server:
        TOKENS[:] = ["fresh-token"]
        ip.ok(f"%config VLLMMagics.credentials = '{__name__}:next_token'")
        out = ip.ok(f"%vllm connect {server.base_url}") + ip.ok("%%chat\nhi")
        assert f"API key: from {__name__}:next_token" in out and "fresh-token" not in out
        ip.ok("%config VLLMMagics.credentials = 'no_such_module:token'")
        out = ip.fails(f"%vllm connect {server.base_url}", errors.ConfigError)
        assert "cannot be imported" in out and "%config VLLMMagics.credentials" in out


def test_status_reads_the_servers_load_from_its_metrics(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat\nhi")
    out = ip.ok("%vllm status")
    assert "load: 0 running, 0 waiting · KV cache 0% · 16 tokens generated" in out
    table = ip.shell.run_line_magic("vllm", "metrics")
    assert "vllm:generation_tokens_total" in set(table["metric"]) and "engine=0, model_name=tiny-chat" in set(table["labels"])


@pytest.mark.parametrize("profile", ["llama.cpp", "openai"])
def test_other_servers_work_and_say_what_they_lack(ip: Shell, profile: str) -> None:
    with LoopbackServer(profile=profile) as server:
        out = ip.ok(f"%vllm connect {server.base_url}")
        assert "max_model_len" not in out, "no limit is claimed that the server did not give"
        ip.ok("%%chat\nhi")
        status = ip.ok("%vllm status")
        usage = ip.shell.run_line_magic("vllm", "usage")
    assert "health: unknown (" in status and "vLLM version: unknown" in status and "load: unknown (" in status
    assert bool(usage.loc[1, "estimated"]) == (profile == "llama.cpp"), "llama.cpp sends no usage: counted"


def test_a_routers_model_list_of_another_shape_is_said_and_model_still_works(ip: Shell) -> None:
    with stub_server(lambda method, path: (200, b'{"models": ["all-MiniLM-L6-v2", "tiny-chat"]}')) as url:
        refused = ip.fails(f"%vllm connect {url}", errors.UnexpectedResponse)
        out = ip.ok(f"%vllm connect {url} --model tiny-chat")
    assert "unexpected shape" in refused and "serves no models" not in refused
    assert "Note: The server's model list is unavailable" in out and "model tiny-chat" in out
