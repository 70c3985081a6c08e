import base64

import numpy as np
import pytest

from memalign_graph import Memory, build_review_graph
from tests.conftest import feedback, location_of

SECRET = "patient-7731 lives at 12 Elm Street"


@pytest.fixture
def aligned(memory, stub):
    memory.align(
        [
            feedback("r1", "SELECT * FROM raw.orders", text="Never use raw tables. Case one."),
            feedback("r2", "SELECT 2", text="Always filter cancelled orders."),
        ],
        model=stub,
    )
    memory.align(
        [
            {
                "id": "secret",
                "inputs": f"Query for {SECRET}",
                "outputs": f"SELECT '{SECRET}'",
                "value": "fail",
                "feedback": f"Never expose {SECRET}. Personal data.",
            }
        ],
        model=stub,
    )
    memory.align([feedback("r3", "SELECT 3", text="Always filter cancelled orders.")], model=stub)  # shares a principle
    return memory


def test_forget_removes_episode_and_principles_derived_only_from_it(aligned, stub):
    hand = aligned.add_principle("Prefer CTEs over nested subqueries.", author="ana")
    shared = next(p for p in aligned.principles if p["text"] == "Always filter cancelled orders.")
    report = aligned.forget(["secret", "r2"], author="dpo", reason="privacy request")
    assert sorted(report.episodes_removed) == ["r2", "secret"]
    texts = {p["text"]: p for p in aligned.principles}
    assert f"Never expose {SECRET}." not in texts  # its only source is gone
    assert (
        texts["Always filter cancelled orders."]["sources"] == ["r3"]
        and shared["id"] == texts["Always filter cancelled orders."]["id"]
    )  # remaining source keeps it
    assert hand["id"] in {p["id"] for p in aligned.principles}  # hand-written: never removed implicitly
    assert aligned.episodes.ids == {"r1", "r3"} and "secret" not in aligned.records
    assert aligned.backend.versions()[-1]["author"] == "dpo"


def test_forgotten_text_is_nowhere_in_storage(aligned, context, all_bytes):
    with aligned.backend.review_checkpointer() as saver:
        graph = build_review_graph().compile(checkpointer=saver)
        case = {"id": "secret", "inputs": f"Query for {SECRET}", "outputs": f"SELECT '{SECRET}' -- again"}
        config = {"configurable": {"thread_id": aligned.backend.review_thread_id("secret")}}
        graph.invoke(case, config, context=context)
        assert graph.get_state(config).next == ("collect_feedback",)
    assert SECRET.encode() in all_bytes(aligned)
    vector = aligned.backend.load_calibration_vectors()[("outputs", "secret")][1]  # the calibration head's sample
    traces = [np.asarray(vector, dtype="<f4").tobytes(), base64.b64encode(np.asarray(vector, dtype="<f4").tobytes())]
    assert any(t in all_bytes(aligned) for t in traces)
    aligned.forget(["secret"])
    assert SECRET.encode() not in all_bytes(aligned)
    assert b"patient-7731" not in all_bytes(aligned)
    assert not any(t in all_bytes(aligned) for t in traces)


def test_rollback_restores_principles_and_episodes_as_a_new_version(aligned, embeddings):
    v1 = aligned.backend.checkpoint(1)
    report = aligned.rollback(1, author="ana")
    assert report.version == 4 and sorted(report.episodes_removed) == ["r3", "secret"]
    assert aligned.principles == v1["principles"] and aligned.episodes.ids == {"r1", "r2"}
    again = aligned.rollback(3)  # a rollback is itself a version, and can be undone by another
    assert again.episodes_restored == ["r3", "secret"]
    reopened = Memory.open(location_of(aligned), embeddings=embeddings)
    assert reopened.episodes.ids == {"r1", "r2", "r3", "secret"} and reopened.version == 5
    hit = reopened.retrieve_episodes({"inputs": f"Query for {SECRET}", "outputs": f"SELECT '{SECRET}'"}, k=1)[0]
    assert hit["id"] == "secret" and hit["score"] == pytest.approx(1.0, abs=1e-4)


def test_rollback_after_forget_keeps_the_record_forgotten(aligned, all_bytes):
    aligned.forget(["secret"])
    report = aligned.rollback(3)  # version 3 had the secret record
    assert "secret" not in aligned.episodes.ids and "secret" not in aligned.records
    assert "secret" not in report.episodes_restored
    assert SECRET.encode() not in all_bytes(aligned)
    assert all("secret" not in p["sources"] for p in aligned.principles)


def test_overwrite_then_rollback_brings_the_old_content_back(memory, stub):
    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    memory.align([feedback("r1", "x", value="pass", text="Star is fine in audits.")], model=stub)
    assert memory.episodes.get(["r1"])[0]["value"] == "pass"
    memory.rollback(1)
    assert memory.episodes.get(["r1"])[0]["value"] == "fail"
    assert [p["text"] for p in memory.principles] == ["Never use SELECT star."]


def test_diff_and_hand_edits(aligned):
    pid = aligned.principles[0]["id"]
    aligned.edit_principle(pid, "Never query raw tables; use certified views.", author="ana")
    aligned.delete_principle(aligned.principles[1]["id"])
    added = aligned.add_principle("Convert amounts to EUR.")
    diff = aligned.diff(2, aligned.version)
    assert diff["principles"]["added"] == [{"id": added["id"], "text": "Convert amounts to EUR."}]
    assert len(diff["principles"]["removed"]) == 1
    changed = {c["id"]: c for c in diff["principles"]["changed"]}
    assert changed[pid] == {
        "id": pid,
        "old": "Never use raw tables.",
        "new": "Never query raw tables; use certified views.",
    }
    assert diff["episodes"] == {"added": ["r3"], "removed": [], "changed": []}
    edited = next(p for p in aligned.principles if p["id"] == pid)
    assert edited["history"][0]["text"] == "Never use raw tables."
    with pytest.raises(ValueError, match="repeats"):
        aligned.add_principle("convert amounts to EUR")
    with pytest.raises(KeyError):
        aligned.delete_principle("p-nope")
    with pytest.raises(KeyError, match="no record with id nobody"):
        aligned.forget(["nobody"])
    with pytest.raises(KeyError):
        aligned.rollback(99)


def test_versions_record_author_and_reason(aligned):
    aligned.forget(["r1"], author="dpo", reason="GDPR request 12")
    last = aligned.backend.versions()[-1]
    assert (last["author"], last["reason"]) == ("dpo", "GDPR request 12")
    assert aligned.backend.current_version() == last["version"]
