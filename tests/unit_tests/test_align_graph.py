"""The alignment graph runs MemAlign's steps as nodes.

What each step decided is in its node's update (a refused principle in ``distill``, a held or
merged one in ``govern``); the commit is one write, so a failure leaves the memory as it was;
and a writer that commits while the graph prepares its version is never lost.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from memalign_graph import Context, build_align_graph
from memalign_graph import alignment as alignment_module
from memalign_graph.episodic import EpisodicMemory
from memalign_graph.testing import StubChatModel, default_responder, distill_records
from memalign_graph.versions import shared_memory
from tests.conftest import feedback, location_of, stored_state

STEPS = ["episodes", "distill", "consolidate", "govern", "commit"]


def run(payload: dict[str, Any], context: Context) -> dict[str, list[dict[str, Any]]]:
    """Each node's updates, in order, from one run of the (library) alignment graph."""
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk in build_align_graph().compile().stream(payload, context=context, stream_mode="updates"):
        for name, update in chunk.items():
            seen[name].append(update)
    return seen


def test_the_steps_are_nodes_in_pipeline_order():
    graph = build_align_graph().compile().get_graph()
    assert list(graph.nodes) == ["__start__", *STEPS, "__end__"]
    edges = {(e.source, e.target, e.conditional) for e in graph.edges}
    assert edges == {
        ("__start__", "episodes", False),
        ("episodes", "distill", True),
        ("episodes", "__end__", True),  # nothing to change
        ("distill", "consolidate", False),
        ("consolidate", "govern", False),
        ("govern", "commit", False),
        ("commit", "episodes", True),  # another writer committed meanwhile: plan again
        ("commit", "__end__", True),
    }


def test_served_graph_streams_every_steps_result():
    # LangGraph Server streams a node's update only for the output keys (langgraph_api passes output_keys).
    served = build_align_graph(served=True).compile()
    assert {"plan", "distillation", "consolidation", "governance", "moved", "report"} <= set(served.output_channels)
    assert build_align_graph().compile().output_channels == ["report"]  # the library graph's output is unchanged


def test_a_refused_principle_is_in_the_distill_update(memory, context):
    records = [feedback("r1", "SELECT 1", text="<rule_1>."), feedback("r2", "SELECT 2", text="Never read raw tables.")]
    seen = run({"feedback": records}, context)
    assert list(seen) == STEPS
    (update,) = seen["distill"]
    distillation = update["distillation"]
    assert [(r["text"], r["sources"]) for r in distillation["refused"]] == [("<rule_1>.", ["r1"])]
    assert "placeholder" in distillation["refused"][0]["reason"]
    assert [c["text"] for c in distillation["candidates"]] == ["Never read raw tables."]
    report = seen["commit"][0]["report"]
    assert report["refused_principles"] == distillation["refused"] and report["version"] == 1
    memory.refresh()
    assert [p["text"] for p in memory.principles] == ["Never read raw tables."]


def test_a_held_principle_is_in_the_govern_update(memory, context):
    context.principles_policy = "review"
    seen = run({"feedback": [feedback("r1", "SELECT *", text="Never use SELECT star.")]}, context)
    (candidate,) = seen["distill"][0]["distillation"]["candidates"]
    governance = seen["govern"][0]["governance"]
    assert governance["proposed_principles"] == {candidate["id"]: "principles policy is review"}
    assert governance["new_principles"] == [] and governance["principles"] == []
    memory.refresh()
    assert memory.principles == [] and [p["id"] for p in memory.pending_principles] == [candidate["id"]]


def test_a_merged_principle_is_in_the_govern_update(memory, context, stub):
    memory.align([feedback("r1", "SELECT * FROM raw.t", text="Never read raw tables.")], model=stub)
    (existing,) = memory.principles
    seen = run({"feedback": [feedback("r2", "SELECT 1 FROM raw.u", text="Never read raw tables!")]}, context)
    (candidate,) = seen["distill"][0]["distillation"]["candidates"]
    governance = seen["govern"][0]["governance"]
    assert governance["merged_principles"] == {candidate["id"]: existing["id"]} and governance["new_principles"] == []
    memory.refresh()
    assert [(p["id"], p["sources"]) for p in memory.principles] == [(existing["id"], ["r1", "r2"])]


def test_nothing_to_change_ends_at_the_episodes_step(memory, context):
    records = [feedback("r1", "SELECT *", text="Never use SELECT star.")]
    run({"feedback": records}, context)
    before = stored_state(memory)
    seen = run({"feedback": records}, context)
    assert list(seen) == ["episodes"] and seen["episodes"][0]["report"]["unchanged"] == ["r1"]
    assert seen["episodes"][0]["report"]["version"] == 1 and stored_state(memory) == before


def _fail(*args: Any, **kwargs: Any) -> None:
    raise OSError("disk full")


@pytest.mark.parametrize("where", ["embedding", "index", "backend"])
def test_a_failed_commit_leaves_the_memory_as_it_was(memory, context, stub, monkeypatch, where):
    memory.align([feedback("r0", "SELECT 0", text="Name every column.")], model=stub)
    before = stored_state(memory)
    if where == "embedding":  # the commit step, before it takes the locks
        monkeypatch.setattr(alignment_module, "embed_episodes", _fail)
    elif where == "index":  # under the locks, while the new episodes go into a draft
        monkeypatch.setattr(EpisodicMemory, "upsert_with_vectors", _fail)
    else:  # the backend's one write
        monkeypatch.setattr(type(memory.backend), "commit", _fail)
    with pytest.raises(OSError, match="disk full"):
        run({"feedback": [feedback("r1", "SELECT *", text="Never use SELECT star.")]}, context)
    assert stored_state(memory) == before
    shared = shared_memory(location_of(memory), context.embeddings)
    assert shared.version == 1 and set(shared.records) == {"r0"} and shared.episodes.ids == {"r0"}


def _writer_during_distillation(memory: Any, times: int) -> StubChatModel:
    """A model that, during its first ``times`` distillations, lets another writer commit a principle."""
    calls = {"distill": 0}

    def respond(messages: list, kwargs: dict) -> str:
        if distill_records(messages) is not None:
            calls["distill"] += 1
            if calls["distill"] <= times:
                memory.add_principle(f"Hand-written rule {calls['distill']}.", author="other")
        return default_responder(messages, kwargs)

    return StubChatModel(responder=respond)


def test_a_writer_that_commits_meanwhile_is_kept_and_the_steps_run_again(memory, context):
    context.model = _writer_during_distillation(memory, times=1)
    seen = run({"feedback": [feedback("r1", "SELECT *", text="Never use SELECT star.")]}, context)
    assert [u.get("moved") for u in seen["commit"][:1]] == [{"from": 0, "to": 1, "passes": 1}]
    assert [(u["passes"], u["plan"]["version"]) for u in seen["episodes"]] == [(1, 0), (2, 1)]
    assert len(seen["distill"]) == len(seen["govern"]) == 2
    report = seen["commit"][1]["report"]
    assert report["version"] == 2 and report["added"] == ["r1"]
    memory.refresh()
    assert [p["text"] for p in memory.principles] == ["Hand-written rule 1.", "Never use SELECT star."]
    assert [v["author"] for v in memory.backend.versions()[1:]] == ["other", "expert"]
    assert set(memory.records) == {"r1"} and memory.version == 2


def test_a_memory_that_keeps_moving_fails_clearly_and_writes_nothing(memory, context):
    context.model = _writer_during_distillation(memory, times=99)
    with pytest.raises(RuntimeError, match=r"moved to version 3 while this alignment was prepared from version 2"):
        run({"feedback": [feedback("r1", "SELECT *", text="Never use SELECT star.")]}, context)
    memory.refresh()
    assert memory.version == 3 and memory.records == {}  # the other writer's three versions, none of this run
    assert [p["text"] for p in memory.principles] == [f"Hand-written rule {n}." for n in (1, 2, 3)]
