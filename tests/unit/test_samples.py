"""Logprobs and several samples, made visible: tokens shaded by probability, samples side by side."""

from __future__ import annotations

import math
from pathlib import Path

from tests.loopback import LoopbackServer
from tests.unit.notebook_shell import Shell, chat_bodies
from tests.unit.test_render import FakeClock, Recorder
from vllm_magic import Chat, Conversation, errors
from vllm_magic.response import drive
from vllm_magic.sinks import CellSink
from vllm_magic.stream import Logprobs, Sample, TextDelta, chunk_events


def test_other_choices_and_logprobs_become_their_own_events() -> None:
    entry = {"token": "Hi", "logprob": -0.5, "top_logprobs": []}
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": [entry]}},
                         {"index": 1, "delta": {"content": "Yo"}, "finish_reason": "stop"}]}
    assert chunk_events(chunk) == [Logprobs([entry]), TextDelta("Hi"), Sample(1, "Yo", "stop")]


def test_logprobs_reach_the_turn_a_table_and_the_cell(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat --logprobs 3 --max-tokens 6\nhi")
    body = chat_bodies(loopback)[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    (turn,) = ip.turns
    assert "".join(e["token"] for e in turn.token_logprobs) == turn.text
    table = ip.magics.shell.run_line_magic("vllm", "logprobs")
    assert list(table.columns) == ["token", "logprob", "probability", "alternatives"] and len(table) == 6
    assert math.isclose(table.probability[0], math.exp(table.logprob[0]))
    assert len(table.alternatives[0]) == 3 and table.alternatives[0][0][0] == table.token[0]


def test_a_cell_shades_each_token_and_shows_the_alternatives_on_hover(loopback: LoopbackServer) -> None:
    recorder = Recorder()
    turn = drive(Chat(loopback.base_url).stream("hi", logprobs=True, top_logprobs=2, max_tokens=4),
                 CellSink(publish=recorder, clock=FakeClock()))
    shaded = [o["text/html"] for o in recorder.final_outputs().values() if 'class="vm-logprobs"' in o["text/html"]]
    assert len(shaded) == 1 and shaded[0].count('class="vm-lp"') == 4
    first = turn.token_logprobs[0]
    assert f"p = {math.exp(first['logprob']):.1%}" in shaded[0] and "rgba(255,140,0," in shaded[0]
    assert "vm-lp-end" not in shaded[0], "every token is part of the answer"


def test_a_token_past_the_answer_is_shown_apart() -> None:
    from vllm_magic.render import logprobs_html

    entries = [{"token": "Hi", "logprob": -0.1, "top": []}, {"token": "<|im_end|>", "logprob": -0.01, "top": []}]
    shown = logprobs_html(entries, "Hi")
    assert shown.count('class="vm-lp"') == 1 and shown.count('class="vm-lp vm-lp-end"') == 1


def test_samples_show_side_by_side_and_pick_keeps_another(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat --n 3 --seed 7 --max-tokens 5\nhi")
    body = chat_bodies(loopback)[-1]
    assert body["n"] == 3 and body["seed"] == 7
    (turn,) = ip.turns
    assert len(turn.samples) == 3 and len(set(turn.samples)) == 3 and turn.text == turn.samples[0]
    out = ip.ok("%vllm pick 2")
    assert turn.text == turn.samples[2] and turn.picked == 2 and "Kept sample 2" in out
    out = ip.fails("%vllm pick 5", errors.ConfigError)
    assert "numbered 0 to 2" in out and turn.picked == 2
    ip.ok("%%chat\nand?")
    assert chat_bodies(loopback)[-1]["messages"][-2] == {"role": "assistant", "content": turn.samples[2]}
    out = ip.fails("%vllm pick 1", errors.ConfigError)
    assert "one answer" in out and "%%chat --n 3 --seed 1" in out


def test_a_cell_shows_every_sample_the_kept_one_marked(loopback: LoopbackServer) -> None:
    recorder = Recorder()
    turn = drive(Chat(loopback.base_url).stream("hi", n=2, max_tokens=4), CellSink(publish=recorder, clock=FakeClock()))
    (columns,) = [o["text/html"] for o in recorder.final_outputs().values() if 'class="vm-samples"' in o["text/html"]]
    assert "Sample 0 (kept)" in columns and "Sample 1<" in columns and turn.samples[1].strip() in columns


def test_samples_and_logprobs_are_saved_with_the_turn(loopback: LoopbackServer, tmp_path: Path) -> None:
    chat = Chat(loopback.base_url)
    chat.ask("hi", n=2, logprobs=True, max_tokens=3).pick(1)
    chat.conversation.save(tmp_path / "c.json")
    (turn,) = Conversation.load(tmp_path / "c.json").turns
    assert turn.picked == 1 and turn.text == turn.samples[1] and turn.token_logprobs == chat.history[0].token_logprobs
