"""Images in: notebook objects turned into :class:`~vllm_magic.messages.Image` parts for the chat API.

    >>> chat.ask("What does this plot show?", images=[fig])
    >>> chat.ask("Describe both", images=["cat.jpg", "https://example.org/dog.png"])

:func:`to_image` takes a PIL image, a matplotlib Figure, a numpy array (HxW, HxWx3 or HxWx4; integers
in 0..255, or floats in 0..1, clipped), image file bytes, a file path (str or Path), a ``data:`` URL or
an http(s) URL. An http(s) URL is sent as it is (the server fetches it); everything else becomes a
``data:`` URL, shrunk so that its longer side is at most ``max_side`` pixels (0: never shrunk).

The format: a PNG, JPEG or WebP file (or bytes) that already fits is sent byte for byte. Anything
else is encoded here: as PNG when it is line art that JPEG would smear or when JPEG cannot hold it
(a matplotlib Figure; an image with transparency; at most 256 distinct colours, as plots, diagrams
and flat screenshots have), and as JPEG (quality 85) otherwise, which suits photos.

Pillow (``pip install pillow``, or the ``images`` extra) is imported only here and only when an
image is read or encoded; it, numpy and matplotlib are never imported by ``import vllm_magic``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .lazy import instance_of
from .messages import Image, ImageRef, Message

DEFAULT_MAX_SIDE = 1024
"""Longest side, in pixels, of an image sent (vision models downscale larger ones anyway)."""

PASS_THROUGH = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
"""Formats sent as they are when they fit: every vision server reads them."""

JPEG_QUALITY = 85
FEW_COLOURS = 256


def to_image(obj: Any, max_side: int = DEFAULT_MAX_SIDE) -> Image | ImageRef:
    """``obj`` as an image part (image parts themselves are returned as they are)."""
    if isinstance(obj, (Image, ImageRef)):
        return obj
    if isinstance(obj, str) and obj.startswith(("http://", "https://")):
        return Image(obj)
    if isinstance(obj, str) and obj.startswith("data:"):
        return _from_bytes(_data_url_bytes(obj), max_side)
    if isinstance(obj, (str, os.PathLike)):
        return _from_file(Path(obj).expanduser(), max_side)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(obj), max_side)
    if instance_of(obj, "matplotlib.figure", "Figure"):
        return _from_figure(obj, max_side)
    if instance_of(obj, "numpy", "ndarray"):
        return _from_array(obj, max_side)
    if instance_of(obj, "PIL.Image", "Image"):
        return _encode(obj, max_side)
    raise ConfigError(f"An image cannot be made of a {type(obj).__name__}.", hint="image_input")


def current_figure() -> Any:
    """pyplot's current figure, else the last one a notebook cell drew (see :func:`remember_figure`)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums():
        return pyplot.gcf()
    if _last_figure is None:
        raise ConfigError("There is no matplotlib figure to send: none is open and no cell has drawn one.",
                          hint="no_plot")
    return _last_figure


_last_figure: Any = None


def remember_figure() -> None:
    """Keep pyplot's current figure, if one is open (called after every notebook cell).

    Jupyter's inline backend closes each figure once it has shown it, so without this the plot
    a cell just drew would be gone by the time the next cell asks about it.
    """
    global _last_figure
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums():
        _last_figure = pyplot.gcf()


def user_message(prompt: str, images: list[Any], max_side: int) -> Message:
    """The user's message: the prompt's text, then its images."""
    message = Message.of("user", prompt)
    message.parts += [to_image(image, max_side) for image in images]
    return message


# -- describing and saving -------------------------------------------------------------------------


def without_data(message: Message) -> Message:
    """``message`` with each ``data:`` image replaced by an :class:`ImageRef` (hash, size, no pixels)."""
    return Message(message.role, [_reference(p) if isinstance(p, Image) and p.url.startswith("data:") else p
                                   for p in message.parts])


def _reference(image: Image) -> ImageRef:
    data = _data_url_bytes(image.url)
    return ImageRef(media_type=_media_type(image.url), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                    width=image.width, height=image.height)


def describe(part: Image | ImageRef) -> str:
    """``image/png 640x480, 35 KB``; a URL image is its URL; a reference adds its hash."""
    if isinstance(part, Image) and not part.url.startswith("data:"):
        return part.url
    if isinstance(part, Image):
        media_type, size = _media_type(part.url), len(_data_url_bytes(part.url))
    else:
        media_type, size = part.media_type, part.bytes
    pixels = f" {part.width}x{part.height}" if part.width and part.height else ""
    saved = f", sha256 {part.sha256[:12]}, pixels not saved" if isinstance(part, ImageRef) else ""
    return f"{media_type}{pixels}, {_kilobytes(size)}{saved}"


def _kilobytes(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} bytes"


def _media_type(url: str) -> str:
    return url[len("data:"):].split(";", 1)[0].split(",", 1)[0] or "application/octet-stream"


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ConfigError(f"The data URL {url[:40]!r}... does not hold valid base64.", hint="bad_image") from None


# -- reading ---------------------------------------------------------------------------------------


def _pil() -> Any:
    try:
        from PIL import Image as PILImage
    except ImportError:
        raise ConfigError("Reading and resizing images needs Pillow, which is not installed.",
                          hint="no_pillow") from None
    return PILImage


def _from_file(path: Path, max_side: int) -> Image:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ConfigError(f"There is no image file {str(path)!r}.", hint="image_path") from None
    return _from_bytes(data, max_side, repr(str(path)))


def _from_bytes(data: bytes, max_side: int, source: str = "the bytes given") -> Image:
    pil = _pil()
    try:
        picture = pil.open(io.BytesIO(data))
        picture.load()
    except (pil.UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConfigError(f"Pillow cannot read an image from {source} ({exc}).", hint="bad_image") from None
    media_type = PASS_THROUGH.get(picture.format or "")
    if media_type and _fits(picture.size, max_side):
        return _image(media_type, data, picture.size)
    return _encode(picture, max_side)


def _from_figure(figure: Any, max_side: int) -> Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")  # as Jupyter's inline backend shows it
    return _encode(_pil().open(buffer), max_side, line_art=True)


def _from_array(array: Any, max_side: int) -> Image:
    import numpy as np

    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    if not shape_ok or array.size == 0:
        raise ConfigError(f"An image array has shape (height, width), (height, width, 3) or (height, width, 4); "
                          f"this one has {array.shape}.", hint="image_input")
    if array.dtype.kind == "f":
        array = np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255)
    elif array.dtype.kind == "b":
        array = array * 255
    elif array.dtype.kind not in "ui" or array.min() < 0 or array.max() > 255:
        span = f" from {array.min()} to {array.max()}" if array.dtype.kind in "ui" else ""
        raise ConfigError(f"An image array holds integers in 0..255 or floats in 0..1; this one holds "
                          f"{array.dtype}{span}.", hint="image_input")
    return _encode(_pil().fromarray(np.ascontiguousarray(array, dtype=np.uint8)), max_side)


# -- encoding --------------------------------------------------------------------------------------


def _fits(size: tuple[int, int], max_side: int) -> bool:
    return not max_side or max(size) <= max_side


def _encode(picture: Any, max_side: int, line_art: bool = False) -> Image:
    """``picture`` shrunk to fit and written as PNG or JPEG (see the module's docstring for which)."""
    picture = _fitted(_plain_mode(picture), max_side)
    buffer = io.BytesIO()
    if line_art or picture.mode == "RGBA" or picture.getcolors(FEW_COLOURS) is not None:
        picture.save(buffer, format="PNG", optimize=True)
        media_type = "image/png"
    else:
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        media_type = "image/jpeg"
    return _image(media_type, buffer.getvalue(), picture.size)


def _plain_mode(picture: Any) -> Any:
    """RGB, greyscale, or RGBA when some pixel is not fully opaque."""
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        picture = picture.convert("RGBA")
        if picture.getchannel("A").getextrema()[0] < 255:
            return picture
    return picture if picture.mode in ("RGB", "L") else picture.convert("RGB")


def _fitted(picture: Any, max_side: int) -> Any:
    if _fits(picture.size, max_side):
        return picture
    scale = max_side / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, resample=_pil().Resampling.LANCZOS)


def _image(media_type: str, data: bytes, size: tuple[int, int]) -> Image:
    url = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
    return Image(url, width=size[0], height=size[1])
