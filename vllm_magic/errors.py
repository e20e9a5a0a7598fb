"""One error family, each with a one-paragraph message: what went wrong, then how to fix it.

Every failure the user can meet (server down, wrong key, unknown model, context too long, a cut
stream...) is a :class:`VLLMError`. In IPython the paragraph is shown instead of a traceback
(``_render_traceback_``); the debug switch below brings tracebacks back.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

# Module-level switch read by _render_traceback_ (the notebook's debug command flips it).
show_tracebacks = False

PYTHON_FIXES: dict[str, str] = {
    "no_url": "Give one (`Chat('http://HOST:8000')`) or set VLLM_BASE_URL.",
    "key_env_unset": "Set {name} in the environment, or pass `api_key=`.",
    "no_conversation": "Existing ones: {existing}.",
    "nothing_to_undo_load": "Nothing was replaced, so there is nothing to bring back.",
    "unknown_model": "Served models: {served}. Pass one as `model=`.",
    "max_tokens_over_limit": "Use at most `max_tokens={limit}` (better: leave room for the prompt).",
    "cannot_ask_key": "Set VLLM_API_KEY, or pass `api_key=`.",
    "stream_consumed": "Call `chat.stream(...)` again for a new answer.",
    "choose_model": "Choose one with `Chat(url, model=NAME)` or `chat.ask(..., model=NAME)`.",
    "choose_embedding_model": "Choose one with `embed(texts, model=NAME)` or set VLLM_EMBEDDING_MODEL.",
    "bad_credentials": "Name a function of an importable module, e.g. `credentials=mymodule.get_token`.",
    "check_path": "Check the path given to `Conversation.load()`.",
    "raise_max_tokens": "Raise max_tokens (`max_tokens=N` on the call, or in `chat.params`) and ask again.",
    "constraint_ignored": "Check that the server enforces structured outputs (vLLM does); `chat.undo()` drops "
                          "the failed turn.",
    "one_constraint": "Pass one of json=, schema=, choice=, regex=, grammar=.",
    "bad_regex": "Fix the pattern (Python `re` syntax, which vLLM's regex support shares).",
    "bad_choice": "Pass e.g. `choice=[\"pos\", \"neg\"]` or `choice=\"pos|neg\"`.",
    "bad_schema": "Pass a pydantic model, a dataclass, a TypedDict or a JSON Schema dict.",
    "bad_inline_schema": "Write fields as `name type` separated by commas, e.g. `\"name str, age int, tags list[str]\"`.",
    "empty_url": "Give one: `Chat('http://HOST:8000')`.",
    "bad_url": "Use the form http://HOST:PORT, e.g. `Chat('http://127.0.0.1:8000')`.",
    "dns": "Check the spelling of the host in the URL, or use its IP address.",
    "unreachable": "Is the vLLM server running and reachable from here? Start it with `vllm serve MODEL`, "
                   "or give the right URL: `Chat('http://HOST:PORT')`.",
    "timeout": "If the server is busy or loading a model, wait and retry, or raise the limit: "
               "`Chat(..., timeout=600)`.",
    "stream_cut": "The partial answer is kept, marked incomplete; `chat.retry()` asks again. If this repeats, "
                  "check the server's log (it may have restarted or run out of memory).",
    "retry": "`chat.retry()` asks again.",
    "cut_not_recorded": "The partial text is in the response's `.turn`, marked incomplete (nothing was recorded in "
                        "the conversation); ask again. If this repeats, check the server's log.",
    "prompt_too_long": "Send a shorter prompt, or use a model with a longer context.",
    "no_completions_endpoint": "Ask it as chat instead (`chat.ask(prompt)`), or use a vLLM server, which serves "
                               "completions for every text-generation model.",
    "ask_again": "Ask again when ready.",
    "embed_input": "Pass one of those, e.g. `embed(df.text)` or `embed(list(texts))`.",
    "no_embeddings_endpoint": "Serve an embedding model (`vllm serve MODEL --runner pooling`) and send "
                              "embeddings to it: `embed(texts, base_url=EMBEDDINGS_URL)`.",
    "auth": "Set the key the server was started with (`vllm serve --api-key`) in VLLM_API_KEY, or pass `api_key=`.",
    "model_not_found": "Pick one of the served models with `model=NAME`; `vllm_magic.models(url)` lists them.",
    "context_too_long": "Start afresh with `chat.reset()`, drop the last turn with `chat.undo()`, or send a "
                        "shorter prompt.",
    "bad_request": "Check `chat.params` and the call's keyword arguments; remove a wrong one with "
                   "`chat.params.pop(NAME)`.",
    "bad_param": "Set it again, e.g. `Chat(..., {name}={example})`, or remove it with `chat.params.pop({name!r})`.",
    "name_value": "Write parameters as `name=value` pairs.",
    "reserved_model": "Choose the model with `Chat(url, model=NAME)` or `chat.ask(..., model=NAME)`.",
    "not_a_conversation": "Load a file written by `Conversation.save()`.",
    "image_input": "Pass a PIL image, a matplotlib Figure, a numpy array (HxW, HxWx3 or HxWx4; uint8, or floats in "
                   "0..1), image file bytes, a file path or an http(s) URL in `images=[...]`.",
    "image_path": "Check the path; a relative one starts in the working directory (`os.getcwd()`).",
    "bad_image": "Pass a PNG, JPEG, WebP, GIF or another format Pillow reads.",
    "no_pillow": "Install it with `pip install pillow` (or `pip install 'vllm_magic[images]'`); URLs need no Pillow.",
    "no_plot": "Draw one first (`plt.plot(...)`), or pass the Figure itself: `images=[fig]`.",
    "no_image_input": "Ask without `images=`, or serve a model that takes images (e.g. `vllm serve "
                      "Qwen/Qwen2.5-VL-3B-Instruct`) and use it: `Chat(URL, model=NAME)`. If an earlier turn holds "
                      "the image, `chat.undo()` or `chat.reset()` drops it.",
    "map_option": "Pass e.g. `{name}={example}`.",
    "map_input": "Pass a list of str, a Series (`ask_each(df.text, \"... {{}}\")`) or a DataFrame "
                 "(`ask_each(df, \"... {{column}}\")`).",
    "map_template": "Name one of them in the template ({names}); write a literal brace as {{{{ or }}}}.",
    "map_missing": "Fill or drop those rows first (e.g. `df.dropna()`), or leave `on_error=\"keep\"` to get their "
                   "error in the table.",
    "map_prompt_too_long": "Shorten those rows' texts or the template, or use a model with a longer context; with "
                           "`on_error=\"keep\"` the other rows go on and these keep their error.",
    "map_resume": "Pass the `partial` table of the stopped job (`MapStopped.partial`), or the table an earlier "
                  "`ask_each` over the same rows returned.",
    "map_to": "Name a file ending in .parquet (a folder of parts) or .jsonl, e.g. `to=\"answers.parquet\"`.",
    "map_to_other": "Write to a new file, or delete {path} to start over.",
    "map_to_and_resume": "Give `to=` alone: the file says which rows are done.",
    "tool_signature": "Annotate every parameter with a type JSON can describe: str, int, float, bool, "
                      "list[str], Literal[...], an Enum, a pydantic model or a dataclass; no *args / **kwargs. "
                      "For a DataFrame or another object, take its name as a str and look it up in the function.",
    "sync_tool": "Make the tool a plain `def` (wrap async code in a synchronous function).",
    "tool_name": "Name it with `@tool(name=\"lookup\")` or `describe(fn, name=\"lookup\")`.",
    "unknown_tool": "Available: {available}. Define the function first, or register one with `@tool`.",
    "duplicate_tool": "Give one of them another name with `@tool(name=...)`.",
    "no_samples": "Ask for several with `chat.ask(prompt, n=3, seed=1)`, then `turn.pick(I)`.",
    "tool_choice": "Pass `tool_choice=` auto, required, none, json or a tool's name, and `max_rounds=` of 1 or more.",
    "context_names": "Pass the names of variables separated by commas, e.g. `\"df,model,x\"`.",
    "context_name": "Define {name} in the namespace described, or leave it out.",
    "history_missing": "Refer to a cell that ran in this IPython session, by the number of its `In [N]` prompt.",
    "no_notebook": "Name the file: `Session(autosave_file=PATH)`, or load one with `Conversation.load(PATH)`.",
    "nothing_saved": "A session saves its conversations there after each change while `autosave` is on.",
    "restore_replaces": "`session.restore(force=True)` replaces them; `session.undo_load(NAME)` then brings one back.",
    "autosave_failed": "Make its folder writable, name another file with `session.autosave_file = PATH`, or turn "
                       "saving off with `session.autosave = False`.",
    "bad_saved_file": "Move it away (it is replaced at the next save), or name another file with "
                      "`session.autosave_file = PATH`.",
}
"""How a Python script is told to fix each hinted error."""


class VLLMError(Exception):
    """Base of every error raised by vllm_magic.

    ``cause`` says what happened (including the server's own words, verbatim), ``fix`` says what to
    do. ``status`` and ``server_message`` carry the HTTP status and the server's message when there
    was a response.

    The fix is data: ``hint`` names it and ``hint_args`` fill it in, so each view says it in its own
    syntax (:data:`PYTHON_FIXES` here; the magics have the notebook's). A literal ``fix`` is for
    advice that is the same everywhere.
    """

    def __init__(
        self,
        cause: str,
        fix: str = "",
        *,
        status: int | None = None,
        server_message: str | None = None,
        hint: str | None = None,
        **hint_args: Any,
    ) -> None:
        self.cause = cause
        self.hint = hint
        self.hint_args = hint_args
        self.fix = fix or self.fix_in(PYTHON_FIXES)
        self.status = status
        self.server_message = server_message
        super().__init__(self.message)

    def fix_in(self, fixes: dict[str, str]) -> str:
        """The fix in a view's words: its template for :attr:`hint`, filled with :attr:`hint_args`."""
        template = fixes.get(self.hint or "", "")
        return template.format(**self.hint_args) if template else ""

    def speak(self, fixes: dict[str, str]) -> VLLMError:
        """Say the fix in a view's words (kept as it is when the view has none for this hint)."""
        self.fix = self.fix_in(fixes) or self.fix
        self.args = (self.message,)
        return self

    @property
    def message(self) -> str:
        return f"{self.cause} {self.fix}".strip()

    def __getattr__(self, name: str) -> Any:
        # IPython looks this up with hasattr(): present unless tracebacks were asked for.
        if name == "_render_traceback_" and not show_tracebacks:
            return self._paragraph
        raise AttributeError(name)

    def _paragraph(self) -> list[str]:
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self.message}"]


class ConfigError(VLLMError):
    """Bad local settings: no URL, no model, a malformed value."""


class ParamError(ConfigError):
    """A sampling parameter failed local validation (nothing was sent)."""


class ConnectError(VLLMError):
    """The server could not be reached at all."""


class TimeoutError(VLLMError):  # noqa: A001 - the package's own, distinct from the builtin
    """The server took longer than the configured timeout."""


class AuthError(VLLMError):
    """401/403: missing or wrong API key."""


class NotFoundError(VLLMError):
    """404: unknown model or an endpoint the server does not have."""


class ContextLengthError(VLLMError):
    """The conversation does not fit the model's context window."""


class BadRequestError(VLLMError):
    """Any other 4xx the server refused."""


class RateLimitError(VLLMError):
    """429 after the bounded retries."""


class ServerError(VLLMError):
    """5xx after the bounded retries."""


class StructuredError(VLLMError):
    """A structured answer did not fit its constraint (or was cut); ``raw`` is the text as sent."""

    def __init__(self, cause: str, fix: str = "", *, raw: str = "", **kwargs: Any) -> None:
        self.raw = raw
        super().__init__(cause, fix, **kwargs)


class StreamConsumed(VLLMError):
    """A Response was iterated a second time (it streams once)."""


class UnexpectedResponse(VLLMError):
    """The server answered 200 with a body of an unexpected shape."""


class StreamError(VLLMError):
    """The stream broke after it started: cut connection, malformed event, error event."""


class Interrupted(VLLMError):
    """The user stopped a stream (Ctrl-C, kernel interrupt, Stop button); partial answer kept."""


def server_message(response: httpx.Response) -> str:
    """The server's own error text: OpenAI shape, FastAPI's ``detail``, or the raw body."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip()
        if "<html" in text.lower():
            text = re.sub(r"<[^>]+>", " ", text)
        return " ".join(text.split())[:300] or response.reason_phrase
    return message_from_body(body) or response.reason_phrase


def message_from_body(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error", body.get("detail"))
        if isinstance(error, dict):
            return innermost_message(str(error.get("message", error)))
        if error is not None:
            return innermost_message(str(error))
        if "message" in body:
            return innermost_message(str(body["message"]))
    return ""


_NESTED_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"')


def innermost_message(said: str) -> str:
    """The server's own words inside a proxy's wrapper: LiteLLM quotes vLLM's error as JSON inside
    several lines of its own; the innermost ``"message"`` is what vLLM said."""
    found = _NESTED_MESSAGE.findall(said)
    if not found:
        return said
    try:
        return json.loads(f'"{found[-1]}"')
    except json.JSONDecodeError:
        return said


def from_response(response: httpx.Response, *, model: str | None, where: str) -> VLLMError:
    """Map an HTTP error response to the right error with a hint; the server's words verbatim."""
    status = response.status_code
    said = server_message(response)
    quoted = f"The server said: {said}"
    kw = {"status": status, "server_message": said}
    if status in (401, 403):
        return AuthError(
            f"{where} refused the API key (HTTP {status}). {quoted}.",
            hint="auth", **kw,
        )
    lowered = said.lower()
    if status in (400, 404) and ("invalid model name" in lowered  # LiteLLM says it with a 400
                                 or ("model" in lowered and "does not exist" in lowered)):
        return NotFoundError(f"{quoted}", hint="model_not_found", **kw)
    if status == 404:
        return NotFoundError(
            f"{where} has no such endpoint (HTTP 404, {said}).",
            "Check that the URL points at a vLLM or OpenAI-compatible server and that this server "
            "runs a model of the right kind (a chat model for chat, a pooling model for embeddings).",
            **kw,
        )
    if status == 400 and "is not a multimodal model" in said:
        return BadRequestError(
            f"{model or 'The model'} takes no image input, and the request holds an image. {quoted}.",
            hint="no_image_input", **kw,
        )
    if status == 400 and ("maximum context length" in said or "input_tokens" in said):
        return ContextLengthError(
            f"The conversation is too long for {model or 'the model'}. {quoted}",
            hint="context_too_long", **kw,
        )
    if status == 429:
        return RateLimitError(
            f"{where} is rate limiting requests (HTTP 429) and still was after retrying. {quoted}.",
            "Wait a moment and try again, or lower the request rate.",
            **kw,
        )
    if status >= 500:
        return ServerError(
            f"{where} failed with HTTP {status} (retried where safe). {quoted}.",
            "Check the server's log; if it is starting up or overloaded, try again shortly.",
            **kw,
        )
    return BadRequestError(
        f"{where} rejected the request (HTTP {status}). {quoted}",
        hint="bad_request", **kw,
    )
