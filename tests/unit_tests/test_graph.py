import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from memalign_graph import Context, RecordError, build_align_graph, build_judge_graph
from memalign_graph.testing import StubChatModel
from tests.conftest import feedback, value_from_principles

CASE = {"inputs": "List this week's orders", "outputs": "SELECT * FROM raw.orders WHERE week = 1"}


def test_nodes_in_order():
    graph = build_judge_graph().compile()
    assert list(graph.get_graph().nodes) == [
        "__start__",
        "retrieve_principles",
        "retrieve_episodes",
        "judge",
        "__end__",
    ]
    assert list(build_align_graph().compile().get_graph().nodes) == [
        "__start__",
        "episodes",
        "distill",
        "consolidate",
        "govern",
        "commit",
        "__end__",
    ]


def test_alignment_changes_the_judgment(memory, context, embeddings):
    model = StubChatModel(responder=value_from_principles)
    ctx = Context(store=context.store, model=model, embeddings=embeddings)
    judge = build_judge_graph().compile()
    before = judge.invoke(CASE, context=ctx)["judgment"]
    assert before["value"] == "pass" and before["principle_ids"] == [] and before["episode_ids"] == []

    report = (
        build_align_graph()
        .compile()
        .invoke(
            {
                "feedback": [
                    feedback("r1", "SELECT * FROM raw.orders", text="Never use raw tables; use the certified view.")
                ]
            },
            context=ctx,
        )["report"]
    )
    assert report["version"] == 1 and report["added"] == ["r1"]

    after = judge.invoke(CASE, context=ctx)["judgment"]
    assert after["value"] == "fail"
    memory.refresh()
    assert after["principle_ids"] == [memory.principles[0]["id"]]
    assert after["episode_ids"] == ["r1"] and after["precedent"] is None
    assert after["usage"]["total_tokens"] > 0 and after["model"] == "stub"


async def test_async_invoke_and_checkpointer(context):
    graph = build_judge_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    out = await graph.ainvoke({**CASE, "id": "case-7"}, config=config, context=context)
    assert out["judgment"]["value"] == "pass" and out["judgment"]["id"] == "case-7"
    state = graph.get_state(config)
    assert state.values["judgment"] == out["judgment"] and state.values["principles"] == []


def test_expert_precedent_and_switches(memory, stub, context, embeddings):
    memory.align([{"id": "r1", **CASE, "value": "fail", "feedback": "Raw tables are banned."}], model=stub)
    judge = build_judge_graph().compile()
    out = judge.invoke(CASE, context=context)["judgment"]
    assert out["value"] == "fail" and out["precedent"] == "r1" and out["model"] == "expert-precedent"
    assert "Raw tables are banned." in out["rationale"] and stub.calls == 1  # only the distillation call

    off = Context(store=context.store, model=stub, embeddings=embeddings, precedent="off")
    assert judge.invoke(CASE, context=off)["judgment"]["precedent"] is None
    only_semantic = Context(store=context.store, model=stub, embeddings=embeddings, use_episodes=False)
    out = judge.invoke(CASE, context=only_semantic)["judgment"]
    assert out["episode_ids"] == [] and len(out["principle_ids"]) == 1
    only_episodic = Context(store=context.store, model=stub, embeddings=embeddings, use_principles=False)
    out = judge.invoke(CASE, context=only_episodic)["judgment"]
    assert out["principle_ids"] == [] and out["episode_ids"] == ["r1"]


def test_bad_case_is_a_clear_error(context):
    with pytest.raises(RecordError, match="judge input: field 'outputs' is missing"):
        build_judge_graph().compile().invoke({"inputs": "q"}, context=context)


def test_context_from_environment_when_none_given(memory, monkeypatch, embeddings):
    store = getattr(memory.backend, "store", None)
    if store is None:
        monkeypatch.setenv("MEMALIGN_MEMORY_DIR", memory.backend.location)
    else:  # a judge in the LangGraph store the graph is compiled with
        monkeypatch.setenv("MEMALIGN_STORE", f"langgraph:{memory.backend.judge}")
    from memalign_graph import embeddings as embedders
    from memalign_graph import models

    monkeypatch.setattr(
        models, "_cached_chat_model", lambda spec, base_url: StubChatModel(model_name=f"from-env:{spec}")
    )
    monkeypatch.setattr(embedders, "_cached_embeddings", lambda spec: embeddings)
    monkeypatch.setenv("MEMALIGN_MODEL", "openai:gpt-4.1-mini")
    out = build_judge_graph().compile(store=store).invoke(CASE)["judgment"]
    assert out["model"] == "from-env:openai:gpt-4.1-mini"


class ParentState(TypedDict, total=False):
    request: str
    draft: str
    attempts: Annotated[list[str], operator.add]
    verdict: dict[str, Any]


@dataclass
class ParentContext:
    store: Any
    model: Any
    embeddings: Any
    user: str = "ops"


def test_judge_as_a_node_in_a_parent_graph(context):
    judge = build_judge_graph().compile()

    def write_sql(state: ParentState) -> dict:
        return {"draft": "SELECT * FROM raw.orders", "attempts": ["draft"]}

    def evaluate(state: ParentState, runtime) -> dict:
        # Map parent state to the judge's input; read back only the judgment.
        out = judge.invoke({"inputs": state["request"], "outputs": state["draft"]}, context=runtime.context)
        return {"verdict": out["judgment"]}

    def route(state: ParentState) -> str:
        return "finish" if state["verdict"]["value"] == "pass" else "write_sql"

    parent = StateGraph(ParentState, context_schema=ParentContext)
    parent.add_node("write_sql", write_sql)
    parent.add_node("evaluate", evaluate)
    parent.add_node("finish", lambda s: {})
    parent.add_edge(START, "write_sql")
    parent.add_edge("write_sql", "evaluate")
    parent.add_conditional_edges("evaluate", route, ["finish", "write_sql"])
    parent.add_edge("finish", END)
    app = parent.compile()
    ctx = ParentContext(store=context.store, model=context.model, embeddings=context.embeddings)
    result = app.invoke({"request": "List orders"}, context=ctx)
    assert result["verdict"]["value"] == "pass"
    assert result["attempts"] == ["draft"]  # not duplicated by the judge
    assert set(result) == {"request", "draft", "attempts", "verdict"}


def test_judge_graph_as_subgraph_node_with_parent_context(context):
    class Outer(TypedDict, total=False):
        inputs: str
        outputs: str
        judgment: dict

    outer = StateGraph(Outer, context_schema=ParentContext)
    outer.add_node("judge", build_judge_graph().compile())
    outer.add_edge(START, "judge")
    outer.add_edge("judge", END)
    ctx = ParentContext(store=context.store, model=context.model, embeddings=context.embeddings)
    result = outer.compile().invoke({"inputs": "q", "outputs": "a"}, context=ctx)
    assert result["judgment"]["value"] == "pass"
