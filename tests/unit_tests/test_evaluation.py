import json

import pytest

from memalign_graph.evaluation import EvalConfig, markdown_table, run_eval, split, with_signal
from memalign_graph.loaders import load_dataset, load_llmbar, load_prometheus
from memalign_graph.metrics import ccc, cohen_kappa, confusion, exact_match
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, PAIRWISE, SHARED_DATA, feedback


def test_exact_match_by_hand():
    assert exact_match(["a", "b", "a", "a"], ["a", "b", "b", "a"]) == 0.75
    assert exact_match([], []) is None
    with pytest.raises(ValueError):
        exact_match(["a"], [])


def test_ccc_by_hand():
    # x = 1,2,3 ; y = 2,3,4: means 2 and 3, var 2/3 each, cov 2/3 -> 2*(2/3) / (2/3 + 2/3 + 1) = 4/7
    assert ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    assert ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert ccc([3, 3], [3, 3]) == 1.0 and ccc([3, 3], [2, 2]) == 0.0 and ccc([1], [1]) is None


def test_kappa_and_confusion_by_hand():
    expected = ["pass", "pass", "fail", "fail"]
    predicted = ["pass", "fail", "fail", "fail"]
    # po = 3/4; pe = P(e=pass)P(p=pass) + P(e=fail)P(p=fail) = .5*.25 + .5*.75 = .5 -> kappa = (.75-.5)/(1-.5) = .5
    assert cohen_kappa(predicted, expected, ["pass", "fail"]) == pytest.approx(0.5)
    assert confusion(predicted, expected, ["pass", "fail"]) == [[1, 1], [0, 2]]
    assert cohen_kappa(["a", "a"], ["a", "a"], ["a", "b"]) == 1.0


def test_split_is_seeded_and_disjoint():
    records = [feedback(f"r{i}", "x") for i in range(20)]
    train, test = split(records, 8, seed=3)
    again, _ = split(records, 8, seed=3)
    other, _ = split(records, 8, seed=4)
    assert [r["id"] for r in train] == [r["id"] for r in again] != [r["id"] for r in other]
    assert len(train) == 8 and len(test) == 12 and not {r["id"] for r in train} & {r["id"] for r in test}
    with pytest.raises(ValueError, match="no test case"):
        split(records, 20, seed=0)


def test_signals():
    record = feedback("r", "x", value="fail", text="Use views.")
    assert "feedback" not in with_signal(record, "value") and with_signal(record, "value")["value"] == "fail"
    assert "value" not in with_signal(record, "feedback")
    assert with_signal(feedback("r", "x"), "feedback") is None  # no text to learn from


def _run(tmp_path, ablations, embeddings, **kw):
    records = [feedback(f"r{i}", f"SELECT {i} FROM raw.t", text=f"Rule {i}: use views.") for i in range(12)]
    config = EvalConfig(
        train_size=6, steps=[0, 3, 6], runs=2, ablations=ablations, model=StubChatModel(), embeddings=embeddings, **kw
    )
    return run_eval(records, CATEGORICAL, config, tmp_path / "out", progress=False), records


def test_no_test_case_ever_enters_memory(tmp_path, embeddings):
    result, records = _run(tmp_path, ["both"], embeddings)
    for run in range(2):
        from memalign_graph.evaluation import split as split_again

        _, test = split_again(records, 6, seed=run)
        memory_dir = tmp_path / "out" / "memory" / f"run{run}-both-both"
        from memalign_graph import Memory

        memory = Memory.open(memory_dir, embeddings=embeddings)
        assert len(memory.episodes) == 6 and not memory.episodes.ids & {r["id"] for r in test}
        for checkpoint in memory.backend.versions():
            assert not set(checkpoint["records"]) & {r["id"] for r in test}


def test_ablation_switches_what_reaches_working_memory(tmp_path, embeddings):
    result, _ = _run(tmp_path, ["semantic", "episodic", "none", "both"], embeddings)
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    by = {a: [line for line in lines if line["ablation"] == a and line["step"] > 0] for a in ABL}
    assert by["semantic"] and all(line["episode_ids"] == [] for line in by["semantic"])
    assert any(line["principle_ids"] for line in by["semantic"])
    assert by["episodic"] and all(line["principle_ids"] == [] for line in by["episodic"])
    assert any(line["episode_ids"] for line in by["episodic"])
    assert all(line["principle_ids"] == [] and line["episode_ids"] == [] for line in by["none"])
    assert any(line["principle_ids"] for line in by["both"]) and any(line["episode_ids"] for line in by["both"])
    rows = {(r["ablation"], r["step"]): r for r in result["rows"]}
    assert rows[("none", 6)]["episodes"] == 0 and rows[("both", 6)]["episodes"] == 6
    assert rows[("both", 6)]["seen"]["n"] == 6 and rows[("both", 0)]["unseen"]["n"] == 6
    assert rows[("both", 6)]["runs"] == 2 and rows[("both", 6)]["llm_calls"] >= 1
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000
    header = (tmp_path / "out" / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("ablation,signal,step,runs,seen_mean")


ABL = ["semantic", "episodic", "none", "both"]


@pytest.mark.skipif(not (SHARED_DATA / "llmbar").is_dir(), reason="../shared/data not present")
def test_loaders_on_the_real_files():
    records, spec = load_llmbar(SHARED_DATA / "llmbar" / "LLMBar_Natural.json")
    assert len(records) == 100 and spec.kind == "pairwise" and {r["value"] for r in records} == {"A", "B"}
    assert isinstance(records[0]["outputs"], list) and len(records[0]["outputs"]) == 2
    records, spec = load_prometheus(SHARED_DATA / "prometheus" / "mt_bench_eval.json")
    assert len(records) == 320 and spec.kind == "numeric" and {r["value"] for r in records} <= {1, 2, 3, 4, 5}
    first = records[0]
    assert first["feedback"] and set(first["expectations"]) == {"reference_answer", "rubric"}
    assert "###" not in first["outputs"] and "limerick" in first["outputs"]
    again, _ = load_dataset(SHARED_DATA / "prometheus" / "mt_bench_eval.json")
    assert again == records


def test_loader_errors(tmp_path):
    bad = tmp_path / "bar.json"
    bad.write_text(json.dumps([{"input": "q", "output_1": "a", "output_2": "b", "label": 3}]))
    with pytest.raises(Exception, match="bar.json item 0: label 3"):
        load_dataset(bad)
    with pytest.raises(ValueError, match="give the judge kind"):
        load_dataset(tmp_path / "x.jsonl")


def _quoting(n: int) -> list[dict]:
    """Records labelled by whether the output repeats the inputs' words (the head's statistics see it, the stub not)."""
    records = []
    for i in range(n):
        words = f"alpha{i} beta{i} gamma{i} delta{i} epsilon{i}"
        quoted = i % 2 == 0
        records.append(
            {
                "id": f"q{i}",
                "inputs": f"Knowledge: {words}. Question: what?",
                "outputs": words if quoted else f"omega{i} sigma{i} kappa{i} theta{i} zeta{i}",
                "value": "pass" if quoted else "fail",
                "feedback": "Pass: quotes the knowledge." if quoted else "Fail: quotes something else.",
            }
        )
    return records


def test_calibration_ablation_is_both_plus_the_head_in_one_run(tmp_path, embeddings):
    """``calibration`` beside ``both``: one memory, ``both`` reports the model's values, ``calibration`` the head's."""
    records = _quoting(40)
    stub = StubChatModel()  # judges every case "pass": its agreement is the share of pass labels
    config = EvalConfig(
        train_size=20, steps=[0, 20], runs=1, ablations=["calibration", "both"], model=stub, embeddings=embeddings
    )
    result = run_eval(records, CATEGORICAL, config, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "memory").iterdir()) == ["run0-both-calibration"]
    rows = {(r["ablation"], r["step"]): r for r in result["rows"]}
    both, calibrated = rows[("both", 20)], rows[("calibration", 20)]
    _, test = split(records, 20, seed=0)
    passing = sum(r["value"] == "pass" for r in test) / len(test)
    assert both["unseen"]["mean"] == passing and both["gate_open"] is None and both["head_decided"] == 0
    # the gate's evidence is the model's own judgment made before each shard was aligned (the stub: 0.5)
    assert calibrated["gate_open"] == 1 and calibrated["head_decided"] == 1.0
    assert calibrated["unseen"]["mean"] >= 0.9 and calibrated["seen"]["mean"] >= 0.9
    assert rows[("calibration", 0)]["unseen"]["mean"] == rows[("both", 0)]["unseen"]["mean"] == passing
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    last = {(x["ablation"], x["id"]): x for x in lines if x["step"] == 20 and x["split"] == "unseen"}
    for (ablation, rid), line in last.items():
        twin = last[("both" if ablation == "calibration" else "calibration", rid)]
        assert line["model_value"] == twin["model_value"] == "pass"
    assert all(x["value"] == "pass" and x["calibration"] is None for (a, _), x in last.items() if a == "both")
    assert all(x["calibration"]["used"] for (a, _), x in last.items() if a == "calibration")
    table = markdown_table(result["rows"], result["metric"])
    assert "| calibration | both | 20 |" in table and "| 1/1 | 1.00 |" in table


def test_calibration_ablation_alone_and_pairwise_judges(tmp_path, embeddings):
    """``--ablation none,calibration`` runs two memories; a pairwise judge has no head, its rows are the model's."""
    records = [
        {"id": f"p{i}", "inputs": f"request {i}", "outputs": [f"short {i}", f"long answer {i}"], "value": "A"}
        for i in range(8)
    ]
    config = EvalConfig(
        train_size=4,
        steps=[0, 4],
        runs=1,
        ablations=["none", "calibration"],
        model=StubChatModel(),
        embeddings=embeddings,
    )
    result = run_eval(records, PAIRWISE, config, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "memory").iterdir()) == [
        "run0-both-calibration",
        "run0-both-none",
    ]
    rows = {(r["ablation"], r["step"]): r for r in result["rows"]}
    assert rows[("calibration", 4)]["head_decided"] == 0 and rows[("calibration", 4)]["gate_open"] is None  # no head
    with pytest.raises(ValueError, match="unknown ablation"):
        EvalConfig(ablations=["calibrated"]).validate()


def test_an_empty_memory_judges_each_case_once(tmp_path, embeddings):
    """Under ``none`` nothing changes between steps, so each train and test case is judged once, not per step."""
    stub = StubChatModel()
    records = [feedback(f"r{i}", f"SELECT {i} FROM raw.t") for i in range(12)]
    config = EvalConfig(train_size=6, steps=[0, 3, 6], runs=1, ablations=["none"], model=stub, embeddings=embeddings)
    result = run_eval(records, CATEGORICAL, config, tmp_path / "out", progress=False)
    assert stub.calls == 12
    rows = {r["step"]: r for r in result["rows"]}
    assert rows[6]["seen"]["n"] == 6 and rows[0]["unseen"]["mean"] == rows[6]["unseen"]["mean"]


def test_eval_command_needs_data_or_a_task():
    from typer.testing import CliRunner

    from memalign_graph.cli import app

    for args in (["eval"], ["eval", "x.jsonl", "--task", "halueval"], ["eval", "--task", "nope"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0
        assert "give either DATA or --task" in result.output or "unknown task 'nope'" in result.output
