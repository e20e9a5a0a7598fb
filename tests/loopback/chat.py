"""``/v1/chat/completions``: vLLM's validation, stop strings, reasoning, usage and chunk bytes, then the
script's disturbances."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.loopback.errors import (
    error, json_body, missing, param_error, prompt_too_long, unknown_model, validation_error,
)
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


def chat(app: FakeVLLM, request: RecordedRequest) -> Answer | Silence:
    script = next_script(app.chat_script)
    if script is None and app.chat_rule is not None:
        script = app.chat_rule(request.json if isinstance(request.json, dict) else {})
    answer = _reply(app, request, script)
    if app.chat_delay and isinstance(answer, Answer):
        return dataclasses.replace(answer, delay=answer.delay + app.chat_delay)
    return answer


def _reply(app: FakeVLLM, request: RecordedRequest, script: ScriptedReply | None) -> Answer | Silence:
    if isinstance(script, StatusReply):
        return status_answer(script)
    if isinstance(script, StreamReply):
        return _scripted(app, request, script)
    answer = _default(app, request)
    return hung(answer, script) if isinstance(script, HangReply) else answer


def _default(app: FakeVLLM, request: RecordedRequest) -> Answer:
    body = json_body(request)
    if isinstance(body, Answer):
        return body
    if "messages" not in body:
        return validation_error([missing(body, "messages")], "body.messages")
    model = body.get("model") or app.models[0]
    if model not in app.models and app.profile != "llama.cpp":  # llama.cpp answers any name
        return unknown_model(model, app.models)
    if body.get("tools") and body.get("tool_choice", "auto") == "auto":
        return error(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
    messages = body["messages"] if isinstance(body["messages"], list) else []
    prompt_tokens = count_chat_tokens(messages)
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
    return _answer(app, body, str(model), choices, _usage(app, prompt_tokens, choices), StreamReply())


def _scripted(app: FakeVLLM, request: RecordedRequest, script: StreamReply) -> Answer | Silence:
    body = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    prompt_tokens = count_chat_tokens(messages)
    if script.pieces is None:
        (choice,) = _generate(app, {**body, "n": 1}, messages, prompt_tokens)
    else:
        choice = _Choice(0, script.pieces, script.finish_reason)
    choices = [dataclasses.replace(choice, reasoning=script.reasoning)]
    model = str(body.get("model") or (app.models[0] if app.models else ""))
    return _answer(app, body, model, choices, _usage(app, prompt_tokens, choices), script)


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

    @property
    def content(self) -> str | None:
        """The message's content: None when the model only thought (vLLM's parsers find none)."""
        return "".join(self.deltas) if self.deltas or not self.reasoning else None

    @property
    def completion_tokens(self) -> int:
        return len(self.deltas) + (len(self.reasoning) + 2 if self.reasoning else 0)

    def streamed(self) -> list[tuple[str, str] | None]:
        """The delta of each token chunk as (field, text): reasoning first, then content.  None is the
        empty delta vLLM sends when ``</think>`` was the last token; a choice without any tokens still
        ends with one empty content chunk."""
        thought: list[tuple[str, str] | None] = [("reasoning", piece) for piece in self.reasoning]
        if self.deltas:
            return [*thought, *(("content", delta) for delta in self.deltas)]
        return [*thought, None] if thought else [("content", "")]


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
    script: StreamReply,
) -> Answer | Silence:
    """Render the choices as vLLM would, then apply the script's disturbances."""
    request_id, created = f"chatcmpl-{secrets.token_hex(8)}", int(time.time())
    if body.get("stream") is not True:
        if script.error is not None:
            return fixed(int(script.error["code"]), render_json({"error": script.error}))
        if script.malformed_after is not None:
            return fixed(200, script.malformed_line)
        if script.repeat:
            return Silence(math.inf)
        answer = fixed(200, _completion(request_id, created, model, choices, usage),
                       delay=script.interval * usage["completion_tokens"])
        return cut_in_half(answer) if script.cut_after is not None else answer
    chunks = _Chunks(request_id, created, model)
    prelude = [chunks.role(choice.index) for choice in choices]
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
    """Renders ``chat.completion.chunk`` events byte-compatible with vLLM's stream."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        model_json = json.dumps(model, ensure_ascii=False)
        self._prefix = (
            f'data: {{"id":"{request_id}","object":"chat.completion.chunk","created":{created},'
            f'"model":{model_json},"choices":'
        )
        self._cache: dict[tuple[int, tuple[str, str] | None], bytes] = {}

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
                f'"logprobs":null,"finish_reason":null,"token_ids":null}}]}}\n\n'
            ).encode()
        return event

    def final(self, choice: _Choice, delta: tuple[str, str] | None, fingerprint: bool) -> bytes:
        """The last chunk of a choice; the stream's very last one carries the fingerprint when no
        usage chunk follows."""
        tail = f',"system_fingerprint":"{SYSTEM_FINGERPRINT}"' if fingerprint else ""
        return (
            f'{self._prefix}[{{"index":{choice.index},"delta":{_delta_json(delta)},'
            f'"logprobs":null,"finish_reason":{json.dumps(choice.finish_reason)},'
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


def _completion(
    request_id: str, created: int, model: str, choices: Sequence[_Choice], usage: dict[str, Any]
) -> bytes:
    return render_json({
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [
            {
                "index": choice.index,
                "message": {"role": "assistant", "content": choice.content, "refusal": None, "annotations": None,
                            "audio": None, "function_call": None, "reasoning": "".join(choice.reasoning) or None},
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
