"""PostgreSQL details (issue 11): review thread ids, forgotten ids in version reasons, judge names, failed writes.

Attacks: judges ``a`` and ``a:b`` in one database, where ``forget`` on judge ``a:b``
record ``c`` deleted judge ``a``'s review thread for record ``b:c``; a forgotten
record's id surviving in the version reason ``"review of rv-secret: correct"``
(checked on both backends); a NUL or other invalid judge name; a write that fails
half-way (disk full). Each checks that nothing stored was lost or let through.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from memalign_graph import Context, Memory, build_review_graph
from memalign_graph.backends.postgres import MAX_JUDGE_CHARS, JudgeNameError, PostgresBackend
from memalign_graph.errors import MemoryWriteError
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, feedback, fresh_database, stored_state


def thread_config(backend, record_id: str) -> dict:
    return {"configurable": {"thread_id": backend.review_thread_id(record_id)}}


def review(memory: Memory, saver, case: dict, answer: dict | None, embeddings) -> None:
    """Judge ``case`` in the review graph (thread of its id); answer the interrupt if ``answer`` is given."""
    context = Context(store=memory.backend.url, model=StubChatModel(), embeddings=embeddings)
    graph = build_review_graph().compile(checkpointer=saver)
    config = thread_config(memory.backend, case["id"])
    graph.invoke(case, config, context=context)
    if answer is not None:
        graph.invoke(Command(resume=answer), config, context=context)


def test_thread_ids_are_unambiguous_across_judges(postgres, embeddings) -> None:
    database = fresh_database(postgres[0])
    tag = uuid.uuid4().hex[:6]
    judge_a = Memory.create(f"{database}?judge=a{tag}", CATEGORICAL, embeddings=embeddings)
    judge_ab = Memory.create(f"{database}?judge=a{tag}:b", CATEGORICAL, embeddings=embeddings)
    assert judge_a.backend.review_thread_id("b:c") != judge_ab.backend.review_thread_id("c")
    case_a = {"id": "b:c", "inputs": "request of judge a", "outputs": "SELECT 1 FROM raw.a"}
    case_ab = {"id": "c", "inputs": "request of judge a:b", "outputs": "SELECT 2 FROM raw.b"}
    with judge_a.backend.review_checkpointer() as saver:
        review(judge_a, saver, case_a, None, embeddings)  # judge a's review stays pending
        review(judge_ab, saver, case_ab, {"action": "correct", "value": "fail", "feedback": "No raw."}, embeddings)
        # A thread of the earlier 'review:JUDGE:RECORD' form that both judges could have written.
        legacy = {"configurable": {"thread_id": f"review:a{tag}:b:c", "checkpoint_ns": ""}}
        saver.put(legacy, {**saver.get_tuple(thread_config(judge_a.backend, "b:c")).checkpoint}, {}, {})
        before = saver.get_tuple(thread_config(judge_a.backend, "b:c"))
    state_a = stored_state(judge_a)
    judge_ab.forget(["c"])
    with judge_a.backend.review_checkpointer() as saver:
        after = saver.get_tuple(thread_config(judge_a.backend, "b:c"))
        assert after is not None and after.checkpoint["id"] == before.checkpoint["id"]
        assert saver.get_tuple(legacy) is not None  # ambiguous: left alone
        assert saver.get_tuple(thread_config(judge_ab.backend, "c")) is None  # the forgotten one is gone
    assert stored_state(judge_a) == state_a
    for memory in (judge_a, judge_ab):
        memory.backend.close()


def test_forget_deletes_an_unambiguous_legacy_thread(postgres, embeddings) -> None:
    memory = Memory.create(f"{fresh_database(postgres[0])}?judge=solo", CATEGORICAL, embeddings=embeddings)
    memory.align([feedback("r1", "SELECT 1 FROM raw.a", text="No raw.")], model=StubChatModel())
    legacy = {"configurable": {"thread_id": "review:solo:r1", "checkpoint_ns": ""}}
    with memory.backend.review_checkpointer() as saver:
        review(memory, saver, {"id": "r2", "inputs": "x", "outputs": "SELECT 2"}, None, embeddings)
        saver.put(legacy, saver.get_tuple(thread_config(memory.backend, "r2")).checkpoint, {}, {})
    memory.forget(["r1"])
    with memory.backend.review_checkpointer() as saver:
        assert saver.get_tuple(legacy) is None
    memory.backend.close()


def test_forgotten_id_leaves_the_version_reasons(memory: Memory, embeddings, all_bytes) -> None:
    """Every backend: "review of rv-secret: correct" goes when rv-secret is forgotten, and so does the id."""
    lg_store = getattr(memory.backend, "store", None)  # a LangGraph store: the graph runs with it
    graph = build_review_graph().compile(checkpointer=InMemorySaver(), store=lg_store)
    store = getattr(memory.backend, "url", memory.backend.location)  # langgraph:JUDGE for a LangGraph store
    context = Context(store=store, model=StubChatModel(), embeddings=embeddings)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke(
        {"id": "rv-secret", "inputs": "list orders", "outputs": "SELECT * FROM raw.o"}, config, context=context
    )
    graph.invoke(Command(resume={"action": "correct", "value": "fail"}), config, context=context)
    memory.align([feedback("keep", "SELECT 1 FROM raw.k", text="Keep me.")], model=StubChatModel())
    memory.refresh()
    assert [v["reason"] for v in memory.backend.versions()][1] == "review of rv-secret: correct"
    assert b"rv-secret" in all_bytes(memory)
    memory.forget(["rv-secret"], reason="privacy request for rv-secret")
    reasons = [v["reason"] for v in memory.backend.versions()]
    # version 1 aligned only the forgotten record: its reason (and author) go with it (issue 21)
    assert reasons[1] == "aligned records since forgotten"
    assert reasons[-1] == "privacy request for [forgotten record]"
    assert not any("rv-secret" in json.dumps(v) for v in memory.backend.versions())
    assert b"rv-secret" not in all_bytes(memory)
    assert memory.episodes.ids == {"keep"}


@pytest.mark.parametrize(
    ("judge", "message"),
    [
        ("a%00b", "U+0000"),
        ("a%0Ab", "U+000A"),
        ("a%E2%80%AEb", "U+202E"),
        ("%20%20", "is empty"),
        ("x" * (MAX_JUDGE_CHARS + 1), f"more than {MAX_JUDGE_CHARS}"),
        ("%FF", "not percent-encoded UTF-8"),
    ],
)
def test_invalid_judge_name_is_a_clear_error(postgres, embeddings, judge: str, message: str) -> None:
    import psycopg

    database = fresh_database(postgres[0])
    Memory.create(f"{database}?judge=existing", CATEGORICAL, embeddings=embeddings).backend.close()
    with psycopg.connect(database) as conn:
        before = conn.execute("SELECT name, version FROM memalign_judge ORDER BY name").fetchall()
    url = f"{database}?judge={judge}"
    for attempt in (
        lambda: Memory.create(url, CATEGORICAL, embeddings=embeddings),
        lambda: Memory.open(url, embeddings=embeddings),
        lambda: PostgresBackend(url),
    ):
        with pytest.raises(JudgeNameError, match="judge name") as exc:
            attempt()
        assert message in str(exc.value) and isinstance(exc.value, ValueError)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT name, version FROM memalign_judge ORDER BY name").fetchall() == before
    cli = subprocess.run(
        [sys.executable, "-m", "memalign_graph.cli", "principles", url], capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr and message in cli.stderr, cli.stderr


@pytest.mark.parametrize("backend_kind", ["postgres"])
def test_failed_write_says_memory_unchanged(memory: Memory, stub, monkeypatch) -> None:
    """A commit the server refuses half-way (disk full) rolls back, and the error names the current version."""
    import psycopg

    memory.align([feedback("a", "SELECT 1 FROM raw.a", text="No raw tables.")], model=stub)
    before = stored_state(memory)

    def disk_full(conn, vectorstore) -> None:
        conn.execute(
            "INSERT INTO memalign_episode_log (judge, version, id, record_hash, episode) "
            "VALUES (%s, 99, 'half', '', '{}')",
            (memory.backend.judge,),
        )
        raise psycopg.errors.DiskFull("could not extend file: No space left on device")

    monkeypatch.setattr(memory.backend, "_write_episodes", disk_full)
    with pytest.raises(MemoryWriteError, match="memory unchanged at version 1") as exc:
        memory.align([feedback("b", "SELECT 2 FROM raw.b", text="Name columns.")], model=stub)
    assert "No space left on device" in str(exc.value) and exc.value.version == 1
    assert stored_state(memory) == before and memory.version == 1 and "b" not in memory.episodes
    monkeypatch.undo()
    assert memory.align([feedback("b", "SELECT 2 FROM raw.b", text="Name columns.")], model=stub).version == 2
