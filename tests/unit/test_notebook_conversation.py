"""The conversation belongs to the notebook: saved beside it after every change, offered back (or
restored) when a restarted kernel loads the extension, and each turn knows the cell that made it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.loopback import LoopbackServer, Reply
from tests.unit.notebook_shell import Shell
from vllm_magic import Conversation, errors
from vllm_magic.render import conversation_html


@pytest.fixture
def notebook(ip: Shell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``analysis.ipynb`` in tmp_path, named in JPY_SESSION_NAME as jupyter-server does for its kernel."""
    path = tmp_path / "analysis.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    return path


def restart(ip: Shell) -> tuple[Shell, str]:
    """A restarted kernel's `%load_ext vllm_magic` (a new session), and what it printed."""
    ip.capsys.readouterr()
    kernel = Shell(ip.shell, ip.capsys)
    return kernel, ip.capsys.readouterr().out


def sidecar(notebook: Path) -> Path:
    return notebook.with_name(f".{notebook.name}.vllm-chat.json")


def saved(notebook: Path) -> dict[str, Conversation]:
    data = json.loads(sidecar(notebook).read_text(encoding="utf-8"))
    return {c.name: c for c in map(Conversation.from_dict, data["conversations"])}


def chat(kernel: Shell, loopback: LoopbackServer, prompt: str, answer: str, options: str = "") -> None:
    loopback.push(Reply.tokens([answer], finish_reason="stop"))
    kernel.ok(f"%%chat {options}\n{prompt}")


# -- saved beside the notebook ---------------------------------------------------------------------


def test_each_turn_is_saved_beside_the_notebook(ip: Shell, loopback: LoopbackServer, notebook: Path) -> None:
    kernel, _ = restart(ip)
    chat(kernel, loopback, "Q1", "A1")
    assert [(t.prompt, t.text) for t in saved(notebook)["default"].turns] == [("Q1", "A1")]
    chat(kernel, loopback, "side", "B1", "-c other")
    assert [t.text for t in saved(notebook)["other"].turns] == ["B1"]
    assert [p.name for p in notebook.parent.iterdir()] == [".analysis.ipynb.vllm-chat.json"], \
        "written through a temporary file that is renamed, none left behind"


def test_system_undo_reset_and_load_are_saved_too(ip: Shell, loopback: LoopbackServer, notebook: Path,
                                                  tmp_path: Path) -> None:
    kernel, _ = restart(ip)
    chat(kernel, loopback, "Q1", "A1")
    kernel.ok(f"%vllm save {tmp_path / 'one.json'}")
    kernel.ok('%vllm system "Be terse."')
    assert saved(notebook)["default"].system == "Be terse."
    kernel.ok("%vllm undo")
    assert len(saved(notebook)["default"]) == 0
    kernel.ok(f"%vllm load {tmp_path / 'one.json'}")
    assert [t.text for t in saved(notebook)["default"].turns] == ["A1"]
    kernel.ok("%vllm reset --all")
    assert len(saved(notebook)["default"]) == 0


def test_two_notebooks_keep_their_own_files(ip: Shell, loopback: LoopbackServer, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first.ipynb", tmp_path / "sub" / "second.ipynb"
    second.parent.mkdir()
    for notebook, answer in ((first, "for the first"), (second, "for the second")):
        monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
        chat(restart(ip)[0], loopback, "Q", answer)
    assert [t.text for t in saved(first)["default"].turns] == ["for the first"]
    assert [t.text for t in saved(second)["default"].turns] == ["for the second"]


def test_a_path_from_the_servers_root_is_the_notebook_in_the_kernels_folder(
        ip: Shell, loopback: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # jupyter-server starts the kernel in the notebook's folder
    monkeypatch.setenv("JPY_SESSION_NAME", "projects/analysis.ipynb")
    chat(restart(ip)[0], loopback, "Q", "A")
    assert [t.text for t in saved(tmp_path / "analysis.ipynb")["default"].turns] == ["A"]


@pytest.mark.parametrize("session_name", [None, "console-1-0b9e", "/tmp/script.py"])
def test_outside_a_notebook_nothing_is_saved(ip: Shell, loopback: LoopbackServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, session_name: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    if session_name:
        monkeypatch.setenv("JPY_SESSION_NAME", session_name)
    kernel, offered = restart(ip)
    chat(kernel, loopback, "Q", "A")
    assert list(tmp_path.iterdir()) == [] and offered == ""
    out = kernel.fails("%vllm restore", errors.ConfigError)
    assert "runs no notebook" in out and "VLLMMagics.autosave_file" in out


def test_a_configured_file_is_used_outside_a_notebook(ip: Shell, loopback: LoopbackServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    ip.ok(f"%config VLLMMagics.autosave_file = {str(path)!r}")
    chat(ip, loopback, "Q", "A")
    kernel, offered = restart(ip)
    assert "(1 turn, last " in offered
    assert "Restored 'default' (1 turn" in kernel.ok("%vllm restore")


def test_autosave_off_writes_nothing(ip: Shell, loopback: LoopbackServer, notebook: Path) -> None:
    kernel, _ = restart(ip)
    kernel.ok("%config VLLMMagics.autosave = False")
    chat(kernel, loopback, "Q", "A")
    assert not sidecar(notebook).exists()


def test_a_file_that_cannot_be_written_is_said_and_the_cell_still_works(
        ip: Shell, loopback: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "a folder").mkdir()
    ip.ok(f"%config VLLMMagics.autosave_file = {str(tmp_path / 'a folder')!r}")
    loopback.push(Reply.tokens(["kept"], finish_reason="stop"))
    ip.capsys.readouterr()
    assert ip.shell.run_cell("%%chat\nQ").success
    said = ip.capsys.readouterr().err
    assert "could not be saved to" in said and "VLLMMagics.autosave = False" in said
    assert [t.text for t in ip.turns] == ["kept"]


# -- offered back after a restart ------------------------------------------------------------------


def test_a_restarted_kernel_offers_the_conversation_and_restore_brings_it_back(
        ip: Shell, loopback: LoopbackServer, notebook: Path) -> None:
    kernel, offered = restart(ip)
    assert offered == "", "nothing saved yet, nothing offered"
    chat(kernel, loopback, "Q1", "A1")
    chat(kernel, loopback, "Q2", "A2")
    kernel, offered = restart(ip)
    assert offered.startswith("This notebook has a saved conversation (2 turns, last 20")
    assert offered.rstrip().endswith("`%vllm restore` brings it back.")
    assert kernel.turns == []
    assert "Restored 'default' (2 turns" in kernel.ok("%vllm restore")
    assert [(t.prompt, t.text) for t in kernel.turns] == [("Q1", "A1"), ("Q2", "A2")]
    chat(kernel, loopback, "Q3", "A3")
    assert [t.prompt for t in kernel.turns] == ["Q1", "Q2", "Q3"]
    assert len(saved(notebook)["default"]) == 3, "the restored conversation goes on being saved"


def test_restore_replaces_turns_only_with_force_and_load_undo_brings_them_back(
        ip: Shell, loopback: LoopbackServer, notebook: Path) -> None:
    chat(restart(ip)[0], loopback, "old question", "old answer")
    kernel, _ = restart(ip)
    chat(kernel, loopback, "new question", "new answer")
    out = kernel.fails("%vllm restore", errors.ConfigError)
    assert "would replace 'default' (1 turns) by its saved 1 turns" in out and "%vllm restore --force" in out
    assert [t.prompt for t in kernel.turns] == ["new question"]
    out = kernel.ok("%vllm restore --force")
    assert "replacing its 1 turns" in out and "%vllm load --undo -c default" in out
    assert [t.prompt for t in kernel.turns] == ["old question"]
    kernel.ok("%vllm load --undo")
    assert [t.prompt for t in kernel.turns] == ["new question"]


def test_restore_brings_back_side_conversations_without_a_server(
        ip: Shell, loopback: LoopbackServer, notebook: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel, _ = restart(ip)
    chat(kernel, loopback, "Q", "A")
    chat(kernel, loopback, "side Q", "side A", "-c other")
    monkeypatch.setenv("VLLM_BASE_URL", "http://127.0.0.1:1/v1")
    kernel, offered = restart(ip)
    assert "(2 conversations, 2 turns, last " in offered
    out = kernel.ok("%vllm restore")
    assert "Restored 'default' (1 turn" in out and "Restored 'other' (1 turn" in out
    assert {name: len(c) for name, c in saved(notebook).items()} == {"default": 1, "other": 1}
    kernel.ok("%vllm reset --all")
    assert {name: len(c) for name, c in saved(notebook).items()} == {"default": 0, "other": 0}


def test_autorestore_restores_as_the_extension_loads(ip: Shell, loopback: LoopbackServer, notebook: Path) -> None:
    chat(restart(ip)[0], loopback, "Q", "A")
    ip.ok("%config VLLMMagics.autorestore = True")
    kernel, said = restart(ip)
    assert said.startswith("Restored this notebook's saved conversation (1 turn, last ")
    assert [t.text for t in kernel.turns] == ["A"]


def test_an_unreadable_file_is_said_in_one_line_and_loading_goes_on(ip: Shell, notebook: Path) -> None:
    sidecar(notebook).write_text("{not json", encoding="utf-8")
    kernel, said = restart(ip)
    assert said.startswith("vllm_magic: ") and "does not hold a notebook's saved conversations" in said
    assert "chat" in kernel.shell.magics_manager.magics["cell"]


# -- nothing secret --------------------------------------------------------------------------------


def test_no_key_url_or_header_reaches_the_file(ip: Shell, notebook: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key, header = "sk-secret-0987654321", "s3cr3t-gateway-token"
    monkeypatch.setenv("VLLM_API_KEY", key)
    with LoopbackServer(api_key=key) as server:
        kernel, _ = restart(ip)
        kernel.ok(f'%vllm connect {server.base_url} --header "X-Gateway-Token: {header}"')
        kernel.ok("%%chat\nhello")
    text = sidecar(notebook).read_text(encoding="utf-8")
    assert "hello" in text
    assert key not in text and header not in text and "X-Gateway-Token" not in text
    assert server.base_url.removeprefix("http://") not in text


# -- each turn knows its cell ----------------------------------------------------------------------


def test_history_cells_names_the_cell_of_each_turn(ip: Shell, loopback: LoopbackServer, notebook: Path) -> None:
    kernel, _ = restart(ip)
    kernel.shell.execution_count = 7
    for prompt in ("first", "second"):  # In [7] and In [8]
        loopback.push(Reply.tokens([f"answer to {prompt}"], finish_reason="stop"))
        assert kernel.shell.run_cell(f"%%chat\n{prompt}", store_history=True).success
    kernel.shell.execution_count = 11
    loopback.push(Reply.tokens(["retried"], finish_reason="stop"))
    assert kernel.shell.run_cell("%vllm retry", store_history=True).success
    kernel.magics.session.chat().ask("from Python, as the panel asks")
    out = kernel.ok("%vllm history --cells")
    assert "--- 1. You \u00b7 In [7]\nfirst" in out
    assert "--- 2. You \u00b7 In [11]\nsecond" in out, "a retried turn belongs to the cell that retried it"
    assert "--- 3. You \u00b7 panel\n" in out
    assert "In [" not in kernel.ok("%vllm history")
    assert [t.cell for t in saved(notebook)["default"].turns] == [7, 11, None]
    html = conversation_html(saved(notebook)["default"], cells=True)
    assert "1. You <span class=\"vm-cell\">\u00b7 In [7]</span>" in html and "\u00b7 panel</span>" in html


def test_a_file_saved_before_turns_knew_their_cell_loads(ip: Shell, tmp_path: Path) -> None:
    old = {"format": "vllm_magic.conversation/2", "name": "default", "system": None, "turns": [
        {"user": {"role": "user", "parts": [{"type": "Text", "text": "old Q"}]},
         "replies": [{"role": "assistant", "parts": [{"type": "Text", "text": "old A"}]}],
         "model": "tiny-chat", "status": "complete", "created": "2025-01-02T03:04:05+00:00"}]}
    (tmp_path / "old.json").write_text(json.dumps(old), encoding="utf-8")
    assert Conversation.load(tmp_path / "old.json").turns[0].cell is None
    ip.ok(f"%vllm load {tmp_path / 'old.json'}")
    assert "--- 1. You \u00b7 panel\nold Q" in ip.ok("%vllm history --cells")


# -- in the notebook's metadata (the JupyterLab extension's side is browser-tested) ------------------


def test_every_save_is_mirrored_and_what_the_metadata_held_restores_without_the_file(
        ip: Shell, loopback: LoopbackServer, notebook: Path) -> None:
    kernel, _ = restart(ip)
    mirrored: list[dict] = []
    kernel.magics.session.mirrors.append(mirrored.append)
    chat(kernel, loopback, "Q1", "A1")
    assert mirrored[-1] == json.loads(sidecar(notebook).read_text(encoding="utf-8")), "the metadata mirrors the file"

    sidecar(notebook).unlink()  # the notebook was copied elsewhere, with its metadata but not the file
    kernel, _ = restart(ip)
    kernel.magics.session.in_metadata = [Conversation.from_dict(c) for c in mirrored[-1]["conversations"]]
    out = kernel.ok("%vllm restore")
    assert "Restored 'default' (1 turn" in out and [t.text for t in kernel.turns] == ["A1"]
