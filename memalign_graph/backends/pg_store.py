"""A judge in LangGraph's ``PostgresStore``, opened from a location string (``postgresql://…?judge=NAME&store=langgraph``).

The same layout as any LangGraph store (:class:`~memalign_graph.backends.store.StoreBackend`), with
the store opened from the URL, set up once under an advisory lock, and the server's writer lock.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from memalign_graph.backends.names import (
    STORE_LOCATION,
    STORE_PARAM,
    redact,
    split_url,
)
from memalign_graph.backends.store import StoreBackend
from memalign_graph.errors import MemoryFormatError, MissingDependencyError

_SETUP_LOCK = 0x6D656D616C696773
"""Key of the advisory lock that serialises ``PostgresStore.setup()`` (concurrent DDL can fail in PostgreSQL)."""


class PostgresStoreBackend(StoreBackend):
    """A judge in LangGraph's ``PostgresStore``, opened from its location string.

    ``postgresql://user:password@host:port/db?judge=NAME&store=langgraph`` names judge ``NAME``
    (default ``default``) in the ``PostgresStore`` of that database: the store a LangGraph
    deployment keeps long-term memory in, where a graph at ``MEMALIGN_STORE=langgraph`` keeps the
    judge. Every other URL parameter goes to libpq. The store's tables are set up if missing
    (``PostgresStore.setup()``, under an advisory lock); writers take the same PostgreSQL advisory
    lock per judge as every :class:`StoreBackend` on a ``PostgresStore`` (:meth:`StoreBackend.lock`),
    so a command run from a shell and the server never write at once. The store is opened
    without a vector index: items written here are not embedded for ``store.search(query=...)``.

    Args:
        url: the location string above.
        max_connections: most pooled connections this process opens.

    Raises:
        MissingDependencyError: (an ``ImportError``) if the ``postgres`` extra is not installed.
        ValueError: for a ``store`` parameter other than ``langgraph``, or an invalid judge name
            (:class:`~memalign_graph.backends.names.JudgeNameError`).
        MemoryFormatError: if PostgreSQL cannot be reached (the password-free URL and the server's reason).
    """

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        try:
            import psycopg
            from langgraph.store.postgres import PostgresStore
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MissingDependencyError(
                "a judge in LangGraph's PostgresStore needs the 'postgres' extra: "
                "pip install 'memalign-graph[postgres]'"
            ) from exc
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        kinds = [value for key, value in query if key == STORE_PARAM]
        if kinds != [STORE_LOCATION]:
            raise ValueError(f"{redact(url)}: store={','.join(kinds)!s} is not known; use store={STORE_LOCATION}")
        conninfo, judge = split_url(
            urlunsplit(parts._replace(query=urlencode([(key, value) for key, value in query if key != STORE_PARAM])))
        )
        location = redact(url)
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=10, row_factory=dict_row) as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
                PostgresStore(conn).setup()
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise MemoryFormatError(f"{location}: cannot connect to PostgreSQL ({reason})") from None
        pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
            name=f"memalign-store:{judge}",
        )
        pool.open(wait=True, timeout=10)
        super().__init__(PostgresStore(pool), judge)
        self.url = url
        self.location = location
        self._pool = pool

    def close(self) -> None:
        """Close this process's connections to the store."""
        self._pool.close()
