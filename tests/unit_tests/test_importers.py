"""Feedback in from MLflow traces and LangSmith exports; the aligned judge out as a LangSmith/openevals evaluator.

The MLflow tests write real traces and human assessments into a local SQLite tracking
store with mlflow's own API (``mlflow.trace``, ``mlflow.log_feedback``,
``mlflow.override_feedback``); the LangSmith tests build the SDK's ``Run`` / ``Feedback``
objects and serialise them as the SDK does.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langsmith.evaluation.evaluator import run_evaluator
from langsmith.schemas import Example, Feedback, Run
from typer.testing import CliRunner

import memalign_graph.versions as memory_module
from memalign_graph import Memory
from memalign_graph.cli import app
from memalign_graph.errors import RecordError
from memalign_graph.evaluators import as_evaluator
from memalign_graph.importers import (
    from_langsmith,
    from_langsmith_project,
    from_mlflow,
    langsmith_records,
    parse_value_map,
    record_key,
)
from memalign_graph.spec import parse_record
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, NUMERIC, PAIRWISE, location_of

for _key, _value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "MLFLOW_MODEL_CATALOG_URI": "",
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
}.items():
    os.environ.setdefault(_key, _value)

QA = CATEGORICAL.__class__.categorical("correct", "Is the answer correct?", ["pass", "fail"])


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def emb(monkeypatch) -> DeterministicFakeEmbedding:
    """Fake embeddings, also for the CLI (which resolves embeddings by name)."""
    emb = DeterministicFakeEmbedding(size=32)
    monkeypatch.setattr(memory_module, "resolve_embeddings", lambda embeddings=None: emb)
    return emb


# --- MLflow ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> dict:
    """A SQLite tracking store with traces and assessments, written through mlflow's public API.

    Experiment ``qa``:
      * ``disputed``: ana says fail, then bob says pass, then carl says fail (newest: fail; majority: fail),
        and an LLM judge said pass.
      * ``changed``: ana says fail, then bob says pass (a 1-1 tie: both rules give bob's pass).
      * ``thumbs``: ana gives ``True`` (a yes/no value that needs a value map).
      * ``overridden``: ana says pass, then overrides it with fail: the overridden one is ignored.
      * ``silent``: no assessment.
      * ``tone-only``: human feedback under another name only.
    Experiment ``other``: one trace with human feedback (excluded by ``--experiment qa``).
    """
    mlflow = pytest.importorskip("mlflow")
    from mlflow.entities import AssessmentSource

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)

    @mlflow.trace
    def answer(question: str) -> str:
        return {"2+2?": "5", "Capital of France?": "Paris", "3*3?": "9", "Largest ocean?": "Atlantic"}.get(
            question, "I do not know"
        )

    def human(who: str):
        return AssessmentSource(source_type="HUMAN", source_id=who)

    def traced(question: str) -> str:
        answer(question)
        return mlflow.get_last_active_trace_id()

    def feedback(trace_id, value, rationale, who, name="correct", source=None):
        time.sleep(0.005)  # distinct update times
        return mlflow.log_feedback(
            trace_id=trace_id, name=name, value=value, rationale=rationale, source=source or human(who)
        )

    try:
        mlflow.set_experiment("qa")
        ids = {
            "disputed": traced("2+2?"),
            "changed": traced("Largest ocean?"),
            "thumbs": traced("Capital of France?"),
            "overridden": traced("3*3?"),
            "silent": traced("Who are you?"),
            "tone-only": traced("Say hi"),
        }
        feedback(ids["disputed"], "pass", "Looks right.", "", source=AssessmentSource(source_type="LLM_JUDGE"))
        feedback(ids["disputed"], "fail", "2+2 is 4, not 5.", "ana")
        feedback(ids["disputed"], "pass", "Fine by me.", "bob")
        feedback(ids["disputed"], "fail", "Wrong sum: 4.", "carl")
        feedback(ids["changed"], "fail", "The Pacific is larger.", "ana")
        feedback(ids["changed"], "pass", "Accepted for this quiz.", "bob")
        feedback(ids["thumbs"], True, "Correct capital.", "ana")
        first = feedback(ids["overridden"], "pass", "ok", "ana")
        time.sleep(0.005)
        mlflow.override_feedback(
            trace_id=ids["overridden"],
            assessment_id=first.assessment_id,
            value="fail",
            rationale="Show the working for arithmetic.",
            source=human("ana"),
        )
        feedback(ids["tone-only"], "fail", "Too curt.", "ana", name="tone")
        mlflow.set_experiment("other")
        ids["other"] = traced("Capital of France?")
        feedback(ids["other"], "fail", "other team", "zed")
    finally:
        mlflow.set_tracking_uri(previous)
    return {"uri": uri, "ids": ids}


VALUE_MAP = {"true": "pass", "false": "fail"}


def test_mlflow_traces_become_feedback_records(mlflow_store):
    ids = mlflow_store["ids"]
    result = from_mlflow(mlflow_store["uri"], QA, experiments=["qa"], feedback_name="correct", value_map=VALUE_MAP)
    by_id = {r["metadata"]["trace_id"]: r for r in result.records}
    assert set(by_id) == {ids["disputed"], ids["changed"], ids["thumbs"], ids["overridden"]}
    assert all(r["id"] == f"{r['metadata']['trace_id']}#correct" for r in result.records)
    disputed = by_id[ids["disputed"]]
    assert (disputed["inputs"], disputed["outputs"]) == ("2+2?", "5")  # request/response, single-key object unwrapped
    assert (disputed["value"], disputed["feedback"]) == ("fail", "Wrong sum: 4.")  # newest (carl)
    assert disputed["judge_value"] == "pass"  # the LLM judge's verdict, never the expert's
    assert disputed["metadata"]["experts"] == ["ana", "bob", "carl"]
    assert result.disagreements[f"{ids['disputed']}#correct"] == {"fail": 2, "pass": 1}
    assert (by_id[ids["changed"]]["value"], by_id[ids["changed"]]["feedback"]) == ("pass", "Accepted for this quiz.")
    assert by_id[ids["thumbs"]]["value"] == "pass" and "judge_value" not in by_id[ids["thumbs"]]
    overridden = by_id[ids["overridden"]]
    assert (overridden["value"], overridden["feedback"]) == ("fail", "Show the working for arithmetic.")
    assert len(overridden["metadata"]["feedback_ids"]) == 1  # the overridden assessment is not counted


def test_mlflow_majority_rule(mlflow_store):
    ids = mlflow_store["ids"]
    result = from_mlflow(mlflow_store["uri"], QA, experiments=["qa"], value_map=VALUE_MAP, resolve="majority")
    by_id = {r["metadata"]["trace_id"]: r for r in result.records}
    # 2 fail vs 1 pass: fail, with the newest fail's rationale
    assert (by_id[ids["disputed"]]["value"], by_id[ids["disputed"]]["feedback"]) == ("fail", "Wrong sum: 4.")
    # 1-1 tie: the value voted last wins
    assert by_id[ids["changed"]]["value"] == "pass"
    assert by_id[ids["disputed"]]["metadata"]["resolved_by"] == "majority"


def test_mlflow_names_what_it_cannot_take(mlflow_store):
    uri, ids = mlflow_store["uri"], mlflow_store["ids"]
    with pytest.raises(RecordError, match=rf"mlflow trace {ids['thumbs']} \(a-[0-9a-f]+\): value True is a yes/no"):
        from_mlflow(uri, QA, experiments=["qa"])
    with pytest.raises(RecordError, match=r"several names: 'correct' \(\d+\), 'tone' \(1\); choose one"):
        from_mlflow(uri, QA.__class__.categorical("other-judge", "x", ["pass", "fail"]), experiments=["qa"])
    with pytest.raises(ValueError, match="no experiment named 'nope'"):
        from_mlflow(uri, QA, experiments=["nope"])
    with pytest.raises(ValueError, match="pairwise"):
        from_mlflow(uri, PAIRWISE, experiments=["qa"])
    with pytest.raises(RecordError, match=r"mlflow trace tr-[0-9a-f]+ \(a-[0-9a-f]+\): value 'fail' is not an integer"):
        from_mlflow(uri, NUMERIC.__class__.numeric("correct", "x", 1, 5), experiments=["qa"], value_map=VALUE_MAP)
    everything = from_mlflow(uri, QA, value_map=VALUE_MAP)
    assert ids["other"] in {r["metadata"]["trace_id"] for r in everything.records}  # no --experiment: every experiment


def test_cli_align_from_mlflow_then_reimport_is_a_no_op(mlflow_store, tmp_path, emb):
    runner = CliRunner()
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    args = ["align", str(mem), "--from-mlflow", mlflow_store["uri"], "--experiment", "qa", "--model", "stub"]

    refused = runner.invoke(app, args)  # True without a value map: refused, nothing written
    before = all_files(mem)
    assert refused.exit_code == 2 and "yes/no" in refused.stderr and "--value-map" in refused.stderr
    assert all_files(mem) == before

    done = runner.invoke(app, [*args, "--value-map", "true=pass", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert sorted(report["added"]) == sorted(
        record_key(mlflow_store["ids"][k], "correct") for k in ("disputed", "changed", "thumbs", "overridden")
    )
    memory = Memory.open(mem, embeddings=emb)
    # The newest expert's words became the episodes' feedback (what distillation reads).
    feedback = {e.get("feedback") for e in memory.episodes.get(report["added"])}
    assert "Wrong sum: 4." in feedback and "Show the working for arithmetic." in feedback

    again = runner.invoke(app, [*args, "--value-map", "true=pass", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["unchanged"] == report["added"]

    table = runner.invoke(app, [*args, "--value-map", "true=pass", "--resolve", "majority"])
    assert table.exit_code == 0 and "imported 4 records from mlflow" in table.stderr
    assert re.search(r"unchanged\s+4\s", table.stdout), table.stdout


def test_mlflow_store_that_cannot_be_read(mlflow_store, tmp_path):
    with pytest.raises(ValueError, match=r"unreadable\.db: cannot read traces from MLflow"):
        (tmp_path / "unreadable.db").write_text("not a database")
        from_mlflow(f"sqlite:///{tmp_path / 'unreadable.db'}", QA)


# --- MLflow: ground truth, several assessment names, re-import ----------------------------------------------


def mlflow_log(uri: str, build) -> dict:
    """Run ``build(mlflow, human)`` against the store at ``uri`` in experiment ``qa``; returns what it returns."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.entities import AssessmentSource

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("qa")
        return build(mlflow, lambda who: AssessmentSource(source_type="HUMAN", source_id=who))
    finally:
        mlflow.set_tracking_uri(previous)


def mlflow_trace(mlflow, question: str, answer: str) -> str:
    @mlflow.trace(name="answer")
    def respond(question: str) -> str:
        return answer

    respond(question)
    return mlflow.get_last_active_trace_id()


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory) -> dict:
    """Traces with expectations (``mlflow.log_expectation``) and two feedback names.

    * ``sum``: feedback ``correct`` fail and ``helpful`` pass, expectation ``expected_answer`` "4".
    * ``capital``: expectation ``correct`` "pass" only (ground truth in the judge's labels), no feedback.
    * ``ocean``: expectation ``expected_answer`` "Pacific" only (ground truth outside the judge's labels),
      and an expectation ``correct`` "pass" that an LLM judge logged (a guess, not ground truth).
    * ``score``: expectation ``quality`` 4 (fits a 1-5 judge), and ``helpful`` fail.
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow-gt') / 'mlflow.db'}"

    def build(mlflow, human):
        ids = {
            "sum": mlflow_trace(mlflow, "2+2?", "5"),
            "capital": mlflow_trace(mlflow, "Capital of France?", "Paris"),
            "ocean": mlflow_trace(mlflow, "Largest ocean?", "Atlantic"),
            "score": mlflow_trace(mlflow, "Say hi", "hi"),
        }
        mlflow.log_feedback(
            trace_id=ids["sum"], name="correct", value="fail", rationale="4, not 5.", source=human("ana")
        )
        mlflow.log_feedback(trace_id=ids["sum"], name="helpful", value="pass", rationale="Short.", source=human("bob"))
        mlflow.log_expectation(trace_id=ids["sum"], name="expected_answer", value="4", source=human("ana"))
        mlflow.log_expectation(trace_id=ids["capital"], name="correct", value="pass", source=human("ana"))
        mlflow.log_expectation(trace_id=ids["ocean"], name="expected_answer", value="Pacific", source=human("ana"))
        judge = mlflow.entities.AssessmentSource(source_type="LLM_JUDGE", source_id="gpt")
        mlflow.log_expectation(trace_id=ids["ocean"], name="correct", value="pass", source=judge)
        mlflow.log_expectation(trace_id=ids["score"], name="quality", value=4, source=human("ana"))
        mlflow.log_feedback(trace_id=ids["score"], name="helpful", value="fail", rationale="Curt.", source=human("bob"))
        return ids

    return {"uri": uri, "ids": mlflow_log(uri, build)}


def test_mlflow_expectations_are_imported(ground_truth):
    uri, ids = ground_truth["uri"], ground_truth["ids"]
    result = from_mlflow(uri, QA, feedback_name="correct")
    by_trace = {r["metadata"]["trace_id"]: r for r in result.records}
    # ground truth in the judge's labels, on a trace without feedback: the expert's value
    assert by_trace[ids["capital"]]["value"] == "pass"
    assert by_trace[ids["capital"]]["metadata"]["assessment_types"] == ["expectation"]
    # ground truth outside them rides on the record of the feedback as its expectations
    assert by_trace[ids["sum"]]["value"] == "fail" and by_trace[ids["sum"]]["expectations"] == "4"
    assert set(by_trace) == {ids["sum"], ids["capital"]}

    numeric = from_mlflow(uri, NUMERIC.__class__.numeric("quality", "How good?", 1, 5))  # the judge's name
    assert [(r["metadata"]["trace_id"], r["value"]) for r in numeric.records] == [(ids["score"], 4)]


def test_mlflow_feedback_name_of_ground_truth_outside_the_labels_says_why(ground_truth, tmp_path, emb):
    uri, ids = ground_truth["uri"], ground_truth["ids"]
    result = from_mlflow(uri, QA, feedback_name="expected_answer")
    assert result.records == []
    assert "expectation 'expected_answer'" in result.skipped[ids["ocean"]]
    assert "'Pacific' is not one of: pass, fail" in result.skipped[ids["ocean"]]
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    before = all_files(mem)
    args = ["align", str(mem), "--from-mlflow", uri, "--feedback-name", "expected_answer", "--model", "stub"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "on any trace or run" not in refused.stderr
    assert "nothing to import under 'expected_answer'" in refused.stderr and "expectations" in refused.stderr
    assert all_files(mem) == before


def test_mlflow_second_assessment_name_does_not_replace_the_first(ground_truth, tmp_path, emb):
    uri, ids = ground_truth["uri"], ground_truth["ids"]
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    runner = CliRunner()

    def align(name: str) -> dict:
        result = runner.invoke(
            app, ["align", str(mem), "--from-mlflow", uri, "--feedback-name", name, "--json", "--model", "stub"]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    first = align("correct")
    second = align("helpful")
    assert second["replaced"] == [] and len(second["added"]) == 2
    assert not set(first["added"]) & set(second["added"])
    memory = Memory.open(mem, embeddings=emb)
    assert len(memory.episodes) == 4 and set(memory.records) == {*first["added"], *second["added"]}
    version = memory.version
    for name, report in (("correct", first), ("helpful", second), ("correct", first)):
        again = align(name)
        assert again["version"] == version and again["added"] == again["replaced"] == []
        assert sorted(again["unchanged"]) == sorted(report["added"])
    sum_correct = next(e for e in memory.episodes.get(first["added"]) if e["inputs"] == "2+2?")
    assert (sum_correct["value"], sum_correct["feedback"]) == ("fail", "4, not 5.")
    assert ids["sum"] in sum_correct["id"]


# --- hostile trace ids, assessment names and values ------------------------------------------------------

CRAFTED = ["tr-1", "tr-1#correct", "correct", "correct#x", "sha256:", "sha256:" + "0" * 32, "#", "", " ", "a b", "a  b"]
ids_and_names = st.one_of(
    st.sampled_from(CRAFTED),
    st.text(alphabet="tr-1#sha256:0 \n\x1b", max_size=12),  # few characters: collisions are tried often
    st.text(max_size=40),
    st.text(min_size=190, max_size=600),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ids_and_names, ids_and_names), min_size=2, max_size=12, unique=True))
def test_record_keys_are_distinct_and_valid_ids(pairs):
    keys = [record_key(source, name) for source, name in pairs]
    assert len(set(keys)) == len(pairs)
    for key in keys:
        parse_record({"id": key, "inputs": "q", "outputs": "a", "value": "pass"}, QA, where="t", require_id=True)


def test_record_keys_cannot_be_forged():
    hashed = record_key("tr-1", "x" * 5000)  # a name too long to read: its digest
    assert hashed.startswith("tr-1#sha256:") and len(hashed) < 80
    assert record_key("tr-1", hashed.split("#", 1)[1]) != hashed  # a name spelling that digest gets its own
    assert record_key("tr-1#correct", "x") != record_key("tr-1", "correct#x") == "tr-1#correct#x"
    assert record_key("tr-1", "cor\nrect") != record_key("tr-1", "cor rect") == "tr-1#cor rect"
    assert record_key("evil\n\x1b[2Jid", "correct").startswith("sha256:")  # an unsafe trace id: all digest


def rename_trace(uri: str, old: str, new: str) -> None:
    """Give a trace another id in a SQLite tracking store, as someone with write access to it could."""
    import sqlite3

    db = sqlite3.connect(uri.removeprefix("sqlite:///"))
    try:
        db.execute("PRAGMA foreign_keys = OFF")
        for table in ("trace_info", "trace_tags", "trace_request_metadata", "trace_metrics"):
            db.execute(f"UPDATE {table} SET request_id = ? WHERE request_id = ?", (new, old))
        for table in ("assessments", "spans", "span_metrics"):
            db.execute(f"UPDATE {table} SET trace_id = ? WHERE trace_id = ?", (new, old))
        db.commit()
    finally:
        db.close()


HOSTILE_NAMES = ["correct", "cor\nrect", "\x1b[31mred\x1b[0m", "x" * 5000, "correct#helpful", "sha256:" + "f" * 32]


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory) -> dict:
    """One trace with human feedback under each of :data:`HOSTILE_NAMES`; two traces whose ids were rewritten
    in the store to look like a record key and to hold terminal escapes, each with feedback ``correct``."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow-hostile') / 'mlflow.db'}"

    def build(mlflow, human):
        ids = {"plain": mlflow_trace(mlflow, "2+2?", "5")}
        for n, name in enumerate(HOSTILE_NAMES):
            value = "fail" if n % 2 else "pass"
            mlflow.log_feedback(trace_id=ids["plain"], name=name, value=value, rationale=f"why {n}", source=human("a"))
        for label in ("lookalike", "escapes"):
            ids[label] = mlflow_trace(mlflow, f"{label}?", "answer")
            mlflow.log_feedback(trace_id=ids[label], name="correct", value="fail", rationale=label, source=human("a"))
        return ids

    ids = mlflow_log(uri, build)
    for label, new in (("lookalike", f"{ids['plain']}#correct"), ("escapes", "tr-\n\x1b[2J\x1b]0;pwned\x07")):
        rename_trace(uri, ids[label], new)
        ids[label] = new
    return {"uri": uri, "ids": ids}


def test_hostile_names_and_trace_ids_never_share_an_episode(hostile_store, tmp_path, emb):
    uri, ids = hostile_store["uri"], hostile_store["ids"]
    memory = Memory.create(tmp_path / "mem", QA, embeddings=emb)
    for name in HOSTILE_NAMES:
        result = from_mlflow(uri, QA, feedback_name=name, ledger=memory.records)
        report = memory.align(result.records, model=StubChatModel())
        assert report.replaced == [] and len(report.added) == (3 if name == "correct" else 1), name
    assert len(memory.episodes) == len(HOSTILE_NAMES) + 2 == len(memory.records)
    texts = {e["feedback"] for e in memory.episodes.get(sorted(memory.records))}
    assert texts == {f"why {n}" for n in range(len(HOSTILE_NAMES))} | {"lookalike", "escapes"}
    # the trace whose id spells the plain trace's key for 'correct' does not take that key
    assert memory.episodes.get([f"{ids['plain']}#correct"])[0]["feedback"] == "why 0"


def test_hostile_names_reach_the_terminal_escaped(hostile_store, tmp_path, emb):
    uri = hostile_store["uri"]
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    for name in ("\x1b[31mred\x1b[0m", "correct"):
        result = CliRunner().invoke(
            app, ["align", str(mem), "--from-mlflow", uri, "--feedback-name", name, "--model", "stub"]
        )
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
    other = tmp_path / "other"
    Memory.create(other, QA.__class__.categorical("other-judge", "x", ["pass", "fail"]), embeddings=emb)
    several = CliRunner().invoke(app, ["align", str(other), "--from-mlflow", uri, "--model", "stub"])
    assert several.exit_code == 2 and "several names" in several.stderr and "\x1b" not in several.output
    assert "... (5000 chars)" in several.stderr  # the 5000-character name, cut


def test_hostile_values_are_refused_naming_the_trace(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def build(mlflow, human):
        tid = mlflow_trace(mlflow, "2+2?", "5")
        mlflow.log_feedback(trace_id=tid, name="huge", value="p" * 300_000, source=human("a"))
        mlflow.log_feedback(trace_id=tid, name="escape", value="pa\x1b[2Jss", source=human("a"))
        mlflow.log_expectation(trace_id=tid, name="correct", value="e" * 300_000, source=human("a"))
        mlflow.log_feedback(trace_id=tid, name="correct", value="pass", source=human("a"))
        return tid

    tid = mlflow_log(uri, build)
    with pytest.raises(
        RecordError, match=rf"mlflow trace {tid} \(a-\w+\): value 'ppp.*\(300002 chars\) is not"
    ) as huge:
        from_mlflow(uri, QA, feedback_name="huge")
    assert len(str(huge.value)) < 300
    with pytest.raises(RecordError, match=r"value 'pa\\x1b\[2Jss' is not one of") as escape:
        from_mlflow(uri, QA, feedback_name="escape")
    assert "\x1b" not in str(escape.value)
    with pytest.raises(RecordError, match=rf"mlflow trace {tid}.*'expectations' has 300000 characters"):
        from_mlflow(uri, QA, feedback_name="correct")


# --- records imported before records were keyed by assessment -------------------------------------------


@pytest.mark.parametrize("imported_last", ["correct", "helpful"])
def test_memory_keyed_by_trace_id_alone_is_not_duplicated_on_reimport(imported_last, ground_truth, tmp_path, emb):
    """Earlier imports keyed a record by its trace id alone, and wrote the last name imported there.

    Re-importing recognises each such record by its content: it keeps its id, nothing is duplicated,
    and the other name's records come in beside it under their own keys.
    """
    uri, ids = ground_truth["uri"], ground_truth["ids"]
    mem = tmp_path / "mem"
    memory = Memory.create(mem, QA, embeddings=emb)
    earlier: dict[str, dict] = {}  # trace id -> the record the earlier importer left there
    for name in sorted(("correct", "helpful"), key=lambda n: n == imported_last):
        for record in from_mlflow(uri, QA, feedback_name=name).records:
            if record["metadata"]["assessment_types"] == ["feedback"]:  # it read human feedback only
                fields = {k: record[k] for k in ("inputs", "outputs", "value", "feedback") if k in record}
                earlier[record["metadata"]["trace_id"]] = {"id": record["metadata"]["trace_id"], **fields}
    memory.align(list(earlier.values()), model=StubChatModel())
    assert set(memory.records) == {ids["sum"], ids["score"]}

    runner = CliRunner()
    reports = {}
    for name in ("correct", "helpful", "correct", "helpful"):
        args = ["align", str(mem), "--from-mlflow", uri, "--feedback-name", name, "--json", "--model", "stub"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        reports.setdefault(name, []).append(json.loads(result.stdout))
    kept = reports[imported_last][0]["import"]["legacy_ids"]
    assert ids["sum"] in kept
    final = reports["helpful"][0]["version"]
    for _, again in reports.values():  # the second round changes nothing
        assert again["added"] == again["replaced"] == [] and again["version"] == final

    memory = Memory.open(mem, embeddings=emb)
    episodes = memory.episodes.get(sorted(memory.records))
    verdicts = sorted((e["inputs"], e.get("value"), e.get("feedback")) for e in episodes)
    assert verdicts == sorted(
        [
            ("2+2?", "fail", "4, not 5."),  # sum, correct
            ("2+2?", "pass", "Short."),  # sum, helpful
            ("Capital of France?", "pass", None),  # capital, correct (ground truth only)
            ("Say hi", "fail", "Curt."),  # score, helpful
        ]
    )
    assert ids["sum"] in memory.records and ids["score"] in memory.records  # the old keys live on, not beside copies


# --- LangSmith ------------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ls_run(question: str, answer: str) -> Run:
    rid = uuid.uuid4()
    return Run(
        id=rid,
        trace_id=rid,
        name="qa-agent",
        run_type="chain",
        start_time=T0,
        end_time=T0 + timedelta(seconds=1),
        inputs={"question": question},
        outputs={"answer": answer},
    )


def ls_feedback(run: Run, key: str, *, minutes: int, source: str = "app", who: str = "ana", **fields) -> Feedback:
    return Feedback(
        id=uuid.uuid4(),
        run_id=run.id,
        trace_id=run.trace_id,
        key=key,
        created_at=T0 + timedelta(minutes=minutes),
        modified_at=T0 + timedelta(minutes=minutes),
        feedback_source={"type": source, "user_name": who},
        **fields,
    )


@pytest.fixture
def langsmith_export():
    sum_run, capital_run, orphan = ls_run("2+2?", "5"), ls_run("Capital of France?", "Paris"), ls_run("x", "y")
    feedback = [
        ls_feedback(sum_run, "correct", minutes=1, source="model", value="pass", comment="judge says fine"),
        ls_feedback(sum_run, "correct", minutes=2, value="pass", comment="ok?", who="bob"),
        ls_feedback(sum_run, "correct", minutes=3, value="fail", comment="2+2 is 4.", who="ana"),
        ls_feedback(capital_run, "correct", minutes=1, score=1, comment="Right capital.", source="api"),
        ls_feedback(orphan, "correct", minutes=1, value="fail", comment="run not exported"),
    ]
    return [sum_run, capital_run], feedback, {"sum": str(sum_run.id), "capital": str(capital_run.id)}


def test_langsmith_objects_become_feedback_records(langsmith_export):
    runs, feedback, ids = langsmith_export
    result = langsmith_records(runs, feedback, QA, value_map={"1": "pass", "0": "fail"})
    by_id = {r["metadata"]["run_id"]: r for r in result.records}
    assert list(by_id) == [ids["sum"], ids["capital"]]
    assert by_id[ids["sum"]] | {"metadata": None} == {
        "id": f"{ids['sum']}#correct",
        "inputs": "2+2?",
        "outputs": "5",
        "value": "fail",
        "feedback": "2+2 is 4.",
        "judge_value": "pass",
        "metadata": None,
    }
    assert by_id[ids["capital"]]["value"] == "pass"  # score 1 through the value map
    assert list(result.skipped.values()) == [
        f"feedback on {feedback[-1].run_id}, which is not in the langsmith data read"
    ]
    assert result.disagreements == {f"{ids['sum']}#correct": {"fail": 1, "pass": 1}}


@pytest.mark.parametrize("layout", ["jsonl-one-file", "json-runs-and-feedback", "two-json-lists"])
def test_langsmith_files_as_the_sdk_writes_them(layout, langsmith_export, tmp_path):
    runs, feedback, ids = langsmith_export
    dump = [json.loads(o.model_dump_json()) for o in [*runs, *feedback]]
    if layout == "jsonl-one-file":
        paths = [tmp_path / "export.jsonl"]
        paths[0].write_text("\n".join(json.dumps(o) for o in dump) + "\n")
    elif layout == "json-runs-and-feedback":
        paths = [tmp_path / "export.json"]
        paths[0].write_text(json.dumps({"runs": dump[:2], "feedback": dump[2:]}))
    else:
        paths = [tmp_path / "runs.json", tmp_path / "feedback.json"]
        paths[0].write_text(json.dumps(dump[:2]))
        paths[1].write_text(json.dumps(dump[2:]))
    result = from_langsmith(paths, QA, value_map={"1": "pass"})
    assert [(r["metadata"]["run_id"], r["value"]) for r in result.records] == [
        (ids["sum"], "fail"),
        (ids["capital"], "pass"),
    ]


def test_langsmith_bad_file_names_the_line(tmp_path, langsmith_export, emb):
    runs, _, _ = langsmith_export
    path = tmp_path / "export.jsonl"
    path.write_text(runs[0].model_dump_json() + "\n" + json.dumps({"key": "correct", "run_id": "not-a-uuid"}) + "\n")
    with pytest.raises(RecordError, match=rf"{path}:2: not a valid LangSmith Feedback"):
        from_langsmith(path, QA)
    path.write_text(runs[0].model_dump_json() + "\n{broken\n")
    with pytest.raises(RecordError, match=rf"{path}:2: not valid JSON"):
        from_langsmith(path, QA)
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    before = all_files(mem)
    result = CliRunner().invoke(app, ["align", str(mem), "--from-langsmith", str(path), "--model", "stub"])
    assert result.exit_code == 2 and f"{path}:2: not valid JSON" in result.stderr
    assert all_files(mem) == before


def test_cli_align_from_langsmith(langsmith_export, tmp_path, emb):
    runs, feedback, ids = langsmith_export
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(o.model_dump_json() for o in [*runs, *feedback]) + "\n")
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    args = ["align", str(mem), "--from-langsmith", str(path), "--value-map", "1=pass", "--model", "stub", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["added"]) == sorted(record_key(i, "correct") for i in ids.values())
    both = CliRunner().invoke(app, [*args, "--from-mlflow", "sqlite:///x.db"])
    assert both.exit_code == 2 and "one source" in both.stderr


def test_langsmith_correction_is_the_experts_verdict(langsmith_export):
    runs, _, ids = langsmith_export
    third = ls_run("Largest ocean?", "Atlantic")
    feedback = [
        # an evaluator said pass; a person corrected it in the UI, with an explanation
        ls_feedback(
            runs[0],
            "correct",
            minutes=1,
            source="model",
            value="pass",
            comment="judge says fine",
            correction={"value": "fail", "explanation": "2+2 is 4."},
        ),
        # an evaluator's score 1, corrected to 0 through update_feedback(correction={"score": 0})
        ls_feedback(
            runs[1], "correct", minutes=1, source="model", score=1, comment="model reasoning", correction={"score": 0}
        ),
        # a person's own feedback, corrected with a text that is a corrected output, not a label
        ls_feedback(
            third, "correct", minutes=1, value="fail", comment="Wrong ocean.", who="bob", correction="The Pacific Ocean"
        ),
    ]
    result = langsmith_records([*runs, third], feedback, QA, value_map={"1": "pass", "0": "fail"})
    by_run = {r["metadata"]["run_id"]: r for r in result.records}
    corrected = by_run[ids["sum"]]
    assert (corrected["value"], corrected["feedback"], corrected["judge_value"]) == ("fail", "2+2 is 4.", "pass")
    assert corrected["metadata"]["assessment_types"] == ["correction"]
    scored = by_run[ids["capital"]]
    assert (scored["value"], scored["judge_value"]) == ("fail", "pass")
    assert "feedback" not in scored  # the model's comment explains its own verdict, never the correction
    ocean = by_run[str(third.id)]
    assert (ocean["value"], ocean["feedback"], ocean["expectations"]) == ("fail", "Wrong ocean.", "The Pacific Ocean")
    assert ocean["metadata"]["experts"] == ["bob"] and len(ocean["metadata"]["feedback_ids"]) == 1


def test_langsmith_numeric_score_names_the_value_map(langsmith_export, tmp_path, emb):
    runs, feedback, _ = langsmith_export
    with pytest.raises(
        RecordError,
        match=r"value 1 is not one of: pass, fail; it is a score: map it, e\.g\. "
        r"--value-map 1=pass --value-map 0=fail \(value_map=\{'1': 'pass', '0': 'fail'\}\)",
    ):
        langsmith_records(runs, feedback, QA)
    half = [ls_feedback(runs[0], "quality", minutes=1, score=0.8)]
    with pytest.raises(
        RecordError, match=r"value 0\.8 is not an integer from 1 to 5; it is a score: .*--value-map 0\.8=5"
    ):
        langsmith_records(runs, half, NUMERIC.__class__.numeric("quality", "How good?", 1, 5))
    assert langsmith_records(runs, half, NUMERIC.__class__.numeric("quality", "x", 1, 5), value_map={"0.8": 4}).records
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(o.model_dump_json() for o in [*runs, *feedback]) + "\n")
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    refused = CliRunner().invoke(app, ["align", str(mem), "--from-langsmith", str(path), "--model", "stub"])
    assert refused.exit_code == 2 and "--value-map 1=pass --value-map 0=fail" in refused.stderr


@pytest.fixture
def langsmith_project():
    """A LangSmith project of 5 root runs and a child run, with feedback under two keys, served locally."""
    from tests.langsmith_stub import LangSmithStub

    questions = [
        ("2+2?", "5"),
        ("Capital of France?", "Paris"),
        ("3*3?", "9"),
        ("Largest ocean?", "Atlantic"),
        ("hi", "yo"),
    ]
    runs = [ls_run(q, a) for q, a in questions]
    child = ls_run("inner prompt", "inner output")
    child.parent_run_id, child.trace_id = runs[0].id, runs[0].id
    feedback = [
        ls_feedback(runs[0], "correct", minutes=1, value="fail", comment="2+2 is 4."),
        ls_feedback(runs[1], "correct", minutes=1, score=1, comment="Right.", source="api"),
        ls_feedback(
            runs[2],
            "correct",
            minutes=1,
            source="model",
            value="fail",
            comment="judge: wrong",
            correction={"value": "pass", "explanation": "3*3 is 9."},
        ),
        ls_feedback(runs[3], "correct", minutes=1, value="fail", comment="Pacific."),
        ls_feedback(runs[0], "helpful", minutes=2, value="pass", comment="Short answer.", who="bob"),
        ls_feedback(runs[4], "helpful", minutes=2, value="fail", comment="Rude.", who="bob"),
        ls_feedback(child, "correct", minutes=1, value="pass", comment="on a child run: not read"),
    ]
    stub = LangSmithStub(api_key="lsv2-test-key-0123", projects={"qa-prod": [*runs, child]}, feedback=feedback)
    return stub, [str(r.id) for r in runs]


def test_cli_align_from_a_langsmith_project(langsmith_project, tmp_path, emb, monkeypatch):
    from tests.langsmith_stub import serve

    stub, run_ids = langsmith_project
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    runner = CliRunner()
    base = ["align", str(mem), "--from-langsmith-project", "qa-prod", "--value-map", "1=pass", "--model", "stub"]
    with serve(stub):
        monkeypatch.setenv("LANGSMITH_ENDPOINT", stub.url)
        monkeypatch.setenv("LANGSMITH_API_KEY", stub.api_key)

        def align(*extra: str) -> dict:
            result = runner.invoke(app, [*base, "--json", *extra])
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout)

        first = align()
        assert sorted(first["added"]) == sorted(record_key(i, "correct") for i in run_ids[:4])
        assert first["import"]["skipped"] == {}  # the child run's feedback is not fetched at all
        second = align("--feedback-name", "helpful")
        assert second["replaced"] == [] and sorted(second["added"]) == sorted(
            record_key(i, "helpful") for i in (run_ids[0], run_ids[4])
        )
        again = align()
        assert again["version"] == second["version"] and sorted(again["unchanged"]) == sorted(first["added"])

        # What the client sent is what the API defines: nothing refused, paged through the cursor.
        assert stub.refused == []
        queries = [body for method, path, _, body in stub.requests if path == "/runs/query"]
        assert queries[0]["is_root"] is True and "cursor" not in queries[0] and queries[1]["cursor"] == "2"
        assert {path for _, path, _, _ in stub.requests} <= {"/sessions", "/runs/query", "/feedback"}
        keyed = [dict(query).get("key") for _, path, query, _ in stub.requests if path == "/feedback"]
        assert None in keyed and "helpful" in keyed  # --feedback-name narrows what is fetched

        memory = Memory.open(mem, embeddings=emb)
        episode = memory.episodes.get([record_key(run_ids[2], "correct")])[0]
        assert (episode["value"], episode["feedback"], episode["judge_value"]) == ("pass", "3*3 is 9.", "fail")

        missing = runner.invoke(app, [*base[:2], "--from-langsmith-project", "nope", "--model", "stub"])
        assert missing.exit_code == 2 and f"LangSmith at {stub.url}: no project named 'nope'" in missing.stderr
        monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2-wrong-secret-key")
        denied = runner.invoke(app, base)
        assert denied.exit_code == 2 and "refused the API key: set LANGSMITH_API_KEY" in denied.stderr
        assert "lsv2-wrong-secret-key" not in denied.output and "Traceback" not in denied.output
    assert Memory.open(mem, embeddings=emb).version == again["version"]


def test_langsmith_project_feedback_is_fetched_a_hundred_runs_a_call():
    from langsmith import Client

    from tests.langsmith_stub import LangSmithStub, serve

    runs = [ls_run(f"{i}+{i}?", str(2 * i)) for i in range(250)]
    feedback = [ls_feedback(run, "correct", minutes=1, value="pass") for run in runs]
    stub = LangSmithStub(api_key="k", projects={"big": runs}, feedback=feedback, page=100)
    with serve(stub):
        client = Client(api_url=stub.url, api_key="k", auto_batch_tracing=False)
        result = from_langsmith_project("big", QA, client=client, max_runs=None)
        assert len(result.records) == 250
        calls = {tuple(v for k, v in query if k == "run") for _, path, query, _ in stub.requests if path == "/feedback"}
        assert sorted(map(len, calls)) == [50, 100, 100] and stub.refused == []
        assert {run for call in calls for run in call} == {str(run.id) for run in runs}
        assert len(from_langsmith_project("big", QA, client=client, max_runs=30).records) == 30


def test_value_map_parsing():
    assert parse_value_map(["true=pass,false=fail", " 1 = pass "]) == {"true": "pass", "false": "fail", "1": "pass"}
    with pytest.raises(ValueError, match="'true': use FROM=TO"):
        parse_value_map(["true"])


# --- the judge as an evaluator ----------------------------------------------------------------------------


@pytest.fixture
def aligned(tmp_path, emb) -> Memory:
    memory = Memory.create(tmp_path / "mem", QA, embeddings=emb)
    memory.align(
        [{"id": "fb-1", "inputs": "2+2?", "outputs": "5", "value": "fail", "feedback": "Check arithmetic."}],
        model=StubChatModel(),
    )
    return memory


def test_evaluator_in_a_langsmith_evaluation_loop(aligned):
    """``run_evaluator`` is what ``langsmith.evaluate`` wraps a function in; ``evaluate_run`` is its per-row call."""
    evaluator = run_evaluator(aligned.as_evaluator(model=StubChatModel(), score_map={"pass": 1, "fail": 0}))
    dataset = [("2+2?", "5", None), ("Capital of France?", "Paris", {"answer": "Paris"})]
    results = []
    for question, answer, reference in dataset:
        run = ls_run(question, answer)
        example = Example(id=uuid.uuid4(), dataset_id=uuid.uuid4(), inputs={"question": question}, outputs=reference)
        results.append(evaluator.evaluate_run(run, example))
    seen, unseen = results
    # the case the expert judged: their value, through the expert-precedent rule, not the model's "pass"
    assert (seen.key, seen.value, seen.score) == ("correct", "fail", 0)
    assert seen.metadata["precedent"] == "fb-1"
    assert (unseen.value, unseen.score, unseen.comment) == ("pass", 1, "stub judgment")
    assert unseen.metadata["model"] == "stub" and unseen.metadata["precedent"] is None


def test_evaluator_openevals_style_uses_the_experts_precedent(aligned):
    evaluator = aligned.as_evaluator(model=StubChatModel(), score_map={"pass": 1, "fail": 0})
    seen = evaluator(inputs={"question": "2+2?"}, outputs={"answer": "5"})
    assert set(seen) == {"key", "score", "value", "comment", "metadata"}
    assert (seen["key"], seen["value"], seen["score"]) == ("correct", "fail", 0)
    assert seen["metadata"]["precedent"] == "fb-1" and "fb-1" in seen["metadata"]["episode_ids"]
    new = evaluator(inputs="3+3?", outputs="6", reference_outputs="6")
    assert (new["value"], new["score"], new["metadata"]["precedent"]) == ("pass", 1, None)
    with pytest.raises(ValueError, match="no outputs to judge"):
        evaluator(inputs="3+3?")


def test_evaluator_numeric_score_is_the_value(tmp_path, emb):
    memory = Memory.create(tmp_path / "tone", NUMERIC, embeddings=emb)
    out = as_evaluator(location_of(memory), model=StubChatModel(), embeddings=emb)(inputs="hi", outputs="hello")
    assert out["score"] == out["value"] == 1 and out["key"] == NUMERIC.name


def test_without_mlflow_the_error_names_the_extra(tmp_path, emb, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an install without the extra sees
    with pytest.raises(ImportError, match=r"pip install 'memalign-graph\[mlflow\]'"):
        from_mlflow("sqlite:///x.db", QA)
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    before = all_files(mem)
    result = CliRunner().invoke(app, ["align", str(mem), "--from-mlflow", "sqlite:///x.db", "--model", "stub"])
    assert result.exit_code == 2 and "memalign-graph[mlflow]" in result.stderr and "Traceback" not in result.output
    assert all_files(mem) == before


def test_options_that_do_not_go_with_the_source_are_refused(tmp_path, emb):
    mem = tmp_path / "mem"
    Memory.create(mem, QA, embeddings=emb)
    fb = tmp_path / "fb.jsonl"
    fb.write_text(json.dumps({"id": "a", "inputs": "q", "outputs": "a", "value": "pass"}) + "\n")
    for extra, message in (
        (["--experiment", "qa"], "--experiment goes with --from-mlflow"),
        (["--value-map", "true=pass"], "not a JSONL file"),
        (["--feedback-name", "correct"], "not a JSONL file"),
    ):
        result = CliRunner().invoke(app, ["align", str(mem), str(fb), "--model", "stub", *extra])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    nothing = CliRunner().invoke(app, ["align", str(mem), "--model", "stub"])
    assert nothing.exit_code == 2 and "give one source of feedback" in nothing.stderr
