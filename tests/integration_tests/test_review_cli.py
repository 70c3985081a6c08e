"""`memalign review` in a real subprocess: answer, stop half-way, start again, continue."""

import importlib.util
import json
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="embedded embedder not installed"),
    pytest.mark.location_string,
]


def memalign(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "memalign_graph.cli", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_review_corrects_stops_and_resumes(tmp_path, new_location):
    mem = new_location("mem")
    assert (
        memalign("init", str(mem), "--name", "sql", "--criterion", "House rules.", "--labels", "pass,fail").returncode
        == 0
    )
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "\n".join(
            json.dumps({"id": f"c{i}", "inputs": f"report {i}", "outputs": f"SELECT * FROM raw.t{i}"}) for i in range(3)
        )
        + "\n"
    )
    # First run: correct c0 (a bad value first: rejected, asked again), then the input ends during c1.
    first = memalign(
        "review",
        str(mem),
        str(cases),
        "--model",
        "stub",
        "--reviewer",
        "ana",
        stdin="c\nmaybe\n\nc\nfail\nUse the certified view, never raw tables.\n",
    )
    assert first.returncode == 130, first.stderr
    assert "answer rejected" in first.stderr and "Run the same command again" in first.stderr
    assert "memory version 1" in first.stdout and "case c1" in first.stdout
    versions = json.loads(memalign("principles", str(mem), "--json").stdout)
    assert versions["version"] == 1 and versions["author"] == "ana"

    # Second run, a new process: c0 is done, c1 is still pending (not judged again), c2 follows.
    second = memalign("review", str(mem), str(cases), "--model", "stub", stdin="s\na\n")
    assert second.returncode == 0, second.stderr
    assert "case c0" not in second.stdout and "case c1" in second.stdout and "case c2" in second.stdout
    assert "2 reviewed, 1 done before" in second.stdout
    assert json.loads(memalign("principles", str(mem), "--json").stdout)["version"] == 1  # skip/accept store nothing
