"""Session fixtures that run real ``vllm serve`` processes (CPU build, tiny local models).

``vllm_chat`` serves the model trained on ``scripts/tiny_corpus.py`` (real answers to the corpus
prompts, ending with "stop"); ``vllm_random`` the random-weight model (gibberish that only
``max_tokens`` or a stop string ends) for robustness tests; ``vllm_vision`` a random-weight
model with image input; ``vllm_reasoning`` the trained model behind vLLM's qwen3 reasoning
parser; ``vllm_embed`` all-MiniLM-L6-v2. ``vllm_router`` is vLLM's router over ``vllm_chat`` and
``vllm_chat_replica``, ``litellm_proxy`` LiteLLM's proxy in front of ``vllm_chat`` and ``vllm_embed``.
``tiny_corpus`` is importable in tests, as ``vllm_env`` is.

vLLM needs 30-90 s to boot on this 2-core machine, so the servers are launched as soon as
collection ends, in a background thread, and only those whose fixtures a collected test
requests; the fast tests run meanwhile and the fixtures merely wait for readiness. A failure to
build the server environment FAILS the tests that need it (it is never a silent skip).
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the same module, as mypy sees it with scripts/ on its path
    from vllm_env import VLLMServer

ROOT = Path(__file__).resolve().parents[1]
INTEGRATION = ROOT / "tests" / "integration"
LOG_DIR = ROOT / "test-artifacts" / "vllm"
FIXTURE_KINDS = {
    "vllm_chat": "chat",
    "vllm_chat_replica": "chat",  # a second replica of tiny-chat, behind the router with vllm_chat
    "vllm_random": "random",
    "vllm_vision": "vision",
    "vllm_reasoning": "reasoning",
    "vllm_embed": "embed",
}
# One random key for every server: a router passes the client's key through to its replicas, and a
# proxy's deployments are all reached with one key.
SERVER_KEY = secrets.token_hex(16)
# The first test that needs a server also pays for a cold environment build and the boot.
FIRST_USE_TIMEOUT = 900


def _load_script(name: str) -> ModuleType:
    """Import scripts/NAME.py by path: scripts/ is not a package and must stay stdlib-only."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


vllm_env = _load_script("vllm_env")
reach_env = _load_script("reach_env")  # vllm-router and LiteLLM's proxy, in venvs of their own
tiny_corpus = _load_script("tiny_corpus")  # the trained model's prompts and answers


class _Launcher:
    """Builds the environment and starts servers off the main thread, once per session."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._servers: dict[str, VLLMServer] = {}
        self._error: BaseException | None = None

    def launch(self, fixtures: Iterable[str]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._start, args=(list(fixtures),), name="vllm-launcher", daemon=True
            )
            self._thread.start()

    def _start(self, fixtures: list[str]) -> None:
        try:
            for fixture in fixtures:  # start() does not block, so the servers boot in parallel
                self._servers[fixture] = self._server(fixture)
        except BaseException as exc:  # reported by get(), on the main thread
            self._error = exc

    @staticmethod
    def _server(fixture: str) -> VLLMServer:
        return vllm_env.start_server(FIXTURE_KINDS[fixture], api_key=SERVER_KEY, log_dir=LOG_DIR)

    def get(self, fixture: str) -> VLLMServer:
        """The ready server of ``fixture``; fails the requesting test if it cannot be had."""
        self.launch([fixture])  # a no-op unless collection requested no server up front
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            pytest.fail(
                f"could not build or start the vLLM server environment: {self._error}",
                pytrace=False,
            )
        if fixture not in self._servers:  # requested late, e.g. via request.getfixturevalue
            self._servers[fixture] = self._server(fixture)
        server = self._servers[fixture]
        try:
            return server.wait_ready()
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc), pytrace=False)

    def stop_all(self) -> None:
        if self._thread is not None:
            self._thread.join()
        for server in self._servers.values():
            server.stop()


_launcher = _Launcher()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration (before ``-m`` deselects by marker), and run the
    fast tier first: it needs no server, so it runs while vLLM boots."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)
    tiers = {"unit": 0, "integration": 1, "e2e": 2}
    items.sort(key=lambda item: tiers.get(item.path.relative_to(ROOT / "tests").parts[0], 0))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Launch the servers the selected tests need, and give the first test per server the
    time a cold build plus boot can take (the usual per-test timeout is far shorter)."""
    if session.config.option.collectonly:
        return
    first_users: dict[str, pytest.Item] = {}
    for item in session.items:
        for fixture in FIXTURE_KINDS:
            if fixture in getattr(item, "fixturenames", ()):
                first_users.setdefault(fixture, item)
    if not first_users:
        return
    _launcher.launch(list(first_users))
    if session.config.pluginmanager.hasplugin("timeout"):
        for item in first_users.values():
            item.add_marker(pytest.mark.timeout(FIRST_USE_TIMEOUT), append=False)


def pytest_sessionfinish() -> None:
    _launcher.stop_all()


@pytest.fixture(scope="session")
def vllm_chat() -> VLLMServer:
    """``tiny-chat`` (tiny Llama trained on scripts/tiny_corpus.py, max_model_len 512, hermes tool
    parser) behind a random API key. Greedy answers to corpus prompts are the corpus answers."""
    return _launcher.get("vllm_chat")


@pytest.fixture(scope="session")
def vllm_random() -> VLLMServer:
    """``tiny-random`` (random tiny Llama, max_model_len 512) behind a random API key: greedy output
    is printable ASCII that never hits EOS, so ``finish_reason`` is "length" unless a stop string
    matches; sampling can give U+FFFD and control characters."""
    return _launcher.get("vllm_random")


@pytest.fixture(scope="session")
def vllm_vision() -> VLLMServer:
    """``tiny-vision`` (a random tiny Idefics3 with image input, max_model_len 512) behind a random API
    key: each image costs 8 prompt tokens; the answers are gibberish."""
    return _launcher.get("vllm_vision")


@pytest.fixture(scope="session")
def vllm_reasoning() -> VLLMServer:
    """``tiny-chat-reasoning``: the trained model with ``--reasoning-parser qwen3`` (and the tool
    parser), so its ``<think>`` answers arrive as ``reasoning``. Answers without ``<think>`` arrive
    as reasoning too there, which is why ``vllm_chat`` runs without that parser."""
    return _launcher.get("vllm_reasoning")


@pytest.fixture(scope="session")
def vllm_embed() -> VLLMServer:
    """``all-MiniLM-L6-v2`` (384-dim, normalised) behind a random API key."""
    return _launcher.get("vllm_embed")


@pytest.fixture(scope="session")
def vllm_chat_replica() -> VLLMServer:
    """A second ``tiny-chat`` server, like ``vllm_chat`` but with its own key: a router's second replica."""
    return _launcher.get("vllm_chat_replica")


@pytest.fixture(scope="session")
def vllm_router(vllm_chat: VLLMServer, vllm_chat_replica: VLLMServer) -> Iterator[reach_env.Router]:
    """vLLM's router (``vllm-router``, round robin) over ``vllm_chat`` and ``vllm_chat_replica``; it
    passes the client's key (``SERVER_KEY``) through to them."""
    with reach_env.Router([vllm_chat.base_url, vllm_chat_replica.base_url], python=reach_env.ensure_router(),
                          log_dir=LOG_DIR).start() as router:
        yield router.wait_ready(60)


@pytest.fixture(scope="session")
def litellm_proxy(vllm_chat: VLLMServer, vllm_embed: VLLMServer) -> Iterator[reach_env.LiteLLMProxy]:
    """LiteLLM's proxy (master key, no database) in front of ``vllm_chat`` and ``vllm_embed``."""
    with reach_env.LiteLLMProxy(chat_url=vllm_chat.base_url, embed_url=vllm_embed.base_url,
                                backend_key=SERVER_KEY, python=reach_env.ensure_litellm(),
                                log_dir=LOG_DIR).start() as proxy:
        yield proxy.wait_ready(120)
