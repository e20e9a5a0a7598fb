"""``/v1/completions``: a base model continues a prompt (no chat template).

The same validation, generation, stop strings, usage, scripts and disturbances as chat
(:func:`tests.loopback.chat.generation`), as vLLM's ``text_completion`` chunks: no role chunk, the text on
the choice, ``echo`` sending the prompt back in front of the first token.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tests.loopback.chat import SYSTEM_FINGERPRINT, Kind, _Choice, _Chunks, generation
from tests.loopback.model import count_text_tokens
from tests.loopback.wire import Answer, RecordedRequest, Silence, render_json

if TYPE_CHECKING:
    from tests.loopback.app import FakeVLLM


def completions(app: FakeVLLM, request: RecordedRequest) -> Answer | Silence:
    return generation(app, request, COMPLETION)


def _read(body: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], int]:
    """The prompt, for the default model, as the user message it answers; counted as plain text."""
    prompt = body["prompt"] if isinstance(body.get("prompt"), str) else ""
    return [{"role": "user", "content": prompt}], count_text_tokens(prompt)


def _echoed(body: Mapping[str, Any], choices: Sequence[_Choice]) -> Sequence[_Choice]:
    """With ``echo`` vLLM sends the prompt back in the first token's chunk."""
    if not body.get("echo"):
        return choices
    prompt = str(body.get("prompt", ""))
    return [dataclasses.replace(choice, deltas=(prompt + "".join(choice.deltas[:1]), *choice.deltas[1:]))
            for choice in choices]


class _TextChunks(_Chunks):
    """Renders ``text_completion`` events byte-compatible with vLLM's stream (and the answer not streamed)."""

    OBJECT = "text_completion"
    ID_PREFIX = "cmpl"

    def prelude(self, choices: Sequence[_Choice]) -> list[bytes]:
        return []  # a completion has no role

    def token(self, index: int, delta: tuple[str, str] | None) -> bytes:
        return self._choice(index, delta, None, None, "")

    def final(self, choice: _Choice, delta: tuple[str, str] | None, fingerprint: bool) -> bytes:
        tail = f',"system_fingerprint":"{SYSTEM_FINGERPRINT}"' if fingerprint else ""
        return self._choice(choice.index, delta, choice.finish_reason, choice.stop_reason, tail)

    def _choice(self, index: int, delta: tuple[str, str] | None, finish_reason: str | None,
                stop_reason: str | None, tail: str) -> bytes:
        text = json.dumps(delta[1] if delta else "", ensure_ascii=False)
        return (
            f'{self._prefix}[{{"index":{index},"text":{text},"logprobs":null,'
            f'"finish_reason":{json.dumps(finish_reason)},"stop_reason":{json.dumps(stop_reason)},'
            f'"prompt_token_ids":null,"token_ids":null}}]{tail}}}\n\n'
        ).encode()

    def whole(self, choices: Sequence[_Choice], usage: dict[str, Any]) -> bytes:
        return render_json({
            "id": self.request_id, "object": self.OBJECT, "created": self.created, "model": self.model,
            "choices": [
                {"index": choice.index, "text": "".join(choice.deltas), "logprobs": None,
                 "finish_reason": choice.finish_reason, "stop_reason": choice.stop_reason, "token_ids": None,
                 "prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None}
                for choice in choices
            ],
            "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT, "usage": usage,
            "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None,
        })


COMPLETION = Kind("prompt", _read, _TextChunks, _echoed)
