"""What stands between users and vLLM in production, run for real on loopback: vLLM's router
(``vllm-router``) in front of replicas, and LiteLLM's proxy in front of the chat and embedding servers.

Each lives in its own venv, installed from its own lock file (``router-lock.txt``,
``litellm-lock.txt``) and cached like vLLM's, keyed by the lock's hash (see ``vllm_env``). Stdlib
only, like ``vllm_env``, whose process handling (:class:`vllm_env.Service`) both use.

CLI (``ensure`` builds both venvs; the others run in the foreground until Ctrl-C)::

    python scripts/reach_env.py ensure
    python scripts/reach_env.py router --worker-urls URL [URL ...] [--port P]
    python scripts/reach_env.py litellm --chat-url URL --embed-url URL --key K [--port P]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

import vllm_env
from vllm_env import SCRIPTS_DIR, Service

ROUTER_LOCK = SCRIPTS_DIR / "router-lock.txt"
LITELLM_LOCK = SCRIPTS_DIR / "litellm-lock.txt"


def ensure_router() -> Path:
    return vllm_env.ensure_venv("router-env", ROUTER_LOCK)


def ensure_litellm() -> Path:
    return vllm_env.ensure_venv("litellm-env", LITELLM_LOCK)


class Router(Service):
    """``vllm-router`` over ``workers`` with the round-robin policy; it passes the client's
    ``Authorization`` through to the workers, so it has no key of its own."""

    def __init__(self, workers: list[str], *, python: Path, port: int | None = None,
                 log_dir: Path | None = None) -> None:
        super().__init__("vllm-router", port=port, log_dir=log_dir)
        self.workers = workers
        self._bin = python.parent / "vllm-router"
        # its own Prometheus port: a second router on the default one dies ("Address already in use")
        self.prometheus_port = vllm_env.free_port()

    def command(self) -> list[str]:
        return [str(self._bin), "--host", "127.0.0.1", "--port", str(self.port), "--policy", "round_robin",
                "--prometheus-port", str(self.prometheus_port), "--worker-urls", *self.workers]


class LiteLLMProxy(Service):
    """LiteLLM's proxy with a master key (no database), serving ``tiny-chat`` and the embedding
    model from the vLLM servers at ``chat_url`` and ``embed_url`` (both behind ``backend_key``)."""

    ready_path = "/health/liveliness"  # /health itself calls every deployment (~2 s)

    def __init__(self, *, chat_url: str, embed_url: str, backend_key: str, python: Path,
                 port: int | None = None, log_dir: Path | None = None) -> None:
        super().__init__("litellm", port=port, log_dir=log_dir)
        self.api_key = "sk-" + secrets.token_hex(16)
        self._python = python
        self.config_path = self.log_path.with_suffix(".config.yaml")
        self.config = {
            "model_list": [
                {"model_name": vllm_env.SERVED_NAMES["chat"],
                 "litellm_params": {"model": "hosted_vllm/" + vllm_env.SERVED_NAMES["chat"],
                                    "api_base": chat_url + "/v1", "api_key": backend_key}},
                {"model_name": vllm_env.SERVED_NAMES["embed"],
                 "litellm_params": {"model": "hosted_vllm/" + vllm_env.SERVED_NAMES["embed"],
                                    "api_base": embed_url + "/v1", "api_key": backend_key},
                 "model_info": {"mode": "embedding"}},
            ],
            "general_settings": {"master_key": self.api_key},
        }

    def command(self) -> list[str]:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))  # JSON is YAML
        return [str(self._python.parent / "litellm"), "--config", str(self.config_path),
                "--host", "127.0.0.1", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        # without it the proxy fetches a model cost map from the internet at start
        return {**super().environment(), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure", help="build the router's and the proxy's venvs; print their pythons")
    router = sub.add_parser("router", help="vllm-router over running vLLM servers")
    router.add_argument("--worker-urls", nargs="+", required=True)
    litellm = sub.add_parser("litellm", help="LiteLLM's proxy in front of running vLLM servers")
    litellm.add_argument("--chat-url", required=True)
    litellm.add_argument("--embed-url", required=True)
    litellm.add_argument("--key", default=os.environ.get("VLLM_API_KEY", ""), help="the vLLM servers' key")
    for command in (router, litellm):
        command.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    if args.command == "ensure":
        print(f"router  {ensure_router()}\nlitellm {ensure_litellm()}")
        return 0
    if args.command == "router":
        return vllm_env.foreground(Router(args.worker_urls, python=ensure_router(), port=args.port))
    proxy = LiteLLMProxy(chat_url=args.chat_url, embed_url=args.embed_url, backend_key=args.key,
                         python=ensure_litellm(), port=args.port)
    print(f"master key: {proxy.api_key}", file=sys.stderr)
    return vllm_env.foreground(proxy)


if __name__ == "__main__":
    sys.exit(main())
