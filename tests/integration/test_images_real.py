"""Images in, against real vLLM servers: the tiny Idefics3 (``tiny-vision``) takes them, each one
costing its image tokens in the prompt; the text-only ``tiny-chat`` refuses them with one paragraph."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.loopback.model import IMAGE_TOKENS  # the look-alike's cost of an image: tiny-vision's, checked here
from tests.unit.notebook_shell import Shell
from vllm_magic import Chat, errors


def photo() -> PILImage.Image:
    return PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))


def test_a_vision_model_takes_the_images(vllm_vision) -> None:
    chat = Chat(vllm_vision.base_url, api_key=vllm_vision.api_key, temperature=0, max_tokens=4)
    alone = chat.ask("What is this?", record=False)
    one = chat.ask("What is this?", images=[photo()], record=False)
    two = chat.ask("What is this?", images=[photo(), np.zeros((30, 30, 3), dtype=np.uint8)], record=False)
    assert all(turn.complete and turn.completion_tokens == 4 for turn in (alone, one, two))
    assert one.prompt_tokens == alone.prompt_tokens + IMAGE_TOKENS
    assert two.prompt_tokens == alone.prompt_tokens + 2 * IMAGE_TOKENS


def test_a_cell_sends_an_image_to_the_vision_model(ip: Shell, vllm_vision, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", vllm_vision.api_key)
    ip.shell.user_ns["picture"] = photo()
    ip.ok(f"%vllm connect {vllm_vision.base_url}")
    ip.ok("%%chat --image picture --max-tokens 4 --temperature 0\nWhat is this?")
    (turn,) = ip.turns
    (image,) = turn.user.images
    assert turn.complete and (image.width, image.height) == (160, 120) and image.url.startswith("data:image/jpeg")
    assert "[image: image/jpeg 160x120" in ip.ok("%vllm history")


def test_a_text_only_model_refuses_with_one_paragraph(vllm_chat) -> None:
    chat = Chat(vllm_chat.base_url, api_key=vllm_chat.api_key, temperature=0, max_tokens=4)
    chat.ask("Say hello")
    with pytest.raises(errors.BadRequestError) as caught:
        chat.ask("What is this?", images=[photo()])
    assert caught.value.status == 400 and caught.value.hint == "no_image_input"
    assert caught.value.server_message == "tiny-chat is not a multimodal model"
    assert "tiny-chat takes no image input" in caught.value.message and "\n" not in caught.value.message
    assert [turn.prompt for turn in chat.history] == ["Say hello"]
