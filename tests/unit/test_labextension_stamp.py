"""The committed build of the "vLLM chat" sidebar matches its TypeScript sources.

Wheels and sdists ship ``vllm_magic/labextension/`` as committed (no node on a user's machine), so a
source change without a rebuild would ship a stale sidebar. The build's file names carry content
hashes that depend on the build folder, so instead of comparing bytes, ``build-stamp.json`` records
a hash of the build's inputs, written by ``scripts/build_labextension.sh``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import vllm_magic

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = REPO_ROOT / "labextension"
BUILT = REPO_ROOT / "vllm_magic" / "labextension"
INPUTS = ("src", "style", "package.json", "package-lock.json", "tsconfig.json")
REBUILD = "run `bash scripts/build_labextension.sh` (needs node and npm) and commit vllm_magic/labextension/"


def inputs_sha256() -> str:
    """The script's hash: sha256 of the ``sha256sum`` listing of the inputs, sorted by path."""
    paths = sorted(
        path.relative_to(SOURCES).as_posix()
        for name in INPUTS
        for path in ([SOURCES / name] if (SOURCES / name).is_file() else (SOURCES / name).rglob("*"))
        if path.is_file()
    )
    listing = "".join(f"{hashlib.sha256((SOURCES / path).read_bytes()).hexdigest()}  {path}\n" for path in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def test_built_sidebar_matches_its_sources() -> None:
    stamp = BUILT / "build-stamp.json"
    assert stamp.is_file(), f"{stamp.relative_to(REPO_ROOT)} is missing: {REBUILD}"
    recorded = json.loads(stamp.read_text())["inputs_sha256"]
    assert recorded == inputs_sha256(), f"labextension/ changed since the sidebar was built: {REBUILD}"


def test_built_sidebar_is_what_jupyterlab_loads() -> None:
    built = json.loads((BUILT / "package.json").read_text())
    sources = json.loads((SOURCES / "package.json").read_text())
    assert built["name"] == sources["name"]
    assert (BUILT / built["jupyterlab"]["_build"]["load"]).is_file(), REBUILD
    assert vllm_magic._jupyter_labextension_paths() == [{"src": "labextension", "dest": sources["name"]}]
