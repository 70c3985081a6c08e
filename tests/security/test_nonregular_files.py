"""No file placed in a memory directory can hang the judge or be written through (issue 21, items 4 and 5).

Item 4: ``mkfifo`` in place of ``memalign.json``, the current principles checkpoint,
``episodes.jsonl``, ``index.faiss`` or ``principle_vectors.npz`` made ``memalign judge`` and
``align`` block forever in ``open()``. Each now exits within seconds with the same kind of
``MemoryFormatError`` as a link ("is not a regular file (a FIFO)"), and once the file is back
the memory's bytes are what they were and the commands work.

Item 5: ``review-checkpoints.sqlite`` hard-linked to an outside file was written through
(the outside file became an SQLite database), and under umask 022 it was created ``0644``
though it holds case and feedback text.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from memalign_graph import JudgeSpec, Memory
from memalign_graph.backends.file import FileBackend
from memalign_graph.errors import MemoryFormatError
from memalign_graph.testing import StubChatModel
from tests.conftest import tree_bytes
from tests.dev_server import dev_server, requires_dev_server

MEMALIGN = Path(sys.executable).parent / "memalign"
SPEC = JudgeSpec.categorical("sql", "Does the SQL follow the house rules?", ["pass", "fail"])
CASE = {"id": "c-1", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}
FEEDBACK = {"id": "fb-2", "inputs": "Orders", "outputs": "SELECT * FROM raw.orders", "value": "fail", "feedback": "x."}
LIMIT_S = 60
"""A command that meets a FIFO must be done well within this (it was blocked forever); start-up takes a few seconds."""

requires_cli = pytest.mark.skipif(not MEMALIGN.exists(), reason="the memalign command is not installed (make install)")


def memalign(*args: object, stdin: str = "", umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``memalign`` command; fails the test if it has not finished within :data:`LIMIT_S` seconds."""
    try:
        return subprocess.run(
            [str(MEMALIGN), *map(str, args)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            env={**os.environ, "MEMALIGN_MODEL": "stub", "COLUMNS": "200"},
            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"memalign {args[0]} was still running after {LIMIT_S} s (blocked on a file?)")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A judge at version 1 with a principle (so every kind of memory file exists), and the files to feed it."""
    directory = tmp_path / "mem"
    Memory.create(directory, SPEC)
    Memory.open(directory).align(
        [{"id": "fb-1", "inputs": "q", "outputs": "SELECT 1", "value": "fail", "feedback": "Never use raw tables."}],
        model=StubChatModel(),
    )
    (tmp_path / "cases.jsonl").write_text(json.dumps(CASE) + "\n")
    (tmp_path / "feedback.jsonl").write_text(json.dumps(FEEDBACK) + "\n")
    return directory


def memory_files(directory: Path) -> dict[str, Path]:
    manifest = json.loads((directory / "memalign.json").read_text())
    episodes = directory / manifest["episodes"]
    return {
        "manifest": directory / "memalign.json",
        "principles checkpoint": directory / manifest["principles"],
        "episodes.jsonl": episodes / "episodes.jsonl",
        "index.faiss": episodes / "index.faiss",
        "principle_vectors.npz": directory / "principle_vectors.npz",
        "lock": directory / ".lock",
    }


@requires_cli
@pytest.mark.parametrize(
    ("which", "commands"),
    [
        ("manifest", ("judge", "align")),
        ("principles checkpoint", ("judge", "align")),
        ("episodes.jsonl", ("judge", "align")),
        ("index.faiss", ("judge", "align")),
        ("principle_vectors.npz", ("judge", "align")),
        ("lock", ("align",)),  # judging takes no lock
    ],
)
def test_a_fifo_for_a_memory_file_is_refused_at_once(store: Path, which: str, commands: tuple[str, ...]) -> None:
    target = memory_files(store)[which]
    assert target.is_file(), f"{which} was not written (the test would prove nothing)"
    before = tree_bytes(store)
    aside = store.parent / "aside"
    shutil.move(target, aside)
    os.mkfifo(target)
    for command in commands:
        started = time.monotonic()
        out = memalign(command, store, store.parent / ("cases.jsonl" if command == "judge" else "feedback.jsonl"))
        seconds = time.monotonic() - started
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        message = " ".join(out.stderr.split())
        assert f"{target.name}: is not a regular file (a FIFO)" in message, (command, out.stderr)
        assert "Traceback" not in out.stderr and seconds < LIMIT_S
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    target.unlink()
    shutil.move(aside, target)
    assert tree_bytes(store) == before
    if which == "manifest":  # with the file back, the commands work again
        judged = memalign("judge", store, store.parent / "cases.jsonl", "--json")
        assert judged.returncode == 0 and json.loads(judged.stdout)["id"] == "c-1", judged.stderr
        aligned = memalign("align", store, store.parent / "feedback.jsonl")
        assert aligned.returncode == 0 and Memory.open(store).version == 2, aligned.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder", "socket"])
def test_other_non_regular_files_are_refused_in_process(store: Path, kind: str) -> None:
    """A folder or a socket in place of the current principles checkpoint: the same refusal, nothing written."""
    import socket

    target = memory_files(store)["principles checkpoint"]
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    before = tree_bytes(store)
    said = {"fifo": "a FIFO", "folder": "a folder", "socket": "a socket"}[kind]
    with pytest.raises(MemoryFormatError, match=rf"is not a regular file \({said}\)"):
        Memory.open(store)
    assert tree_bytes(store) == before


@requires_cli
def test_a_fifo_for_the_review_database_is_refused(store: Path) -> None:
    db = store / "review-checkpoints.sqlite"
    os.mkfifo(db)
    before = tree_bytes(store)
    out = memalign("review", store, store.parent / "cases.jsonl", stdin="s\n")
    assert out.returncode == 2 and "review-checkpoints.sqlite: is not a regular file (a FIFO)" in " ".join(
        out.stderr.split()
    ), out.stderr
    assert tree_bytes(store) == before and stat.S_ISFIFO(os.lstat(db).st_mode)


@requires_cli
@pytest.mark.parametrize("name", ["review-checkpoints.sqlite", "review-checkpoints.sqlite-wal"])
def test_a_hard_linked_review_database_is_never_written(store: Path, tmp_path: Path, name: str) -> None:
    """Item 5: the review database (or its WAL) linked to an outside file: refused, the outside file untouched."""
    outside = tmp_path / "outside.sqlite"
    conn = sqlite3.connect(outside)  # a valid database the attacker wants changed
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES ('mine')")
    conn.commit()
    conn.close()
    outside_before = outside.read_bytes()
    os.link(outside, store / name)
    before = tree_bytes(store)
    out = memalign("review", store, tmp_path / "cases.jsonl", stdin="c\nfail\nAlways use the certified view.\n")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert f"{name}: has 1 other hard link(s); refusing to write through it" in " ".join(out.stderr.split())
    assert outside.read_bytes() == outside_before and tree_bytes(store) == before
    # Nor does any other write through the memory's lock (forget would VACUUM the review database).
    with pytest.raises(MemoryFormatError, match="other hard link"):
        Memory.open(store).align([FEEDBACK], model=StubChatModel())
    assert outside.read_bytes() == outside_before and tree_bytes(store) == before


@requires_cli
def test_the_review_database_is_created_private_under_umask_022(store: Path, tmp_path: Path) -> None:
    out = memalign(
        "review", store, tmp_path / "cases.jsonl", stdin="c\nfail\nAlways use the certified view.\n", umask=0o022
    )
    assert out.returncode == 0, out.stderr
    db = store / "review-checkpoints.sqlite"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert "Always use the certified view." in Memory.open(store).episodes.get(["c-1"])[0]["feedback"]
    # SQLite's side files, while a writer has the database open, take its mode.
    old = os.umask(0o022)
    try:
        with FileBackend(store).review_checkpointer() as saver:
            saver.conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
            saver.conn.execute("INSERT INTO probe VALUES ('case text')")
            saver.conn.commit()
            sides = [p for p in store.iterdir() if p.name.startswith("review-checkpoints.sqlite-")]
            assert sides, "no side file to check"
            assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in sides} == {p.name: 0o600 for p in sides}
    finally:
        os.umask(old)


def test_a_world_readable_review_database_is_made_private(store: Path) -> None:
    """A database created before this fix (0644) is tightened to 0600 the next time it is opened."""
    db = store / "review-checkpoints.sqlite"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    with FileBackend(store).review_checkpointer():
        pass
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_a_served_run_does_not_wait_forever_on_its_storage(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage that never answers (here: an open that sleeps) fails a served run within the bound, and says so."""
    import memalign_graph.nodes as nodes_module
    from memalign_graph import Context, build_judge_graph

    real = nodes_module.shared_memory

    def stuck(*args, **kwargs):
        time.sleep(3)
        return real(*args, **kwargs)

    monkeypatch.setenv("MEMALIGN_STORAGE_TIMEOUT_S", "0.3")
    monkeypatch.setattr(nodes_module, "shared_memory", stuck)
    judge = build_judge_graph().compile()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not open within 0.3 s \(MEMALIGN_STORAGE_TIMEOUT_S\)"):
        judge.invoke(CASE, context=Context(store=str(store), model=StubChatModel(), roles=("reviewer",)))
    assert time.monotonic() - started < 2.5
    # Library use (no roles: the caller's own process) waits for its storage as before.
    out = judge.invoke(CASE, context=Context(store=str(store), model=StubChatModel()))
    assert out["judgment"]["id"] == "c-1"


@pytest.fixture(scope="module")
def served_fifo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("served-fifo")
    judges = {"sql": tmp / "sql", "tone": tmp / "tone"}
    for path in judges.values():
        Memory.create(path, SPEC)
    manifest = judges["sql"] / "memalign.json"
    shutil.move(manifest, tmp / "manifest-aside")
    os.mkfifo(manifest)  # before the server first opens the judge
    env = {
        "MEMALIGN_JUDGES": json.dumps({k: str(v) for k, v in judges.items()}),
        "MEMALIGN_MODEL": "stub",
        "MEMALIGN_AUTH_TOKENS": "",
    }
    with dev_server(env, tmp / "server.log") as url:
        yield url, judges, tmp


@requires_dev_server
async def test_the_served_judge_answers_again_once_the_file_is_back(served_fifo: Any) -> None:
    """Item 4 served: one run fails at once naming the FIFO, others go on, and the judge recovers."""
    from langgraph_sdk import get_client

    url, judges, tmp = served_fifo
    client = get_client(url=url)
    started = time.monotonic()
    failed = await client.runs.wait(None, "judge", input=CASE, context={"judge": "sql"}, raise_error=False)
    assert failed["__error__"]["error"] == "ServedJudgeError" and time.monotonic() - started < LIMIT_S
    shown = failed["__error__"]["message"]
    assert "memalign.json: is not a regular file (a FIFO)" in shown and str(judges["sql"]) not in shown
    other = await client.runs.wait(None, "judge", input=CASE, context={"judge": "tone"})
    assert other["judgment"]["id"] == "c-1"  # the server's worker is not stuck
    manifest = judges["sql"] / "memalign.json"
    manifest.unlink()
    shutil.move(tmp / "manifest-aside", manifest)
    judged = await client.runs.wait(None, "judge", input=CASE, context={"judge": "sql"})
    assert judged["judgment"]["id"] == "c-1"
    log = (tmp / "server.log").read_text()
    assert "memalign.json: is not a regular file (a FIFO)" in log


def test_a_fifo_for_the_calibration_cache_is_read_as_absent_at_once(store: Path) -> None:
    """``calibration.npz`` is a cache: a FIFO there is never waited on, it reads as no stored head (refit)."""
    import concurrent.futures

    target = store / "calibration.npz"
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    before = tree_bytes(store)
    backend = FileBackend(store)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reads = [pool.submit(backend.load_calibration), pool.submit(backend.load_calibration_vectors)]
        assert [read.result(timeout=LIMIT_S) for read in reads] == [None, {}]
    assert tree_bytes(store) == before and stat.S_ISFIFO(os.lstat(target).st_mode)
