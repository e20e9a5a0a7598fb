"""Embeddings into pandas: the engine, the magic and the notebook, against the loopback vLLM."""

from __future__ import annotations

import io

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from tests.loopback import LoopbackServer, Reply
from tests.unit.notebook_shell import ENV, Shell, ipython_shell
from vllm_magic import embed, errors
from vllm_magic.embeddings import _batches, _Job
from vllm_magic.progress import Progress, TextProgress

ROOT = Path(__file__).resolve().parents[2]
MODEL = "all-MiniLM-L6-v2"
EMBED = "/v1/embeddings"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A pooling server like the recorded one: only all-MiniLM-L6-v2 (384 dims, max_model_len 256)."""
    with LoopbackServer(models=(), embedding_models=(MODEL,)) as s:
        yield s


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENV, "VLLM_EMBEDDING_MODEL"):
        monkeypatch.delenv(name, raising=False)


def reference(server: LoopbackServer, texts: list[str]) -> dict[str, np.ndarray]:
    """The server's own float answer for each text, asked in one plain request."""
    distinct = list(dict.fromkeys(texts))
    answer = httpx.post(server.base_url + EMBED, json={"input": distinct, "encoding_format": "float"}).json()
    server.requests.clear()
    return {text: np.array(item["embedding"], dtype=np.float32) for text, item in zip(distinct, answer["data"])}


def sent(server: LoopbackServer) -> list[dict]:
    return [r.json for r in server.requests if r.path == EMBED]


# -- shape, order and what is sent ------------------------------------------------------------------


def test_a_series_keeps_its_index_and_the_matrix_is_float32_columns(server: LoopbackServer) -> None:
    texts = pd.Series(["Hello Jupyter", "A cat sits on the mat", "vLLM"], index=["x", "y", "z"])
    expected = reference(server, texts.tolist())
    emb = embed(texts, base_url=server.base_url)
    assert emb.index.tolist() == ["x", "y", "z"] and emb.columns.tolist() == list(range(384))
    assert set(emb.dtypes) == {np.dtype("float32")}
    matrix = emb.to_numpy()
    assert matrix.dtype == np.float32 and matrix.shape == (3, 384)
    for row, text in zip(matrix, texts):
        np.testing.assert_array_equal(row, expected[text])
    (body,) = sent(server)
    assert body == {"model": MODEL, "input": texts.tolist(), "encoding_format": "base64"}


def test_order_is_exact_with_concurrency_and_duplicates_are_sent_once(server: LoopbackServer) -> None:
    rng = np.random.default_rng(7)
    words = [f"text number {i} " + "x" * int(rng.integers(0, 40)) for i in range(300)]
    texts = [words[i] for i in rng.integers(0, len(words), 2000)]
    expected = reference(server, words)
    emb = embed(texts, base_url=server.base_url, batch_size=7, concurrency=4, progress=False)
    assert emb.index.tolist() == list(range(2000))
    np.testing.assert_array_equal(emb.to_numpy(), np.stack([expected[t] for t in texts]))
    inputs = [text for body in sent(server) for text in body["input"]]
    assert sorted(inputs) == sorted(set(texts)), "each distinct text is sent exactly once"
    assert max(len(body["input"]) for body in sent(server)) == 7


def test_batches_are_bounded_by_count_and_by_characters() -> None:
    texts = ["a" * 20] * 5 + ["b" * 100] + ["c" * 10] * 3
    assert _batches(texts, size=4, chars=50) == [range(0, 2), range(2, 4), range(4, 5), range(5, 6), range(6, 9)]
    assert _batches(texts, size=2, chars=10**6) == [range(i, min(i + 2, 9)) for i in range(0, 9, 2)]


def test_options_reach_the_server(server: LoopbackServer) -> None:
    embed(["x" * 2000], base_url=server.base_url, truncate=True)
    assert sent(server)[-1]["truncate_prompt_tokens"] == -1
    with pytest.raises(errors.BadRequestError):
        embed(["x"], base_url=server.base_url, dimensions=64)
    assert sent(server)[-1]["dimensions"] == 64


def test_with_text_and_array_output(server: LoopbackServer) -> None:
    emb = embed(("b", "a"), base_url=server.base_url, with_text=True)
    assert emb.columns[0] == "text" and emb["text"].tolist() == ["b", "a"] and emb.shape == (2, 385)
    array = embed("one text", base_url=server.base_url, as_="array")
    assert isinstance(array, np.ndarray) and array.shape == (1, 384) and array.dtype == np.float32
    with pytest.raises(errors.ConfigError, match="with_text"):
        embed("x", base_url=server.base_url, with_text=True, as_="array")


def test_the_frame_wraps_the_matrix_without_a_copy(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    filled = []
    finish = _Job._finish
    monkeypatch.setattr(_Job, "_finish", lambda job: filled.append(finish(job)) or filled[-1])
    emb = embed([f"t{i}" for i in range(50)], base_url=server.base_url, batch_size=10, progress=False)
    (matrix,) = filled
    assert np.shares_memory(emb.to_numpy(), matrix), "one matrix, filled in place and handed to pandas"


def test_a_server_without_base64_gets_floats(server: LoopbackServer) -> None:
    expected = reference(server, ["p", "q", "r"])
    with LoopbackServer(models=(), embedding_models=(MODEL,), embedding_encodings=("float",)) as old:
        emb = embed(["p", "q", "r"], base_url=old.base_url, batch_size=1, concurrency=1, progress=False)
        formats = [body["encoding_format"] for body in sent(old)]
    np.testing.assert_array_equal(emb.to_numpy(), np.stack([expected[t] for t in "pqr"]))
    assert formats == ["base64", "float", "float", "float"], "asked once, then floats"


def test_model_from_env_argument_or_the_only_one_served(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(models=(), embedding_models=(MODEL, "bge")) as two:
        with pytest.raises(errors.ConfigError, match="serves 2 models: all-MiniLM-L6-v2, bge") as info:
            embed("x", base_url=two.base_url)
        assert "embed(texts, model=NAME)" in str(info.value) and "%" not in str(info.value), \
            "Python is told the fix in Python"
        embed("x", "bge", base_url=two.base_url)
        monkeypatch.setenv("VLLM_MODEL", "tiny-chat")  # the chat model's setting is not used
        monkeypatch.setenv("VLLM_EMBEDDING_MODEL", MODEL)
        embed("x", base_url=two.base_url)
        assert [body["model"] for body in sent(two)] == ["bge", MODEL]


# -- bad input ------------------------------------------------------------------------------------


def test_items_that_are_not_text_are_named_or_skipped(server: LoopbackServer) -> None:
    texts = pd.Series(["a", None, "b", float("nan"), 5, "a"], index=list("uvwxyz"))
    with pytest.raises(errors.ConfigError) as info:
        embed(texts, base_url=server.base_url)
    message = str(info.value)
    assert "3 of the 6 items to embed are not text: rows 'v', 'x' and 'y'" in message
    assert "--skip-missing" in message and "dropna" in message and server.requests == []
    emb = embed(texts, base_url=server.base_url, skip_missing=True)
    matrix = emb.to_numpy()
    assert np.isnan(matrix[[1, 3, 4]]).all() and not np.isnan(matrix[[0, 2, 5]]).any()
    np.testing.assert_array_equal(matrix[0], matrix[5])
    assert sent(server)[0]["input"] == ["a", "b"]


def test_list_positions_are_named_and_long_lists_cut_short(server: LoopbackServer) -> None:
    with pytest.raises(errors.ConfigError, match=r"rows 0, 1, 2, 3, 4 and 995 more \(the first is None"):
        embed([None] * 1000, base_url=server.base_url)


def test_empty_input_gives_an_empty_frame_without_any_request(server: LoopbackServer) -> None:
    for empty in ([], (), pd.Series([], dtype=object)):
        emb = embed(empty, base_url=server.base_url)
        assert emb.shape == (0, 0)
    assert embed([None, None], base_url=server.base_url, skip_missing=True).shape == (2, 0)
    assert server.requests == [], "not even /v1/models"


def test_other_inputs_are_refused_with_the_fix(server: LoopbackServer) -> None:
    with pytest.raises(errors.ConfigError, match=r"not a DataFrame \(pick the column of texts, e.g. `df.text`\)"):
        embed(pd.DataFrame({"text": ["a"]}), base_url=server.base_url)
    with pytest.raises(errors.ConfigError, match="`concurrency` must be a whole number of at least 1, not 0"):
        embed(["a"], base_url=server.base_url, concurrency=0)


# -- server errors --------------------------------------------------------------------------------


def test_a_text_over_the_models_length_shows_vllms_words_and_the_truncate_hint(server: LoopbackServer) -> None:
    texts = ["short", "x" * 1020]
    with pytest.raises(errors.ContextLengthError) as info:
        embed(texts, base_url=server.base_url)
    message = str(info.value)
    assert "rows 0 and 1" in message and "--truncate" in message and "truncate=True" in message
    assert ("This model's maximum context length is 256 tokens. However, your prompt contains at least 257 "
            "input tokens") in message
    assert embed(texts, base_url=server.base_url, truncate=True).shape == (2, 384)


def test_a_chat_only_server_says_it_has_no_embeddings(loopback: LoopbackServer) -> None:
    with pytest.raises(errors.NotFoundError) as info:
        embed(["hi"], base_url=loopback.base_url)
    message = str(info.value)
    assert "has no embeddings endpoint (HTTP 404, Not Found)" in message and "tiny-chat" in message
    assert "--runner pooling" in message and "embed(texts, base_url=EMBEDDINGS_URL)" in message


def test_unsupported_dimensions_show_vllms_message(server: LoopbackServer) -> None:
    with pytest.raises(errors.BadRequestError) as info:
        embed(["hi"], base_url=server.base_url, dimensions=64)
    assert ("Model 'all-MiniLM-L6-v2' does not support Matryoshka embeddings; dimensions must be unset "
            "(received dimensions=64).") in str(info.value)
    assert "Drop `--dimensions`" in str(info.value)


def test_429_and_503_are_retried(server: LoopbackServer) -> None:
    server.push_embedding(Reply.status(503, headers={"retry-after": "0"}))
    server.push_embedding(Reply.status(429, headers={"retry-after": "0"}))
    emb = embed(["a", "b"], base_url=server.base_url, batch_size=1, concurrency=1)
    assert emb.shape == (2, 384) and len(sent(server)) == 4


def test_a_batch_that_fails_for_good_names_its_rows(server: LoopbackServer) -> None:
    server.push_embedding(Reply.status(500))
    with pytest.raises(errors.ServerError) as info:
        embed(pd.Series(list("abcdef"), index=range(10, 16)), base_url=server.base_url, batch_size=2, concurrency=1)
    message = str(info.value)
    assert message.startswith("Embedding the texts at rows 10 and 11 failed.") and "HTTP 500" in message


def test_a_failure_cuts_the_other_requests_in_flight(server: LoopbackServer) -> None:
    server.push_embedding(Reply.hang(60))  # the first request hangs, so it is in flight when the second fails
    server.push_embedding(Reply.status(500))
    with pytest.raises(errors.ServerError):
        embed(list("abcd"), base_url=server.base_url, batch_size=1, concurrency=2, progress=False)
    assert server.client_disconnected.wait(5), "the hanging request's connection was closed"


def test_a_malformed_answer_is_a_clear_error(server: LoopbackServer) -> None:
    server.push_embedding(Reply.status(200, body_json={"data": [{"index": 0, "embedding": "not base64!"}]}))
    with pytest.raises(errors.ServerError, match="is not a list of embeddings"):
        embed(["a"], base_url=server.base_url)


def test_a_wrong_key_is_refused_and_never_shown() -> None:
    with LoopbackServer(models=(), embedding_models=(MODEL,), api_key="right-key") as locked:
        with pytest.raises(errors.AuthError) as info:
            embed(["a"], base_url=locked.base_url, api_key="wrong-key")
        assert "HTTP 401" in str(info.value) and "wrong-key" not in str(info.value)
        assert embed(["a"], base_url=locked.base_url, api_key="right-key").shape == (1, 384)


# -- Ctrl-C -----------------------------------------------------------------------------------------


def press_ctrl_c_once(server: LoopbackServer, requests: int) -> None:
    """Send this process SIGINT, like Ctrl-C or a kernel interrupt, once the server holds ``requests``."""
    def press() -> None:
        if server.wait_for_requests(requests, EMBED):
            # To the main thread itself: a process-wide kill() may be taken by another thread,
            # and then the main thread only notices once its blocking read returns.
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=press, daemon=True).start()


def test_ctrl_c_cuts_every_request_in_flight_and_returns_nothing(server: LoopbackServer) -> None:
    server.push_embedding(Reply.hang(60))
    server.push_embedding(Reply.hang(60))
    press_ctrl_c_once(server, 2)
    result = None
    with pytest.raises(KeyboardInterrupt):
        result = embed(list("abc"), MODEL, base_url=server.base_url, batch_size=1, concurrency=2, progress=False)
    assert result is None
    assert server.client_disconnected.wait(5), "the connections were closed, so vLLM drops the requests"
    assert len(sent(server)) == 2, "the third batch was never sent"


def test_ctrl_c_during_a_single_batch_closes_its_connection(server: LoopbackServer) -> None:
    server.push_embedding(Reply.hang(60))
    press_ctrl_c_once(server, 1)
    with pytest.raises(KeyboardInterrupt):
        embed(["a", "b"], MODEL, base_url=server.base_url)
    assert server.client_disconnected.wait(5)


# -- progress ---------------------------------------------------------------------------------------


def test_progress_on_a_log_file_is_one_line_per_step(server: LoopbackServer, capsys: pytest.CaptureFixture[str]) -> None:
    embed([f"t{i}" for i in range(30)], base_url=server.base_url, batch_size=10)
    lines = capsys.readouterr().err.splitlines(keepends=True)
    assert "\r" not in "".join(lines) and all(line.endswith("\n") for line in lines)
    assert [line.split(" batches")[0] for line in lines] == [f"Embedding: {n}/3" for n in range(4)], \
        "each step once, the finished line not repeated"
    assert "3/3 batches · 30 texts in" in lines[-1] and lines[-1].rstrip().endswith("texts/s)")
    embed(["one batch"], base_url=server.base_url)
    assert capsys.readouterr().err == "", "no bar for a single batch"


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = TextProgress(3, 30, stream=terminal)
    for step in (1, 2, 3):
        progress.update(step, step * 10)
    progress.close(ok=True)
    shown = terminal.getvalue()
    assert shown.startswith("\rEmbedding: 0/3 batches") and shown.count("\n") == 1 and shown.endswith("texts/s)\n")


def test_progress_line_shows_speed_and_eta() -> None:
    progress = Progress(10, 1000)
    progress.update(4, 400)
    line = progress.line()
    assert line.startswith("4/10 batches · 400/1,000 texts · ") and " texts/s · ETA " in line
    assert progress.line(stopped=True) == "stopped at 4/10 batches (400/1,000 texts)"


# -- the magic --------------------------------------------------------------------------------------


@pytest.fixture
def ip(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Shell]:
    monkeypatch.setenv("VLLM_BASE_URL", server.base_url)
    shell = ipython_shell()
    yield Shell(shell, capsys)
    errors.show_tracebacks = False
    shell.config.pop("VLLMMagics", None)
    for name in ("df", "emb", "stored"):
        shell.user_ns.pop(name, None)


def test_magic_embeds_an_expression_into_a_frame(ip: Shell, server: LoopbackServer) -> None:
    ip.shell.user_ns["df"] = pd.DataFrame({"text": ["a", "b", "c", "d"]}, index=[5, 6, 7, 8])
    ip.ok("emb = %vllm embed df.text[df.text != 'c'] --batch-size 2 --concurrency 2")
    emb = ip.shell.user_ns["emb"]
    assert emb.index.tolist() == [5, 6, 8] and emb.shape == (3, 384)
    assert sorted(body["input"] for body in sent(server)) == [["a", "b"], ["d"]]


def test_magic_expression_may_hold_spaces_quotes_and_dashes(ip: Shell) -> None:
    ip.ok("""emb = %vllm embed ["it's --not an option", 'two  words'] --with-text""")
    assert ip.shell.user_ns["emb"]["text"].tolist() == ["it's --not an option", "two  words"]
    ip.ok('%vllm embed "one text" --out stored')
    assert ip.shell.user_ns["stored"].shape == (1, 384)


def test_magic_model_from_option_config_or_env(ip: Shell, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for setup, line in [("", "%vllm embed 'a' --model nope"),
                        ("%config VLLMMagics.embedding_model = 'nope2'", "%vllm embed 'a'")]:
        ip.ok(setup)
        ip.fails(line, errors.NotFoundError)
    monkeypatch.setenv("VLLM_EMBEDDING_MODEL", "nope3")
    ip.shell.config.pop("VLLMMagics", None)
    ip.magics.embedding_model = None
    ip.magics.session.embeddings = None
    ip.fails("%vllm embed 'a'", errors.NotFoundError)
    assert [body["model"] for body in sent(server)] == ["nope", "nope2", "nope3"]


def test_magic_embeddings_on_their_own_server(ip: Shell, loopback: LoopbackServer, server: LoopbackServer) -> None:
    out = ip.ok(f"%vllm connect {loopback.base_url} --embeddings {server.base_url}/v1")
    assert f"Embeddings: {server.base_url}/v1 · model {MODEL}" in out
    ip.ok("emb = %vllm embed ['x', 'y']")
    assert len(sent(server)) == 1 and not sent(loopback)
    ip.ok(f"%vllm connect {loopback.base_url}")  # without --embeddings, they go to the chat server
    ip.fails("%vllm embed ['x']", errors.NotFoundError)


def test_magic_errors_are_one_paragraph(ip: Shell) -> None:
    out = ip.fails("%vllm embed texts", errors.ConfigError)
    assert "could not evaluate 'texts': NameError" in out and "quote literal text" in out
    out = ip.fails("%vllm embed [None, 'a']", errors.ConfigError)
    assert "row 0" in out and "--skip-missing" in out
    assert "unrecognized arguments: --bach-size 2" in str(ip.run("%vllm embed 'a' --bach-size 2")[0].error_in_exec)
    assert "needs the texts first" in str(ip.run("%vllm embed")[0].error_in_exec)


def test_magic_ctrl_c_is_one_paragraph(ip: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "update", interrupt)
    out = ip.fails("emb = %vllm embed [str(i) for i in range(9)] --batch-size 3", errors.Interrupted)
    assert "nothing was stored" in out and "emb" not in ip.shell.user_ns


# -- notebooks ------------------------------------------------------------------------------------


def kernel_env(server: LoopbackServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_"))}
    return {**env, "VLLM_BASE_URL": server.base_url}


def test_the_embeddings_notebook_runs(server: LoopbackServer) -> None:
    notebook = nbformat.read(ROOT / "notebooks" / "embeddings.ipynb", as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=kernel_env(server))
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "background-color" in html, "the similarity heatmap is drawn"


def test_a_widget_progress_bar_in_a_kernel(server: LoopbackServer) -> None:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext vllm_magic"),
        nbformat.v4.new_code_cell("emb = %vllm embed [str(i) for i in range(40)] --batch-size 10\nemb.shape"),
    ])
    NotebookClient(notebook, kernel_name="python3", timeout=60).execute(env=kernel_env(server))
    outputs = notebook.cells[1].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert outputs[-1].data["text/plain"] == "(40, 384)"
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    labels = [m["state"].get("value") for m in state.values() if m["model_name"] == "LabelModel"]
    assert any(str(label).startswith("4/4 batches · 40 texts in") for label in labels)


def test_dimensions_a_server_ignores_are_an_error_not_wider_vectors() -> None:
    with LoopbackServer(models=(), embedding_models=(MODEL,), profile="llama.cpp") as llama:
        with pytest.raises(errors.UnexpectedResponse) as info:
            embed(["hi"], base_url=llama.base_url, dimensions=64)
        assert sent(llama)[-1]["dimensions"] == 64
    message = str(info.value)
    assert "returned vectors of 384 numbers, not the 64 asked for: it ignores `dimensions`" in message
    assert "Drop `--dimensions`" in message


def test_connect_names_the_embedding_model_of_a_server_that_serves_both_kinds(ip: Shell) -> None:
    """A proxy serves chat and embedding models at one URL: `--embedding-model` alone picks one."""
    with LoopbackServer(models=("tiny-chat",), embedding_models=(MODEL, "bge")) as proxy:
        ip.ok(f"%vllm connect {proxy.base_url} --model tiny-chat --embedding-model bge")
        ip.ok("%vllm embed 'a' --out stored")
        assert sent(proxy)[-1]["model"] == "bge"
        ip.fails(f"%vllm connect {proxy.base_url} --model tiny-chat --embedding-model nope", errors.ConfigError)
