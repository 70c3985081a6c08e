"""``Memory.as_evaluator()`` on every backend, sync and async, as LangSmith's loops call it; openevals-style scores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from langsmith.evaluation.evaluator import run_evaluator
from langsmith.schemas import Example, Run

from memalign_graph import JudgeSpec, Memory
from memalign_graph.backends.store import StoreBackend
from memalign_graph.evaluators import as_evaluator, boolean_scores
from tests.conftest import NUMERIC, PAIRWISE, feedback, new_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ls_run(question: str, answer: str) -> Run:
    rid = uuid.uuid4()
    return Run(
        id=rid,
        trace_id=rid,
        name="sql-agent",
        run_type="chain",
        start_time=T0,
        end_time=T0 + timedelta(seconds=1),
        inputs={"question": question},
        outputs={"answer": answer},
    )


def ls_example(question: str) -> Example:
    return Example(id=uuid.uuid4(), dataset_id=uuid.uuid4(), inputs={"question": question}, outputs=None)


@pytest.fixture
def aligned(memory, stub):
    """The expert failed one query; the stub model answers "pass" (the first label) to anything else."""
    memory.align([feedback("fb-1", "SELECT * FROM raw.payments", "fail", "Never use raw tables.")], model=stub)
    return memory


def check(seen, unseen) -> None:
    # The case the expert judged comes back with the expert's value (precedent), scored as openevals would.
    assert (seen.key, seen.value, seen.score) == ("sql-house-rules", "fail", False)
    assert seen.metadata["precedent"] == "fb-1"
    assert (unseen.value, unseen.score, unseen.comment) == ("pass", True, "stub judgment")
    assert unseen.metadata["precedent"] is None and unseen.metadata["model"] == "stub"


def test_memory_as_evaluator_in_langsmiths_loop_on_every_backend(aligned, stub):
    evaluator = run_evaluator(aligned.as_evaluator(model=stub))
    seen = evaluator.evaluate_run(ls_run("request fb-1", "SELECT * FROM raw.payments"), ls_example("request fb-1"))
    unseen = evaluator.evaluate_run(ls_run("weekly revenue", "SELECT total FROM mart.revenue"), ls_example("x"))
    check(seen, unseen)


async def test_memory_as_evaluator_under_aevaluate_on_every_backend(aligned, stub):
    """``aevaluate`` calls ``aevaluate_run``: a sync evaluator in a worker thread, an async one awaited."""
    for evaluator in (aligned.as_evaluator(model=stub), aligned.as_async_evaluator(model=stub)):
        wrapped = run_evaluator(evaluator)
        seen = await wrapped.aevaluate_run(ls_run("request fb-1", "SELECT * FROM raw.payments"), ls_example("q"))
        unseen = await wrapped.aevaluate_run(ls_run("weekly revenue", "SELECT total FROM mart.revenue"), None)
        check(seen, unseen)


async def test_async_evaluator_openevals_style(aligned, stub):
    evaluator = aligned.as_async_evaluator(model=stub, score_map={"pass": 1, "fail": 0})
    out = await evaluator(inputs="request fb-1", outputs="SELECT * FROM raw.payments")
    assert (out["value"], out["score"]) == ("fail", 0)
    with pytest.raises(ValueError, match="no outputs to judge"):
        await evaluator(inputs="q")


def test_a_judge_in_a_langgraph_store_reopened_from_its_store(embeddings, stub):
    """What the issue tried: a memory in a LangGraph store (location ``langgraph:c``), reopened and evaluated."""
    store = new_store()
    Memory.create(
        StoreBackend(store, "c"), JudgeSpec.categorical("c", "Correct?", ["yes", "no"]), embeddings=embeddings
    )
    memory = Memory.open(StoreBackend(store, "c"), embeddings=embeddings)
    assert memory.backend.location == "langgraph:c"
    out = memory.as_evaluator(model=stub)(inputs="2+2?", outputs="4")
    assert (out["key"], out["value"], out["score"]) == ("c", "yes", True)
    # A LangGraph store passed as the store itself names its judge "default".
    Memory.create(store, JudgeSpec.categorical("d", "Correct?", ["Correct", "Incorrect"]), embeddings=embeddings)
    out = as_evaluator(store, model=stub, embeddings=embeddings)(inputs="2+2?", outputs="4")
    assert (out["key"], out["value"], out["score"]) == ("d", "Correct", True)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["pass", "fail"], {"pass": True, "fail": False}),
        (["No", "Yes"], {"yes": True, "no": False}),
        (["TRUE", "false"], {"true": True, "false": False}),
        (["correct", "incorrect"], {"correct": True, "incorrect": False}),
        (["good", "bad", "ugly"], None),  # more than two labels: no obvious order
        (["cat", "dog"], None),
        (["pass", "no"], None),  # one of each pair is not a pair
    ],
)
def test_boolean_scores_only_for_labels_with_an_obvious_order(labels, expected):
    assert boolean_scores(JudgeSpec.categorical("j", "c", labels)) == expected


def test_score_without_a_score_map(tmp_path, embeddings, stub):
    for spec, value, score in (
        (JudgeSpec.categorical("topic", "Which topic?", ["billing", "tech"]), "billing", None),
        (NUMERIC, 1, 1),
    ):
        Memory.create(tmp_path / spec.name, spec, embeddings=embeddings)
        out = as_evaluator(tmp_path / spec.name, model=stub, embeddings=embeddings)(inputs="a", outputs="b")
        assert (out["value"], out["score"]) == (value, score), spec.name
    assert boolean_scores(PAIRWISE) is None and boolean_scores(NUMERIC) is None
