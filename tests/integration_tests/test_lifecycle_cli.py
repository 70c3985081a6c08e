"""`memalign forget` and `memalign principles` editing, versions, diff and rollback, through the CLI."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from memalign_graph.cli import app

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="embedded embedder not installed"),
    pytest.mark.location_string,
]
SECRET = "card 4111-1111-1111-1111"


def test_forget_principles_versions_rollback(tmp_path, new_location, all_bytes):
    runner = CliRunner()
    mem = new_location("mem")

    def run(*args):
        result = runner.invoke(app, [*map(str, args)])
        assert result.exit_code == 0, result.output
        return result.stdout

    run("init", mem, "--name", "sql", "--criterion", "House rules.", "--labels", "pass,fail")
    fb = tmp_path / "fb.jsonl"
    fb.write_text(
        json.dumps({"id": "a", "inputs": "q1", "outputs": "SELECT 1", "value": "fail", "feedback": "Use views."})
        + "\n"
        + json.dumps(
            {
                "id": "pii",
                "inputs": f"refund {SECRET}",
                "outputs": "ok",
                "value": "fail",
                "feedback": f"Never echo {SECRET}.",
            }
        )
        + "\n"
    )
    run("align", mem, fb, "--model", "stub")
    out = run("principles", mem, "--add", "Convert amounts to EUR.", "--author", "ana")
    assert "version 2" in out
    listing = json.loads(run("principles", mem, "--json"))
    pid = next(p["id"] for p in listing["principles"] if p["text"] == "Use views.")
    run("principles", mem, "--edit", pid, "Use certified views.")
    assert "ana" in run("principles", mem, "--versions")
    diff = json.loads(run("principles", mem, "--diff", 1, 3, "--json"))
    assert {c["new"] for c in diff["principles"]["changed"]} == {"Use certified views."}

    report = json.loads(run("forget", mem, "--record", "pii", "--reason", "privacy request", "--json"))
    assert report["episodes_removed"] == ["pii"] and len(report["principles_removed"]) == 1
    assert SECRET.encode() not in all_bytes(mem)

    rolled = json.loads(run("principles", mem, "--rollback", 1, "--json"))
    assert rolled["version"] == 5 and "pii" not in rolled["episodes_restored"]
    texts = [p["text"] for p in json.loads(run("principles", mem, "--json"))["principles"]]
    assert texts == ["Use views."]

    bad = runner.invoke(app, ["forget", str(mem), "--record", "nobody"])
    assert bad.exit_code == 2 and "nobody" in bad.output
