"""examples/vs_mlflow.py measures both sides on its stub server and prints every figure it measured."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "vs_mlflow.py"
TIMED = ["judge_overhead_ms_p50_0", "judge_overhead_ms_p50_n", "align_wall_s", "delete_s", "reload_judge_s"]
# An interpreter with mlflow and dspy for MLflow's side; default: this one, when it has them.
MLFLOW_PYTHON = os.environ.get("VS_MLFLOW_PYTHON") or (
    sys.executable if importlib.util.find_spec("dspy") and importlib.util.find_spec("mlflow") else None
)
COUNTED = ["judge_requests_n", "align_chat_calls", "align_embed_calls", "peak_rss_mib", "guidelines"]


def _script():
    spec = importlib.util.spec_from_file_location("vs_mlflow", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, sides: str, *extra: str) -> tuple[str, dict]:
    out = tmp_path / "vs.json"
    command = [sys.executable, str(SCRIPT), "--records", "20", "--latency-ms", "0", "--runs", "1"]
    command += ["--judgments", "3", "--sides", sides, "--out", str(out), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text())


def _check(stdout: str, figures: dict, column: int) -> None:
    for key in TIMED + COUNTED:
        assert figures[key] > 0, (key, figures)
    assert figures["judge_requests_n"] == 2  # the case's embedding and the judge's chat call
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in stdout.splitlines() if line.startswith("| ")
    }
    assert float(rows["align 20 records, wall (s)"][column]) > 0
    assert float(rows["chat calls to align 20 records"][column]) == figures["align_chat_calls"]


def test_mlflow_distillation_answer_names_each_record():
    """The stub answers MLflow's distillation prompt (its rendered record blocks) with one guideline per record."""
    prompt = (
        'Here are the user judgement examples:\n\n{\n  "id": 0,\n  \n  "inputs": "{\'question\': \'Q\'}",\n  \n'
        '  "result": "fail",\n  \n  "rationale": "Fail: "Paris" is not supported. It says Lyon.",\n  \n}\n\n'
        '{\n  "id": 1,\n  \n  "result": "pass",\n  \n  "rationale": "Pass: "Lyon" is supported.",\n  \n}\n\n'
        "Now, distill a list of guidelines from the above judgement examples"
    )
    answer = json.loads(_script().mlflow_guidelines(prompt))
    assert answer == {
        "guidelines": [
            {"guideline_text": 'Fail: "Paris" is not supported.', "source_trace_ids": [0]},
            {"guideline_text": 'Pass: "Lyon" is supported.', "source_trace_ids": [1]},
        ]
    }


def test_memalign_graph_side_measures_every_row(tmp_path):
    stdout, result = _run(tmp_path, "ours")
    assert set(result["median"]) == {"ours"}
    _check(stdout, result["median"]["ours"], column=2)
    assert "memalign-graph" in stdout and "20 records" in stdout


@pytest.mark.skipif(
    MLFLOW_PYTHON is None,
    reason="MLflow's side needs mlflow 3.17.x and dspy in this interpreter (pip install '.[compare]') "
    "or an interpreter that has them in VS_MLFLOW_PYTHON",
)
def test_both_sides_side_by_side(tmp_path):
    stdout, result = _run(tmp_path, "mlflow,ours", "--mlflow-python", MLFLOW_PYTHON)
    _check(stdout, result["median"]["mlflow"], column=1)
    _check(stdout, result["median"]["ours"], column=2)
