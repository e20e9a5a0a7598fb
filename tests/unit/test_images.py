"""Images in: every kind of notebook object encoded, resized and sent in vLLM's shape; thumbnails,
saving, and the errors (a text-only model, a bad ``--image``), in-process and in cells."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import httpx
import matplotlib
import numpy as np
import pytest
from IPython.utils.capture import capture_output
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook
from PIL import Image as PILImage

from tests.loopback import LoopbackServer, LoopbackTransport
from tests.loopback.model import IMAGE_TOKENS
from tests.unit.notebook_shell import Shell, chat_bodies
from vllm_magic import Chat, Client, Connection, Conversation, errors
from vllm_magic.images import to_image
from vllm_magic.messages import Image, ImageRef
from vllm_magic.panel import ChatPanel
from vllm_magic.render import conversation_html

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def photo(width: int = 64, height: int = 48) -> PILImage.Image:
    """Noise: thousands of colours, like a photo."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PILImage.fromarray(pixels)


def drawing(width: int = 64, height: int = 48) -> PILImage.Image:
    """Two colours, like a diagram."""
    picture = PILImage.new("RGB", (width, height), "white")
    picture.paste((200, 30, 30), (8, 8, width // 2, height // 2))
    return picture


def png_bytes(picture: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def payload(image: Image) -> tuple[str, bytes]:
    """The media type and the bytes of a data URL."""
    header, data = image.url.split(",", 1)
    return header.removeprefix("data:").removesuffix(";base64"), base64.b64decode(data)


def pixels(image: Image) -> PILImage.Image:
    return PILImage.open(io.BytesIO(payload(image)[1]))


def chat_on(transport: LoopbackTransport) -> Chat:
    return Chat(connection=Connection(client=Client(transport.base_url, transport=transport)))


# -- encoding ---------------------------------------------------------------------------------------


def test_a_photo_goes_as_jpeg_and_a_drawing_as_png() -> None:
    assert payload(to_image(photo()))[0] == "image/jpeg"
    drawn = to_image(drawing())
    assert payload(drawn)[0] == "image/png" and (drawn.width, drawn.height) == (64, 48)
    assert pixels(drawn).getpixel((10, 10)) == (200, 30, 30), "PNG is lossless"


def test_transparency_keeps_png_and_an_opaque_alpha_channel_is_dropped() -> None:
    see_through = photo().convert("RGBA")
    see_through.putpixel((0, 0), (0, 0, 0, 0))
    assert payload(to_image(see_through))[0] == "image/png"
    assert pixels(to_image(see_through)).mode == "RGBA"
    assert payload(to_image(photo().convert("RGBA")))[0] == "image/jpeg"


def test_a_figure_is_sent_as_png() -> None:
    figure, axes = plt.subplots(figsize=(4, 3))
    axes.plot(range(100), np.sin(np.arange(100) / 10))
    image = to_image(figure, max_side=200)
    plt.close(figure)
    assert payload(image)[0] == "image/png" and max(pixels(image).size) == 200


def test_numpy_arrays_uint8_and_float() -> None:
    rgb = to_image(np.asarray(photo()))
    assert payload(rgb)[0] == "image/jpeg" and (rgb.width, rgb.height) == (64, 48)
    grey = to_image(np.full((10, 20), 0.5))
    assert pixels(grey).mode == "L" and pixels(grey).getpixel((3, 3)) == 128
    rgba = np.zeros((4, 4, 4))
    rgba[..., 3] = np.linspace(0, 1, 4)  # transparency: PNG
    assert payload(to_image(rgba))[0] == "image/png"
    clipped = to_image(np.full((4, 4, 3), 7.0))
    assert pixels(clipped).getpixel((0, 0)) == (255, 255, 255), "floats are clipped to 0..1"


def test_bytes_and_files_that_fit_are_sent_byte_for_byte(tmp_path: Path) -> None:
    data = png_bytes(photo())
    assert payload(to_image(data)) == ("image/png", data)
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    assert to_image(path) == to_image(str(path)) == to_image(data)


def test_a_url_is_kept_as_the_url() -> None:
    assert to_image("https://example.org/cat.png") == Image("https://example.org/cat.png")


def test_the_longer_side_is_bounded_and_zero_never_resizes() -> None:
    wide = to_image(photo(3000, 1000))
    assert (wide.width, wide.height) == (1024, 341) and pixels(wide).size == (1024, 341)
    tall = to_image(png_bytes(drawing(100, 400)), max_side=50)
    assert (tall.width, tall.height) == (12, 50) and payload(tall)[0] == "image/png"
    assert to_image(photo(3000, 1000), max_side=0).width == 3000


@pytest.mark.parametrize(("value", "hint", "said"), [
    (object(), "image_input", "cannot be made of a object"),
    (np.zeros((2, 2, 5), dtype=np.uint8), "image_input", "(2, 2, 5)"),
    (np.full((2, 2), 300), "image_input", "int64 from 300 to 300"),
    (b"not an image", "bad_image", "Pillow cannot read an image from the bytes given"),
    ("no/such/file.png", "image_path", "There is no image file 'no/such/file.png'"),
])
def test_what_is_not_an_image_says_so(value: object, hint: str, said: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        to_image(value)
    assert caught.value.hint == hint and said in caught.value.message and caught.value.fix


def test_without_pillow_a_url_still_works_and_the_rest_says_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert to_image("http://example.org/a.png").url == "http://example.org/a.png"
    with pytest.raises(errors.ConfigError, match="needs Pillow.*pip install pillow"):
        to_image(b"\x89PNG...")


# -- the request, the server's answers, the conversation --------------------------------------------


def test_the_content_array_reaches_the_server_in_vllms_shape() -> None:
    transport = LoopbackTransport(vision_models=("tiny-chat",))
    chat = chat_on(transport)
    plain = chat.ask("What is this?", record=False)
    turn = chat.ask("What is this?", images=[drawing(), "https://example.org/dog.jpg"])
    content = transport.requests[-1].json["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["type"] == "image_url" and content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[2] == {"type": "image_url", "image_url": {"url": "https://example.org/dog.jpg"}}
    assert turn.prompt_tokens == plain.prompt_tokens + 2 * IMAGE_TOKENS


SAMPLES = Path(__file__).parents[1] / "fixtures" / "vllm-samples"
RED = "data:image/png;base64," + base64.b64encode(png_bytes(PILImage.new("RGB", (8, 8), (255, 0, 0)))).decode()
"""The image the recordings sent: an 8x8 red PNG."""


def recorded_body(name: str) -> bytes:
    """The body vLLM answered, as recorded."""
    return (SAMPLES / name).read_bytes().partition(b"\r\n\r\n")[2]


def image_part(image_url: object) -> dict:
    return {"type": "image_url", "image_url": image_url}


@pytest.mark.parametrize(("content", "recording"), [
    ([image_part(RED)], "chat/err_image_url_not_object.http"),
    ([{"type": "text", "text": "hi"}, image_part({})], "chat/err_image_url_missing_url.http"),
    ([{"type": "text", "text": "What is this?"}, image_part({"url": "data:image/png;base64,@@@"})],
     "vision/err_image_not_base64.http"),
    ([{"type": "text", "text": "What is this?"}, image_part({"url": "data:image/png;base64,aGVsbG8gd29ybGQ="})],
     "vision/err_image_unreadable.http"),
])
def test_the_loopback_refuses_a_malformed_image_as_vllm_does(content: list, recording: str) -> None:
    """vLLM's shape is ``{"type": "image_url", "image_url": {"url": ...}}``, with an image in the URL."""
    transport = LoopbackTransport(vision_models=("tiny-chat",))
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": content}]}
    answer = httpx.Client(transport=transport, base_url=transport.base_url).post("/v1/chat/completions", json=body)
    assert answer.status_code == 400 and answer.content == recorded_body(recording)


def test_a_text_only_model_gives_one_paragraph_and_the_conversation_is_unchanged() -> None:
    transport = LoopbackTransport()
    chat = chat_on(transport)
    chat.ask("hello")
    with pytest.raises(errors.BadRequestError) as caught:
        chat.ask("And this?", images=[drawing()])
    error = caught.value
    assert error.status == 400 and error.hint == "no_image_input"
    assert error.server_message == json.loads(recorded_body("chat/err_image_to_text_model.http"))["error"]["message"]
    assert "takes no image input" in error.message and "tiny-chat is not a multimodal model" in error.message
    assert "serve a model that takes images" in error.message and "\n" not in error.message
    assert [turn.prompt for turn in chat.history] == ["hello"]


def test_retry_sends_the_images_again() -> None:
    transport = LoopbackTransport(vision_models=("tiny-chat",))
    chat = chat_on(transport)
    chat.ask("Look", images=[drawing()])
    chat.retry().text()
    first, again = (r.json["messages"][-1]["content"] for r in transport.requests[-2:])
    assert first == again and len(chat.history) == 1


def test_saved_with_the_image_data_or_only_its_hash_and_size(tmp_path: Path) -> None:
    transport = LoopbackTransport(vision_models=("tiny-chat",))
    chat = chat_on(transport)
    data = png_bytes(drawing())
    chat.ask("Look", images=[data, "https://example.org/dog.jpg"])
    whole = Conversation.load(chat.conversation.save(tmp_path / "whole.json"))
    assert whole.turns[0].user == chat.history[0].user
    light = Conversation.load(chat.conversation.save(tmp_path / "light.json", image_data=False))
    assert "base64" not in (tmp_path / "light.json").read_text()
    reference, url = light.turns[0].user.images
    assert reference == ImageRef("image/png", hashlib.sha256(data).hexdigest(), len(data), 64, 48)
    assert url == Image("https://example.org/dog.jpg")
    chat.conversation.replace_with(light)
    chat.ask("And now?")
    sent = transport.requests[-1].json["messages"][0]["content"]
    assert sent == [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": url.url}}]


def test_thumbnails_in_the_history_html() -> None:
    transport = LoopbackTransport(vision_models=("tiny-chat",))
    chat = chat_on(transport)
    chat.ask("Look", images=[drawing()])
    rendered = conversation_html(chat.conversation)
    assert '<img src="data:image/png;base64,' in rendered and 'alt="image/png 64x48' in rendered
    assert rendered.index("<img") < rendered.index("Look")


# -- in cells ---------------------------------------------------------------------------------------


@pytest.fixture
def vision(ip: Shell, loopback: LoopbackServer) -> Shell:
    """The notebook's server serves its model with image input."""
    loopback.vision_models = ("tiny-chat",)
    return ip


def sent_content(loopback: LoopbackServer) -> list[dict]:
    return chat_bodies(loopback)[-1]["messages"][-1]["content"]


def test_cell_image_options_send_every_kind(vision: Shell, loopback: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(png_bytes(drawing()))
    vision.shell.user_ns.update(picture=drawing(), array=np.asarray(photo()), blob=png_bytes(drawing(8, 8)),
                                folder=tmp_path)
    vision.ok(f"%%chat --image picture --image array --image blob --image \"folder / 'photo.png'\" "
              f"--image {tmp_path}/photo.png --image https://example.org/dog.jpg\nWhat are these?")
    content = sent_content(loopback)
    assert content[0] == {"type": "text", "text": "What are these?"}
    urls = [part["image_url"]["url"] for part in content[1:]]
    assert [url.split(";")[0] for url in urls[:5]] == ["data:image/png", "data:image/jpeg", "data:image/png",
                                                      "data:image/png", "data:image/png"]
    assert urls[3] == urls[4] and urls[5] == "https://example.org/dog.jpg"


def test_plot_sends_the_figure_a_cell_drew_even_after_it_was_closed(vision: Shell, loopback: LoopbackServer) -> None:
    vision.ok("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])")
    vision.ok("plt.close('all')")  # as Jupyter's inline backend does once the figure is shown
    vision.ok("%%chat --plot\nDescribe the plot")
    (part,) = sent_content(loopback)[1:]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


def test_thumbnails_show_above_the_answer_and_in_history(vision: Shell) -> None:
    vision.shell.user_ns["picture"] = drawing()
    with capture_output() as captured:
        vision.shell.run_cell("%%chat --image picture\nLook")
    thumbnails = captured.outputs[0].data
    assert '<img src="data:image/png;base64,' in thumbnails["text/html"]
    assert thumbnails["text/plain"].startswith("[image: image/png 64x48,")
    assert captured.stdout.index("tiny-chat") > 0, "the answer follows"
    history = vision.ok("%vllm history")
    assert "--- 1. You\n[image: image/png 64x48," in history


def test_thumbnails_in_the_panel(vision: Shell) -> None:
    vision.shell.user_ns["picture"] = drawing()
    vision.ok("%%chat --image picture\nLook")

    async def scenario() -> str:
        panel = ChatPanel(vision.magics.session)
        return "".join(view.value for view in panel.transcript.children)

    assert '<div class="vm-user"><div class="vm-images"><img src="data:image/png' in asyncio.run(scenario())


def test_image_max_side_and_save_images_settings(vision: Shell, loopback: LoopbackServer, tmp_path: Path) -> None:
    vision.shell.user_ns["picture"] = photo(300, 100)
    vision.ok("%config VLLMMagics.image_max_side = 30")
    vision.ok("%%chat --image picture\nLook")
    url = sent_content(loopback)[1]["image_url"]["url"]
    assert PILImage.open(io.BytesIO(base64.b64decode(url.split(",")[1]))).size == (30, 10)
    vision.ok(f"%vllm save {tmp_path}/whole.json")
    vision.ok("%config VLLMMagics.save_images = False")
    vision.ok(f"%vllm save {tmp_path}/light.json")
    assert url in (tmp_path / "whole.json").read_text()
    assert "base64" not in (tmp_path / "light.json").read_text()
    vision.ok(f"%vllm load {tmp_path}/light.json")
    assert "pixels not saved" in vision.ok("%vllm history")


def test_a_text_only_model_fails_the_cell_with_one_paragraph(ip: Shell, loopback: LoopbackServer) -> None:
    ip.ok("%%chat\nhello")
    ip.shell.user_ns["picture"] = drawing()
    out = ip.fails("%%chat --image picture\nAnd this?", errors.BadRequestError)
    assert "tiny-chat takes no image input" in out and "tiny-chat is not a multimodal model" in out
    assert "`%vllm connect URL --model NAME`" in out and "images=" not in out
    assert [turn.prompt for turn in ip.turns] == ["hello"]


@pytest.mark.parametrize(("line", "said"), [
    ("--image nothing_here", "--image could not evaluate 'nothing_here': NameError"),
    ("--image 42", "An image cannot be made of a int"),
    ("--image no_such_file.png", "--image could not evaluate 'no_such_file.png'"),
])
def test_a_bad_image_option_says_so_and_sends_nothing(ip: Shell, loopback: LoopbackServer, line: str,
                                                     said: str) -> None:
    out = ip.fails(f"%%chat {line}\nLook", errors.ConfigError)
    assert said in out and "--image" in out and not chat_bodies(loopback)


def test_in_a_kernel_plot_sends_the_figure_the_inline_backend_showed(loopback: LoopbackServer) -> None:
    """Jupyter's inline backend closes a figure once the cell drew it; the next cell's --plot still has it,
    and the saved notebook shows its thumbnail above the answer."""
    loopback.vision_models = ("tiny-chat",)
    cells = ["%load_ext vllm_magic", "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])",
             "%%chat --plot\nDescribe the plot"]
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "OPENAI_", "MPLBACKEND"))}
    NotebookClient(notebook, kernel_name="python3", timeout=60).execute(env={**env, "VLLM_BASE_URL": loopback.base_url})
    assert any("image/png" in output.get("data", {}) for output in notebook.cells[1].outputs), "the plot was shown"
    (part,) = sent_content(loopback)[1:]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")
    thumbnails, *answer = notebook.cells[2].outputs
    assert thumbnails.data["text/html"].count("<img src=\"data:image/png;base64,") == 1
    assert "tiny-chat" in answer[-1].data["text/html"]
