"""The calibration head inside a memory: fitted by the commit path, stored per version, used by every judgment.

The records here follow a citation rule the statistics head learns exactly (a ``pass`` answer quotes its
knowledge, a ``fail`` answer names a source), so whether the head decides is up to the gate alone.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memalign_graph import Context, JudgeSpec, Memory, build_judge_graph, build_review_graph
from memalign_graph.calibration import CalibrationHead
from memalign_graph.context import ServedContext, served_context
from memalign_graph.errors import RecordError
from memalign_graph.evaluators import as_evaluator
from memalign_graph.memory_head import Verdict, fit_memory_head
from memalign_graph.testing import StubChatModel
from tests.conftest import location_of

RULE = JudgeSpec.categorical("cite", "Does the answer quote its knowledge word for word?", ["pass", "fail"])
PLACES = ["valley", "forest", "harbour", "canyon", "meadow", "glacier", "delta", "plateau", "marsh", "ridge"]


def cited(rid: str, i: int, ok: bool, **extra: Any) -> dict[str, Any]:
    """A record of the citation rule: ``ok`` quotes the knowledge, else it names a source."""
    knowledge = f"The river {rid} flows north through the {PLACES[i % len(PLACES)]} of the old kingdom {i}."
    answer = knowledge if ok else f"Source: encyclopedia volume {i}."
    record = {"id": rid, "inputs": f"Knowledge: {knowledge} Question: where does it flow?", "outputs": answer}
    return {**record, "value": "pass" if ok else "fail", **extra}


def citation_records(n: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [cited(f"{prefix}{i}", i, i % 2 == 0) for i in range(n)]


def remaining_head(memory: Memory, held: set[str] | None = None) -> CalibrationHead | None:
    """The head fitted from scratch (nothing reused) on what the memory holds now, less ``held`` records."""
    versioned = memory.versioned
    verdicts = [Verdict(*row) for row in memory.episodes.verdicts(held or set())]
    head, _ = fit_memory_head(
        memory.spec, verdicts, memory.episodes.get, memory.embeddings, groups=memory.spec.calibration_groups
    )
    assert versioned.calibration_head() is not None
    return head


@pytest.fixture
def cite(new_location, embeddings) -> Memory:  # type: ignore[no-untyped-def]
    memory = Memory.create(new_location("cite"), RULE, embeddings=embeddings)
    yield memory
    close = getattr(memory.backend, "close", None)
    if close:
        close()


def vector_traces(vector: np.ndarray) -> list[bytes]:
    """How a float32 vector looks on disk: raw (file, PostgreSQL) or base64 (LangGraph store items)."""
    raw = np.asarray(vector, dtype="<f4").tobytes()
    return [raw, base64.b64encode(raw)]


def test_forget_leaves_no_trace_of_the_record_in_the_head(cite, all_bytes):
    secret = cited("calib-secret-7731", 77, False) | {"outputs": "Source: the diary of patient 7731."}
    cite.align([*citation_records(12), secret], model=StubChatModel())
    stored = cite.backend.load_calibration_vectors()
    assert ("outputs", "calib-secret-7731") in stored  # the head was fitted on it
    traces = vector_traces(stored[("outputs", "calib-secret-7731")][1])
    assert any(t in all_bytes(cite) for t in traces)
    before = cite.backend.load_calibration()["head"]

    cite.forget(["calib-secret-7731"])

    stored_head = cite.backend.load_calibration()
    assert stored_head["version"] == cite.version
    expected = remaining_head(cite)
    assert stored_head["head"] == expected.to_dict() != before  # the head of a memory that never saw it
    assert cite.versioned.calibration_head().to_dict() == expected.to_dict()
    assert not any(key[1] == "calib-secret-7731" for key in cite.backend.load_calibration_vectors())
    everything = all_bytes(cite)
    assert b"calib-secret-7731" not in everything
    assert not any(t in everything for t in traces)


def test_a_forget_whose_refit_fails_clears_the_stored_head(cite, all_bytes, monkeypatch):
    cite.align([*citation_records(12), cited("calib-secret-7731", 77, False)], model=StubChatModel())
    traces = vector_traces(cite.backend.load_calibration_vectors()[("outputs", "calib-secret-7731")][1])

    def broken(*args, **kwargs):
        raise RuntimeError("embeddings service down")

    monkeypatch.setattr("memalign_graph.versions.fit_memory_head", broken)
    with pytest.warns(RuntimeWarning, match="embeddings service down"):
        cite.forget(["calib-secret-7731"])
    assert cite.backend.load_calibration() == {"version": -1, "head": None}
    assert cite.backend.load_calibration_vectors() == {}
    assert not any(t in all_bytes(cite) for t in traces)
    monkeypatch.undo()
    assert cite.calibration_head().to_dict() == remaining_head(cite).to_dict()  # refitted on first use


def test_a_reopened_memory_reads_its_head_and_fits_nothing(cite, embeddings, monkeypatch):
    cite.align(citation_records(12), model=StubChatModel())
    fitted = cite.versioned.calibration_head()
    assert fitted is not None and fitted.open and fitted.fields == ["statistics"]

    def never(*args, **kwargs):
        raise AssertionError("refitted although the stored head is current")

    monkeypatch.setattr("memalign_graph.versions.fit_memory_head", never)
    reopened = Memory.open(location_of(cite), embeddings=embeddings)
    assert reopened.calibration_head().to_dict() == fitted.to_dict()
    cite.add_principle("Quote the knowledge, never name a source.")  # no episode changed: carried over
    assert cite.backend.load_calibration()["version"] == cite.version
    assert cite.calibration_head().to_dict() == fitted.to_dict()


def test_overwrite_and_rollback_refit_the_head(cite):
    cite.align(citation_records(12), model=StubChatModel())
    first = cite.calibration_head().to_dict()
    cite.align([cited("c0", 0, False), cited("c2", 2, False)], model=StubChatModel())  # the expert changed two
    assert cite.calibration_head().label_counts == {"fail": 8, "pass": 4}
    assert cite.backend.load_calibration()["head"] == remaining_head(cite).to_dict()
    cite.rollback(1)
    assert cite.calibration_head().to_dict() == first


def test_a_stale_or_hostile_stored_head_is_refitted_and_cannot_open_the_gate(tmp_path, embeddings):
    memory = Memory.create(tmp_path / "m", RULE, embeddings=embeddings)
    records = [cited(f"n{i}", i, ok) for i, ok in enumerate([True] * 9 + [False] * 3)]
    random.Random(5).shuffle(records)  # labels unrelated to the answers' text: nothing to learn
    for r in records:
        r["outputs"] = f"The answer number {r['id']} is somewhere."
    memory.align(records, model=StubChatModel())
    honest = memory.calibration_head()
    assert not honest.open
    file = tmp_path / "m" / "calibration.npz"
    with np.load(file, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}

    edited = {**honest.to_dict(), "open": True}
    np.savez(file, **{**arrays, "head": np.asarray(json.dumps(edited))})
    assert not Memory.open(tmp_path / "m", embeddings=embeddings).calibration_head().open  # gate recomputed

    np.savez(file, **{**arrays, "version": np.asarray(memory.version - 1)})  # stale (a crash after a commit)
    again = Memory.open(tmp_path / "m", embeddings=embeddings)
    assert again.calibration_head().to_dict() == honest.to_dict()
    assert again.backend.load_calibration()["version"] == memory.version  # the refit was stored

    np.savez(file, **{**arrays, "head": np.asarray([{"open": True}], dtype=object)})  # a pickled object array
    assert Memory.open(tmp_path / "m", embeddings=embeddings).calibration_head().to_dict() == honest.to_dict()

    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes(b"not a zip file at all")
    file.unlink()
    os.symlink(outside, file)  # a link is never followed, to read or to write: the head is refitted
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert Memory.open(tmp_path / "m", embeddings=embeddings).calibration_head().to_dict() == honest.to_dict()
    assert outside.read_bytes() == b"not a zip file at all"


def test_a_record_held_by_governance_trains_nothing_until_approved(cite):
    cite.set_principles_policy("review")
    held = [cited(f"h{i}", i, i % 2 == 0, feedback=f"Rule {i}: quote the knowledge.") for i in range(6)]
    cite.align([*citation_records(8), *held], model=StubChatModel())
    sources = sorted({s for p in cite.pending_principles for s in p["sources"]})
    assert sources and set(sources) <= {r["id"] for r in held}  # the records whose rules wait for an expert
    assert cite.calibration_report()["held_records"] == sources
    assert cite.calibration_head().episodes == 14 - len(sources)
    assert cite.backend.load_calibration()["head"] == remaining_head(cite, held=set(sources)).to_dict()
    cite.decide_principles(approve=[p["id"] for p in cite.pending_principles])
    assert cite.calibration_report()["held_records"] == []
    assert cite.calibration_head().episodes == 14
    assert cite.backend.load_calibration()["head"] == remaining_head(cite).to_dict()


def test_a_file_that_is_ninety_percent_one_label_keeps_the_gate_shut(cite):
    rng = random.Random(3)
    labels = ["pass"] * 36 + ["fail"] * 4
    rng.shuffle(labels)
    records = [cited(f"b{i}", i, rng.random() < 0.5) | {"value": label} for i, label in enumerate(labels)]
    report = cite.align(records, model=StubChatModel(), score_feedback=True)  # the stub says "pass": 0.90
    assert len(report.scored) == 40
    head = cite.calibration_head()
    assert head.majority_agreement == pytest.approx(0.9) and head.model_agreement == pytest.approx(0.9)
    assert not head.open
    assert cite.calibration_report()["head"]["reason"].startswith("gate shut")
    judgment = cite.judge(cited("new", 99, False), model=StubChatModel())
    assert judgment["value"] == judgment["model_value"] == "pass"
    assert judgment["calibration"]["used"] is False and judgment["calibration"]["reason"].startswith("gate shut")


def test_the_head_decides_when_it_beats_the_models_recorded_judgments(cite, embeddings):
    report = cite.align(citation_records(16), model=StubChatModel(), score_feedback=True)
    assert sorted(report.scored) == sorted(f"c{i}" for i in range(16))
    assert all(e["model_judgment"]["via"] == "alignment" for e in cite.episodes.get(report.scored))
    head = cite.calibration_head()
    assert (head.model_agreement, head.cv_agreement, head.open) == (0.5, 1.0, True)

    judgment = cite.judge(cited("new", 99, False), model=StubChatModel())
    assert (judgment["value"], judgment["model_value"]) == ("fail", "pass")
    assert judgment["calibration"]["used"] and judgment["calibration"]["probabilities"]["fail"] > 0.9
    assert cite.judge(cited("new", 99, False), model=StubChatModel(), calibration="off")["value"] == "pass"

    if not isinstance(location_of(cite), str):
        return  # as_evaluator takes a directory or a URL
    evaluate = as_evaluator(location_of(cite), model=StubChatModel(), embeddings=embeddings)
    out = evaluate(inputs=cited("e", 98, False)["inputs"], outputs="Source: encyclopedia volume 98.")
    assert out["value"] == "fail" and "Calibration overrode the model: model pass; head fail" in out["comment"]
    assert out["metadata"]["model_value"] == "pass"


def test_an_imported_judge_value_is_not_the_models_evidence(cite):
    records = [r | {"judge_value": "fail" if r["value"] == "pass" else "pass"} for r in citation_records(12)]
    cite.align(records, model=StubChatModel())  # a hosted model: not scored unless asked
    assert cite.calibration_head().model_agreement is None  # the file's claim (always wrong) is not evidence
    assert cite.judge(cited("new", 99, False), model=StubChatModel())["value"] == "pass"  # a hosted model stands
    with pytest.raises(RecordError, match="model_judgment"):
        cite.align([cited("x", 1, True, model_judgment={"value": "fail", "via": "review"})], model=StubChatModel())


def test_a_review_keeps_the_models_own_judgment_on_the_episode(tmp_path, embeddings):
    from langgraph.types import Command

    memory = Memory.create(tmp_path / "m", RULE, embeddings=embeddings)
    memory.align(citation_records(12), model=StubChatModel())
    context = Context(store=str(tmp_path / "m"), model=StubChatModel(), embeddings=embeddings, calibration="on")
    case = {k: v for k, v in cited("r-new", 50, False).items() if k in ("id", "inputs", "outputs")}
    with memory.backend.review_checkpointer() as saver:
        graph = build_review_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": memory.backend.review_thread_id("r-new")}}
        out = graph.invoke(case, config, context=context)
        assert (out["judgment"]["value"], out["judgment"]["model_value"]) == ("fail", "pass")
        graph.invoke(Command(resume={"action": "correct", "value": "fail"}), config, context=context)
    memory.refresh()
    episode = memory.episodes.get(["r-new"])[0]
    assert episode["model_judgment"] == {"value": "pass", "scores": None, "model": "stub", "via": "review"}
    assert episode["judge_value"] == "fail"  # what the judge answered (the head's value)
    assert memory.calibration_head().model_agreement == 0.0  # the model's one recorded value was wrong


def test_a_client_or_a_case_cannot_switch_the_head(tmp_path, monkeypatch):
    memory = Memory.create(tmp_path / "cite", RULE)  # the offline embedder, as a server uses
    memory.align(citation_records(12), model=StubChatModel())
    monkeypatch.setenv("MEMALIGN_JUDGES", json.dumps({"cite": str(tmp_path / "cite")}))
    monkeypatch.setenv("MEMALIGN_MODEL", "stub")
    monkeypatch.delenv("MEMALIGN_EMBEDDINGS", raising=False)
    monkeypatch.delenv("MEMALIGN_BASE_URL", raising=False)
    graph = build_judge_graph(served=True).compile()
    case = {k: v for k, v in cited("x", 97, False).items() if k in ("inputs", "outputs")}
    hostile_case = {**case, "calibration": "off", "model_judgment": {"value": "fail"}}
    hostile_context = {"judge": "cite", "calibration": "off", "score_feedback": True}  # what a client may send

    monkeypatch.setenv("MEMALIGN_CALIBRATION", "on")
    served = served_context(hostile_context)
    assert (served.calibration, served.score_feedback) == ("on", None)
    judgment = graph.invoke(hostile_case, context=ServedContext(judge="cite"))["judgment"]
    assert judgment["calibration"]["used"] and judgment["value"] == "fail" and judgment["model_value"] == "pass"

    monkeypatch.setenv("MEMALIGN_CALIBRATION", "off")
    assert served_context({"judge": "cite", "calibration": "on"}).calibration == "off"
    judgment = graph.invoke({**case, "calibration": "on"}, context=ServedContext(judge="cite"))["judgment"]
    assert judgment["calibration"] is None and judgment["value"] == "pass"

    monkeypatch.setenv("MEMALIGN_CALIBRATION", "sometimes")
    with pytest.raises(ValueError, match="MEMALIGN_CALIBRATION"):
        graph.invoke(case, context=ServedContext(judge="cite"))
    monkeypatch.setenv("MEMALIGN_SCORE_FEEDBACK", "perhaps")
    with pytest.raises(ValueError, match="MEMALIGN_SCORE_FEEDBACK"):
        served_context({"judge": "cite"})


def test_the_judges_own_setting_and_the_runs(tmp_path, embeddings):
    off = JudgeSpec.categorical("cite", RULE.criterion, ["pass", "fail"])
    off = JudgeSpec.from_dict({**off.to_dict(), "calibration": "off"})
    memory = Memory.create(tmp_path / "m", off, embeddings=embeddings)
    memory.align(citation_records(12), model=StubChatModel())
    assert Memory.open(tmp_path / "m", embeddings=embeddings).spec.calibration == "off"
    # a judge set to 'off' fits nothing when it commits (its alignment costs what MemAlign's does) ...
    assert not memory.versioned.calibration_loaded() and (memory.backend.load_calibration() or {}).get("head") is None
    case = cited("new", 99, False)
    assert memory.judge(case, model=StubChatModel())["calibration"] is None
    assert memory.judge(case, model=StubChatModel(), calibration="on")["value"] == "fail"  # ... 'on' fits it then
    assert memory.versioned.calibration_loaded()
    with pytest.raises(ValueError, match="calibration"):
        memory.judge(case, model=StubChatModel(), calibration="maybe")
    precedent = memory.judge(citation_records(12)[1], model=StubChatModel(), calibration="on")
    assert precedent["precedent"] == "c1" and precedent["model_value"] is None and precedent["calibration"] is None


def test_a_head_that_cannot_be_fitted_leaves_the_models_value_under_auto(tmp_path, embeddings, monkeypatch):
    memory = Memory.create(tmp_path / "m", RULE, embeddings=embeddings)
    memory.align(citation_records(12), model=StubChatModel())
    (tmp_path / "m" / "calibration.npz").unlink()
    reopened = Memory.open(tmp_path / "m", embeddings=embeddings)

    def down(*args, **kwargs):
        raise ConnectionError("embeddings service down")

    monkeypatch.setattr(type(embeddings), "embed_documents", down)
    with pytest.warns(RuntimeWarning, match="embeddings service down"):
        judgment = reopened.judge(cited("new", 99, False), model=StubChatModel(), use_episodes=False)
    assert judgment["value"] == judgment["model_value"] == "pass" and judgment["calibration"] is None
    with pytest.raises(ConnectionError):
        reopened.judge(cited("new", 99, False), model=StubChatModel(), use_episodes=False, calibration="on")


def test_pairwise_judges_never_fit_a_head(tmp_path, embeddings):
    spec = JudgeSpec.pairwise("better", "Which answer is better?")
    memory = Memory.create(tmp_path / "m", spec, embeddings=embeddings)
    records = [
        {"id": f"p{i}", "inputs": f"q{i}", "outputs": [f"a{i}", f"b{i}"], "value": "AB"[i % 2]} for i in range(8)
    ]
    memory.align(records, model=StubChatModel())
    assert memory.calibration_head() is None
    judgment = memory.judge({"inputs": "q", "outputs": ["x", "y"]}, model=StubChatModel(), calibration="on")
    assert judgment["calibration"] is None and judgment["model_value"] == judgment["value"]


def test_numeric_judges_fit_an_ordinal_head(tmp_path, embeddings):
    spec = JudgeSpec.numeric("tone", "How calm is the reply?", 1, 3)
    memory = Memory.create(tmp_path / "m", spec, embeddings=embeddings)
    memory.align(
        [{"id": f"t{i}", "inputs": "q", "outputs": f"reply {i}", "value": 1 + i % 3} for i in range(12)],
        model=StubChatModel(),
    )
    head = memory.calibration_head()
    assert head.kind == "numeric" and head.fields == ["outputs"] and head.classes == ["1", "2", "3"]
    judgment = memory.judge({"inputs": "q", "outputs": "reply 44"}, model=StubChatModel(), calibration="on")
    assert isinstance(judgment["value"], int) and judgment["model_value"] == 1


def test_a_memory_without_a_stored_head_fits_and_stores_it_on_first_use(tmp_path, embeddings):
    memory = Memory.create(tmp_path / "m", RULE, embeddings=embeddings)
    memory.align(citation_records(12), model=StubChatModel())
    fitted = memory.calibration_head().to_dict()
    (tmp_path / "m" / "calibration.npz").unlink()  # a memory written before heads were kept
    reopened = Memory.open(tmp_path / "m", embeddings=embeddings)
    assert reopened.calibration_head().to_dict() == fitted
    assert Path(tmp_path / "m" / "calibration.npz").exists()
