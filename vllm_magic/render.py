"""Model text -> safe HTML, incrementally.

Model output is untrusted: markdown-it runs with raw HTML disabled (it is escaped) and its link
validator drops ``javascript:``/``vbscript:``/``file:``/``data:`` URLs, so the only markup in the
result is markup we generate. Code is highlighted with Pygments into classes that map onto
JupyterLab's theme variables (light and dark themes both work).

Streaming must not re-render the whole document per update (quadratic). :class:`IncrementalMarkdown`
splits the text into top-level blocks at points where splitting cannot change the result, so each
finished block is rendered exactly once; only the unfinished last block is rendered again, within a
budget, and shown as escaped text when the budget is spent.
"""

from __future__ import annotations

import html
import math
import re
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt

from .conversation import Conversation, Turn
from .images import describe
from .messages import Image, Message, ToolCall, ToolResult

CSS = """<style>
.vllm-magic{line-height:1.5}
.vllm-magic .vm-cursor{opacity:.6}
.vllm-magic .vm-thinking{color:var(--jp-ui-font-color2,#777);margin:.2em 0 .5em}
.vllm-magic .vm-thinking summary{cursor:pointer;font-size:.9em}
.vllm-magic .vm-thinking-text{white-space:pre-wrap;font-size:.9em;border-left:2px solid var(--jp-border-color2,#ddd);padding-left:.6em}
.vllm-magic .vm-logprobs{margin:.4em 0;line-height:1.9;white-space:pre-wrap}
.vllm-magic .vm-lp{position:relative;border-radius:2px;cursor:help}
.vllm-magic .vm-lp-end{opacity:.5;font-size:.85em;margin-left:.3em}
.vllm-magic .vm-lp:hover::after{content:attr(data-top);position:absolute;left:0;top:1.6em;z-index:10;white-space:pre;background:var(--jp-layout-color0,#fff);color:var(--jp-ui-font-color0,#000);border:1px solid var(--jp-border-color1,#bbb);padding:.2em .4em;font-size:.85em}
.vllm-magic .vm-samples{display:grid;gap:.8em}
.vllm-magic .vm-samples>div{border:1px solid var(--jp-border-color2,#ddd);border-radius:4px;padding:.2em .6em;overflow:auto}
.vllm-magic .vm-tool{border:1px solid var(--jp-border-color2,#ddd);border-radius:4px;padding:.2em .6em;margin:.3em 0;font-size:.9em}
.vllm-magic .vm-tool summary{cursor:pointer}
.vllm-magic .vm-tool pre{margin:.3em 0;white-space:pre-wrap;max-height:20em;overflow:auto}
.vllm-magic .vm-context{color:var(--jp-ui-font-color2,#777);font-size:.9em}
.vllm-magic .vm-context summary{cursor:pointer}
.vllm-magic .vm-context pre{white-space:pre-wrap;max-height:20em;overflow:auto}
.vllm-magic-footer{color:var(--jp-ui-font-color2,#777);font-size:.85em;margin-top:.3em}
.vllm-magic-footer .vm-warn{color:var(--jp-warn-color0,#b58900)}
.vllm-magic .highlight .k,.vllm-magic .highlight .kn,.vllm-magic .highlight .kd,.vllm-magic .highlight .kc,
.vllm-magic .highlight .kr,.vllm-magic .highlight .ow{color:var(--jp-mirror-editor-keyword-color,#008000);font-weight:bold}
.vllm-magic .highlight .s,.vllm-magic .highlight .s1,.vllm-magic .highlight .s2,.vllm-magic .highlight .sd,
.vllm-magic .highlight .sb,.vllm-magic .highlight .sa,.vllm-magic .highlight .si,.vllm-magic .highlight .se{color:var(--jp-mirror-editor-string-color,#ba2121)}
.vllm-magic .highlight .c,.vllm-magic .highlight .c1,.vllm-magic .highlight .cm,.vllm-magic .highlight .ch{color:var(--jp-mirror-editor-comment-color,#408080);font-style:italic}
.vllm-magic .highlight .m,.vllm-magic .highlight .mi,.vllm-magic .highlight .mf,.vllm-magic .highlight .mh{color:var(--jp-mirror-editor-number-color,#080)}
.vllm-magic .highlight .nf,.vllm-magic .highlight .fm,.vllm-magic .highlight .nc{color:var(--jp-mirror-editor-def-color,#00f)}
.vllm-magic .highlight .nb,.vllm-magic .highlight .bp{color:var(--jp-mirror-editor-builtin-color,#008000)}
.vllm-magic .highlight .o{color:var(--jp-mirror-editor-operator-color,#aa22ff)}
</style>"""

CURSOR = '<span class="vm-cursor">\u258d</span>'

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_OR_INDENT = re.compile(r"[ \t]|[-+*](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*\S", re.MULTILINE)


def _highlight(code: str, lang: str, _attrs: str) -> str:
    """Pygments HTML for fenced code with a language; plain escaped code otherwise."""
    if not lang:
        return ""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(lang)
    except ClassNotFound:
        return ""
    body = highlight(code, lexer, HtmlFormatter(nowrap=True))
    return f'<pre class="highlight"><code class="language-{html.escape(lang)}">{body}</code></pre>\n'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight, "breaks": False})
    md.enable(["table", "strikethrough"])

    def link_open(renderer, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        # Links from model output open elsewhere and pass no referrer or opener.
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


def markdown_to_html(text: str) -> str:
    """Render Markdown to sanitized HTML (no raw HTML, no script links)."""
    return _markdown().render(text)


def code_blocks(text: str) -> list[str]:
    """The fenced code blocks of Markdown ``text``, in order, as their code."""
    return [token.content for token in _markdown().parse(text) if token.type == "fence"]


_CLOSING_TAGS = re.compile(r"(?:</[a-z0-9]+>\s*)+$")


def append_inside(rendered: str, fragment: str) -> str:
    """Put ``fragment`` inside the last element of ``rendered`` (before its closing tags).

    Used while streaming: text that arrived after the tail was last rendered, and the cursor, then
    continue the last paragraph, list item or code block instead of starting a new line.
    """
    match = _CLOSING_TAGS.search(rendered)
    if not match:
        return rendered + fragment
    return rendered[: match.start()] + fragment + rendered[match.start():]


class IncrementalMarkdown:
    """Splits growing Markdown into finished top-level blocks and an unfinished tail.

    A block is finished at a blank line outside fenced code when the next line starts at column 0
    and does not start a list item: at such a point CommonMark closes every open block, so
    rendering the two sides separately gives the same HTML as rendering them together. (Loose lists
    and indented continuations are kept whole.) Reference-style link definitions can reach back
    across blocks; :attr:`needs_full_render` reports them so the final render can be exact.
    """

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._text = ""
        self._emitted = 0  # text[:_emitted] was handed out as finished blocks
        self._scanned = 0  # complete lines before this offset were classified
        self._fence: tuple[str, int] | None = None
        self._fence_start = 0  # offset of the open fence's first line
        self._blank_end: int | None = None  # offset after the last blank line, a split candidate

    def append(self, piece: str) -> None:
        self._pieces.append(piece)

    @property
    def text(self) -> str:
        if self._pieces:
            self._text += "".join(self._pieces)
            self._pieces.clear()
        return self._text

    def take_finished(self) -> str:
        """Markdown of the blocks finished since the last call ("" if none)."""
        text = self.text
        end = self._emitted
        pos = self._scanned
        while True:
            newline = text.find("\n", pos)
            if newline < 0:
                break
            end = self._classify(text, pos, newline, end)
            pos = newline + 1
        self._scanned = pos
        finished, self._emitted = text[self._emitted:end], end
        return finished

    def tail(self) -> str:
        """The Markdown after the finished blocks: the block still being written."""
        return self.text[self._emitted:]

    def tail_html(self) -> str:
        """The tail rendered for display while streaming; an open code fence is shown unhighlighted.

        Highlighting half a code block costs the most and changes as it grows, so it waits until
        the fence closes (the finished block is highlighted once).
        """
        tail = self.tail()
        if self._fence is None:
            return markdown_to_html(tail)
        split = max(self._fence_start - self._emitted, 0)
        head, code = tail[:split], tail[split:]
        code = code.split("\n", 1)[1] if "\n" in code else ""
        return markdown_to_html(head) + f"<pre><code>{html.escape(code)}</code></pre>"

    @property
    def needs_full_render(self) -> bool:
        return _REFERENCE_DEFINITION.search(self.text) is not None

    def _classify(self, text: str, start: int, newline: int, end: int) -> int:
        line = text[start:newline]
        if self._fence is not None:
            char, length = self._fence
            stripped = line.strip()
            if len(line) - len(line.lstrip(" ")) < 4 and stripped and set(stripped) == {char} and len(stripped) >= length:
                self._fence = None
            return end
        if not line.strip():
            self._blank_end = newline + 1
            return end
        if self._blank_end is not None and not _LIST_OR_INDENT.match(line):
            end = self._blank_end
        self._blank_end = None
        fence = _FENCE.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in line[fence.end():]):
            self._fence = (fence.group(1)[0], len(fence.group(1)))
            self._fence_start = start
        return end


def footer_text(turn: Turn) -> str:
    """``tiny-chat · 40 → 8 tokens · first token 0.04 s · 95.1 tok/s overall · finished``."""
    parts = [turn.model]
    if turn.completion_tokens is not None:
        prompt = "?" if turn.prompt_tokens is None else turn.prompt_tokens
        estimated = " (estimated: counted as received)" if turn.usage_estimated else ""
        parts.append(f"{prompt} \u2192 {turn.completion_tokens} tokens{estimated}")
    if turn.ttft is not None:
        parts.append(f"first token {turn.ttft:.2f} s")
    if turn.tokens_per_second is not None:
        parts.append(f"{turn.tokens_per_second:.1f} tok/s overall")
    parts.append(ending(turn))
    if turn.left_out:
        parts.append(turn.left_out)
    return " \u00b7 ".join(parts)


def thinking_html(reasoning: str, streaming: bool, tokens: int | None = None) -> str:
    """The model's reasoning as a collapsible block: open while it streams, folded after."""
    count = f" ({tokens:,} tokens)" if tokens else ""
    summary = "Thinking\u2026" if streaming else f"Thinking{count}"
    return (f'<details class="vm-thinking"{" open" if streaming else ""}><summary>{summary}</summary>'
            f'<div class="vm-thinking-text">{html.escape(reasoning.strip())}</div></details>')


def logprobs_html(entries: list[dict[str, Any]], text: str) -> str:
    """The answer token by token, each shaded by how unlikely it was (the less likely, the warmer);
    hovering a token shows its probability and the alternatives the model weighed. Tokens past the
    answer's ``text`` (the end-of-answer token vLLM reports too) are shown apart, dimmed."""
    spans, written = [], ""
    for entry in entries:
        p = math.exp(entry["logprob"]) if entry["logprob"] is not None else 1.0
        top = "\n".join(f"{alt!r}: {math.exp(lp):.1%}" for alt, lp in entry["top"] if lp is not None)
        written += entry["token"]
        end = "" if text.startswith(written) else " vm-lp-end"
        spans.append(f'<span class="vm-lp{end}" style="background:rgba(255,140,0,{0.75 * (1 - p):.2f})" '
                     f'data-top="{html.escape(f"p = {p:.1%}" + (chr(10) + top if top else ""))}">'
                     f"{html.escape(entry['token'])}</span>")
    return f'<div class="vm-logprobs">{"".join(spans)}</div>'


def samples_html(turn: Turn) -> str:
    """Every sample side by side, the kept one marked; ``%vllm pick I`` keeps another."""
    columns = []
    for index, text in enumerate(turn.samples or ()):
        kept = " (kept)" if index == turn.picked else ""
        columns.append(f"<div><h5>Sample {index}{kept}</h5>{markdown_to_html(text)}</div>")
    style = f"grid-template-columns:repeat({min(len(columns), 3)},1fr)"
    return f'<div class="vm-samples" style="{style}">{"".join(columns)}</div>'


def extras_html(turn: Turn) -> str:
    """What a turn shows beyond its answer: the samples, the tokens' probabilities."""
    return (samples_html(turn) if turn.samples else "") + (logprobs_html(turn.token_logprobs, turn.text)
                                                           if turn.token_logprobs else "")


def tool_card_html(call: ToolCall, result: ToolResult | None) -> str:
    """One tool call as a collapsible card: name and arguments, then the result or the error and
    the time; ``result`` None while it runs."""
    if result is None:
        state = "running\u2026"
    elif result.error is not None:
        state = f'<span class="vm-warn">\u26a0 {html.escape(result.error)}</span>'
    else:
        state = f"done in {result.seconds or 0:.2f} s"
    shown = result.content if result is not None and result.error is None else ""
    return (f'<details class="vm-tool"><summary>Tool <code>{html.escape(call.name)}</code> \u00b7 {state}</summary>'
            f"<div>arguments</div><pre>{html.escape(call.arguments)}</pre>"
            + (f"<div>result</div><pre>{html.escape(shown)}</pre>" if shown else "") + "</details>")


def tool_card_text(call: ToolCall, result: ToolResult) -> str:
    """``[tool] weather({"city": "Paris"}) -> {"temp": 18} (0.01 s)``, cut to a line's worth."""
    outcome = f"error: {result.error}" if result.error is not None else result.content
    line = f"[tool] {call.name}({call.arguments}) -> {outcome}"
    return (line if len(line) <= 300 else line[:299] + "\u2026") + f" ({result.seconds or 0:.2f} s)"


def tool_cards_html(turn: Turn) -> str:
    """The cards of a recorded turn's tool calls, each with its result."""
    results = {p.call_id: p for m in turn.replies for p in m.parts if isinstance(p, ToolResult)}
    return "".join(tool_card_html(p, results.get(p.id)) for m in turn.replies for p in m.parts
                   if isinstance(p, ToolCall))


def ending(turn: Turn) -> str:
    if turn.status == "interrupted":
        return "\u26a0 interrupted: partial answer kept"
    if turn.status == "cut":
        return "\u26a0 stream cut: partial answer kept"
    if turn.finish_reason == "length":
        return "\u26a0 cut by max_tokens (raise it with %vllm params max_tokens=N)"
    if turn.finish_reason == "stop":
        return "finished"
    return f"finished ({turn.finish_reason})" if turn.finish_reason else "finished"


def footer_html(turn: Turn) -> str:
    text = html.escape(footer_text(turn))
    warn = not turn.complete or turn.truncated
    body = text.replace("\u26a0", '<span class="vm-warn">\u26a0') + ("</span>" if warn else "")
    return f'<div class="vllm-magic-footer">{body}</div>'


def answer_html(turn: Turn, show_reasoning: bool = True) -> str:
    """A recorded answer: its reasoning folded away, its tool calls as cards, the rendered text, the footer."""
    thinking = thinking_html(turn.reasoning, False, turn.reasoning_tokens) if show_reasoning and turn.reasoning else ""
    return thinking + tool_cards_html(turn) + markdown_to_html(turn.text) + footer_html(turn) + extras_html(turn)


THUMBNAIL_STYLE = ("max-height:96px;max-width:160px;margin:.2em .4em .2em 0;vertical-align:top;"
                   "border:1px solid var(--jp-border-color2,#ddd);border-radius:3px")
_SHOWN_URLS = ("data:image/", "http://", "https://")


def images_html(message: Message) -> str:
    """Thumbnails of a message's images ("" when it has none); a reference (saved without its pixels)
    or a URL of another scheme shows as its description."""
    thumbnails = []
    for part in message.images:
        label = html.escape(describe(part))
        if isinstance(part, Image) and part.url.startswith(_SHOWN_URLS):
            thumbnails.append(f'<img src="{html.escape(part.url)}" alt="{label}" title="{label}" '
                              f'style="{THUMBNAIL_STYLE}">')
        else:
            thumbnails.append(f'<span style="{THUMBNAIL_STYLE};display:inline-block;padding:.2em .4em">'
                              f'\U0001f5bc {label}</span>')
    return f'<div class="vm-images">{"".join(thumbnails)}</div>' if thumbnails else ""


def image_lines(message: Message) -> list[str]:
    """``[image: image/png 640x480, 35 KB]`` per image, for plain-text views."""
    return [f"[image: {describe(part)}]" for part in message.images]


def context_html(message: Message) -> str:
    """The notebook's context sent with a message, folded ("" when none)."""
    if not message.context:
        return ""
    return (f'<details class="vm-context"><summary>Context from the notebook ({len(message.context):,} characters)'
            f"</summary><pre>{html.escape(message.context)}</pre></details>")


def user_html(message: Message) -> str:
    """The user's turn: its images as thumbnails, the notebook's context folded, then its text rendered."""
    return images_html(message) + context_html(message) + markdown_to_html(message.text)


def cell_label(turn: Turn) -> str:
    """``In [7]`` for the cell that made the turn; ``panel`` for a turn made without one (the panel, the
    sidebar, or an older saved file)."""
    return f"In [{turn.cell}]" if turn.cell is not None else "panel"


def conversation_html(conversation: Conversation, cells: bool = False) -> str:
    """The whole conversation, user and assistant turns told apart, for ``%vllm history``; with
    ``cells``, each turn says which cell made it."""
    parts = [CSS, '<div class="vllm-magic">']
    if conversation.system:
        parts.append(f"<p><em>System:</em> {html.escape(conversation.system)}</p>")
    if not conversation.turns:
        parts.append("<p><em>No turns yet.</em></p>")
    for number, turn in enumerate(conversation.turns, 1):
        cell = f' <span class="vm-cell">\u00b7 {cell_label(turn)}</span>' if cells else ""
        parts.append(f"<h4>{number}. You{cell}</h4>{user_html(turn.user)}")
        parts.append(f"<h4>{number}. {html.escape(turn.model)}</h4>{answer_html(turn)}")
    parts.append("</div>")
    return "".join(parts)


def conversation_text(conversation: Conversation, cells: bool = False) -> str:
    lines = [f"System: {conversation.system}"] if conversation.system else []
    if not conversation.turns:
        lines.append("No turns yet.")
    for number, turn in enumerate(conversation.turns, 1):
        context = [f"[context from the notebook: {len(turn.user.context):,} characters]"] if turn.user.context else []
        cell = f" \u00b7 {cell_label(turn)}" if cells else ""
        lines += [f"--- {number}. You{cell}", *image_lines(turn.user), *context, turn.prompt,
                  f"--- {number}. {turn.model}", turn.text, f"[{footer_text(turn)}]"]
    return "\n".join(lines)
