"""PostgreSQL backend: a judge's memory in PostgreSQL with pgvector, shared by many processes.

Select it with a connection string wherever a memory location is asked for
(``memalign judge postgresql://user:pw@host:5432/db?judge=NAME cases.jsonl``,
``Context(store="postgresql://…")``, ``MEMALIGN_STORE``). ``judge`` names the
judge inside the database (default ``default``), so one database holds many
judges; every other URL parameter goes to libpq unchanged.

Schema (created on first ``create``; ``memalign_`` tables, one row set per judge)::

    memalign_judge          name, format_version, spec, embeddings, version  (the commit point)
    memalign_principles     (judge, version) -> principles checkpoint with the ledger (every version kept)
    memalign_episode        (judge, id) -> episode JSON, digest, embedding vector (pgvector)
    memalign_episode_log    (judge, version, id) -> episodes added or replaced by that version (rollback)
    memalign_principle_vector  (judge, digest) -> unit vector of a current principle's text (a cache, so
                            no process embeds every principle again; replaced after each commit)
    memalign_calibration    judge -> version, calibration head of that version (a cache, replaced after
                            each commit; see memalign_graph.calibration)
    memalign_calibration_vector  (judge, field, episode id) -> text digest, field vector of the head's
                            training sample (a cache, replaced with the head)

Review threads of ``memalign review`` live in LangGraph's own checkpoint
tables (:class:`langgraph.checkpoint.postgres.PostgresSaver`) in the same
database.

Concurrency (what makes many writers safe):

* **Writers are serialised by a PostgreSQL advisory lock** per judge
  (``pg_advisory_lock``), held by :meth:`PostgresBackend.lock` for a whole
  read-modify-commit: an alignment waits for the one before it, reloads
  what it committed, and merges its own principles into those (so two
  writers cannot add the same principle twice). The lock lives on its own
  connection and is released by the server if the process dies.
* **A commit is one transaction**: it locks the judge row (``SELECT … FOR
  UPDATE``), refuses a change prepared from an older version (lost update),
  writes the episode changes, the history, the checkpoint, and bumps the
  version. Readers see the old version or the new one, never a mix.
* **Readers never block**: :meth:`load` reads the version, checkpoint and
  episodes in one ``REPEATABLE READ`` snapshot.

Retrieval runs in-process on a FAISS copy of the episodes built from the stored
vectors (no re-embedding), refreshed when the version changes; pgvector holds the
vectors so any process (or SQL) can use them. Nothing read from the database is
unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memalign_graph.backends.base import (
    FORMAT_VERSION,
    LoadedMemory,
    MemoryBackend,
    PrinciplesCheckpoint,
    initial_checkpoint,
    purge_versions,
    refuse_moved,
)
from memalign_graph.backends.faiss_episodes import faiss_episodes, faiss_from_vectors
from memalign_graph.backends.names import (  # noqa: F401 - re-exported: where they lived before
    DEFAULT_JUDGE,
    MAX_JUDGE_CHARS,
    SCHEMES,
    JudgeNameError,
    check_judge_name,
    is_postgres_url,
    redact,
    split_url,
)
from memalign_graph.errors import MISSING_MEMORY_HINT, MemoryFormatError, MissingDependencyError

_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS memalign_judge (
    name           text PRIMARY KEY,
    format_version integer NOT NULL,
    spec           json NOT NULL,
    embeddings     json NOT NULL,
    version        integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS memalign_principles (
    judge      text NOT NULL REFERENCES memalign_judge(name) ON DELETE CASCADE,
    version    integer NOT NULL,
    checkpoint json NOT NULL,
    PRIMARY KEY (judge, version)
);
CREATE TABLE IF NOT EXISTS memalign_episode (
    judge     text NOT NULL REFERENCES memalign_judge(name) ON DELETE CASCADE,
    id        text NOT NULL,
    seq       bigserial,
    digest    text NOT NULL,
    episode   json NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (judge, id)
);
CREATE INDEX IF NOT EXISTS memalign_episode_order ON memalign_episode (judge, seq);
CREATE TABLE IF NOT EXISTS memalign_episode_log (
    judge       text NOT NULL REFERENCES memalign_judge(name) ON DELETE CASCADE,
    version     integer NOT NULL,
    id          text NOT NULL,
    record_hash text NOT NULL,
    episode     json NOT NULL,
    PRIMARY KEY (judge, version, id)
);
CREATE TABLE IF NOT EXISTS memalign_principle_vector (
    judge     text NOT NULL REFERENCES memalign_judge(name) ON DELETE CASCADE,
    digest    text NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (judge, digest)
);
CREATE TABLE IF NOT EXISTS memalign_calibration (
    judge   text PRIMARY KEY REFERENCES memalign_judge(name) ON DELETE CASCADE,
    version integer NOT NULL,
    head    json
);
CREATE TABLE IF NOT EXISTS memalign_calibration_vector (
    judge      text NOT NULL REFERENCES memalign_judge(name) ON DELETE CASCADE,
    field      text NOT NULL,
    episode_id text NOT NULL,
    digest     text NOT NULL,
    embedding  vector NOT NULL,
    PRIMARY KEY (judge, field, episode_id)
);
"""

# Any constant 64-bit number: the key of the transaction lock that serialises the DDL above
# (concurrent CREATE TABLE IF NOT EXISTS can fail with a unique violation in PostgreSQL).
_SCHEMA_LOCK = 0x6D656D616C69676E


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class PostgresBackend(MemoryBackend):
    """Memory in PostgreSQL + pgvector (see the module docstring for schema and concurrency).

    Args:
        url: ``postgresql://user:password@host:port/dbname?judge=NAME`` (``judge`` defaults to
            ``default``; other parameters go to libpq).
        max_connections: most pooled connections this process opens (the writer lock uses one
            more while held).

    Raises:
        MissingDependencyError: (an ``ImportError``) if the ``postgres`` extra (psycopg, pgvector) is not installed.
        ValueError: if the URL names an empty judge.
    """

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        try:
            import psycopg
            import psycopg_pool  # noqa: F401
            from pgvector.psycopg import register_vector  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MissingDependencyError(
                "the PostgreSQL backend needs the 'postgres' extra: pip install 'memalign-graph[postgres]'"
            ) from exc
        self.write_errors = (psycopg.Error,)  # a failed transaction (rolled back) or a lost connection
        self.url = url
        self.conninfo, self.judge = split_url(url)
        self.location = redact(url)
        self._max_connections = max_connections
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._schema_checked = False
        self._lock_key = int.from_bytes(
            hashlib.blake2b(self.judge.encode(), digest_size=8).digest(), "big", signed=True
        )

    # -- connections ---------------------------------------------------------------------------

    def _connection(self) -> contextlib.AbstractContextManager[Any]:
        """A pooled connection (autocommit; use ``conn.transaction()`` for atomic work)."""
        from psycopg_pool import ConnectionPool

        with self._pool_lock:
            if self._pool is None:
                self._probe()
                self._pool = ConnectionPool(
                    self.conninfo,
                    min_size=1,
                    max_size=self._max_connections,
                    kwargs={"autocommit": True},
                    check=ConnectionPool.check_connection,
                    open=False,
                    name=f"memalign:{self.judge}",
                )
                try:
                    self._pool.open(wait=True, timeout=10)
                except Exception as exc:
                    self._pool = None
                    raise MemoryFormatError(f"{self.location}: cannot connect to PostgreSQL ({exc})") from None
        return self._pool.connection()

    def _probe(self) -> None:
        """Connect once, so an unreachable server or a bad password fails now with the server's reason.

        Raises:
            MemoryFormatError: naming the (redacted) URL and the reason.
        """
        import psycopg

        try:
            psycopg.connect(self.conninfo, connect_timeout=10).close()
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise MemoryFormatError(f"{self.location}: cannot connect to PostgreSQL ({reason})") from None

    def close(self) -> None:
        """Close this process's connections (a later call reopens them)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _judge_row(self, conn: Any, *, for_update: bool = False) -> tuple[Any, ...] | None:
        import psycopg

        sql = "SELECT format_version, spec, embeddings, version FROM memalign_judge WHERE name = %s"
        try:
            return conn.execute(sql + (" FOR UPDATE" if for_update else ""), (self.judge,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None

    def _require(self, row: tuple[Any, ...] | None) -> tuple[Any, ...]:
        if row is None:
            raise MemoryFormatError(
                f"{self.location}: no judge {self.judge!r} in this database ({MISSING_MEMORY_HINT})"
            )
        if not isinstance(row[0], int) or row[0] > FORMAT_VERSION:
            raise MemoryFormatError(
                f"{self.location}: judge {self.judge!r} was written by a newer memalign-graph (format {row[0]}, "
                f"this one reads {FORMAT_VERSION}); upgrade memalign-graph"
            )
        return row

    # -- MemoryBackend -----------------------------------------------------------------------------

    def exists(self) -> bool:  # noqa: D102
        with self._connection() as conn:
            return self._judge_row(conn) is not None

    def create(self, spec: dict[str, Any], embeddings: Embeddings, embeddings_info: dict[str, Any]) -> None:  # noqa: D102
        from pgvector.psycopg import register_vector
        from psycopg.types.json import Json

        checkpoint = initial_checkpoint()
        with self._connection() as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
            register_vector(conn)
            with conn.transaction():
                inserted = conn.execute(
                    "INSERT INTO memalign_judge (name, format_version, spec, embeddings, version) "
                    "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (name) DO NOTHING",
                    (self.judge, FORMAT_VERSION, Json(spec), Json(embeddings_info)),
                ).rowcount
                if not inserted:
                    raise FileExistsError(f"{self.location}: a judge {self.judge!r} already exists in this database")
                conn.execute(
                    "INSERT INTO memalign_principles (judge, version, checkpoint) VALUES (%s, 0, %s)",
                    (self.judge, Json(checkpoint)),
                )

    def embeddings_info(self) -> dict[str, Any]:  # noqa: D102
        with self._connection() as conn:
            return dict(self._require(self._judge_row(conn))[2])

    def current_version(self) -> int:  # noqa: D102
        with self._connection() as conn:
            return int(self._require(self._judge_row(conn))[3])

    def load(self, embeddings: Embeddings) -> LoadedMemory:  # noqa: D102
        import psycopg
        from pgvector.psycopg import register_vector

        with self._connection() as conn:
            if self._judge_row(conn) is not None:
                register_vector(conn)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with conn.transaction():
                    _, spec, embeddings_info, version = self._require(self._judge_row(conn))
                    checkpoint = conn.execute(
                        "SELECT checkpoint FROM memalign_principles WHERE judge = %s AND version = %s",
                        (self.judge, version),
                    ).fetchone()[0]
                    with conn.cursor(binary=True) as cur:  # binary vectors: ~10x faster than their text form
                        rows = cur.execute(
                            "SELECT id, episode::text, embedding FROM memalign_episode WHERE judge = %s ORDER BY seq",
                            (self.judge,),
                        ).fetchall()
            finally:
                conn.isolation_level = None
        vectorstore = faiss_from_vectors(
            embeddings,
            int(embeddings_info["dim"]),
            [r[0] for r in rows],
            [r[1] for r in rows],
            np.stack([np.asarray(r[2].to_numpy(), dtype=np.float32) for r in rows]) if rows else None,
        )
        return LoadedMemory(spec=spec, checkpoint=checkpoint, vectorstore=vectorstore, embeddings_info=embeddings_info)

    def write_version(
        self,
        checkpoint: PrinciplesCheckpoint,
        vectorstore: VectorStore | None,
        embeddings_changed: bool,
        new_episodes: list[dict[str, Any]],
    ) -> None:
        """One transaction: the judge row locked, the version checked, every write, the version bumped."""
        from pgvector.psycopg import register_vector
        from psycopg.types.json import Json

        version = int(checkpoint["version"])
        with self._connection() as conn, conn.transaction():
            register_vector(conn)
            refuse_moved(self.subject, int(self._require(self._judge_row(conn, for_update=True))[3]), version)
            if embeddings_changed:
                assert vectorstore is not None
                self._write_episodes(conn, vectorstore)
            if new_episodes:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO memalign_episode_log (judge, version, id, record_hash, episode) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (judge, version, id) DO UPDATE "
                        "SET record_hash = excluded.record_hash, episode = excluded.episode",
                        [(self.judge, version, e["id"], e.get("record_hash", ""), Json(e)) for e in new_episodes],
                    )
            conn.execute(
                "INSERT INTO memalign_principles (judge, version, checkpoint) VALUES (%s, %s, %s)",
                (self.judge, version, Json(checkpoint)),
            )
            conn.execute("UPDATE memalign_judge SET version = %s WHERE name = %s", (version, self.judge))

    def load_principle_vectors(self) -> dict[str, Any]:  # noqa: D102
        import psycopg
        from pgvector.psycopg import register_vector

        with self._connection() as conn:
            try:
                register_vector(conn)
                with conn.cursor(binary=True) as cur:
                    rows = cur.execute(
                        "SELECT digest, embedding FROM memalign_principle_vector WHERE judge = %s", (self.judge,)
                    ).fetchall()
            except psycopg.errors.UndefinedTable:  # a database created before vectors were kept
                return {}
        return {r[0]: np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows}

    def _check_schema(self, conn: Any) -> None:
        """Once per process: add the tables of newer releases (cache tables) to an older database."""
        if not self._schema_checked:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
            self._schema_checked = True

    def save_principle_vectors(self, vectors: dict[str, Any]) -> None:  # noqa: D102
        from pgvector.psycopg import register_vector

        with self._connection() as conn:
            self._check_schema(conn)
            register_vector(conn)
            with conn.transaction():
                stored = {
                    r[0]
                    for r in conn.execute(
                        "SELECT digest FROM memalign_principle_vector WHERE judge = %s", (self.judge,)
                    ).fetchall()
                }
                gone = sorted(stored - set(vectors))
                if gone:
                    conn.execute(
                        "DELETE FROM memalign_principle_vector WHERE judge = %s AND digest = ANY(%s)",
                        (self.judge, gone),
                    )
                new = [d for d in vectors if d not in stored]
                if new:
                    with (
                        conn.cursor() as cur,
                        cur.copy(
                            "COPY memalign_principle_vector (judge, digest, embedding) FROM STDIN WITH (FORMAT BINARY)"
                        ) as copy,
                    ):
                        copy.set_types(["text", "text", "vector"])
                        for digest in new:
                            copy.write_row((self.judge, digest, np.asarray(vectors[digest], dtype=np.float32)))

    def load_calibration(self) -> dict[str, Any] | None:  # noqa: D102
        import psycopg

        with self._connection() as conn:
            try:
                row = conn.execute(
                    "SELECT version, head::text FROM memalign_calibration WHERE judge = %s", (self.judge,)
                ).fetchone()
            except psycopg.errors.UndefinedTable:  # a database created before heads were kept
                return None
        if row is None:
            return None
        try:
            head = json.loads(row[1]) if row[1] is not None else None
        except ValueError:
            return None
        return {"version": int(row[0]), "head": head}

    def load_calibration_vectors(self) -> dict[tuple[str, str], tuple[str, Any]]:  # noqa: D102
        import psycopg
        from pgvector.psycopg import register_vector

        with self._connection() as conn:
            try:
                register_vector(conn)
                with conn.cursor(binary=True) as cur:
                    rows = cur.execute(
                        "SELECT field, episode_id, digest, embedding FROM memalign_calibration_vector WHERE judge = %s",
                        (self.judge,),
                    ).fetchall()
            except psycopg.errors.UndefinedTable:
                return {}
        return {(r[0], r[1]): (r[2], np.asarray(r[3].to_numpy(), dtype=np.float32)) for r in rows}

    def save_calibration(  # noqa: D102
        self, version: int, head: dict[str, Any] | None, vectors: dict[tuple[str, str], tuple[str, Any]] | None
    ) -> None:
        from pgvector.psycopg import register_vector
        from psycopg.types.json import Json

        with self._connection() as conn:
            self._check_schema(conn)
            register_vector(conn)
            with conn.transaction():
                conn.execute(
                    "INSERT INTO memalign_calibration (judge, version, head) VALUES (%s, %s, %s) "
                    "ON CONFLICT (judge) DO UPDATE SET version = excluded.version, head = excluded.head",
                    (self.judge, version, None if head is None else Json(head)),
                )
                if vectors is None:
                    return
                stored = {
                    (r[0], r[1]): r[2]
                    for r in conn.execute(
                        "SELECT field, episode_id, digest FROM memalign_calibration_vector WHERE judge = %s",
                        (self.judge,),
                    ).fetchall()
                }
                stale = [k for k, digest in stored.items() if k not in vectors or vectors[k][0] != digest]
                for field in sorted({k[0] for k in stale}):
                    conn.execute(
                        "DELETE FROM memalign_calibration_vector "
                        "WHERE judge = %s AND field = %s AND episode_id = ANY(%s)",
                        (self.judge, field, [k[1] for k in stale if k[0] == field]),
                    )
                new = [k for k in sorted(vectors) if stored.get(k) != vectors[k][0]]
                if new:
                    with (
                        conn.cursor() as cur,
                        cur.copy(
                            "COPY memalign_calibration_vector (judge, field, episode_id, digest, embedding) "
                            "FROM STDIN WITH (FORMAT BINARY)"
                        ) as copy,
                    ):
                        copy.set_types(["text", "text", "text", "text", "vector"])
                        for key in new:
                            digest, vector = vectors[key]
                            copy.write_row((self.judge, key[0], key[1], digest, np.asarray(vector, dtype=np.float32)))

    def _write_episodes(self, conn: Any, vectorstore: VectorStore) -> None:
        """Make the stored episodes equal ``vectorstore``'s: delete, insert and replace by digest."""
        order, raw, index = faiss_episodes(vectorstore)
        local = {i: (position, _digest(raw[i])) for position, i in enumerate(order)}
        stored = dict(
            conn.execute("SELECT id, digest FROM memalign_episode WHERE judge = %s", (self.judge,)).fetchall()
        )
        gone = [i for i in stored if i not in local]
        changed = [i for i, (_, digest) in local.items() if stored.get(i) != digest]
        if gone or changed:
            conn.execute("DELETE FROM memalign_episode WHERE judge = %s AND id = ANY(%s)", (self.judge, gone + changed))
        if changed:
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY memalign_episode (judge, id, digest, episode, embedding) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    # The episode is already JSON text: sent as text (json's binary form is its text),
                    # since a "json" dumper would encode the string once more.
                    copy.set_types(["text", "text", "text", "text", "vector"])
                    for i in sorted(changed, key=lambda i: local[i][0]):
                        copy.write_row((self.judge, i, local[i][1], raw[i], index.reconstruct(local[i][0])))

    def versions(self) -> list[dict[str, Any]]:  # noqa: D102
        with self._connection() as conn, conn.transaction():
            current = int(self._require(self._judge_row(conn))[3])
            rows = conn.execute(
                "SELECT checkpoint FROM memalign_principles WHERE judge = %s AND version <= %s ORDER BY version",
                (self.judge, current),
            ).fetchall()
        return [r[0] for r in rows]

    def checkpoint(self, version: int) -> PrinciplesCheckpoint:  # noqa: D102
        with self._connection() as conn, conn.transaction():
            current = int(self._require(self._judge_row(conn))[3])
            row = conn.execute(
                "SELECT checkpoint FROM memalign_principles WHERE judge = %s AND version = %s",
                (self.judge, version),
            ).fetchone()
        if row is None or version > current:
            raise KeyError(f"{self.location}: judge {self.judge!r} has no version {version} (current is {current})")
        return row[0]

    def episode_history(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:  # noqa: D102
        if not wanted:
            return {}
        ids = sorted({rid for rid, _ in wanted})
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id, record_hash, episode FROM memalign_episode_log WHERE judge = %s AND id = ANY(%s) "
                "ORDER BY version DESC",
                (self.judge, ids),
            ).fetchall()
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for rid, digest, episode in rows:
            if (rid, digest) in wanted and (rid, digest) not in found:
                found[(rid, digest)] = episode
        return found

    def purge(self, record_ids: set[str]) -> None:  # noqa: D102
        from psycopg.types.json import Json

        ids = sorted(record_ids)
        with self._connection() as conn:
            with conn.transaction():
                rows = conn.execute(
                    "SELECT version, checkpoint::text FROM memalign_principles WHERE judge = %s "
                    "ORDER BY version FOR UPDATE",
                    (self.judge,),
                ).fetchall()
                stored = (json.loads(text) for _, text in rows)
                for (version, _), cleaned in zip(rows, purge_versions(stored, record_ids)):
                    if cleaned is not None:
                        conn.execute(
                            "UPDATE memalign_principles SET checkpoint = %s WHERE judge = %s AND version = %s",
                            (Json(cleaned), self.judge, version),
                        )
                conn.execute("DELETE FROM memalign_episode_log WHERE judge = %s AND id = ANY(%s)", (self.judge, ids))
                conn.execute("DELETE FROM memalign_episode WHERE judge = %s AND id = ANY(%s)", (self.judge, ids))
                calibrated = conn.execute("SELECT to_regclass('memalign_calibration_vector') IS NOT NULL").fetchone()[0]
                if calibrated:
                    conn.execute(
                        "DELETE FROM memalign_calibration_vector WHERE judge = %s AND episode_id = ANY(%s)",
                        (self.judge, ids),
                    )
            self._purge_review_threads(conn, ids)
            # Deleted row versions stay in the table files until rewritten: VACUUM FULL rewrites them
            # (it briefly locks these tables; forgetting is rare). The calibration tables too: the commit
            # before this purge replaced the head and vectors fitted on these records.
            tables = ["memalign_principles", "memalign_episode_log", "memalign_episode"]
            if calibrated:
                tables += ["memalign_calibration", "memalign_calibration_vector"]
            for table in tables:
                conn.execute(f"VACUUM FULL {table}")

    def _purge_review_threads(self, conn: Any, ids: list[str]) -> None:
        """Delete the `memalign review` threads of these records from LangGraph's checkpoint tables."""
        import psycopg

        exists = conn.execute("SELECT to_regclass('checkpoints') IS NOT NULL").fetchone()[0]
        if not exists:
            return
        from langgraph.checkpoint.postgres import PostgresSaver

        saver = PostgresSaver(conn)
        for thread in [self.review_thread_id(rid) for rid in ids] + self._legacy_thread_ids(conn, ids):
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                saver.delete_thread(thread)
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                conn.execute(f"VACUUM FULL {table}")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:  # noqa: D102
        import psycopg

        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise MemoryFormatError(f"{self.location}: cannot connect to PostgreSQL ({exc})") from None
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (self._lock_key,))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
        finally:
            conn.close()

    def review_thread_id(self, record_id: str) -> str:
        """The LangGraph thread id of ``memalign review`` for one case (judge-scoped: one database, many judges).

        ``review:`` and the JSON array ``[judge, record id]``: unambiguous for any names
        (judges ``a`` and ``a:b`` with records ``b:c`` and ``c`` get different ids).
        """
        return "review:" + json.dumps([self.judge, record_id], ensure_ascii=False, separators=(",", ":"))

    def _legacy_thread_ids(self, conn: Any, ids: list[str]) -> list[str]:
        """Thread ids of the earlier ``review:JUDGE:RECORD`` form that only this judge could have written.

        ``review:a:b:c`` is judge ``a``'s record ``b:c`` or judge ``a:b``'s record ``c``; such an
        id is left alone when another judge of this database could have written it.
        """
        others = [
            name
            for (name,) in conn.execute("SELECT name FROM memalign_judge WHERE name <> %s", (self.judge,)).fetchall()
        ]
        out = []
        for rid in ids:
            tail = f"{self.judge}:{rid}"
            if not any(tail.startswith(other + ":") or other.startswith(tail + ":") for other in others):
                out.append(f"review:{tail}")
        return out

    @contextlib.contextmanager
    def review_checkpointer(self) -> Iterator[Any]:
        """LangGraph's ``PostgresSaver`` on this database (tables set up on first use)."""
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(self.conninfo) as saver:
            # A session lock, not a transaction: setup() creates indexes CONCURRENTLY, which waits
            # for every open transaction (a transaction-level lock here would deadlock with it).
            with self._connection() as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK + 1,))
                try:
                    saver.setup()
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK + 1,))
            yield saver

    def drop(self) -> None:
        """Delete this judge and everything stored for it (all versions, episodes, history)."""
        with self._connection() as conn, conn.transaction():
            conn.execute("DELETE FROM memalign_judge WHERE name = %s", (self.judge,))
