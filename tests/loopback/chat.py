"""``/v1/chat/completions``: vLLM's validation, stop strings, reasoning, usage and chunk bytes, then the
script's disturbances; :func:`generation` serves ``/v1/completions`` too (completions.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.loopback.errors import (
    error, json_body, missing, param_error, prompt_too_long, unknown_model, validation_error,
)
from tests.loopback.images import image_refused
from tests.loopback.model import completion_pieces, count_chat_tokens
from tests.loopback.script import (
    HangReply, ScriptedReply, StatusReply, StreamReply, cut_in_half, hung, next_script, status_answer,
)
from tests.loopback.wire import (
    SSE_DONE, Answer, RecordedRequest, Silence, dripped, event_stream, fixed, render_json,
)

if TYPE_CHECKING:
    from tests.loopback.app import FakeVLLM

SYSTEM_FINGERPRINT = "vllm-0.32.0-0164b094"


@dataclass(frozen=True)
class Kind:
    """What tells the text generation endpoints apart: chat's is :data:`CHAT`; completions.py has the other."""

    field: str
    """The body's prompt field, which vLLM requires."""
    read: Callable[[Mapping[str, Any]], tuple[list[Mapping[str, Any]], int]]
    """The body -> the messages the default model answers (it answers the last user message) and the
    prompt's token count."""
    chunks: Callable[[str], _Chunks]
    """The renderer of one answer, given the model's name."""
    sent: Callable[[Mapping[str, Any], Sequence[_Choice]], Sequence[_Choice]] = lambda body, choices: choices
    """The choices as sent (a completion may echo its prompt in front)."""


def chat(app: FakeVLLM, request: RecordedRequest) -> Answer | Silence:
    return generation(app, request, CHAT)


def generation(app: FakeVLLM, request: RecordedRequest, kind: Kind) -> Answer | Silence:
    """A chat or completions answer: the next scripted reply's, else the default model's."""
    refused = _tools_refused(app, request.json if isinstance(request.json, dict) else {})
    if refused is not None:
        return refused
    script = next_script(app.chat_script)
    if script is None and app.chat_rule is not None:
        script = app.chat_rule(request.json if isinstance(request.json, dict) else {})
    answer = _reply(app, request, script, kind)
    if app.chat_delay and isinstance(answer, Answer):
        return dataclasses.replace(answer, delay=answer.delay + app.chat_delay)
    return answer


def _reply(app: FakeVLLM, request: RecordedRequest, script: ScriptedReply | None, kind: Kind) -> Answer | Silence:
    if isinstance(script, StatusReply):
        return status_answer(script)
    if isinstance(script, StreamReply):
        return _scripted(app, request, script, kind)
    answer = _default(app, request, kind)
    return hung(answer, script) if isinstance(script, HangReply) else answer


def _default(app: FakeVLLM, request: RecordedRequest, kind: Kind) -> Answer:
    body = json_body(request)
    if isinstance(body, Answer):
        return body
    if kind.field not in body:
        return validation_error([missing(body, kind.field)], f"body.{kind.field}")
    model = body.get("model") or app.models[0]
    if model not in app.models and app.profile != "llama.cpp":  # llama.cpp answers any name
        return unknown_model(model, app.models)
    refused = image_refused(body.get("messages"), str(model), app.vision_models)
    if refused is not None:
        return refused
    messages, prompt_tokens = kind.read(body)
    if prompt_tokens > app.max_model_len:
        return prompt_too_long(app.max_model_len, prompt_tokens)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None and max_tokens > app.max_model_len:
        return param_error(
            "max_tokens", max_tokens,
            f"max_tokens={max_tokens} cannot be greater than max_model_len={app.max_model_len}. "
            "Please request fewer output tokens.",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature < 0:
        return param_error("temperature", float(temperature), f"temperature must be non-negative, got {float(temperature)}.")
    choices = _generate(app, body, messages, prompt_tokens)
    return _answer(app, body, str(model), choices, _usage(app, prompt_tokens, choices), StreamReply(), kind)


def _tools_refused(app: FakeVLLM, body: Mapping[str, Any]) -> Answer | None:
    """vLLM 0.32 started without a tool parser refuses every tool choice but "none", in these words."""
    choice = body.get("tool_choice", "auto")
    if not body.get("tools") or app.tool_call_parser or choice == "none":
        return None
    if choice == "auto":
        return error(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
    named = f'function "{choice["function"]["name"]}"' if isinstance(choice, dict) else json.dumps(choice)
    return error(400, f"tool_choice={named} requires --tool-call-parser to be set")


def _scripted(app: FakeVLLM, request: RecordedRequest, script: StreamReply, kind: Kind) -> Answer | Silence:
    body = request.json if isinstance(request.json, dict) else {}
    messages, prompt_tokens = kind.read(body)
    if script.pieces is None:
        (choice,) = _generate(app, {**body, "n": 1}, messages, prompt_tokens)
    else:
        choice = _Choice(0, script.pieces, script.finish_reason)
    choices = [dataclasses.replace(choice, reasoning=script.reasoning, calls=script.calls)]
    model = str(body.get("model") or (app.models[0] if app.models else ""))
    return _answer(app, body, model, choices, _usage(app, prompt_tokens, choices), script, kind)


# -- generation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    """One generated choice: the delta of each token chunk and why it ended."""

    index: int
    deltas: tuple[str, ...]
    """The content, one token chunk each."""
    finish_reason: str
    stop_reason: str | None = None
    reasoning: tuple[str, ...] = ()
    """The thought before the content, one token chunk each.  The model thinks between its own
    ``<think>`` and ``</think>`` tokens (Qwen3-style): both count as completion tokens and, like
    vLLM's ``<think>`` reasoning parsers, the server sends no chunk for either."""
    calls: tuple[tuple[str, str], ...] = ()
    """Tool calls (name, arguments JSON) after the content, as vLLM's hermes parser streams them: a
    chunk with the call's id and name, then the arguments in pieces of a few characters."""

    @property
    def content(self) -> str | None:
        """The message's content: None when the model only thought or called (vLLM's parsers find none)."""
        return "".join(self.deltas) if self.deltas or not (self.reasoning or self.calls) else None

    @property
    def completion_tokens(self) -> int:
        calls = sum(2 + len(_argument_pieces(arguments)) for _, arguments in self.calls)
        return len(self.deltas) + (len(self.reasoning) + 2 if self.reasoning else 0) + calls

    def streamed(self) -> list[tuple[str, str] | None]:
        """The delta of each token chunk as (field, text): reasoning first, then content.  None is the
        empty delta vLLM sends when ``</think>`` was the last token; a choice without any tokens still
        ends with one empty content chunk."""
        thought: list[tuple[str, str] | None] = [("reasoning", piece) for piece in self.reasoning]
        calls: list[tuple[str, str] | None] = [
            delta for index, (name, arguments) in enumerate(self.calls) for delta in _call_deltas(index, name, arguments)]
        if self.deltas:
            return [*thought, *(("content", delta) for delta in self.deltas), *calls]
        if calls:
            return [*thought, *calls, None]
        return [*thought, None] if thought else [("content", "")]


def _argument_pieces(arguments: str) -> list[str]:
    return [arguments[i:i + 6] for i in range(0, len(arguments), 6)]


def _call_deltas(index: int, name: str, arguments: str) -> list[tuple[str, str]]:
    """A call as ``("tool_calls", JSON of the delta's list)``: its id and name, then its arguments."""
    opening = [{"id": f"chatcmpl-tool-{secrets.token_hex(8)}", "type": "function", "index": index,
                "function": {"name": name}}]
    return [("tool_calls", json.dumps(opening)),
            *(("tool_calls", json.dumps([{"index": index, "function": {"arguments": piece}}]))
              for piece in _argument_pieces(arguments))]


def _generate(
    app: FakeVLLM, body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], prompt_tokens: int
) -> list[_Choice]:
    # The request's max_tokens (or the server's default) clamped to the context left, like vLLM.
    room = max(0, app.max_model_len - prompt_tokens)
    wanted = body.get("max_completion_tokens") or body.get("max_tokens") or app.default_max_tokens
    count = room if wanted is None else min(int(wanted), room)
    stops = _stop_strings(body.get("stop"))
    return [
        _apply_stop(index, completion_pieces(messages, count, seed=body.get("seed"), index=index), stops)
        for index in range(int(body.get("n") or 1))
    ]


def _stop_strings(stop: Any) -> list[str]:
    if isinstance(stop, str):
        stop = [stop]
    return [s for s in stop or () if isinstance(s, str) and s]


def _apply_stop(index: int, pieces: Sequence[str], stops: Sequence[str]) -> _Choice:
    """vLLM's stop strings: the token completing a stop string ends the output and the text is cut
    just before it.  While stop strings are active, vLLM's detokenizer holds back the last
    ``len(longest stop) - 1`` characters of the stream, so no chunk ever shows part of a stop
    string; a chunk whose text is all held back is still sent (one chunk per token)."""
    held_back = max(map(len, stops), default=1) - 1
    text = ""
    emitted = 0
    deltas: list[str] = []
    for number, piece in enumerate(pieces, start=1):
        before = len(text)
        text += piece
        hits = [(found, stop) for stop in stops if (found := text.find(stop, max(0, before - len(stop) + 1))) >= 0]
        if hits:
            cut, stop = min(hits, key=lambda hit: hit[0])
            deltas.append(text[emitted:cut])
            return _Choice(index, tuple(deltas), "stop", stop)
        upto = len(text) if number == len(pieces) else max(emitted, len(text) - held_back)
        deltas.append(text[emitted:upto])
        emitted = upto
    return _Choice(index, tuple(deltas), "length")


# -- rendering -----------------------------------------------------------------------------------


def _usage(app: FakeVLLM, prompt_tokens: int, choices: Sequence[_Choice]) -> dict[str, Any]:
    """vLLM's usage object; a server with a reasoning parser always fills ``completion_tokens_details``."""
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    reasoning_tokens = sum(len(choice.reasoning) for choice in choices)
    return {
        "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens, "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens} if app.reasoning_parser else None,
    }


def _answer(
    app: FakeVLLM, body: Mapping[str, Any], model: str, choices: Sequence[_Choice], usage: dict[str, Any],
    script: StreamReply, kind: Kind,
) -> Answer | Silence:
    """Render the choices as vLLM would, then apply the script's disturbances."""
    chunks = kind.chunks(model)
    if body.get("logprobs") is True:
        chunks.top_logprobs = int(body.get("top_logprobs") or 0)
    choices = kind.sent(body, choices)
    if body.get("stream") is not True:
        if script.error is not None:
            return fixed(int(script.error["code"]), render_json({"error": script.error}))
        if script.malformed_after is not None:
            return fixed(200, script.malformed_line)
        if script.repeat:
            return Silence(math.inf)
        answer = fixed(200, chunks.whole(choices, usage), delay=script.interval * usage["completion_tokens"])
        return cut_in_half(answer) if script.cut_after is not None else answer
    prelude = chunks.prelude(choices)
    if script.repeat:
        forever = itertools.cycle([chunks.token(0, ("content", piece)) for piece in script.pieces or ()])
        return event_stream(itertools.chain(prelude, dripped(forever, script.interval)), complete=False)
    stream_options = body.get("stream_options")
    wants_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    send_usage = wants_usage and script.usage and app.profile != "llama.cpp"
    events = _events(chunks, choices, usage if send_usage else None)
    tokens, trailer = (events[:-1], events[-1:]) if send_usage else (events, [])
    trailer.append(SSE_DONE)
    if script.malformed_after is not None:
        tokens.insert(script.malformed_after, script.malformed_line + b"\n\n")
    if script.error is not None:
        tokens = [*tokens[: script.error_after], f"data: {json.dumps({'error': script.error})}\n\n".encode()]
        trailer = [SSE_DONE]
    if script.cut_after is not None:
        return event_stream([*prelude, *dripped(tokens[: script.cut_after], script.interval)], complete=False)
    return event_stream([*prelude, *dripped(tokens, script.interval), *trailer])


class _Chunks:
    """Renders ``chat.completion.chunk`` events byte-compatible with vLLM's stream (and the answer
    not streamed)."""

    OBJECT = "chat.completion.chunk"
    ID_PREFIX = "chatcmpl"

    def __init__(self, model: str) -> None:
        self.request_id, self.created, self.model = f"{self.ID_PREFIX}-{secrets.token_hex(8)}", int(time.time()), model
        model_json = json.dumps(model, ensure_ascii=False)
        self._prefix = (
            f'data: {{"id":"{self.request_id}","object":"{self.OBJECT}","created":{self.created},'
            f'"model":{model_json},"choices":'
        )
        self._cache: dict[tuple[int, tuple[str, str] | None], bytes] = {}
        self.top_logprobs: int | None = None
        """Set (the request's ``top_logprobs``) when it asked for ``logprobs``: each content token then
        carries its own."""

    def prelude(self, choices: Sequence[_Choice]) -> list[bytes]:
        """The chunks before the tokens: each choice's role."""
        return [self.role(choice.index) for choice in choices]

    def whole(self, choices: Sequence[_Choice], usage: dict[str, Any]) -> bytes:
        """The answer not streamed."""
        return _completion(self.request_id, self.created, self.model, choices, usage)

    def role(self, index: int) -> bytes:
        return (
            f'{self._prefix}[{{"index":{index},"delta":{{"role":"assistant","content":""}},"logprobs":null,'
            f'"finish_reason":null}}],"prompt_token_ids":null,"prompt_text":null}}\n\n'
        ).encode()

    def token(self, index: int, delta: tuple[str, str] | None) -> bytes:
        key = (index, delta)
        if (event := self._cache.get(key)) is None:
            event = self._cache[key] = (
                f'{self._prefix}[{{"index":{index},"delta":{_delta_json(delta)},'
                f'"logprobs":{self._logprobs(delta)},"finish_reason":null,"token_ids":null}}]}}\n\n'
            ).encode()
        return event

    def _logprobs(self, delta: tuple[str, str] | None) -> str:
        """vLLM's ``logprobs`` of a chunk: its token's, with ``top_logprobs`` alternatives (the token
        first), each a stable function of the token."""
        if self.top_logprobs is None or delta is None or delta[0] != "content":
            return "null"
        token = delta[1]
        logprob = -(int.from_bytes(token.encode()[:4].ljust(4, b"_"), "little") % 300) / 100
        top = [(token, logprob), *((f"{token.strip()}{n}", logprob - 1 - n) for n in range(1, self.top_logprobs))]
        entry = {"token": token, "logprob": logprob, "bytes": list(token.encode()),
                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                  for t, lp in top[:self.top_logprobs]]}
        return json.dumps({"content": [entry]}, ensure_ascii=False)

    def final(self, choice: _Choice, delta: tuple[str, str] | None, fingerprint: bool) -> bytes:
        """The last chunk of a choice; the stream's very last one carries the fingerprint when no
        usage chunk follows."""
        tail = f',"system_fingerprint":"{SYSTEM_FINGERPRINT}"' if fingerprint else ""
        return (
            f'{self._prefix}[{{"index":{choice.index},"delta":{_delta_json(delta)},'
            f'"logprobs":{self._logprobs(delta)},"finish_reason":{json.dumps(choice.finish_reason)},'
            f'"stop_reason":{json.dumps(choice.stop_reason)},"token_ids":null}}]{tail}}}\n\n'
        ).encode()

    def usage(self, usage: Mapping[str, Any]) -> bytes:
        """The trailing usage chunk: vLLM leaves out the fields that are None."""
        present = render_json({name: value for name, value in usage.items() if value is not None}).decode()
        return f'{self._prefix}[],"usage":{present},"system_fingerprint":"{SYSTEM_FINGERPRINT}"}}\n\n'.encode()


def _delta_json(delta: tuple[str, str] | None) -> str:
    if delta is None:
        return "{}"
    field, text = delta
    if field == "tool_calls":  # already JSON
        return f'{{"tool_calls":{text}}}'
    return f'{{"{field}":{json.dumps(text, ensure_ascii=False)}}}'


def _events(chunks: _Chunks, choices: Sequence[_Choice], usage: Mapping[str, Any] | None) -> list[bytes]:
    """Token chunks of all choices, interleaved round-robin, plus the usage chunk when given."""
    sequences = [choice.streamed() for choice in choices]
    last_turn = max(map(len, sequences))
    last_choice = max(i for i, deltas in enumerate(sequences) if len(deltas) == last_turn)
    events: list[bytes] = []
    for turn in range(last_turn):
        for position, (choice, deltas) in enumerate(zip(choices, sequences)):
            if turn < len(deltas) - 1:
                events.append(chunks.token(choice.index, deltas[turn]))
            elif turn == len(deltas) - 1:
                fingerprint = usage is None and turn == last_turn - 1 and position == last_choice
                events.append(chunks.final(choice, deltas[turn], fingerprint))
    if usage is not None:
        events.append(chunks.usage(usage))
    return events


def _message(choice: _Choice) -> dict[str, Any]:
    """The non-streamed message; ``tool_calls`` only when there are some, as vLLM leaves it out."""
    message: dict[str, Any] = {"role": "assistant", "content": choice.content, "refusal": None, "annotations": None,
                               "audio": None, "function_call": None}
    if choice.calls:
        message["tool_calls"] = [{"id": f"chatcmpl-tool-{secrets.token_hex(8)}", "type": "function",
                                  "function": {"name": name, "arguments": arguments}} for name, arguments in choice.calls]
    message["reasoning"] = "".join(choice.reasoning) or None
    return message


def _completion(
    request_id: str, created: int, model: str, choices: Sequence[_Choice], usage: dict[str, Any]
) -> bytes:
    return render_json({
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [
            {
                "index": choice.index,
                "message": _message(choice),
                "logprobs": None, "finish_reason": choice.finish_reason, "stop_reason": choice.stop_reason,
                "token_ids": None, "routed_experts": None,
            }
            for choice in choices
        ],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": usage,
        "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None, "kv_transfer_params": None,
        "ec_transfer_params": None, "metrics": None,
    })


def _read_chat(body: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], int]:
    messages = body["messages"] if isinstance(body.get("messages"), list) else []
    return messages, count_chat_tokens(messages)


CHAT = Kind("messages", _read_chat, _Chunks)
