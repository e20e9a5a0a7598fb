"""A vLLM 0.32 look-alike for fast tests and benchmarks: on a loopback socket (:class:`LoopbackServer`)
or in-process for httpx (:class:`LoopbackTransport`), answering like the responses recorded in
``tests/fixtures/vllm-samples``.

Unscripted, it follows one deterministic tokenizer and model (:mod:`tests.loopback.model`), so tests
can predict every count and every answer; ``push`` scripts the next answers (:class:`Reply`).
"""

from tests.loopback.app import FakeVLLM
from tests.loopback.chat import SYSTEM_FINGERPRINT
from tests.loopback.guided import guided
from tests.loopback.info import MODEL_ROOT, VLLM_VERSION
from tests.loopback.model import (
    CHARS_PER_TOKEN,
    CLS_ID,
    IM_END,
    IM_START,
    SEP_ID,
    chat_prompt_pieces,
    completion_pieces,
    count_chat_tokens,
    count_embedding_tokens,
    count_text_tokens,
    embedding_vector,
    message_text,
)
from tests.loopback.script import HangReply, Reply, ScriptedReply, StatusReply, StreamReply
from tests.loopback.server import LoopbackServer
from tests.loopback.transport import LoopbackTransport
from tests.loopback.wire import RecordedRequest

__all__ = [
    "CHARS_PER_TOKEN",
    "CLS_ID",
    "IM_END",
    "IM_START",
    "MODEL_ROOT",
    "SEP_ID",
    "SYSTEM_FINGERPRINT",
    "VLLM_VERSION",
    "FakeVLLM",
    "HangReply",
    "LoopbackServer",
    "LoopbackTransport",
    "RecordedRequest",
    "Reply",
    "ScriptedReply",
    "StatusReply",
    "StreamReply",
    "chat_prompt_pieces",
    "completion_pieces",
    "count_chat_tokens",
    "count_embedding_tokens",
    "count_text_tokens",
    "embedding_vector",
    "guided",
    "message_text",
]
