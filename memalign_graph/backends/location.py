"""Memory locations: the backend a directory, a ``postgresql://`` URL, a LangGraph store or a backend object names."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore

from memalign_graph.backends.base import MemoryBackend
from memalign_graph.backends.file import FileBackend
from memalign_graph.backends.names import DEFAULT_JUDGE, is_postgres_url, is_store_location, is_store_url
from memalign_graph.backends.pg_store import PostgresStoreBackend
from memalign_graph.backends.postgres import PostgresBackend
from memalign_graph.backends.store import StoreBackend


def backend_for(location: str | Path | MemoryBackend | BaseStore) -> MemoryBackend:
    """The backend a memory location names.

    Args:
        location: a :class:`MemoryBackend` (such as
            :class:`~memalign_graph.backends.store.StoreBackend` ``(store, judge)``, a judge in a
            LangGraph store); a LangGraph ``BaseStore`` (its judge ``default``); a
            ``postgresql://…?judge=NAME`` connection string
            (:class:`~memalign_graph.backends.postgres.PostgresBackend`), with ``&store=langgraph``
            for a judge in LangGraph's ``PostgresStore``
            (:class:`~memalign_graph.backends.pg_store.PostgresStoreBackend`); or a directory
            (:class:`~memalign_graph.backends.file.FileBackend`, the default).

    Raises:
        ValueError: for ``"langgraph"`` or ``"langgraph:NAME"``, which name a judge in the LangGraph
            store a graph runs with: only a graph can resolve them (outside one, pass the store,
            ``StoreBackend(store, NAME)``, or for a ``PostgresStore`` its location string).
    """
    if isinstance(location, MemoryBackend):
        return location
    if isinstance(location, BaseStore):
        return StoreBackend(location, DEFAULT_JUDGE)
    if is_store_location(location):
        raise ValueError(
            f"{location!r} names a judge in the LangGraph store of a running graph (runtime.store); outside a "
            "graph pass the store itself, StoreBackend(store, judge) from memalign_graph.backends.store, or for "
            "LangGraph's PostgresStore its location 'postgresql://…?judge=NAME&store=langgraph'"
        )
    if is_store_url(location):
        return PostgresStoreBackend(str(location))
    if is_postgres_url(location):
        return PostgresBackend(str(location))
    return FileBackend(location)


def location_key(location: str | Path | MemoryBackend | BaseStore) -> Any:
    """A hashable key that is equal for two spellings of one location (a relative and an absolute path)."""
    if isinstance(location, MemoryBackend):
        return getattr(location, "cache_key", ("backend", id(location)))
    if isinstance(location, BaseStore):
        return StoreBackend(location, DEFAULT_JUDGE).cache_key
    if is_postgres_url(location):
        return str(location)
    text = str(location)
    # An absolute path needs no working directory (asking for it is a blocking call to an event loop).
    return _resolved(text, "" if os.path.isabs(text) else os.getcwd())


@functools.lru_cache(maxsize=256)
def _resolved(location: str, cwd: str) -> str:
    return str((Path(cwd) / Path(location).expanduser()).resolve())


__all__ = ["backend_for", "location_key"]
