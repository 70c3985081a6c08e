"""Review interrupts checkpointed in PostgreSQL with LangGraph's PostgresSaver / AsyncPostgresSaver.

Memory and checkpoints in one database; each resume uses a new connection, a new
graph object and a new Memory, as a new process (or another server replica) would.
"""

import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command

from memalign_graph import Context, Memory, build_batch_review_graph, build_review_graph
from memalign_graph.testing import StubChatModel
from tests.conftest import value_from_principles

pytestmark = pytest.mark.parametrize("backend_kind", ["postgres"])
CASE = {"id": "q-1", "inputs": "List this week's orders", "outputs": "SELECT * FROM raw.orders WHERE week = 1"}


@pytest.fixture
def ctx(memory, embeddings):
    return Context(
        store=memory.backend.url, model=StubChatModel(responder=value_from_principles), embeddings=embeddings
    )


def cfg(thread):
    return {"configurable": {"thread_id": thread}}


def test_review_interrupt_resumes_from_a_new_connection(memory, ctx):
    conninfo = memory.backend.conninfo
    with PostgresSaver.from_conn_string(conninfo) as saver:
        saver.setup()
        graph = build_review_graph().compile(checkpointer=saver)
        out = graph.invoke(CASE, cfg("pg-review"), context=ctx)
        assert out["__interrupt__"][0].value["case"]["id"] == "q-1"
    with PostgresSaver.from_conn_string(conninfo) as saver:
        graph = build_review_graph().compile(checkpointer=saver)
        assert graph.get_state(cfg("pg-review")).next == ("collect_feedback",)
        done = graph.invoke(
            Command(resume={"action": "correct", "value": "fail", "feedback": "Never use raw tables."}),
            cfg("pg-review"),
            context=ctx,
        )
    assert done["judgment"]["value"] == "fail" and done["report"]["added"] == ["q-1"]
    reopened = Memory.open(memory.backend.url, embeddings=ctx.embeddings)
    assert reopened.version == 1 and reopened.episodes.ids == {"q-1"}
    assert [p["text"] for p in reopened.principles] == ["Never use raw tables."]


async def test_async_batch_review_with_async_postgres_saver(memory, ctx):
    cases = [{"id": f"c{i}", "inputs": f"request {i}", "outputs": f"SELECT {i} FROM raw.t{i}"} for i in range(3)]
    async with AsyncPostgresSaver.from_conn_string(memory.backend.conninfo) as saver:
        await saver.setup()
        graph = build_batch_review_graph().compile(checkpointer=saver)
        out = await graph.ainvoke({"cases": cases}, cfg("pg-batch"), context=ctx)
        pending = {i.value["case"]["id"]: i.id for i in out["__interrupt__"]}
        assert set(pending) == {"c0", "c1", "c2"}
    async with AsyncPostgresSaver.from_conn_string(memory.backend.conninfo) as saver:
        graph = build_batch_review_graph().compile(checkpointer=saver)
        out = await graph.ainvoke(
            Command(resume={i: {"action": "correct", "value": "fail"} for i in pending.values()}),
            cfg("pg-batch"),
            context=ctx,
        )
    assert "__interrupt__" not in out and {r["id"] for r in out["results"]} == {"c0", "c1", "c2"}
    memory.refresh()
    assert memory.episodes.ids == {"c0", "c1", "c2"}


def test_backend_review_checkpointer_scopes_threads_by_judge(memory):
    assert memory.backend.review_thread_id("q-1") == f'review:["{memory.backend.judge}","q-1"]'
    with memory.backend.review_checkpointer() as saver:
        assert isinstance(saver, PostgresSaver)
        assert saver.get_tuple(cfg(memory.backend.review_thread_id("q-1"))) is None
