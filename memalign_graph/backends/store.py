"""LangGraph store backend: a judge's memory in any LangGraph ``BaseStore``.

Use it where LangGraph already keeps long-term memory: LangGraph Server's own
store (``MEMALIGN_STORE=langgraph``; Studio's memory view then shows the judge),
a graph compiled with ``store=`` (``Context(store="langgraph")``), or a store you
hold (``Memory.create(StoreBackend(InMemoryStore(), "sql"), spec)``,
``Context(store=StoreBackend(store, "sql"))``). Works with ``InMemoryStore``,
``PostgresStore`` and the server's store; retrieval runs in-process on a FAISS
copy built from the stored vectors (nothing is embedded again on load).

Namespaces (``J`` is the judge name with ``%`` and ``.`` percent-encoded: a
namespace label cannot hold a period; see :func:`store_label`)::

    ("memalign", J)                 "judge": {format_version, spec, embeddings}
                                    "head": {"version": N}            (the commit point, written last)
                                    "pending": {"version": N+1}       (a commit in progress)
    ("memalign", J, "versions")     "%09d" % v -> principles checkpoint of version v, with the ledger (all kept)
    ("memalign", J, "manifests")    "%09d" % N -> {"episodes": [episode keys, index order]} (the current one)
    ("memalign", J, "episodes")     content-addressed key -> {"id", "text", "episode", "version"}
    ("memalign", J, "episode_vectors")  the same key -> {"vector"}: the episode's embedding
    ("memalign", J, "history")      episodes added or replaced by each version (rollback)
    ("memalign", J, "principles")   principle id -> the current principle (a view for people and Studio)
    ("memalign", J, "principle_vectors")  text digest -> unit vector of a current principle (a cache)
    ("memalign", J, "calibration")  "head": {"version": N, "head": the calibration head of version N} (a cache)
    ("memalign", J, "calibration_vectors")  digest of (field, episode id) -> {"field", "id", "digest", "vector"}:
                                    field vectors of the head's training sample (a cache, replaced with the head)

An episode's key is a digest of its id and its JSON, so a changed episode gets a
new key and never overwrites the one a reader may be loading. Episode items are
put with ``index=["text"]`` (the case text): a store with a vector index
(``langgraph.json``'s ``store.index``) lets ``store.search(ns, query=...)`` and
Studio find episodes; every other item is put with ``index=False``. The
embeddings are stored as base64 float32, so loading never re-embeds, in items
of their own: the episodes people browse in Studio's memory view carry no
vector. A judge stored before that layout (format 1, vectors inside the episode
items) is migrated when it is opened (:meth:`StoreBackend.load`), under the
writer lock; memalign-graph versions that read only format 1 then refuse it
with "upgrade memalign-graph" instead of misreading it.

Location string: a judge in LangGraph's ``PostgresStore`` is named by
``postgresql://user:password@host:port/db?judge=NAME&store=langgraph``
(:func:`postgres_store_backend`), which every command and ``Memory.open`` accept,
so an operator can ``memalign forget`` or ``memalign principles --approve`` in a
deployed server's memory from a shell, with the server's writer lock.

Atomicity does not rely on the store's batches being transactions. A commit
writes, in this order: the ``pending`` marker, the new episode items, the
history, the version's checkpoint and manifest, then ``head``; only then does
it delete episode items the new version no longer has, the old manifest and
the marker. A reader reads ``head``, then that version's manifest, checkpoint
and episodes by key; if one is gone (a newer commit cleaned up meanwhile) it
starts again from ``head``. So a reader sees one committed version, never a
mix. A writer that dies in the middle leaves ``pending``; the next writer
(under the lock) deletes whatever no committed version points to.

Concurrent writers (what the store guarantees, plainly):

* ``BaseStore`` has no locks or transactions across calls. :meth:`StoreBackend.lock`
  serialises writers of one judge *in this process* (a ``threading.Lock`` per store
  object and judge), and, for ``PostgresStore``, across processes with a
  PostgreSQL advisory lock on the store's own database. Under the lock no update
  is lost: each writer reloads what the one before it committed.
* Without a shared lock (several processes on a store other than ``PostgresStore``,
  e.g. several LangGraph Server replicas whose store is not reachable here) lost
  updates are *detected*, not prevented: :meth:`~StoreBackend.commit` re-reads
  ``head`` and refuses (``RuntimeError``) a change prepared from an older version,
  but a window remains between that read and the write of ``head`` in which two
  writers can both pass; the later one then wins and the earlier version is lost.
  Run one writer per judge there (e.g. a single align worker).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memalign_graph.backends.base import (
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
    STORE_PARAM,
    is_postgres_url,
    is_store_location,
    judge_from_label,
    redact,
    split_url,
    store_judge,
    store_label,
)
from memalign_graph.errors import MemoryFormatError
from memalign_graph.spec import case_text

ROOT = "memalign"
"""First label of every namespace this backend writes."""
STORE_FORMAT_VERSION = 2
"""A judge's format in a store: 2 keeps episode vectors in ``episode_vectors``, 1 (migrated on open) in the episodes."""
PAGE = 500
"""Items per ``search``/``batch`` call."""

_locks: weakref.WeakKeyDictionary[Any, dict[str, threading.Lock]] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
_savers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _key(version: int) -> str:
    return f"{version:09d}"


def _digest(*parts: str) -> str:
    return hashlib.blake2b(json.dumps(parts, ensure_ascii=False).encode("utf-8"), digest_size=16).hexdigest()


def encode_vector(vector: Any) -> str:
    """A vector as base64 of its little-endian float32 bytes (exact, a quarter of its JSON length)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    """The float32 vector :func:`encode_vector` wrote."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


class StoreBackend(MemoryBackend):
    """Memory in a LangGraph ``BaseStore`` (see the module docstring for namespaces and guarantees).

    Args:
        store: any LangGraph store (``InMemoryStore``, ``PostgresStore``, the server's store). Called
            synchronously: from inside a running event loop, use it from a worker thread (the graphs do).
        judge: the judge's name in the store (default ``default``); one store holds many judges.
        retries: how many times a read starts again when commits keep overtaking it.

    Raises:
        ValueError: for an invalid judge name (see :func:`store_label`).
    """

    def __init__(self, store: Any, judge: str = DEFAULT_JUDGE, *, retries: int = 50) -> None:
        self.store = store
        self.judge = judge
        self.label = store_label(judge)
        self.location = f"langgraph:{judge}"
        self.retries = retries
        self._ns = (ROOT, self.label)

    @property
    def cache_key(self) -> tuple[str, int, str]:
        """What identifies this memory in the process: the store object and the judge."""
        return ("langgraph", id(self.store), self.judge)

    def __repr__(self) -> str:
        return f"StoreBackend({type(self.store).__name__}, judge={self.judge!r})"

    # -- store access ------------------------------------------------------------------------------

    def _sub(self, name: str) -> tuple[str, ...]:
        return (*self._ns, name)

    def _get(self, namespace: tuple[str, ...], key: str) -> dict[str, Any] | None:
        item = self.store.get(namespace, key)
        return None if item is None else dict(item.value)

    def _get_many(self, namespace: tuple[str, ...], keys: list[str]) -> list[dict[str, Any] | None]:
        from langgraph.store.base import GetOp

        out: list[dict[str, Any] | None] = []
        for start in range(0, len(keys), PAGE):
            items = self.store.batch([GetOp(namespace, k) for k in keys[start : start + PAGE]])
            out.extend(None if item is None else item.value for item in items)
        return out

    def _put(self, namespace: tuple[str, ...], key: str, value: dict[str, Any], index: Any = False) -> None:
        self.store.put(namespace, key, value, index=index)

    def _put_many(
        self, namespace: tuple[str, ...], items: list[tuple[str, dict[str, Any]]], index: Any = False
    ) -> None:
        from langgraph.store.base import PutOp

        for start in range(0, len(items), PAGE):
            self.store.batch([PutOp(namespace, k, v, index=index) for k, v in items[start : start + PAGE]])

    def _delete_many(self, namespace: tuple[str, ...], keys: list[str]) -> None:
        from langgraph.store.base import PutOp

        for start in range(0, len(keys), PAGE):
            self.store.batch([PutOp(namespace, k, None) for k in keys[start : start + PAGE]])

    def _items(self, namespace: tuple[str, ...], filter: dict[str, Any] | None = None) -> list[Any]:
        """Every item exactly in ``namespace`` (not below it), read page by page."""
        out: list[Any] = []
        offset = 0
        while True:
            page = self.store.search(namespace, filter=filter, limit=PAGE, offset=offset)
            out.extend(item for item in page if tuple(item.namespace) == namespace)
            if len(page) < PAGE:
                return out
            offset += len(page)

    def _head(self) -> int | None:
        head = self._get(self._ns, "head")
        return None if head is None else int(head["version"])

    def _require_head(self) -> int:
        """The committed version, after checking the judge is stored here in a format this version reads.

        Raises:
            MemoryFormatError: if no judge of this name is stored, or it needs a newer memalign-graph.
        """
        meta = self._get(self._ns, "judge")
        version = self._head()
        if meta is None or version is None:
            raise MemoryFormatError(
                f"{self.location}: no judge {self.judge!r} in this store (create it with "
                f"Memory.create(StoreBackend(store, {self.judge!r}), spec), or give its definition in "
                "MEMALIGN_JUDGE_SPECS so that a graph creates it on first use)"
            )
        found = meta.get("format_version")
        if not isinstance(found, int) or found > STORE_FORMAT_VERSION:
            raise MemoryFormatError(
                f"{self.location}: judge {self.judge!r} was written by a newer memalign-graph (format {found}, "
                f"this one reads {STORE_FORMAT_VERSION}); upgrade memalign-graph"
            )
        return version

    # -- MemoryBackend -----------------------------------------------------------------------------

    def exists(self) -> bool:  # noqa: D102
        return self._head() is not None

    def create(self, spec: dict[str, Any], embeddings: Embeddings, embeddings_info: dict[str, Any]) -> None:  # noqa: D102
        checkpoint = initial_checkpoint()
        with self.lock():
            if self.exists():
                raise FileExistsError(f"{self.location}: a judge {self.judge!r} already exists in this store")
            self._put(
                self._ns,
                "judge",
                {"format_version": STORE_FORMAT_VERSION, "spec": spec, "embeddings": embeddings_info},
            )
            self._put(self._sub("versions"), _key(0), dict(checkpoint))
            self._put(self._sub("manifests"), _key(0), {"episodes": []})
            self._put(self._ns, "head", {"version": 0})

    def current_version(self) -> int:  # noqa: D102
        return self._require_head()

    def embeddings_info(self) -> dict[str, Any]:  # noqa: D102
        self._require_head()
        return dict((self._get(self._ns, "judge") or {}).get("embeddings") or {})

    def load(self, embeddings: Embeddings) -> LoadedMemory:
        """The committed version (:meth:`MemoryBackend.load`), after migrating a format-1 judge (:meth:`migrate`)."""
        self.migrate()
        for _ in range(self.retries):
            version = self._require_head()
            meta = self._get(self._ns, "judge") or {}
            manifest = self._get(self._sub("manifests"), _key(version))
            checkpoint = self._get(self._sub("versions"), _key(version))
            keys = list((manifest or {}).get("episodes", []))
            vectors = self._get_many(self._sub("episode_vectors"), keys)
            items = [_with_vector(i, v) for i, v in zip(self._get_many(self._sub("episodes"), keys), vectors)]
            if manifest is not None and checkpoint is not None and all(i is not None for i in items):
                break
            if self._head() == version:  # nothing moved: what is missing was never written or was deleted
                raise MemoryFormatError(f"{self.location}: judge {self.judge!r}: version {version} is incomplete")
        else:
            raise MemoryFormatError(f"{self.location}: judge {self.judge!r}: commits kept overtaking the read")
        info = meta["embeddings"]
        rows = [i for i in items if i is not None]
        vectorstore = faiss_from_vectors(
            embeddings,
            int(info["dim"]),
            [r["id"] for r in rows],
            [json.dumps(r["episode"], ensure_ascii=False) for r in rows],
            np.stack([decode_vector(r["vector"]) for r in rows]) if rows else None,
        )
        return LoadedMemory(spec=meta["spec"], checkpoint=checkpoint, vectorstore=vectorstore, embeddings_info=info)  # type: ignore[arg-type]

    def migrate(self) -> bool:
        """Move a format-1 judge's episode vectors out of its episode items into ``episode_vectors``.

        Runs under the writer lock, once: the judge is marked format 2 with a ``migration``
        flag first (so a memalign-graph that reads only format 1 refuses it from then on),
        then every vector is copied to its own item, then dropped from the episode item,
        then the flag is cleared. A reader in between finds each vector in one place or the
        other; a migration cut short is finished by the next open.

        Returns:
            Whether anything was migrated.
        """
        meta = self._get(self._ns, "judge")
        if meta is None or (meta.get("format_version") != 1 and not meta.get("migration")):
            return False
        with self.lock():
            meta = self._get(self._ns, "judge")
            if meta is None or (meta.get("format_version") != 1 and not meta.get("migration")):
                return False
            self._put(self._ns, "judge", {**meta, "format_version": STORE_FORMAT_VERSION, "migration": "vectors"})
            episodes = self._sub("episodes")
            old = [item for item in self._items(episodes) if "vector" in item.value]
            self._put_many(self._sub("episode_vectors"), [(i.key, {"vector": i.value["vector"]}) for i in old])
            stripped = [(i.key, {k: v for k, v in i.value.items() if k != "vector"}) for i in old]
            self._put_many(episodes, stripped, index=["text"])
            meta.pop("migration", None)
            self._put(self._ns, "judge", {**meta, "format_version": STORE_FORMAT_VERSION})
        return True

    def write_version(
        self,
        checkpoint: PrinciplesCheckpoint,
        vectorstore: VectorStore | None,
        embeddings_changed: bool,
        new_episodes: list[dict[str, Any]],
    ) -> None:
        """:meth:`commit`'s writes, in the order the module docstring gives."""
        version = int(checkpoint["version"])
        refuse_moved(self.subject, self._require_head(), version)
        old = list((self._get(self._sub("manifests"), _key(version - 1)) or {}).get("episodes", []))
        self._put(self._ns, "pending", {"version": version})
        keys = old
        if embeddings_changed:
            assert vectorstore is not None
            order, raw, index = faiss_episodes(vectorstore)
            keys = [_digest(i, raw[i]) for i in order]
            have = set(old)
            fresh, vectors = [], []
            for position, (episode_id, key) in enumerate(zip(order, keys)):
                if key not in have:
                    episode = json.loads(raw[episode_id])
                    value = {"id": episode_id, "text": case_text(episode), "episode": episode, "version": version}
                    fresh.append((key, value))
                    vectors.append((key, {"vector": encode_vector(index.reconstruct(position))}))
            self._put_many(self._sub("episode_vectors"), vectors)
            self._put_many(self._sub("episodes"), fresh, index=["text"])
        if new_episodes:
            self._put_many(
                self._sub("history"),
                [
                    (
                        f"{_key(version)}-{_digest(e['id'])}",
                        {"id": e["id"], "record_hash": e.get("record_hash", ""), "episode": e, "version": version},
                    )
                    for e in new_episodes
                ],
            )
        self._put(self._sub("versions"), _key(version), dict(checkpoint))
        self._put(self._sub("manifests"), _key(version), {"episodes": keys})
        refuse_moved(self.subject, self._require_head(), version)  # narrows, does not close, the window without a lock
        self._put(self._ns, "head", {"version": version})
        self._delete_episodes(sorted(set(old) - set(keys)))
        self._delete_many(self._sub("manifests"), [_key(version - 1)])
        self._sync_principles(checkpoint)
        self._delete_many(self._ns, ["pending"])

    def _delete_episodes(self, keys: list[str]) -> None:
        """Delete episode items and their vectors."""
        self._delete_many(self._sub("episodes"), keys)
        self._delete_many(self._sub("episode_vectors"), keys)

    def _sync_principles(self, checkpoint: dict[str, Any]) -> None:
        """Make ``("memalign", J, "principles")`` hold the principles of ``checkpoint``, one item each."""
        namespace = self._sub("principles")
        stored = {item.key: item.value for item in self._items(namespace)}
        current = {p["id"]: {**p, "version": checkpoint["version"]} for p in checkpoint["principles"]}
        self._put_many(namespace, [(k, v) for k, v in current.items() if stored.get(k) != v], index=["text"])
        self._delete_many(namespace, sorted(set(stored) - set(current)))

    def versions(self) -> list[dict[str, Any]]:  # noqa: D102
        current = self._require_head()
        found = self._get_many(self._sub("versions"), [_key(v) for v in range(current + 1)])
        return [c for c in found if c is not None]

    def checkpoint(self, version: int) -> PrinciplesCheckpoint:  # noqa: D102
        current = self._require_head()
        found = self._get(self._sub("versions"), _key(version)) if 0 <= version <= current else None
        if found is None:
            raise KeyError(f"{self.location}: judge {self.judge!r} has no version {version} (current is {current})")
        return found  # type: ignore[return-value]

    def _history(self, ids: set[str]) -> list[dict[str, Any]]:
        """History items of these record ids (committed versions only)."""
        namespace = self._sub("history")
        if len(ids) <= 64:
            items = [item for rid in sorted(ids) for item in self._items(namespace, filter={"id": rid})]
        else:
            items = [item for item in self._items(namespace) if item.value.get("id") in ids]
        return [item.value | {"_key": item.key} for item in items]

    def episode_history(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:  # noqa: D102
        if not wanted:
            return {}
        current = self._require_head()
        found: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        for value in self._history({rid for rid, _ in wanted}):
            pair, version = (value["id"], value.get("record_hash", "")), int(value["version"])
            if pair in wanted and version <= current and (pair not in found or found[pair][0] < version):
                found[pair] = (version, value["episode"])
        return {pair: episode for pair, (_, episode) in found.items()}

    def purge(self, record_ids: set[str]) -> None:
        """Erase every trace of these records (see :meth:`MemoryBackend.purge`).

        Deletes their history and episode items (any left by a dead writer too) and
        rewrites every version's checkpoint without them; the checkpoints go last, so
        if the process dies half-way, forgetting the same ids again finds them in the
        older ledgers and finishes the job. What the store keeps of a deleted item
        beyond its value (a server's backups, a database's dead rows until vacuumed)
        is the store operator's to clear. Review threads of :meth:`review_checkpointer`
        are deleted; those a server's own checkpointer keeps are the server's (delete
        the threads through its API).
        """
        self._delete_many(self._sub("history"), [v["_key"] for v in self._history(record_ids)])
        episodes = self._sub("episodes")
        self._delete_episodes(
            [item.key for rid in sorted(record_ids) for item in self._items(episodes, filter={"id": rid})]
        )
        self._purge_calibration(record_ids)
        self._purge_review_threads(record_ids)
        current = self._require_head()
        keys = sorted(item.key for item in self._items(self._sub("versions")))  # zero-padded: oldest first
        stored = [(key, value) for key, value in zip(keys, self._get_many(self._sub("versions"), keys)) if value]
        for (key, _), cleaned in zip(stored, purge_versions((value for _, value in stored), record_ids)):
            if cleaned is not None:
                self._put(self._sub("versions"), key, cleaned)
        latest = self._get(self._sub("versions"), _key(current))
        if latest is not None:
            self._sync_principles(latest)

    def load_principle_vectors(self) -> dict[str, Any]:  # noqa: D102
        try:
            return {
                item.key: decode_vector(item.value["vector"]) for item in self._items(self._sub("principle_vectors"))
            }
        except (KeyError, TypeError, ValueError):  # a cache: embed again
            return {}

    def save_principle_vectors(self, vectors: dict[str, Any]) -> None:  # noqa: D102
        namespace = self._sub("principle_vectors")
        stored = {item.key for item in self._items(namespace)}
        self._delete_many(namespace, sorted(stored - set(vectors)))
        self._put_many(namespace, [(d, {"vector": encode_vector(v)}) for d, v in vectors.items() if d not in stored])

    def load_calibration(self) -> dict[str, Any] | None:  # noqa: D102
        found = self._get(self._sub("calibration"), "head")
        if not isinstance(found, dict):
            return None
        version = found.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            return None
        return {"version": version, "head": found.get("head")}

    def load_calibration_vectors(self) -> dict[tuple[str, str], tuple[str, Any]]:  # noqa: D102
        out: dict[tuple[str, str], tuple[str, Any]] = {}
        for item in self._items(self._sub("calibration_vectors")):
            value = item.value
            try:
                out[(str(value["field"]), str(value["id"]))] = (str(value["digest"]), decode_vector(value["vector"]))
            except (KeyError, TypeError, ValueError):  # a cache: what cannot be read is embedded again
                continue
        return out

    def save_calibration(  # noqa: D102
        self, version: int, head: dict[str, Any] | None, vectors: dict[tuple[str, str], tuple[str, Any]] | None
    ) -> None:
        self._put(self._sub("calibration"), "head", {"version": version, "head": head})
        if vectors is None:
            return
        namespace = self._sub("calibration_vectors")
        stored = {item.key: item.value.get("digest") for item in self._items(namespace)}
        wanted = {_digest(field, episode_id): (field, episode_id) for field, episode_id in vectors}
        self._delete_many(
            namespace, sorted(k for k, digest in stored.items() if k not in wanted or vectors[wanted[k]][0] != digest)
        )
        self._put_many(
            namespace,
            [
                (key, {"field": field, "id": episode_id, "digest": digest, "vector": encode_vector(vector)})
                for key, (field, episode_id) in sorted(wanted.items())
                for digest, vector in [vectors[(field, episode_id)]]
                if stored.get(key) != digest
            ],
        )

    def _purge_calibration(self, record_ids: set[str]) -> None:
        """Delete these records' field vectors from the calibration cache."""
        namespace = self._sub("calibration_vectors")
        if len(record_ids) <= 64:
            gone = [item.key for rid in sorted(record_ids) for item in self._items(namespace, filter={"id": rid})]
        else:
            gone = [item.key for item in self._items(namespace) if item.value.get("id") in record_ids]
        self._delete_many(namespace, gone)

    def _recover(self) -> None:
        """Delete what a writer that died in the middle of a commit left; call with the writer lock held.

        Removed: episode items no committed version has, manifests other than the
        current one, checkpoints and history of versions newer than ``head``, and the
        ``pending`` marker. Without a marker there is nothing to do (one read).
        """
        if self._get(self._ns, "pending") is None:
            return
        current = self._head()
        if current is None:
            return
        manifest = self._get(self._sub("manifests"), _key(current)) or {}
        keep = set(manifest.get("episodes", []))
        for namespace in (self._sub("episodes"), self._sub("episode_vectors")):
            self._delete_many(namespace, [i.key for i in self._items(namespace) if i.key not in keep])
        self._delete_many(
            self._sub("manifests"), [i.key for i in self._items(self._sub("manifests")) if i.key != _key(current)]
        )
        self._delete_many(
            self._sub("versions"), [i.key for i in self._items(self._sub("versions")) if int(i.key) > current]
        )
        self._delete_many(
            self._sub("history"),
            [i.key for i in self._items(self._sub("history")) if int(i.value["version"]) > current],
        )
        self._delete_many(self._ns, ["pending"])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock for this judge, held for a whole read-modify-commit.

        In this process: one ``threading.Lock`` per store object and judge. Across
        processes: a PostgreSQL advisory lock when the store is a ``PostgresStore``
        (released by the server if the process dies); for other stores there is
        none (see the module docstring). Whoever takes it first removes what a dead
        writer left behind.
        """
        with _locks_guard:
            per_store = _locks.setdefault(self.store, {})
            local = per_store.setdefault(self.judge, threading.Lock())
        with local, self._postgres_lock():
            self._recover()
            yield

    @contextlib.contextmanager
    def _postgres_lock(self) -> Iterator[None]:
        """``pg_advisory_lock`` on the ``PostgresStore``'s database for this judge; nothing for other stores.

        The lock is taken on a connection of its own from the store's pool, or, for a store on one
        connection, on that connection between the store's own uses of it (``pg_try_advisory_lock``,
        retried), so the store stays usable by other threads while this one waits.
        """
        conn = getattr(self.store, "conn", None)
        if conn is None or not self._is_postgres():
            yield
            return
        from psycopg import Connection
        from psycopg_pool import ConnectionPool

        key = int.from_bytes(
            hashlib.blake2b(f"memalign-store:{self.judge}".encode(), digest_size=8).digest(), "big", signed=True
        )
        if isinstance(conn, ConnectionPool):
            with conn.connection() as own:
                own.execute("SELECT pg_advisory_lock(%s)", (key,))
                try:
                    yield
                finally:
                    own.execute("SELECT pg_advisory_unlock(%s)", (key,))
            return
        if not isinstance(conn, Connection):
            yield
            return
        store_lock = getattr(self.store, "lock", None) or contextlib.nullcontext()
        while True:
            with store_lock:
                row = conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,)).fetchone()
            if _first(row):
                break
            time.sleep(0.05)
        try:
            yield
        finally:
            with store_lock:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def review_thread_id(self, record_id: str) -> str:
        """One case's review thread: ``review:`` and the JSON array ``[judge, record id]`` (one store, many judges)."""
        return "review:" + json.dumps([self.judge, record_id], ensure_ascii=False, separators=(",", ":"))

    def _is_postgres(self) -> bool:
        return type(self.store).__module__.split(".")[:3] == ["langgraph", "store", "postgres"]

    def _saver(self, *, create: bool = True) -> Any:
        """The checkpointer of this store's review threads, or ``None`` (see :meth:`review_checkpointer`)."""
        with _locks_guard:
            saver = _savers.get(self.store)
            if saver is not None or not create:
                return saver
            if self._is_postgres() and getattr(self.store, "conn", None) is not None:
                from langgraph.checkpoint.postgres import PostgresSaver

                saver = PostgresSaver(self.store.conn)
                from psycopg import Connection

                store_lock = getattr(self.store, "lock", None)
                if store_lock is not None and isinstance(self.store.conn, Connection):
                    # One psycopg connection, two users: the store and the saver must take the same
                    # lock, or a node's checkpoint write and a store read in another thread collide
                    # inside the connection's pipeline (psycopg raises AssertionError). A pool gives
                    # each its own connection instead.
                    saver.lock = store_lock
                saver.setup()
            elif type(self.store).__name__ == "InMemoryStore":
                from langgraph.checkpoint.memory import InMemorySaver

                saver = InMemorySaver()
            else:
                return None
            _savers[self.store] = saver
            return saver

    @contextlib.contextmanager
    def review_checkpointer(self) -> Iterator[Any]:
        """The checkpointer for ``memalign review`` threads, kept with the store (purged by :meth:`purge`).

        A ``PostgresStore``: LangGraph's ``PostgresSaver`` on the store's own connection (its tables
        set up on first use). An ``InMemoryStore``: one ``InMemorySaver`` per store object, living
        as long as the store. Graphs on LangGraph Server use the server's checkpointer instead.

        Raises:
            NotImplementedError: for any other store (compile the review graph with a checkpointer of your choice).
        """
        saver = self._saver()
        if saver is None:
            raise NotImplementedError(
                f"{self.location}: no review checkpointer for a {type(self.store).__name__}; compile the review "
                "graph with a checkpointer (LangGraph Server supplies its own)"
            )
        yield saver

    def _purge_review_threads(self, record_ids: set[str]) -> None:
        saver = self._saver(create=False)
        if saver is not None:
            for rid in sorted(record_ids):
                saver.delete_thread(self.review_thread_id(rid))

    def drop(self) -> None:
        """Delete this judge and everything stored for it (all namespaces under ``("memalign", J)``)."""
        namespaces = {tuple(i.namespace) for i in self._items_below()}
        for namespace in namespaces:
            self._delete_many(namespace, [i.key for i in self._items(namespace)])

    def _items_below(self) -> list[Any]:
        """Every item in every namespace under ``("memalign", J)``, read page by page."""
        out: list[Any] = []
        offset = 0
        while True:
            page = self.store.search(self._ns, limit=PAGE, offset=offset)
            out.extend(page)
            if len(page) < PAGE:
                return out
            offset += len(page)


def _with_vector(item: dict[str, Any] | None, vector: dict[str, Any] | None) -> dict[str, Any] | None:
    """An episode item with its vector (from ``episode_vectors``, or its own in format 1); ``None`` if one is gone."""
    if item is None:
        return None
    found = (vector or {}).get("vector") or item.get("vector")
    return None if found is None else {**item, "vector": found}


def _first(row: Any) -> Any:
    if row is None:
        return None
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]
