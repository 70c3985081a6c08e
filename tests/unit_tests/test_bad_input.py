"""Bad input: refused with an error that names the problem and where it is, and memory left byte for byte as it was.

Through the Python API (``read_jsonl``, ``Memory.align``, ``Memory.open``, the judge
graph) and the command line (``memalign align`` through typer's ``CliRunner``, and
the installed ``memalign`` script in a subprocess for broken memory directories).
Basic cases already in ``test_spec.py`` / ``test_memory.py`` (bad JSON line, duplicate
id, non-UTF-8, wrong label, foreign manifest, newer format through ``Memory.open``)
are not repeated at that level; here every kind of bad input also goes through the CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from typer.testing import CliRunner

import memalign_graph.versions as memory_module
from memalign_graph import Context, Memory, build_judge_graph
from memalign_graph.cli import app
from memalign_graph.errors import MemoryFormatError, RecordError
from memalign_graph.spec import MAX_FIELD_CHARS, MAX_ID_CHARS, MAX_LINE_BYTES, read_jsonl
from memalign_graph.testing import StubChatModel, distill_records
from tests.conftest import CATEGORICAL, NUMERIC, PAIRWISE, feedback, location_of

SPECS = {"categorical": CATEGORICAL, "numeric": NUMERIC, "pairwise": PAIRWISE}
GOOD = {
    "categorical": {"id": "a", "inputs": "q", "outputs": "SELECT 1", "value": "fail", "feedback": "Name columns."},
    "numeric": {"id": "a", "inputs": "late parcel", "outputs": "Check tracking.", "value": 2, "feedback": "Reassure."},
    "pairwise": {"id": "a", "inputs": "reset password", "outputs": ["Use the link.", "No."], "value": "A"},
}
MEMALIGN = Path(sys.executable).with_name("memalign")
FIRST_LINE_BYTES = len(json.dumps(GOOD["categorical"])) + 1  # every bad file starts with a good line


@pytest.fixture
def emb(monkeypatch) -> DeterministicFakeEmbedding:
    """The fake embeddings, also for the CLI (which resolves embeddings by name)."""
    emb = DeterministicFakeEmbedding(size=32)
    monkeypatch.setattr(memory_module, "resolve_embeddings", lambda embeddings=None: emb)
    return emb


@pytest.fixture
def mems(tmp_path, emb) -> dict[str, Memory]:
    """One memory per judgment kind, each at version 1 with one aligned record."""
    out = {}
    for kind, spec in SPECS.items():
        out[kind] = Memory.create(tmp_path / kind, spec, embeddings=emb)
        out[kind].align([GOOD[kind]], model=StubChatModel())
    return out


def line(kind: str, **changes) -> bytes:
    record = {**GOOD[kind], "id": "b", **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def all_files(root: Path) -> dict[str, bytes]:
    """Every file, the lock file included (a refused command must not even create it)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cli_align(directory: Path, file: Path, *args: str):
    return CliRunner().invoke(app, ["align", str(directory), str(file), "--model", "stub", *args])


# kind, file content after a good first line, location after FILE (":LINE ..."), reason (regex)
JSONL_CASES = {
    "bad-json": ("categorical", b'{"id": "b", "inputs": "q"', ":2", r"not valid JSON \(Expecting ',' delimiter"),
    "bad-label": ("categorical", line("categorical", value="maybe"), r":2 \(id b\)", "value 'maybe' is not one of"),
    "score-high": ("numeric", line("numeric", value=6), r":2 \(id b\)", "value 6 is not an integer from 1 to 5"),
    "score-low": ("numeric", line("numeric", value=0), r":2 \(id b\)", "value 0 is not an integer from 1 to 5"),
    "score-fraction": ("numeric", line("numeric", value=2.5), r":2 \(id b\)", "value 2.5 is not an integer"),
    "score-word": ("numeric", line("numeric", value="three"), r":2 \(id b\)", "value 'three' is not an integer"),
    "score-bool": ("numeric", line("numeric", value=True), r":2 \(id b\)", "value True is not an integer"),
    "score-superscript": ("numeric", line("numeric", value="²"), r":2 \(id b\)", "value '²' is not an integer"),
    "pairwise-C": ("pairwise", line("pairwise", value="C"), r":2 \(id b\)", "value 'C' is not one of: A, B, tie"),
    "pairwise-one-output": (
        "pairwise",
        line("pairwise", outputs="x"),
        r":2 \(id b\)",
        "a pairwise record needs 'outputs' as a list of exactly two",
    ),
    "missing-id": ("categorical", line("categorical", id=...), ":2", "field 'id' must be a non-empty string"),
    "blank-id": ("categorical", line("categorical", id="  "), ":2", "field 'id' must be a non-empty string"),
    "duplicate-id": ("categorical", line("categorical", id="a"), ":2", r"duplicate id 'a' \(first on line 1\)"),
    "no-verdict": (
        "categorical",
        line("categorical", value=..., feedback=...),
        r":2 \(id b\)",
        "a feedback record needs the expert's",
    ),
    "typo-field": (
        "categorical",
        line("categorical", feedbak="x"),
        r":2 \(id b\)",
        r"unknown field\(s\) \['feedbak'\]",
    ),
    "non-utf8": (
        "categorical",
        b'{"id": "b", "inputs": "caf\xe9", "outputs": "x", "value": "pass"}',
        ":2",
        rf"not valid UTF-8: byte 0xe9 at byte 27 of the line \(offset {FIRST_LINE_BYTES + 26} in the file\)",
    ),
    "array": ("categorical", b"[1, 2]", ":2", "a record must be a JSON object, got an array"),
    "string": ("categorical", b'"pass"', ":2", "a record must be a JSON object, got a string"),
    "null": ("categorical", b"null", ":2", "a record must be a JSON object, got null"),
    "nan": (
        "categorical",
        b'{"id": "b", "inputs": NaN, "outputs": "x", "value": "pass"}',
        r":2 \(id b\)",
        "field 'inputs' is nan, not a finite number",
    ),
    "surrogate": (
        "categorical",
        line("categorical", inputs="\ud800"),
        r":2 \(id b\)",
        r"field 'inputs' holds an unpaired surrogate \(\\ud800\)",
    ),
    "deep": ("categorical", b"[" * 100_000, ":2", r"not valid JSON \(nested too deeply\)"),
    "1MB-field": (
        "categorical",
        line("categorical", outputs="x" * 1_000_000),
        r":2 \(id b\)",
        f"field 'outputs' has 1000000 characters, more than {MAX_FIELD_CHARS}",
    ),
    "long-id": (
        "categorical",
        line("categorical", id="i" * 600),
        ":2",
        f"field 'id' has 600 characters, more than {MAX_ID_CHARS}",
    ),
}


def write_case(tmp_path: Path, name: str) -> tuple[str, Path, str]:
    kind, content, place, reason = JSONL_CASES[name]
    file = tmp_path / f"{name}.jsonl"
    file.write_bytes(json.dumps(GOOD[kind]).encode() + b"\n" + content + b"\n")
    return kind, file, re.escape(str(file)) + place + ": " + reason


@pytest.mark.parametrize("name", list(JSONL_CASES))
def test_bad_jsonl_line_is_named_by_file_and_line(name, tmp_path):
    kind, file, message = write_case(tmp_path, name)
    with pytest.raises(RecordError) as info:
        read_jsonl(file, SPECS[kind], feedback=True)
    assert re.match(message, str(info.value)), str(info.value)
    assert info.value.where.startswith(f"{file}:2")


@pytest.mark.parametrize("name", list(JSONL_CASES))
def test_cli_align_refuses_bad_jsonl_and_leaves_memory_unchanged(name, tmp_path, mems):
    kind, file, message = write_case(tmp_path, name)
    memory = mems[kind]
    before = all_files(memory.backend.path)
    result = cli_align(memory.backend.path, file)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert re.search("error: " + message, result.stderr), result.stderr
    assert all_files(memory.backend.path) == before


# record as given to Memory.align (the second of the batch), kind, message
API_CASES = {
    "bad-label": ("categorical", {**GOOD["categorical"], "id": "b", "value": "maybe"}, r"record 1 \(id b\): value"),
    "score-out-of-range": ("numeric", {**GOOD["numeric"], "id": "b", "value": 9}, r"record 1 \(id b\): value 9 is not"),
    "pairwise-value": ("pairwise", {**GOOD["pairwise"], "id": "b", "value": "both"}, "record 1 .*'both' is not one of"),
    "missing-id": ("categorical", {"inputs": "q", "outputs": "x", "value": "pass"}, "record 1: field 'id' must be"),
    "duplicate-id": (
        "categorical",
        {**GOOD["categorical"], "id": "fresh"},
        "record 1: duplicate id 'fresh' in this batch",
    ),
    "not-a-dict": ("categorical", "pass", "record 1: a record must be a JSON object, got a string"),
    "none": ("categorical", None, "record 1: a record must be a JSON object, got null"),
    "huge-field": (
        "categorical",
        {**GOOD["categorical"], "id": "b", "inputs": "q" * (MAX_FIELD_CHARS + 1)},
        f"record 1 \\(id b\\): field 'inputs' has {MAX_FIELD_CHARS + 1} characters",
    ),
    "not-json": ("categorical", {**GOOD["categorical"], "id": "b", "inputs": {"x": {1}}}, "cannot be stored as JSON"),
    "infinity": ("categorical", {**GOOD["categorical"], "id": "b", "outputs": float("inf")}, "is inf, not a finite"),
    "surrogate": ("categorical", {**GOOD["categorical"], "id": "b", "feedback": "\udc80"}, "'feedback' holds an unp"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_memory_align_refuses_bad_records_and_writes_nothing(name, mems):
    kind, bad, message = API_CASES[name]
    memory = mems[kind]
    before = all_files(memory.backend.path)
    stub = StubChatModel()
    good = {**GOOD[kind], "id": "fresh"}
    with pytest.raises(RecordError, match=message):
        memory.align([good, bad], model=stub)
    assert all_files(memory.backend.path) == before and stub.calls == 0
    assert memory.version == 1 and sorted(memory.records) == ["a"]


def test_empty_file(tmp_path, mems):
    memory = mems["categorical"]
    before = all_files(memory.backend.path)
    for content in (b"", b"\n  \n\t\n"):
        file = tmp_path / "empty.jsonl"
        file.write_bytes(content)
        assert read_jsonl(file, CATEGORICAL, feedback=True) == []  # the library's default: no records, no error
        with pytest.raises(RecordError, match=re.escape(f"{file}: no records: the file is empty")):
            read_jsonl(file, CATEGORICAL, feedback=True, allow_empty=False)
    report = memory.align([], model=StubChatModel())  # nothing to do: no new version, nothing written
    assert report.version == 1 and report.added == [] and all_files(memory.backend.path) == before


def test_cli_align_refuses_an_empty_file(tmp_path, mems):
    memory = mems["categorical"]
    file = tmp_path / "empty.jsonl"
    file.write_bytes(b"\n")
    before = all_files(memory.backend.path)
    result = cli_align(memory.backend.path, file)
    assert all_files(memory.backend.path) == before
    assert result.exit_code == 2 and f"error: {file}: no records" in result.stderr, result.stderr


@pytest.mark.parametrize("where", ["path", "id"])
def test_cli_error_text_with_brackets_is_printed_as_is(where, tmp_path, mems):
    memory = mems["categorical"]
    folder = tmp_path / ("[x]" if where == "path" else "plain")
    folder.mkdir()
    file = folder / "fb.jsonl"
    file.write_bytes(line("categorical", id="[/]", value="maybe") + b"\n")
    result = cli_align(memory.backend.path, file)
    # "[/]" is outside the safe set of record ids: refused, and the error shows it as it was written.
    expected = f"error: {file}:1: field 'id' '[/]' has characters outside the safe set ('[', ']')"
    assert result.exit_code == 2 and expected in result.stderr, result.exception


def test_line_over_the_limit_is_refused_before_decoding(tmp_path, mems):
    memory = mems["categorical"]
    file = tmp_path / "absurd.jsonl"
    with open(file, "wb") as fh:
        fh.write(json.dumps(GOOD["categorical"]).encode() + b"\n")
        fh.write(b'{"id": "b", "inputs": "' + b"x" * MAX_LINE_BYTES + b'", "outputs": "y", "value": "pass"}\n')
    message = re.escape(f"{file}:2: line longer than {MAX_LINE_BYTES} bytes, the limit for one record")
    with pytest.raises(RecordError, match=message):
        read_jsonl(file, CATEGORICAL, feedback=True)
    before = all_files(memory.backend.path)
    result = cli_align(memory.backend.path, file)
    assert result.exit_code == 2 and re.search(message, result.stderr) and all_files(memory.backend.path) == before


def test_byte_order_mark_is_accepted(tmp_path):
    file = tmp_path / "bom.jsonl"
    file.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD["categorical"]).encode() + b"\n")
    assert [r["id"] for r in read_jsonl(file, CATEGORICAL, feedback=True)] == ["a"]


# --- memory directories -------------------------------------------------------------------------------------------


def _garbage(mem: Path) -> None:
    (mem / "memalign.json").write_bytes(b"\x00\xffnot json{")


def _other_program(mem: Path) -> None:
    (mem / "memalign.json").write_text('{"name": "memalign", "version": "3.2", "settings": {}}')


def _newer(mem: Path) -> None:
    data = json.loads((mem / "memalign.json").read_text())
    (mem / "memalign.json").write_text(json.dumps({**data, "format_version": 99}))


def _format_as_text(mem: Path) -> None:
    data = json.loads((mem / "memalign.json").read_text())
    (mem / "memalign.json").write_text(json.dumps({**data, "format_version": "1"}))


def _fields_missing(mem: Path) -> None:
    (mem / "memalign.json").write_text('{"format": "memalign-graph", "format_version": 1, "version": 1}')


def _path_outside(mem: Path) -> None:
    data = json.loads((mem / "memalign.json").read_text())
    (mem / "memalign.json").write_text(json.dumps({**data, "principles": "../../etc/passwd"}))


def _checkpoint_garbage(mem: Path) -> None:
    (mem / "principles" / "v000001.json").write_text("[]")


def _index_truncated(mem: Path) -> None:
    index = mem / "episodes" / "e000001" / "index.faiss"
    index.write_bytes(index.read_bytes()[:40])


def _dimension_mismatch(mem: Path) -> None:
    data = json.loads((mem / "memalign.json").read_text())
    (mem / "memalign.json").write_text(json.dumps({**data, "embeddings": {**data["embeddings"], "dim": 64}}))


MANIFEST = r"memalign\.json"
BROKEN_DIRS = {
    "garbage-manifest": (_garbage, rf"{MANIFEST}: unreadable manifest \("),
    "other-programs-manifest": (_other_program, rf"{MANIFEST}: not a memalign-graph manifest"),
    "newer-format": (_newer, rf"{MANIFEST}: written by a newer memalign-graph \(format 99, this one reads 1\)"),
    "format-as-text": (_format_as_text, rf"{MANIFEST}: 'format_version' must be an integer, got '1'"),
    "fields-missing": (
        _fields_missing,
        rf"{MANIFEST}: manifest field\(s\) \['judge', 'embeddings', 'principles', 'episodes'\] missing or malformed",
    ),
    "path-outside": (_path_outside, rf"{MANIFEST}: manifest field\(s\) \['principles'\] missing or malformed"),
    "checkpoint-garbage": (
        _checkpoint_garbage,
        r"principles/v000001\.json: not the principles checkpoint of version 1",
    ),
    "index-truncated": (_index_truncated, r": version 1 is unreadable \("),
    "dimension-mismatch": (_dimension_mismatch, r"e000001: index vectors have 32 dimensions, the manifest says 64"),
}


@pytest.mark.parametrize("name", list(BROKEN_DIRS))
def test_broken_memory_directory_is_named_and_left_alone(name, tmp_path, mems, emb):
    break_it, message = BROKEN_DIRS[name]
    mem = mems["categorical"].backend.path
    break_it(mem)
    before = all_files(mem)
    with pytest.raises(MemoryFormatError, match=message) as info:
        Memory.open(mem, embeddings=emb)
    assert str(mem) in str(info.value)
    fb = tmp_path / "fb.jsonl"
    fb.write_text(json.dumps(GOOD["categorical"]) + "\n")
    result = cli_align(mem, fb)
    assert result.exit_code == 2 and re.search("error: .*" + message, result.stderr), result.stderr
    assert all_files(mem) == before


def test_foreign_directory_without_manifest(tmp_path, emb):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a memory")
    before = all_files(foreign)
    message = re.escape(f"{foreign}: not a memalign memory directory (memalign.json is missing)")
    with pytest.raises(MemoryFormatError, match=message):
        Memory.open(foreign, embeddings=emb)
    fb = tmp_path / "fb.jsonl"
    fb.write_text(json.dumps(GOOD["categorical"]) + "\n")
    result = cli_align(foreign, fb)
    assert result.exit_code == 2 and re.search("error: " + message, result.stderr), result.stderr
    assert all_files(foreign) == before  # no lock file, no memory created inside someone else's folder


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads a chmod 000 directory anyway (garbage manifest tested instead)"
)
def test_unreadable_memory_directory(mems, emb):
    mem = mems["categorical"].backend.path
    mem.chmod(0)
    try:
        with pytest.raises(MemoryFormatError, match=r"memalign\.json: cannot read the manifest \(Permission denied\)"):
            Memory.open(mem, embeddings=emb)
    finally:
        mem.chmod(0o755)


def test_permission_denied_on_the_manifest_is_a_format_error(mems, emb, monkeypatch):
    """What a non-root user gets from a chmod 000 directory, simulated (tests may run as root)."""
    mem = mems["categorical"].backend.path
    real = os.open

    def denied(path, *args, **kwargs):
        if Path(path).name == "memalign.json":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)  # the manifest is opened with os.open (O_NOFOLLOW)
    message = re.escape(f"{mem / 'memalign.json'}: cannot read the manifest (Permission denied)")
    with pytest.raises(MemoryFormatError, match=message):
        Memory.open(mem, embeddings=emb)
    fb = mem.parent / "fb.jsonl"
    fb.write_text(json.dumps(GOOD["categorical"]) + "\n")
    result = cli_align(mem, fb)
    assert result.exit_code == 2 and re.search("error: " + message, result.stderr), result.stderr


@pytest.mark.skipif(not MEMALIGN.exists(), reason="the memalign console script is not installed")
@pytest.mark.parametrize("name", ["garbage-manifest", "newer-format", "fields-missing"])
def test_installed_cli_names_a_broken_directory(name, mems):
    """The real ``memalign`` script in a subprocess (``principles`` needs no model and no embeddings)."""
    break_it, message = BROKEN_DIRS[name]
    mem = mems["categorical"].backend.path
    break_it(mem)
    before = all_files(mem)
    done = subprocess.run([str(MEMALIGN), "principles", str(mem)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and re.search("error: .*" + message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr and all_files(mem) == before


# --- huge inputs within the limits -----------------------------------------------------------------------------


def test_long_fields_are_clipped_in_prompts_and_kept_whole_in_memory(mems, emb):
    """A 150 000-character output (under MAX_FIELD_CHARS) is stored whole, clipped where a prompt cannot hold it.

    Clipping keeps the start and the end with "…" between: 600 characters per field in
    distillation; in judging, as much as the model's context window holds (whole when it fits).
    """
    memory = mems["categorical"]
    long = "SELECT " + "x, " * 50_000 + "END_OF_QUERY"
    stub = StubChatModel()
    report = memory.align([feedback("big", long, text="Never select hundreds of columns.")], model=stub)
    assert report.version == 2 and report.distilled == ["big"] and stub.calls == 2  # + the directive check
    (clipped,) = [r["outputs"] for r in distill_records(stub.prompts[0])]
    assert len(clipped) == 600 and "…" in clipped and clipped.endswith("END_OF_QUERY")
    assert len(Memory.open(memory.backend.path, embeddings=emb).episodes.get(["big"])[0]["outputs"]) == len(long)

    def shown(prompt, tag):
        sections = [json.loads(b) for b in re.findall(rf"^<{tag}>\n(.*?)\n</{tag}>$", prompt, re.M | re.S)]
        return {s.get("id"): s["outputs"] for s in sections}

    judge = build_judge_graph().compile()
    case = {"inputs": "request big", "outputs": long + " LIMIT 1"}
    context = Context(store=location_of(memory), model=stub, embeddings=emb, context_window=2_000)
    judgment = judge.invoke(case, context=context)["judgment"]
    assert judgment["value"] in ("pass", "fail") and judgment["precedent"] is None and "big" in judgment["episode_ids"]
    assert judgment["clipped"] is True
    prompt = stub.prompts[-1][-1].text
    episode_output, case_output = shown(prompt, "episode")["big"], shown(prompt, "case")[None]
    assert "…" in episode_output and episode_output.endswith("END_OF_QUERY")
    assert "…" in case_output and case_output.endswith("END_OF_QUERY LIMIT 1")
    assert len(case_output) > len(episode_output) and sum(len(m.text) for m in stub.prompts[-1]) <= 2_000 * 3

    judgment = judge.invoke(case, context=Context(store=location_of(memory), model=stub, embeddings=emb))
    prompt = stub.prompts[-1][-1].text
    assert judgment["judgment"]["clipped"] is False  # a 128k-token window holds both whole
    assert shown(prompt, "episode")["big"] == long and shown(prompt, "case") == {None: long + " LIMIT 1"}

    with pytest.raises(RecordError, match="judge input: field 'outputs' has 1000000 characters, more than"):
        judge.invoke({"inputs": "q", "outputs": "x" * 1_000_000}, context=context)


def test_record_over_the_distillation_budget_goes_alone(mems):
    memory = mems["categorical"]
    stub = StubChatModel()
    records = [
        feedback("s1", "SELECT a", text="Name columns."),
        feedback("huge", "SELECT " + "y" * 100_000, text="Keep queries short. " * 200),
        feedback("s2", "SELECT b", text="Use aliases."),
        feedback("s3", "SELECT c", text="Filter early."),
    ]
    report = memory.align(records, model=stub, token_budget=300)
    assert sorted(report.distilled) == ["huge", "s1", "s2", "s3"] and not report.failed
    batches = [[r["id"] for r in distill_records(prompt)] for prompt in stub.prompts if distill_records(prompt)]
    assert ["huge"] in batches and sorted(i for b in batches for i in b) == ["huge", "s1", "s2", "s3"]
    assert all(len(b) == 1 or "huge" not in b for b in batches)


@pytest.mark.parametrize("backend_kind", ["postgres"])
@pytest.mark.parametrize("name", list(JSONL_CASES))
def test_cli_align_refuses_bad_jsonl_and_leaves_postgres_unchanged(name, tmp_path, new_location, emb):
    from tests.conftest import stored_state

    kind, file, message = write_case(tmp_path, name)
    memory = Memory.create(new_location(kind), SPECS[kind], embeddings=emb)
    memory.align([GOOD[kind]], model=StubChatModel())
    before = stored_state(memory)
    result = CliRunner().invoke(app, ["align", memory.backend.url, str(file), "--model", "stub"])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert re.search("error: " + message, result.stderr), result.stderr
    assert stored_state(memory) == before
    memory.backend.close()
