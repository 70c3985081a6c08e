"""Memory locations: the backend a directory, a ``postgresql://`` URL or a backend object names."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from memalign_graph.backends.base import MemoryBackend
from memalign_graph.backends.file import FileBackend
from memalign_graph.backends.postgres import PostgresBackend, is_postgres_url
from memalign_graph.backends.store import is_store_location


def backend_for(location: str | Path | MemoryBackend) -> MemoryBackend:
    """The backend a memory location names.

    Args:
        location: a :class:`MemoryBackend` (such as
            :class:`~memalign_graph.backends.store.StoreBackend` ``(store, judge)``, a judge in a
            LangGraph store); a ``postgresql://…?judge=NAME`` connection string
            (:class:`~memalign_graph.backends.postgres.PostgresBackend`); or a directory
            (:class:`~memalign_graph.backends.file.FileBackend`, the default).

    Raises:
        ValueError: for ``"langgraph"`` or ``"langgraph:NAME"``, which name a judge in the LangGraph
            store a graph runs with: only a graph can resolve them (outside one, pass
            ``StoreBackend(store, NAME)``).
    """
    if isinstance(location, MemoryBackend):
        return location
    if is_store_location(location):
        raise ValueError(
            f"{location!r} names a judge in the LangGraph store of a running graph (runtime.store); outside a "
            "graph pass StoreBackend(store, judge) from memalign_graph.backends.store instead"
        )
    if is_postgres_url(location):
        return PostgresBackend(str(location))
    return FileBackend(location)


def location_key(location: str | Path | MemoryBackend) -> Any:
    """A hashable key that is equal for two spellings of one location (a relative and an absolute path)."""
    if isinstance(location, MemoryBackend):
        return getattr(location, "cache_key", ("backend", id(location)))
    if is_postgres_url(location):
        return str(location)
    text = str(location)
    # An absolute path needs no working directory (asking for it is a blocking call to an event loop).
    return _resolved(text, "" if os.path.isabs(text) else os.getcwd())


@functools.lru_cache(maxsize=256)
def _resolved(location: str, cwd: str) -> str:
    return str((Path(cwd) / Path(location).expanduser()).resolve())


__all__ = ["backend_for", "location_key"]
