"""A notebook's conversations in a file beside it, so that a restarted kernel can bring them back.

Jupyter tells a kernel which notebook it runs in ``JPY_SESSION_NAME``: jupyter-server sets it when it
starts the kernel, to the notebook's absolute path when the front end names the file (JupyterLab does),
else to its path from the server's root. ``analysis.ipynb``'s conversations go to
``.analysis.ipynb.vllm-chat.json`` beside it: a hidden file named after its one notebook, so two
notebooks never share one. Writes are atomic (a temporary file, then ``os.replace``): a kernel that
dies mid-write leaves the previous file whole. Like every saved conversation it holds the turns and
the system prompt, never a key, URL or header.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any
from datetime import datetime
from pathlib import Path

from .conversation import Conversation
from .errors import ConfigError

ENV = "JPY_SESSION_NAME"
FORMAT = "vllm_magic.notebook/1"
SUFFIX = ".vllm-chat.json"


def notebook_path(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The notebook this kernel runs, from ``JPY_SESSION_NAME``; None outside a notebook (terminal
    IPython, a script, a console, whose session name is no ``.ipynb`` file)."""
    name = environ.get(ENV, "")
    if not name.endswith(".ipynb"):
        return None
    path = Path(name).expanduser()
    # A relative path starts at the server's root, but the kernel starts in the notebook's folder.
    return path if path.is_absolute() else Path.cwd() / path.name


def sidecar_path(notebook: Path) -> Path:
    """``.analysis.ipynb.vllm-chat.json`` beside ``analysis.ipynb``."""
    return notebook.with_name(f".{notebook.name}{SUFFIX}")


def as_data(conversations: Iterable[Conversation], image_data: bool = True) -> dict[str, Any]:
    """The conversations as saved (see :meth:`Conversation.save` for ``image_data``): the file's JSON,
    and what the notebook's metadata holds."""
    return {"format": FORMAT, "conversations": [c.to_dict(image_data) for c in conversations]}


def from_data(data: Any) -> list[Conversation]:
    """The conversations :func:`as_data` made; ValueError and the like for anything else."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"format is {data.get('format') if isinstance(data, dict) else data!r}, expected {FORMAT!r}")
    return [Conversation.from_dict(conversation) for conversation in data["conversations"]]


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with the conversations :func:`as_data` made, atomically."""
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    import tempfile  # only when a notebook's conversations are written

    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read(path: Path) -> list[Conversation]:
    """The conversations saved in ``path`` (none when there is no such file)."""
    try:
        return from_data(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{str(path)!r} does not hold a notebook's saved conversations ({exc}).",
                          hint="bad_saved_file", path=str(path)) from None


def describe(conversations: list[Conversation]) -> str:
    """``5 turns, last 2026-12-02 10:31`` (local time), with the number of conversations when several."""
    turns = [turn for conversation in conversations for turn in conversation.turns]
    last = max(datetime.fromisoformat(turn.created) for turn in turns).astimezone()
    several = f"{len(conversations)} conversations, " if len(conversations) > 1 else ""
    return f"{several}{len(turns)} turn{'s' if len(turns) != 1 else ''}, last {last:%Y-%m-%d %H:%M}"
