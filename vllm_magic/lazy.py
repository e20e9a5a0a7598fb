"""Telling a library's objects apart without importing the library (pandas, numpy, PIL, matplotlib are
imported on first use only: ``import vllm_magic`` stays fast)."""

from __future__ import annotations

import sys
from typing import Any


def instance_of(obj: Any, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)``; a library that was never imported has no instances."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(obj, cls)
