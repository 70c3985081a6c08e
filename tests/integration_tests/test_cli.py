"""The command line as a person meets it: tables and --json, partial judge failures, real diffs, fast help.

Runs through typer's ``CliRunner`` with the deterministic stub model and fake embeddings,
and in subprocesses where what is measured is the installed program's own start-up.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from typer.testing import CliRunner

import memalign_graph.cli.output as cli_output
import memalign_graph.nodes as nodes_module
import memalign_graph.versions as memory_module
from memalign_graph import Context, Memory, build_judge_graph
from memalign_graph.cli import app
from memalign_graph.errors import MemoryFormatError
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:\+00:00|Z)"


@pytest.fixture
def emb(monkeypatch) -> DeterministicFakeEmbedding:
    emb = DeterministicFakeEmbedding(size=32)
    monkeypatch.setattr(memory_module, "resolve_embeddings", lambda embeddings=None: emb)
    return emb


@pytest.fixture
def mem(tmp_path, emb) -> Path:
    Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=emb)
    return tmp_path / "mem"


@pytest.fixture
def wide(monkeypatch) -> None:
    """A wide terminal, so that long texts in table cells are not folded across lines."""
    monkeypatch.setattr(cli_output.console, "width", 240)


def invoke(*args, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_judge_output_keeps_every_success_and_lists_the_failures(mem, tmp_path, monkeypatch):
    def fail_on_bad_case(number, messages):
        return ValueError("provider refused the request") if "BAD-CASE" in messages[-1].text else None

    model = StubChatModel(faults=fail_on_bad_case)
    monkeypatch.setattr(nodes_module, "resolve_chat_model", lambda *a, **k: model)
    cases = write_jsonl(
        tmp_path / "cases.jsonl",
        [
            {"id": "c1", "inputs": "q1", "outputs": "SELECT 1"},
            {"id": "c2", "inputs": "BAD-CASE", "outputs": "SELECT 2"},
            {"id": "c3", "inputs": "q3", "outputs": "SELECT 3"},
        ],
    )
    out = tmp_path / "judgments.jsonl"
    out.write_text("old content\n")
    result = invoke("judge", mem, cases, "-o", out, "--model", "stub", code=1)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["c1", "c3"] and all(line["value"] == "pass" for line in lines)
    assert "1 of 3 case(s) could not be judged" in result.stderr and "c2" in result.stderr
    assert "provider refused the request" in result.stderr
    assert not list(tmp_path.glob(".judgments.jsonl.*"))  # no temporary file left behind

    to_stdout = invoke("judge", mem, cases, "--model", "stub", code=1)
    assert [json.loads(line)["id"] for line in to_stdout.stdout.splitlines()] == ["c1", "c3"]


def test_align_forget_tables_and_json(mem, tmp_path):
    feedback = write_jsonl(
        tmp_path / "fb.jsonl",
        [
            {"id": "a", "inputs": "q1", "outputs": "SELECT 1", "value": "fail", "feedback": "Use certified views."},
            {"id": "b", "inputs": "q2", "outputs": "SELECT 2", "value": "pass"},
        ],
    )
    table = invoke("align", mem, feedback, "--model", "stub").stdout
    assert re.search(r"new\s+2\s+a, b", table) and re.search(r"failed\s+0\s+-", table)
    assert "new principles" in table and "Use certified views." in table
    assert not table.lstrip().startswith("{")

    forgotten = invoke("forget", mem, "--record", "a").stdout
    assert "forgot 1 record(s): memory version 2" in forgotten
    assert re.search(r"episodes removed\s+1\s+a", forgotten) and re.search(r"principles removed\s+1\s+p-", forgotten)

    again = json.loads(invoke("align", mem, feedback, "--model", "stub", "--json").stdout)
    assert again["version"] == 3 and again["added"] == ["a"] and again["unchanged"] == ["b"]
    report = json.loads(invoke("forget", mem, "--record", "b", "--json").stdout)
    assert report["episodes_removed"] == ["b"] and report["version"] == 4


def test_diff_shows_only_real_changes(mem, tmp_path, wide):
    first = {"id": "a", "inputs": "q1", "outputs": "SELECT 1", "value": "fail", "feedback": "Use certified views."}
    invoke("align", mem, write_jsonl(tmp_path / "1.jsonl", [first]), "--model", "stub")  # v1
    same_lesson = {**first, "id": "b", "inputs": "q2"}  # distils to the same text: only the sources change
    invoke("align", mem, write_jsonl(tmp_path / "2.jsonl", [same_lesson]), "--model", "stub")  # v2
    pid = json.loads(invoke("principles", mem, "--json").stdout)["principles"][0]["id"]
    invoke("principles", mem, "--edit", pid, "Use the certified views only.")  # v3
    invoke("principles", mem, "--add", "Name every column.")  # v4

    sources_only = invoke("principles", mem, "--diff", 1, 2).stdout
    assert "no principle added, removed or reworded between versions 1 and 2" in sources_only
    assert "1 principle(s) kept their text and gained or lost sources" in sources_only
    assert "episodes: 1 added, 0 removed, 0 changed" in sources_only
    as_json = json.loads(invoke("principles", mem, "--diff", 1, 2, "--json").stdout)
    assert as_json["principles"] == {"added": [], "removed": [], "changed": []}
    assert as_json["principles_sources_changed"] == [pid]

    reworded = invoke("principles", mem, "--diff", 2, 4).stdout
    assert "~ changed" in reworded and "+ added" in reworded and "Name every column." in reworded
    assert "Use certified views." in reworded and "Use the certified views only." in reworded
    data = json.loads(invoke("principles", mem, "--diff", 2, 4, "--json").stdout)
    assert [c["new"] for c in data["principles"]["changed"]] == ["Use the certified views only."]
    assert [p["text"] for p in data["principles"]["added"]] == ["Name every column."]


def test_versions_show_full_timestamps(mem, tmp_path):
    invoke("principles", mem, "--add", "Name every column.", "--reason", "house rule 7")
    rows = json.loads(invoke("principles", mem, "--versions", "--json").stdout)
    assert [r["version"] for r in rows] == [0, 1] and all(re.fullmatch(ISO, r["created_at"]) for r in rows)
    table = invoke("principles", mem, "--versions").stdout  # 80 columns, as in a small terminal
    for row in rows:
        assert row["created_at"] in table  # whole: date, seconds and time zone, never cut or wrapped
    assert "house rule 7" in table


def test_text_from_experts_and_models_is_printed_as_is(mem, tmp_path, wide):
    """Rich markup in a principle, an id or a reason is shown literally, never interpreted or swallowed."""
    tricky = "[bold red]Never[/] trust [link=http://x]this[/link] or [/]"
    invoke("principles", mem, "--add", tricky, "--reason", "[red]why[/red]")
    listing = invoke("principles", mem).stdout
    assert "[bold red]Never[/]" in listing and "[link=http://x]this[/link]" in listing and "[/]" in listing
    assert "[red]why[/red]" in listing
    # (markup in an id never gets this far: ids keep to a safe character set, see test_bad_input)
    record = {"id": "fb-1", "inputs": "q", "outputs": "SELECT 1", "value": "fail", "feedback": "[i]Use views.[/i]"}
    table = invoke("align", mem, write_jsonl(tmp_path / "fb.jsonl", [record]), "--model", "stub").stdout
    assert "[i]Use views.[/i]" in table
    assert "[red]why[/red]" in invoke("principles", mem, "--versions").stdout


def test_missing_memory_names_where_the_location_came_from(tmp_path, emb):
    missing = tmp_path / "nowhere"
    result = invoke("principles", missing, code=2)
    assert f"{missing}: no such memory directory" in result.stderr
    for name in ("memalign init", "STORE", "MEMALIGN_STORE", "Context.store"):
        assert name in result.stderr.replace("\n", " "), name
    with pytest.raises(MemoryFormatError, match=r"Context\.store in a graph, or MEMALIGN_STORE"):
        build_judge_graph().compile().invoke(
            {"inputs": "q", "outputs": "a"}, context=Context(store=str(missing), model="stub", embeddings=emb)
        )


@pytest.mark.parametrize("command", ["judge", "align", "review", "demo", "eval"])
def test_base_url_wherever_a_model_is_used(command, tmp_path):
    assert "--base-url" in invoke(command, "--help").stdout
    args = {
        "judge": ["judge", tmp_path, tmp_path / "c.jsonl"],
        "align": ["align", tmp_path, tmp_path / "f.jsonl"],
        "review": ["review", tmp_path, tmp_path / "c.jsonl"],
        "demo": ["demo", "--out", tmp_path / "d"],
        "eval": ["eval", tmp_path / "data.jsonl"],
    }[command]
    result = invoke(*args, "--base-url", "http://127.0.0.1:9/v1", code=2)
    assert "--base-url needs --model" in result.stderr


HEAVY = ("langgraph", "langchain_core", "langchain", "faiss", "numpy", "mlflow", "langsmith", "sklearn", "torch")


@pytest.mark.parametrize("argv", [["--help"], ["align", "--help"], ["principles", "--help"], ["judge", "--help"]])
def test_help_loads_no_heavy_library(argv):
    """`memalign --help` stays under a second by importing only typer and rich (every command imports lazily)."""
    code = (
        "import sys\n"
        "from memalign_graph.cli import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert "Usage" in done.stdout and not loaded & set(HEAVY), loaded & set(HEAVY)


COMMANDS = ["init", "judge", "align", "principles", "forget", "review", "demo", "eval", "bench"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_breaks_lines_only_where_the_terminal_ends(command):
    """At 80 columns every help paragraph fills its lines: no line ends where the next word would still fit."""
    shown = invoke(*([command] if command else []), "--help").stdout
    prose = shown.split("╭")[0].splitlines()
    paragraphs, current = [], []
    for line in prose:
        if line.strip() and not line.lstrip().startswith("Usage:"):
            current.append(line.strip())
        elif current:
            paragraphs, current = [*paragraphs, current], []
    assert paragraphs, shown
    for paragraph in paragraphs:
        for line, following in zip(paragraph, paragraph[1:]):
            assert len(line) + 1 + len(following.split()[0]) > 78, f"break after {line!r}\n{shown}"


def judge_cases(tmp_path: Path, n: int = 3) -> Path:
    return write_jsonl(
        tmp_path / "cases.jsonl", [{"id": f"c{i}", "inputs": f"q{i}", "outputs": "SELECT 1"} for i in range(n)]
    )


def test_progress_in_a_log_is_plain_lines(mem, tmp_path, monkeypatch):
    """stderr not a terminal (a pipe, a file, CI): progress as lines that read as they are, never cursor movement."""
    cases = judge_cases(tmp_path)
    quiet_log = invoke("judge", mem, cases, "--model", "stub").stderr
    assert re.fullmatch(r"judging: 3/3 case \(\d+ s\)\n", quiet_log), quiet_log  # one line: the run took < 30 s

    monkeypatch.setattr(cli_output.LogProgress, "interval", 0.0)  # a slow run: a line per interval
    log = invoke("judge", mem, cases, "--model", "stub").stderr
    assert re.findall(r"judging: (\d)/3 case", log) == ["1", "2", "3", "3"], log
    feedback = write_jsonl(
        tmp_path / "fb.jsonl", [{"id": "a", "inputs": "q", "outputs": "SELECT 1", "value": "fail", "feedback": "No."}]
    )
    aligned = invoke("align", mem, feedback, "--model", "stub")
    assert re.search(r"^distill: 1/1 item", aligned.stderr, re.M), aligned.stderr
    for stream in (log, aligned.stderr):
        assert "\r" not in stream and "\x1b" not in stream, repr(stream)


def test_quiet_keeps_results_and_errors_only(mem, tmp_path):
    cases = judge_cases(tmp_path)
    judged = invoke("-q", "judge", mem, cases, "--model", "stub")
    assert judged.stderr == "" and [json.loads(line)["id"] for line in judged.stdout.splitlines()] == ["c0", "c1", "c2"]
    written = invoke("--quiet", "judge", mem, cases, "--model", "stub", "-o", tmp_path / "out.jsonl")
    assert written.stdout == written.stderr == "" and len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
    feedback = write_jsonl(
        tmp_path / "fb.jsonl", [{"id": "a", "inputs": "q", "outputs": "SELECT 1", "value": "fail", "feedback": "No."}]
    )
    aligned = invoke("-q", "align", mem, feedback, "--model", "stub")
    assert aligned.stderr == "" and re.search(r"new\s+1\s+a", aligned.stdout)
    created = invoke("-q", "init", tmp_path / "other", "--name", "j", "--criterion", "c", "--labels", "a,b")
    assert created.stdout == created.stderr == "" and (tmp_path / "other").is_dir()

    missing = invoke("-q", "principles", tmp_path / "nowhere", code=2)
    assert "no such memory directory" in missing.stderr
    failing = invoke("-q", "judge", mem, tmp_path / "absent.jsonl", "--model", "stub", code=2)
    assert "error:" in failing.stderr
    # without -q the same commands say what they did
    assert "wrote 3 judgments" in invoke("judge", mem, cases, "--model", "stub", "-o", tmp_path / "out.jsonl").stderr
    assert (
        "created judge"
        in invoke("init", tmp_path / "third", "--name", "j", "--criterion", "c", "--labels", "a,b").stdout
    )


TERMINAL_DRIVER = """
import json, sys
from langchain_core.embeddings import DeterministicFakeEmbedding
import memalign_graph.nodes as nodes_module
import memalign_graph.versions as memory_module
from memalign_graph.cli import main
from memalign_graph.testing import StubChatModel

emb = DeterministicFakeEmbedding(size=32)
memory_module.resolve_embeddings = lambda embeddings=None: emb
rationale = sys.argv.pop(1)
model = StubChatModel(responder=lambda messages, kwargs: json.dumps({"rationale": rationale, "value": "pass"}))
nodes_module.resolve_chat_model = lambda *a, **k: model
sys.argv[0] = "memalign"
main()
"""


def on_terminal(*args, stdout_tty: bool, stderr_tty: bool) -> tuple[str, str]:
    """Run the CLI (stub model, fake embeddings) with stdout and/or stderr on a pseudo-terminal; both outputs."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    ends = [pty.openpty() if tty else os.pipe() for tty in (stdout_tty, stderr_tty)]
    for (_, child_end), tty in zip(ends, (stdout_tty, stderr_tty)):
        if tty:  # 40 rows of 200 columns, as a terminal window has (a new pty has none)
            fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS", "LINES")
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", TERMINAL_DRIVER, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=ends[0][1],
        stderr=ends[1][1],
        env={**env, "TERM": "xterm"},
    )
    for _, child_end in ends:
        os.close(child_end)
    read = {master: b"" for master, _ in ends}
    live = set(read)
    deadline = time.monotonic() + 120
    while live and time.monotonic() < deadline:
        for fd in select.select(list(live), [], [], 1)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other end has closed
                data = b""
            read[fd] += data
            if not data:
                live.discard(fd)
                os.close(fd)
    code = proc.wait(timeout=60)
    out, errors = (read[master].decode().replace("\r\n", "\n") for master, _ in ends)
    assert code == 0, (out, errors)
    return out, errors


def test_judge_on_a_terminal_prints_a_table_and_jsonl_for_programs(mem, tmp_path):
    hostile = "\x1b[2J[bold]cleared[/bold] screen"
    cases = judge_cases(tmp_path, 2)
    table, log = on_terminal(hostile, "judge", mem, cases, "--model", "stub", stdout_tty=True, stderr_tty=False)
    assert "2 judgment(s)" in table and re.search(r"c0\s+pass\s+\\x1b\[2J\[bold\]cleared\[/bold\] screen\s+stub", table)
    assert "\x1b[2J" not in table and '{"id"' not in table, repr(table)  # model text inert, and no JSON
    assert "judging: 2/2 case" in log

    as_json, _ = on_terminal(
        hostile, "judge", mem, cases, "--model", "stub", "--json", stdout_tty=True, stderr_tty=False
    )
    assert [json.loads(line)["rationale"] for line in as_json.splitlines()] == [hostile, hostile]

    piped, bar = on_terminal(hostile, "judge", mem, cases, "--model", "stub", stdout_tty=False, stderr_tty=True)
    assert [json.loads(line)["id"] for line in piped.splitlines()] == ["c0", "c1"]  # `memalign judge ... | jq` works
    assert "judging: 100%" in bar and "\r" in bar  # a live bar for a person watching


def test_env_example_names_the_real_default_model():
    from memalign_graph.modelfiles import DEFAULT_EMBEDDED, EMBEDDED_MODELS

    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    lines = re.search(r"# Which embedded model `embedded` means: (.*?)\nMEMALIGN_EMBEDDED_MODEL=", example, re.S)
    described = lines.group(1)
    assert re.findall(r"([\w.-]+) \(default\)", described) == [DEFAULT_EMBEDDED]
    assert set(re.findall(r"\b(qwen[\w.-]+|smollm[\w.-]+)", described)) == set(EMBEDDED_MODELS)
