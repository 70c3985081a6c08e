"""A judge in LangGraph's ``PostgresStore`` named by ``postgresql://…?judge=NAME&store=langgraph``.

What an operator does from a shell to the memory a deployed graph keeps (``MEMALIGN_STORE=langgraph``):
forget a record (a privacy request) and approve a held principle, with the server's writer lock.
"""

import json
import threading
import time

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from typer.testing import CliRunner

from memalign_graph import Context, Memory, build_align_graph
from memalign_graph.backends.location import backend_for
from memalign_graph.backends.pg_store import PostgresStoreBackend
from memalign_graph.backends.store import StoreBackend
from memalign_graph.cli import app
from memalign_graph.errors import MemoryFormatError
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, feedback, fresh_database

EMB = DeterministicFakeEmbedding(size=32)


@pytest.fixture
def server_store(postgres):
    """``(store, url)``: the ``PostgresStore`` a deployed graph runs with, and the URL an operator names it by."""
    import psycopg
    from langgraph.store.postgres import PostgresStore
    from psycopg.rows import dict_row

    database = fresh_database(postgres[0])
    conn = psycopg.connect(database, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    store = PostgresStore(conn)
    store.setup()
    yield store, f"{database}?judge=sql&store=langgraph"
    conn.close()


def test_an_operator_forgets_and_approves_in_the_servers_store(server_store, monkeypatch):
    store, url = server_store
    Memory.create(StoreBackend(store, "sql"), CATEGORICAL, embeddings=EMB).set_principles_policy("review", author="ops")
    graph = build_align_graph().compile(store=store)  # the deployed graph, on the server's store
    context = Context(store="langgraph:sql", model=StubChatModel(), embeddings=EMB)
    records = [
        feedback("r1", "SELECT * FROM raw.payments", "fail", "Never use raw tables."),
        feedback("pii", "refund card 4111-1111-1111-1111", "fail", "Never echo card numbers."),
    ]
    assert graph.invoke({"feedback": records}, context=context)["report"]["version"] == 2

    monkeypatch.setattr("memalign_graph.versions.resolve_embeddings", lambda embeddings=None: EMB)
    runner = CliRunner()
    pending = json.loads(runner.invoke(app, ["principles", url, "--pending", "--json"]).stdout)
    held = next(p["id"] for p in pending if p["text"] == "Never use raw tables.")
    approved = runner.invoke(app, ["principles", url, "--approve", held, "--author", "ana"])
    assert approved.exit_code == 0, approved.output
    forgot = runner.invoke(app, ["forget", url, "--record", "pii", "--reason", "privacy request", "--json"])
    assert forgot.exit_code == 0, forgot.output
    assert json.loads(forgot.stdout)["episodes_removed"] == ["pii"]

    # The server sees both changes, and no byte of the forgotten record is left in its store.
    memory = Memory.open(StoreBackend(store, "sql"), embeddings=EMB)
    assert [p["text"] for p in memory.principles] == ["Never use raw tables."]
    assert sorted(memory.records) == ["r1"]
    with store.conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM store WHERE value::text LIKE '%4111-1111%'")
        assert cur.fetchone()["n"] == 0


def test_the_url_takes_the_servers_writer_lock(server_store):
    store, url = server_store
    Memory.create(StoreBackend(store, "sql"), CATEGORICAL, embeddings=EMB)
    operator = backend_for(url)
    assert isinstance(operator, PostgresStoreBackend) and "password" not in operator.location
    entered = threading.Event()
    with StoreBackend(store, "sql").lock():  # the server is writing
        worker = threading.Thread(target=lambda: (operator.lock().__enter__(), entered.set()))
        worker.start()
        time.sleep(1.0)
        assert not entered.is_set()  # the operator's command waits
    worker.join(timeout=10)
    assert entered.is_set()
    operator.close()


def test_bad_store_urls_name_the_problem_without_the_password(postgres):
    database = fresh_database(postgres[0])
    with pytest.raises(ValueError, match=r"store=redis is not known; use store=langgraph"):
        backend_for(f"{database}?judge=sql&store=redis")
    with pytest.raises(ValueError, match=r"judge name"):
        backend_for(f"{database}?judge=&store=langgraph")
    unreachable = "postgresql://ana:s3cret@127.0.0.1:1/db?judge=sql&store=langgraph"
    with pytest.raises(MemoryFormatError, match="cannot connect to PostgreSQL") as caught:
        backend_for(unreachable)
    assert "s3cret" not in str(caught.value) and "ana:***@127.0.0.1:1" in str(caught.value)
    missing = backend_for(f"{database}?judge=nobody&store=langgraph")
    with pytest.raises(MemoryFormatError, match="no judge 'nobody' in this store"):
        Memory.open(missing, embeddings=EMB)
    missing.close()
