import sqlite3

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.errors import is_invalid_resume
from langgraph.types import Command
from pydantic import ValidationError

from memalign_graph import Context, Memory, build_batch_review_graph, build_review_graph
from memalign_graph.review import in_sample, is_unsure, needs_review, record_from_review
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, NUMERIC, location_of, value_from_principles

CASE = {"id": "q-1", "inputs": "List this week's orders", "outputs": "SELECT * FROM raw.orders WHERE week = 1"}


def judgment(value="pass", scores=None, precedent=None):
    return {
        "value": value,
        "rationale": "r",
        "principle_ids": [],
        "episode_ids": [],
        "precedent": precedent,
        "scores": scores,
        "model": "m",
        "usage": {},
        "attempts": 1,
    }


def cfg(thread="t"):
    return {"configurable": {"thread_id": thread}}


@pytest.fixture
def review_ctx(context):
    return Context(
        store=context.store,
        model=StubChatModel(responder=value_from_principles),
        embeddings=context.embeddings,
    )


def test_policies():
    sure, torn = judgment(scores={"pass": 0.9, "fail": 0.1}), judgment(scores={"pass": 0.55, "fail": 0.45})
    assert not is_unsure(sure, CATEGORICAL) and is_unsure(torn, CATEGORICAL)
    assert is_unsure(judgment(), CATEGORICAL)  # no scores: no evidence of certainty
    assert not is_unsure(judgment(scores={"pass": 0.5, "fail": 0.5}, precedent="e1"), CATEGORICAL)
    between = judgment(3, scores={"1": 0.0, "2": 0.0, "3": 0.5, "4": 0.5, "5": 0.0})
    assert is_unsure(between, NUMERIC)
    assert needs_review(sure, CATEGORICAL, CASE, "all") and not needs_review(torn, CATEGORICAL, CASE, "none")
    cases = [{"inputs": f"q{i}", "outputs": "a"} for i in range(1000)]
    picked = [c for c in cases if in_sample(c, 0.1)]
    assert 60 < len(picked) < 140 and picked == [c for c in cases if in_sample(c, 0.1)]
    with pytest.raises(ValueError, match="unknown review policy"):
        needs_review(sure, CATEGORICAL, CASE, "often")


def test_record_from_review():
    j = judgment("pass")
    assert record_from_review(CASE, j, {"action": "skip"}, store_accepted=True) is None
    assert record_from_review(CASE, j, {"action": "accept"}, store_accepted=False) is None
    accepted = record_from_review(CASE, j, {"action": "accept"}, store_accepted=True)
    assert accepted["value"] == "pass" and accepted["judge_value"] == "pass" and accepted["id"] == "q-1"
    fixed = record_from_review(
        {k: v for k, v in CASE.items() if k != "id"},
        j,
        {"action": "correct", "feedback": " Never use raw tables. "},
        store_accepted=False,
    )
    assert fixed["id"].startswith("case-") and fixed["feedback"] == "Never use raw tables." and "value" not in fixed


def test_interrupt_payload_and_correction_changes_memory(memory, review_ctx):
    graph = build_review_graph().compile(checkpointer=InMemorySaver())
    out = graph.invoke(CASE, cfg(), context=review_ctx)
    (pending,) = out["__interrupt__"]
    payload = pending.value
    assert payload["case"]["outputs"] == CASE["outputs"] and payload["judgment"]["value"] == "pass"
    assert payload["judge"]["values"] == ["pass", "fail"] and payload["principles"] == [] and payload["episodes"] == []
    assert pending.response_schema["properties"]["value"]["anyOf"][0]["enum"] == ["pass", "fail"]

    answer = {
        "action": "correct",
        "value": "fail",
        "feedback": "Never use raw tables; use the certified view.",
        "reviewer": "ana",
    }
    done = graph.invoke(Command(resume=answer), cfg(), context=review_ctx)
    assert done["review"] == answer and done["report"]["added"] == ["q-1"]
    assert done["judgment"]["value"] == "fail" and done["judgment"]["judge_value"] == "pass"  # the expert's word
    assert done["judgment"]["corrected_by"] == "ana" and "certified view" in done["judgment"]["rationale"]
    memory.refresh()
    assert memory.version == 1 and memory.episodes.get(["q-1"])[0]["value"] == "fail"
    assert memory.backend.versions()[-1]["author"] == "ana"
    assert [p["text"] for p in memory.principles] == ["Never use raw tables; use the certified view."]

    similar = {"id": "q-2", "inputs": "Orders of last week", "outputs": "SELECT id FROM raw.orders WHERE week = 2"}
    nxt = graph.invoke(similar, cfg("t2"), context=review_ctx)["__interrupt__"][0].value
    assert nxt["judgment"]["value"] == "fail"  # the next similar case is judged by the new principle
    assert nxt["episodes"][0]["id"] == "q-1" and nxt["principles"][0]["text"].startswith("Never use raw")


@pytest.mark.parametrize("answer, stored", [({"action": "accept"}, 0), ({"action": "skip"}, 0)])
def test_accept_and_skip_store_nothing_by_default(memory, review_ctx, answer, stored):
    graph = build_review_graph().compile(checkpointer=InMemorySaver())
    graph.invoke(CASE, cfg(), context=review_ctx)
    done = graph.invoke(Command(resume=answer), cfg(), context=review_ctx)
    assert done["review"] == answer and done["report"] is None
    memory.refresh()
    assert memory.version == 0 and len(memory.episodes) == stored


def test_accept_can_store_a_confirming_episode(memory, review_ctx):
    ctx = Context(**{**review_ctx.__dict__, "store_accepted": True})
    graph = build_review_graph().compile(checkpointer=InMemorySaver())
    graph.invoke(CASE, cfg(), context=ctx)
    done = graph.invoke(Command(resume={"action": "accept"}), cfg(), context=ctx)
    assert done["report"]["added"] == ["q-1"] and done["report"]["llm_calls"] == 0  # agreement: nothing to distill
    memory.refresh()
    assert memory.episodes.get(["q-1"])[0]["value"] == "pass"


@pytest.mark.parametrize(
    "bad",
    [
        {"action": "correct"},
        {"action": "correct", "value": "maybe"},
        {"action": "approve"},
        {"action": "accept", "x": 1},
    ],
)
def test_malformed_answer_is_rejected_and_interrupt_stays_open(memory, review_ctx, bad):
    graph = build_review_graph().compile(checkpointer=InMemorySaver())
    first = graph.invoke(CASE, cfg(), context=review_ctx)["__interrupt__"][0]
    with pytest.raises(ValidationError) as info:
        graph.invoke(Command(resume=bad), cfg(), context=review_ctx)
    assert is_invalid_resume(info.value)
    state = graph.get_state(cfg())
    assert state.next == ("collect_feedback",) and state.interrupts[0].id == first.id
    memory.refresh()
    assert memory.version == 0 and len(memory.episodes) == 0
    done = graph.invoke(Command(resume={"action": "correct", "value": "fail"}), cfg(), context=review_ctx)
    assert done["report"]["version"] == 1


def test_policy_none_and_unsure_skip_the_interrupt(memory, review_ctx):
    graph = build_review_graph().compile(checkpointer=InMemorySaver())
    ctx = Context(**{**review_ctx.__dict__, "review": "none"})
    out = graph.invoke(CASE, cfg(), context=ctx)
    assert "__interrupt__" not in out and out["judgment"]["value"] == "pass" and out.get("review") is None
    sure = StubChatModel()  # stub gives no scores → 'unsure' reviews it
    ctx = Context(**{**review_ctx.__dict__, "review": "unsure", "model": sure})
    assert "__interrupt__" in graph.invoke(CASE, cfg("u"), context=ctx)


def test_resume_after_restart_on_sqlite(tmp_path, memory, review_ctx):
    db = tmp_path / "checkpoints.sqlite"
    with sqlite3.connect(db, check_same_thread=False) as conn:
        graph = build_review_graph().compile(checkpointer=SqliteSaver(conn))
        assert "__interrupt__" in graph.invoke(CASE, cfg("persist"), context=review_ctx)
    conn.close()
    # A new process: new connection, new graph object, new Memory.
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        graph = build_review_graph().compile(checkpointer=SqliteSaver(conn))
        assert graph.get_state(cfg("persist")).next == ("collect_feedback",)
        done = graph.invoke(Command(resume={"action": "correct", "value": "fail"}), cfg("persist"), context=review_ctx)
    finally:
        conn.close()
    assert done["report"]["added"] == ["q-1"]
    assert Memory.open(location_of(memory), embeddings=review_ctx.embeddings).version == 1


def test_several_pending_reviews_resumed_one_by_one(memory, review_ctx):
    graph = build_batch_review_graph().compile(checkpointer=InMemorySaver())
    cases = [{"id": f"c{i}", "inputs": f"request {i}", "outputs": f"SELECT {i} FROM raw.t{i}"} for i in range(3)]
    out = graph.invoke({"cases": cases}, cfg("batch"), context=review_ctx)
    pending = {i.value["case"]["id"]: i.id for i in out["__interrupt__"]}
    assert set(pending) == {"c0", "c1", "c2"}

    out = graph.invoke(
        Command(resume={pending["c1"]: {"action": "correct", "value": "fail"}}), cfg("batch"), context=review_ctx
    )
    assert {i.value["case"]["id"] for i in out["__interrupt__"]} == {"c0", "c2"}
    memory.refresh()
    assert memory.episodes.ids == {"c1"}

    out = graph.invoke(
        Command(resume={pending["c0"]: {"action": "skip"}, pending["c2"]: {"action": "correct", "value": "fail"}}),
        cfg("batch"),
        context=review_ctx,
    )
    assert "__interrupt__" not in out
    by_id = {r["id"]: r for r in out["results"]}
    assert set(by_id) == {"c0", "c1", "c2"} and by_id["c0"]["review"] == {"action": "skip"}
    memory.refresh()
    assert memory.episodes.ids == {"c1", "c2"}
