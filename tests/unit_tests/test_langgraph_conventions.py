"""The graphs as a LangGraph user writes them: one place for memory, pre-0.6 ``configurable``, interrupt kinds."""

from __future__ import annotations

import warnings

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command
from typing_extensions import TypedDict

from memalign_graph import Context, Memory, build_judge_graph, build_review_graph
from memalign_graph.context import MemAlignDeprecationWarning, memory_location
from tests.conftest import CATEGORICAL, feedback

CASE = {"id": "c-1", "inputs": "request r1", "outputs": "SELECT * FROM raw.payments"}


@pytest.fixture
def aligned(tmp_path, embeddings, stub):
    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=embeddings)
    memory.align([feedback("r1", "SELECT * FROM raw.payments", "fail", "Never use raw tables.")], model=stub)
    return tmp_path / "mem"


def test_options_under_configurable_are_read_with_a_deprecation_warning(
    aligned, embeddings, stub, tmp_path, monkeypatch
):
    """A pre-0.6 run: the judge uses the memory it names, not ./.memalign, and says how to write it now."""
    monkeypatch.chdir(tmp_path)  # no ./.memalign here: falling back to the default would fail
    config = {"configurable": {"store": str(aligned), "model": stub, "embeddings": embeddings, "thread_id": "t"}}
    with pytest.warns(MemAlignDeprecationWarning, match=r"keys embeddings, model, store .* context=Context"):
        judgment = build_judge_graph().compile().invoke(CASE, config)["judgment"]
    assert judgment["precedent"] == "r1" and judgment["value"] == "fail"
    # Through a parent graph (the judge as a node) the parent's configurable reaches it too.
    with pytest.warns(MemAlignDeprecationWarning):
        out = parent_graph().invoke({"case": CASE}, config)
    assert out["judgment"]["precedent"] == "r1"


def test_a_context_wins_over_configurable_and_nothing_is_said(aligned, embeddings, stub, tmp_path):
    config = {"configurable": {"store": str(tmp_path / "elsewhere"), "model": "other"}}
    context = Context(store=str(aligned), model=stub, embeddings=embeddings)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MemAlignDeprecationWarning)
        judgment = build_judge_graph().compile().invoke(CASE, config, context=context)["judgment"]
    assert judgment["precedent"] == "r1"


class Parent(TypedDict, total=False):
    case: dict
    judgment: dict


def parent_graph():
    judge = build_judge_graph().compile()
    builder = StateGraph(Parent)
    builder.add_node("judge", lambda state: {"judgment": judge.invoke(state["case"])["judgment"]})
    builder.add_edge(START, "judge")
    return builder.compile()


def test_memory_dir_still_works_and_says_to_use_store(aligned, embeddings, stub, monkeypatch):
    with pytest.warns(MemAlignDeprecationWarning, match=r"memory_dir=\.\.\.\) is deprecated: write Context\(store="):
        context = Context(memory_dir=str(aligned), model=stub, embeddings=embeddings)
    assert memory_location(context) == str(aligned)
    assert build_judge_graph().compile().invoke(CASE, context=context)["judgment"]["precedent"] == "r1"
    # One place says where memory lives: store, else the environment, else ./.memalign.
    monkeypatch.delenv("MEMALIGN_MEMORY_DIR", raising=False)
    monkeypatch.delenv("MEMALIGN_STORE", raising=False)
    assert memory_location(Context()) == ".memalign"
    monkeypatch.setenv("MEMALIGN_STORE", "/srv/judge")
    assert memory_location(Context()) == "/srv/judge"
    assert memory_location(Context(store="/explicit")) == "/explicit"


def test_every_interrupt_says_its_kind(aligned, embeddings, stub):
    context = Context(
        store=str(aligned), model=stub, embeddings=embeddings, principles_policy="review", precedent="off"
    )
    graph = build_review_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "kinds"}}
    (review,) = graph.invoke({**CASE, "id": "c-2"}, config, context=context)["__interrupt__"]
    assert review.value["kind"] == "review"
    answer = {"action": "correct", "value": "fail", "feedback": "Name the columns."}
    (principles,) = graph.invoke(Command(resume=answer), config, context=context)["__interrupt__"]
    assert principles.value["kind"] == "principles"
