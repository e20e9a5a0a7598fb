"""Markdown rendering: sanitized output, exact incremental splitting, paced cell updates."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_magic.conversation import Turn
from vllm_magic.render import IncrementalMarkdown, footer_text, markdown_to_html
from vllm_magic.sinks import CellSink, PlainSink
from vllm_magic.stream import ReasoningDelta, TextDelta

DOCUMENT = """# Title

Some **bold** text, `code`, and a [link](https://example.com).
A second line of the same paragraph.

- tight
- list

- now loose

  with a continuation paragraph

1. one

2. two

> quote

> another quote

```python
def f(x):

    return {"a": 1}
```

~~~~
```
not a fence end
~~~~

    indented code

    more indented code

| a | b |
|---|---|
| 1 | 2 |

Setext
------

* * *

The end.
"""

BLOCK_LINES = [
    "# Heading", "Plain words here.", "- item", "* star item", "1. numbered", "2) paren",
    "> quote", "```", "```python", "~~~", "    indented", "  two spaces", "| a | b |",
    "|---|---|", "***", "---", "Text with {braces} and <b>html</b>", "",
]


def stream_blocks(text: str, chunk_sizes: list[int]) -> list[str]:
    """Feed ``text`` in chunks; return the finished blocks followed by the tail."""
    incremental = IncrementalMarkdown()
    parts: list[str] = []
    position = 0
    for size in chunk_sizes:
        incremental.append(text[position:position + size])
        position += size
        finished = incremental.take_finished()
        if finished:
            parts.append(finished)
    incremental.append(text[position:])
    parts.append(incremental.take_finished())
    parts.append(incremental.tail())
    return [p for p in parts if p]


@pytest.mark.parametrize("seed", range(10))
def test_blocks_render_exactly_like_the_whole_document(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randint(1, 9) for _ in range(len(DOCUMENT))]
    parts = stream_blocks(DOCUMENT, sizes)
    assert "".join(parts) == DOCUMENT
    assert len(parts) > 8, "a document of many blocks must be split"
    assert "".join(markdown_to_html(p) for p in parts) == markdown_to_html(DOCUMENT)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.sampled_from(BLOCK_LINES), min_size=1, max_size=40),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=60),
)
def test_any_splitting_is_exact(lines: list[str], sizes: list[int]) -> None:
    text = "\n".join(lines) + "\n"
    parts = stream_blocks(text, sizes * 50)
    assert "".join(parts) == text
    assert "".join(markdown_to_html(p) for p in parts) == markdown_to_html(text)


def test_raw_html_is_escaped_and_script_links_dropped() -> None:
    payloads = (
        "<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
        "[click](javascript:alert(1)) [data](data:text/html;base64,PHNjcmlwdD4=) "
        "[vb](vbscript:msgbox) <a href=\"javascript:alert(1)\">x</a> ![i](javascript:alert(2))"
    )
    out = markdown_to_html(payloads)
    assert "<script" not in out and "<img src=x" not in out and "<a href=\"javascript" not in out
    assert "&lt;script&gt;" in out
    assert 'href="javascript:' not in out and 'src="javascript:' not in out
    assert 'href="data:' not in out and 'href="vbscript:' not in out


def test_links_open_safely() -> None:
    out = markdown_to_html("[site](https://example.com)")
    assert 'href="https://example.com"' in out and 'rel="noopener noreferrer nofollow"' in out


def test_code_is_highlighted_and_tables_render() -> None:
    out = markdown_to_html("```python\ndef f():\n    pass\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert '<pre class="highlight"><code class="language-python"><span class="k">def</span>' in out
    assert "<table>" in out and "<td>1</td>" in out


def test_unknown_language_falls_back_to_escaped_code() -> None:
    out = markdown_to_html("```nosuchlang\n<b>x</b>\n```\n")
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "<b>" not in out


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict, bool]] = []

    def __call__(self, display_id: str, bundle: dict, update: bool) -> None:
        self.messages.append((display_id, bundle, update))

    def final_outputs(self) -> dict[str, dict]:
        outputs: dict[str, dict] = {}
        for display_id, bundle, update in self.messages:
            assert update == (display_id in outputs), "an id is displayed once, then only updated"
            outputs[display_id] = bundle
        return outputs


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def turn(**overrides) -> Turn:
    fields = dict(prompt="p", text="t", model="tiny-chat", finish_reason="stop",
                  prompt_tokens=10, completion_tokens=5, ttft=0.1, seconds=0.6)
    return Turn.of(**{**fields, **overrides})


def test_cell_sink_updates_at_most_rate_per_second() -> None:
    clock, recorder = FakeClock(), Recorder()
    sink = CellSink(rate=15, publish=recorder, clock=clock)
    sink.start()
    for i in range(1000):  # 1000 tokens over one simulated second
        clock.now = i / 1000
        sink.on_event(TextDelta("word "))
    updates = len(recorder.messages) - 1
    assert 14 <= updates <= 16


def test_cell_sink_final_output_is_exact_markdown_plus_footer() -> None:
    clock, recorder = FakeClock(), Recorder()
    sink = CellSink(rate=15, publish=recorder, clock=clock)
    sink.start()
    for i, char in enumerate(DOCUMENT):
        clock.now = i / 200
        sink.on_event(TextDelta(char))
    sink.close(turn(text=DOCUMENT))
    outputs = list(recorder.final_outputs().values())
    assert len(outputs) > 5, "finished blocks go to outputs of their own"
    html_all = "".join(o["text/html"] for o in outputs)
    plain = "".join(o["text/plain"] for o in outputs)
    assert plain.startswith(DOCUMENT.rstrip("\n")[:50])
    assert "tiny-chat" in outputs[-1]["text/html"] and "10 \u2192 5 tokens" in outputs[-1]["text/html"]
    assert "\u258d" not in html_all, "no streaming cursor left in the final output"
    bodies = "".join(o["text/html"].split('<div class="vllm-magic">', 1)[1].rsplit("</div>", 1)[0]
                     for o in outputs)
    assert bodies.split('<div class="vllm-magic-footer">')[0] == markdown_to_html(DOCUMENT)


def test_plain_sink_writes_text_and_footer() -> None:
    import io

    out = io.StringIO()
    sink = PlainSink(out)
    sink.start()
    for piece in ["Hello", " world"]:
        sink.on_event(TextDelta(piece))
    sink.close(turn(finish_reason="length"))
    assert out.getvalue().startswith("Hello world\n\n[tiny-chat")
    assert "cut by max_tokens" in out.getvalue()


def test_footer_says_what_happened() -> None:
    assert "interrupted" in footer_text(turn(status="interrupted"))
    assert "stream cut" in footer_text(turn(status="cut"))
    assert "cut by max_tokens" in footer_text(turn(finish_reason="length"))
    text = footer_text(turn())
    assert "first token 0.10 s" in text and "8.3 tok/s overall" in text and "finished" in text


def test_a_burst_of_tokens_gives_no_impossible_rate() -> None:
    burst = turn(completion_tokens=400, ttft=0.999, seconds=1.0)  # all tokens in the last millisecond
    assert burst.tokens_per_second == 400.0 and "400.0 tok/s overall" in footer_text(burst)


def test_footer_marks_counts_that_are_estimates() -> None:
    text = footer_text(turn(prompt_tokens=None, completion_tokens=3, usage_estimated=True, status="interrupted"))
    assert "? \u2192 3 tokens (estimated" in text


def test_cell_sink_shows_reasoning_in_a_thinking_block_above_the_answer() -> None:
    clock, recorder = FakeClock(), Recorder()
    sink = CellSink(rate=15, publish=recorder, clock=clock)
    sink.start()
    sink.on_event(ReasoningDelta("Count <the> letters."))
    first = recorder.final_outputs()
    assert list(first)[0] == recorder.messages[0][0], "the first output becomes the Thinking block"
    assert "<details class=\"vm-thinking\" open>" in first[recorder.messages[0][0]]["text/html"]
    assert "Count &lt;the&gt; letters." in first[recorder.messages[0][0]]["text/html"]
    clock.now = 1.0
    sink.on_event(TextDelta("**Three.**"))
    sink.close(turn(text="**Three.**", reasoning="Count <the> letters.", reasoning_tokens=4))
    outputs = list(recorder.final_outputs().values())
    assert '<details class="vm-thinking"><summary>Thinking (4 tokens)</summary>' in outputs[0]["text/html"]
    assert "<strong>Three.</strong>" in outputs[-1]["text/html"] and "<details" not in outputs[-1]["text/html"]


def test_reasoning_can_be_hidden_and_shows_dimmed_or_prefixed_as_text() -> None:
    import io

    clock, recorder = FakeClock(), Recorder()
    sink = CellSink(rate=15, publish=recorder, clock=clock, show_reasoning=False)
    sink.start()
    sink.on_event(ReasoningDelta("secret thoughts"))
    sink.on_event(TextDelta("answer"))
    sink.close(turn(text="answer"))
    assert "secret thoughts" not in str(recorder.messages)
    out = io.StringIO()
    plain = PlainSink(out)
    for event in (ReasoningDelta("hmm"), TextDelta("yes")):
        plain.on_event(event)
    plain.close(turn(text="yes"))
    assert out.getvalue().startswith("Thinking: hmm\n\nyes\n\n[tiny-chat")


def test_tail_over_budget_reuses_the_last_render_and_appends_new_text_inside_it() -> None:
    clock, recorder = FakeClock(), Recorder()
    sink = CellSink(rate=15, publish=recorder, clock=clock)
    sink.TAIL_BUDGET = sink.TAIL_ALLOWANCE = 0.0
    sink.start()
    sink.on_event(TextDelta("Some **bold** <b>"))
    first = recorder.messages[-1][1]["text/html"]
    assert "<p>Some <strong>bold</strong> &lt;b&gt;<span class=\"vm-cursor\">" in first
    clock.now = 1.0
    sink.on_event(TextDelta(" and *more*"))
    second = recorder.messages[-1][1]["text/html"]
    assert "<p>Some <strong>bold</strong> &lt;b&gt; and *more*<span class=\"vm-cursor\">\u258d</span></p>" in second
    sink.close(turn(text="Some **bold** <b> and *more*"))
    assert "<em>more</em>" in recorder.messages[-1][1]["text/html"], "the final render is exact"
