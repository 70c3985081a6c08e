"""Memory backends: where a judge's principles and episodes are persisted.

The names below load on first use, so importing a small module of this package (e.g.
:mod:`memalign_graph.backends.names`, which :mod:`memalign_graph.context` needs) loads no backend.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "FORMAT_VERSION": "base",
    "LoadedMemory": "base",
    "MemoryBackend": "base",
    "PrinciplesCheckpoint": "base",
    "FileBackend": "file",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["FORMAT_VERSION", "FileBackend", "LoadedMemory", "MemoryBackend", "PrinciplesCheckpoint"]
