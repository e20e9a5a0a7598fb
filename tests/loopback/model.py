"""The deterministic stand-in tokenizer and model: every count and every answer is predictable.

Text is cut into pieces of :data:`CHARS_PER_TOKEN` characters; chat prompts are counted through a
ChatML template; the model answers by walking a fixed text from a point hashed from the prompt.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import struct
from collections.abc import Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 4
"""The stand-in tokenizer cuts text into pieces of this many characters (typical for real models)."""

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
IMAGE = "<image>"
IMAGE_TOKENS = 8
"""Prompt tokens of one image, as tiny-vision counts them (one 56x56 tile: 4 image tokens and markers)."""
SPECIAL_IDS = {IM_START: 1, IM_END: 2}
CLS_ID, SEP_ID = 101, 102
"""The embedding model wraps every input in these, like the recorded BERT-style tokenizer."""
_VOCAB_SIZE = 32000

# The "model" answers by walking this text from a hash-chosen start, one piece per token, so the
# output reads like words and every piece is known in advance (see completion_pieces).
_ANSWER_PIECES = (
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
    " Jupyter", " notebooks", " make", " it", " easy", " to", " explore", " data", ",",
    " and", " vLLM", " serves", " models", " fast", ".", " Streaming", " tokens", " arrive",
    " one", " by", " one", " until", " the", " answer", " is", " complete", ".", "\n",
)


def text_pieces(text: str) -> list[str]:
    return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def count_text_tokens(text: str) -> int:
    """Tokens in a plain prompt for the chat model: ``ceil(len(text) / 4)``, no special tokens."""
    return len(text_pieces(text))


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


def image_count(content: Any) -> int:
    """The ``image_url`` parts of a message's ``content``."""
    parts = content if isinstance(content, list) else []
    return sum(isinstance(part, dict) and part.get("type") == "image_url" for part in parts)


def chat_prompt_pieces(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[str]:
    """The prompt tokens of a ChatML rendering, as the chat endpoints and ``/tokenize`` count them.

    Each message is ``<|im_start|>``, :data:`IMAGE_TOKENS` pieces per image, the pieces of
    ``"{role}\\n{content}"``, ``<|im_end|>`` and ``"\\n"``; the generation prompt adds ``<|im_start|>``
    and the pieces of ``"assistant\\n"``.
    """
    pieces: list[str] = []
    for message in messages:
        role, content = str(message.get("role", "")), message.get("content")
        images = [IMAGE] * (IMAGE_TOKENS * image_count(content))
        pieces += [IM_START, *images, *text_pieces(f"{role}\n{message_text(content)}"), IM_END, "\n"]
    if add_generation_prompt:
        pieces += [IM_START, *text_pieces("assistant\n")]
    return pieces


def count_chat_tokens(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> int:
    """``prompt_tokens`` of a chat request (see :func:`chat_prompt_pieces`)."""
    return len(chat_prompt_pieces(messages, add_generation_prompt))


def count_embedding_tokens(text: str) -> int:
    """Tokens of one embedding input text: ``[CLS]`` + ``ceil(len(text) / 4)`` + ``[SEP]``."""
    return count_text_tokens(text) + 2


def _stable_int(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(repr, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def token_id(piece: str, first_free: int) -> int:
    """A piece's id in a vocabulary whose ids below ``first_free`` are taken by special tokens."""
    return first_free + _stable_int(piece) % (_VOCAB_SIZE - first_free)


def completion_pieces(
    messages: Sequence[Mapping[str, Any]], count: int, *, seed: int | None = None, index: int = 0
) -> list[str]:
    """The first ``count`` tokens the default model generates (before stop strings apply).

    The answer depends only on the last user message, the request's ``seed`` and the choice index,
    so repeated requests agree (even with ``temperature`` > 0) and tests can predict the text.
    """
    last_user = next(
        (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    start = _stable_int(last_user, seed, index)
    return [_ANSWER_PIECES[(start + i) % len(_ANSWER_PIECES)] for i in range(count)]


def embedding_vector(token_ids: Sequence[int], dims: int) -> list[float]:
    """The L2-normalised float32 embedding of a tokenized input (same text, same vector)."""
    rng = random.Random(_stable_int(*token_ids))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dims}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dims}f", packed))


def _byte_level_unicode() -> list[str]:
    """GPT-2's byte-to-character table, so ``token_strs`` look like a byte-level BPE's ("Ċ" for "\\n")."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    shifted = itertools.count(256)
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


_BYTE_CHARS = _byte_level_unicode()


def token_str(piece: str) -> str:
    """A piece as the tokenizer's vocabulary spells it."""
    return piece if piece in SPECIAL_IDS else "".join(_BYTE_CHARS[b] for b in piece.encode())
