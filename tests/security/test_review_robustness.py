"""Terminal and review robustness (issue 11), through the `memalign` CLI in-process.

Attacks: ``[/bold]`` in a principle, ``[/x]`` as author, ``[/]`` or fake markup in a
case crashed ``memalign principles`` and ``review`` (Rich ``MarkupError``), and a case
drew a fake "judgment: pass (expert precedent)" line; a 200 001-character correction
passed the answer schema, failed distillation, and every later ``review`` run failed
with ``IndexError``; a second review file without ids was skipped as "done before"
(ids defaulted to ``line-N``). Each test checks that memory is unchanged where nothing
was to be stored (checksums of every memory file, the review-thread cache aside).
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memalign_graph.cli import app
from memalign_graph.spec import MAX_FIELD_CHARS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def fake_embeddings(monkeypatch, embeddings) -> None:
    """The CLI's default embeddings replaced by the deterministic test embeddings (no model to load)."""
    import memalign_graph.versions as memory_module

    real = memory_module.resolve_embeddings
    monkeypatch.setattr(
        memory_module, "resolve_embeddings", lambda spec=None: embeddings if spec is None else real(spec)
    )


FAKE = "judgment: pass (expert precedent ep-1)"
HOSTILE_OUTPUT = f"SELECT 1 [/] [bold red]loud[/bold red]\n{FAKE}\n\x1b[2J\rjudgment: pass"


def run(*args: str, stdin: str = "") -> object:
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin, catch_exceptions=False)


def memory_sums(directory: Path) -> dict[str, str]:
    """SHA-256 of every memory file (the review-thread cache and the lock aside)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(("review-checkpoints.sqlite", ".lock"))
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    directory = tmp_path / "mem"
    out = run("init", directory, "--name", "sql", "--criterion", "House rules?", "--labels", "pass,fail")
    assert out.exit_code == 0, out.output
    return directory


def cases_file(path: Path, cases: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def test_markup_in_principles_authors_and_reasons_is_printed_as_text(store: Path) -> None:
    added = run(
        "principles", store, "--add", "[/bold] Never use raw tables [bold red]x", "--author", "[/x]", "--reason", "[/]"
    )
    assert added.exit_code == 0, added.output
    before = memory_sums(store)
    listed = run("principles", store)
    assert listed.exit_code == 0, listed.output
    assert "[/bold] Never use raw" in listed.stdout and "[/x]" in listed.stdout and "[/]" in listed.stdout
    versions = run("principles", store, "--versions")
    assert versions.exit_code == 0 and "[/x]" in versions.stdout and "[/]" in versions.stdout
    assert memory_sums(store) == before


def test_hostile_case_draws_no_fake_line_and_no_escape_sequence(store: Path, tmp_path: Path) -> None:
    assert run("principles", store, "--add", "[/bold] Prefer [link=http://x]views[/link]").exit_code == 0
    before = memory_sums(store)
    # A hostile id is refused before anything runs (ids keep to a safe character set) ...
    bad_id = cases_file(tmp_path / "bad.jsonl", [{"id": "[/x]\x1b]0;pwned\x07", "inputs": "[/]", "outputs": "x"}])
    refused = run("review", store, bad_id, "--model", "stub", stdin="s\n")
    assert refused.exit_code == 2 and "outside the safe set" in refused.output and "\x1b" not in refused.output
    # ... and hostile text in the case's fields is shown as text.
    cases = cases_file(tmp_path / "cases.jsonl", [{"id": "c-hostile", "inputs": "[/]", "outputs": HOSTILE_OUTPUT}])
    out = run("review", store, cases, "--model", "stub", "--reviewer", "[/x]", stdin="s\n")
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert "[/]" in text and "[bold red]loud[/bold red]" in text and "[/bold] Prefer" in text
    assert [line for line in text.splitlines() if re.match(r"\s*judgment\b", line) and "(stub" not in line] == [
        line for line in text.splitlines() if line.lstrip().startswith(FAKE)
    ]  # the fake line is there, as text of the output...
    real = [line for line in text.splitlines() if line.startswith("judgment")]
    assert len(real) == 1 and "expert precedent" not in real[0]  # ...and only the real judgment is at the margin
    assert all(not line.startswith(("judgment: pass", FAKE)) for line in text.splitlines())
    assert "\x1b" not in out.output and "\x07" not in out.output and "\r" not in out.output
    assert "\\x1b[2J\\rjudgment" in text
    assert memory_sums(store) == before  # a skip stores nothing


def test_oversized_correction_is_refused_at_the_answer(store: Path, tmp_path: Path) -> None:
    before = memory_sums(store)
    cases = cases_file(tmp_path / "cases.jsonl", [{"id": "c1", "inputs": "orders", "outputs": "SELECT * FROM raw.o"}])
    huge = "x" * (MAX_FIELD_CHARS + 1)
    out = run("review", store, cases, "--model", "stub", stdin=f"c\n\n{huge}\ns\n")
    assert out.exit_code == 0, out.output
    assert f"answer rejected: feedback: String should have at most {MAX_FIELD_CHARS} characters" in out.stderr
    assert "1 reviewed" in out.stdout and memory_sums(store) == before
    again = run("review", store, cases, "--model", "stub")
    assert again.exit_code == 0 and "1 done before" in again.stdout, again.output
    bad_name = run("review", store, cases, "--model", "stub", "--reviewer", "x" * 201)
    assert bad_name.exit_code == 2 and "--reviewer" in bad_name.stderr and "Traceback" not in bad_name.output


def test_a_failed_save_never_wedges_later_runs(store: Path, tmp_path: Path, monkeypatch) -> None:
    """Disk full while saving a correction: that case is reported, the others go on, the next run saves it."""
    import memalign_graph.backends.file as file_backend

    cases = cases_file(
        tmp_path / "cases.jsonl",
        [
            {"id": "c1", "inputs": "orders", "outputs": "SELECT * FROM raw.o"},
            {"id": "c2", "inputs": "users", "outputs": "SELECT * FROM raw.u"},
        ],
    )
    before = memory_sums(store)
    real = file_backend.atomic_write_json

    def full(path: Path, data: object) -> None:
        if path.name.startswith("v"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(file_backend, "atomic_write_json", full)
    first = run("review", store, cases, "--model", "stub", stdin="c\nfail\nNever use raw tables.\ns\n")
    assert first.exit_code == 1, first.output
    assert "case c1: not saved" in first.stderr and "memory unchanged at version 0" in first.stderr
    assert "case c2" in first.stdout and "1 reviewed" in first.stdout and "1 failed" in first.stdout
    assert memory_sums(store) == before
    monkeypatch.setattr(file_backend, "atomic_write_json", real)

    second = run("review", store, cases, "--model", "stub")  # no input: nothing is asked again
    assert second.exit_code == 0, second.output
    assert "memory version 1" in second.stdout and "1 reviewed, 1 done before" in second.stdout
    principles = json.loads(run("principles", store, "--json").stdout)
    assert [p["text"] for p in principles["principles"]] == ["Never use raw tables."]
    assert (
        run("review", store, cases, "--model", "stub")
        .stdout.strip()
        .endswith("0 reviewed, 2 done before, 0 not selected")
    )


def test_an_unusable_stored_answer_is_asked_again(store: Path, tmp_path: Path, monkeypatch) -> None:
    """A pending answer the memory refuses for good (a record error) goes back to the expert, once."""
    import memalign_graph.backends.file as file_backend
    from memalign_graph import alignment
    from memalign_graph.errors import RecordError

    cases = cases_file(tmp_path / "cases.jsonl", [{"id": "c1", "inputs": "orders", "outputs": "SELECT * FROM raw.o"}])
    real = file_backend.atomic_write_json

    def full(path: Path, data: object) -> None:
        if path.name.startswith("v"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(file_backend, "atomic_write_json", full)
    assert run("review", store, cases, "--model", "stub", stdin="c\nfail\nNo raw.\n").exit_code == 1
    monkeypatch.setattr(file_backend, "atomic_write_json", real)

    def refuse(self, records, **kwargs):
        raise RecordError("record 0", "field 'feedback' has 200001 characters, more than 200000")

    monkeypatch.setattr(alignment, "align", refuse)
    before = memory_sums(store)
    out = run("review", store, cases, "--model", "stub", stdin="s\n")
    assert out.exit_code == 0, out.output
    assert "earlier answer not usable" in out.stderr and "asked again" in out.stderr
    assert "case c1" in out.stdout and "1 reviewed" in out.stdout
    assert memory_sums(store) == before


def test_a_second_file_without_ids_is_reviewed(store: Path, tmp_path: Path) -> None:
    first = cases_file(
        tmp_path / "a.jsonl", [{"inputs": "orders", "outputs": "SELECT 1"}, {"inputs": "x", "outputs": "y"}]
    )
    second = cases_file(
        tmp_path / "b.jsonl", [{"inputs": "users", "outputs": "SELECT 2"}, {"inputs": "z", "outputs": "w"}]
    )
    assert "2 reviewed, 0 done before" in run("review", store, first, "--model", "stub", stdin="s\ns\n").stdout
    out = run("review", store, second, "--model", "stub", stdin="s\ns\n")
    assert "2 reviewed, 0 done before" in out.stdout, out.output
    assert "0 reviewed, 2 done before" in run("review", store, first, "--model", "stub").stdout
    twice = cases_file(tmp_path / "c.jsonl", [{"inputs": "users", "outputs": "SELECT 2"}] * 2)
    dup = run("review", store, twice, "--model", "stub")
    assert dup.exit_code == 2 and "the same case as line 1" in dup.stderr
