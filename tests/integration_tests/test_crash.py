"""Crash safety of the file backend: a writer killed with SIGKILL in the middle of ``Memory.align``.

The writer is a separate process. It opens a memory committed at version 1 and
aligns a second batch; a wrapper around one step of the commit (the LLM call,
the episode log, the FAISS index, the principles checkpoint, the manifest,
garbage collection) does part of that step's work, touches a marker file and
sleeps. The test process waits for the marker, checks the writer holds the
lock, and kills it with SIGKILL from outside. Then it checks that the lock is
free, that ``Memory.open`` loads version 1 exactly as committed (same bytes),
and that aligning the same batch again completes the work and leaves no
leftovers of the crash behind. No test hook exists in the production code.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Memory
from memalign_graph.spec import record_hash
from memalign_graph.testing import StubChatModel, default_responder
from tests.conftest import CATEGORICAL, KeywordEmbeddings, feedback, tree_bytes

ROOT = Path(__file__).resolve().parents[2]
SECRET = "zebra-7391"  # text only the crashed batch contains
BATCH1 = [
    feedback("r1", "SELECT * FROM raw.orders", text="Never use SELECT star."),
    feedback("r2", "SELECT id FROM raw.payments", text="Use the certified view."),
]
BATCH2 = [
    feedback("r3", "SELECT id FROM orders", text="Always filter cancelled orders."),
    feedback("r4", f"SELECT {SECRET} FROM t", text=f"Never select the {SECRET} column."),
]

CHILD = r"""
import json, os, sys, tempfile, time
from pathlib import Path

point, memdir, marker, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])

import faiss
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Memory
from memalign_graph.backends import file as fb
from memalign_graph.testing import StubChatModel, default_responder, distill_records


def halt():
    marker.write_text(str(os.getpid()))
    while True:  # until SIGKILL
        time.sleep(1)


def partial_write(path, text, fraction):
    # what atomic_write_text leaves when it dies mid-write: a temp file beside the target
    fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    data = (text if isinstance(text, str) else "".join(text)).encode("utf-8")  # pieces: the episode log
    os.write(fd, data[: int(len(data) * fraction)])
    os.fsync(fd)
    halt()


real_write_text = fb.atomic_write_text


def atomic_write_text(path, text):
    path = Path(path)
    if point in ("log", "purge-log") and path.parent.name == "log":
        partial_write(path, text, 0.5)
    if point == "principles" and path.name == "v000002.json":
        partial_write(path, text, 0.5)
    if point == "manifest" and path.name == fb.MANIFEST:
        partial_write(path, text, 1.0)  # complete temp manifest, never renamed
    real_write_text(path, text)


real_write_index = faiss.write_index


def write_index(index, path):
    real_write_index(index, path)
    if point == "index":
        os.truncate(path, os.path.getsize(path) // 2)
        halt()


def collect_garbage(self, *args, **kwargs):
    halt()


def responder(messages, kwargs):
    if point == "distill" and distill_records(messages) is not None:
        halt()
    return default_responder(messages, kwargs)


fb.atomic_write_text = atomic_write_text
faiss.write_index = write_index
if point == "gc":
    fb.FileBackend._collect_garbage = collect_garbage
if work["embeddings"] == "keyword":
    from tests.conftest import KeywordEmbeddings

    embeddings = KeywordEmbeddings(size=256)
else:
    embeddings = DeterministicFakeEmbedding(size=32)
memory = Memory.open(memdir, embeddings=embeddings)
if "forget" in work:
    memory.forget(work["forget"])
else:
    memory.align(work["align"], model=StubChatModel(responder=responder))
sys.exit("the writer finished without reaching the crash point")
"""


def embeddings() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=32)


def lock_is_free(mem: Path) -> bool:
    with open(mem / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return True


def kill_writer_at(point: str, mem: Path, tmp: Path, **work: object) -> None:
    """Run a writer in ``mem`` (align BATCH2, or ``forget=[ids]``), SIGKILL it at ``point``, check the lock is free."""
    script, marker = tmp / "writer.py", tmp / f"reached-{point}"
    script.write_text(CHILD)
    work = {"align": BATCH2, "embeddings": "fake", **work}
    proc = subprocess.Popen(
        [sys.executable, str(script), point, str(mem), str(marker), json.dumps(work)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"writer exited with {proc.returncode} before {point}: {proc.stderr.read().decode()}")
            assert time.monotonic() < deadline, f"writer never reached {point}"
            time.sleep(0.02)
        assert not lock_is_free(mem), "the writer should hold the lock while it aligns"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert lock_is_free(mem), "the kernel releases the dead writer's lock"


@pytest.fixture
def committed(tmp_path: Path) -> tuple[Path, dict[str, bytes], Memory]:
    """A memory at version 1 (BATCH1 aligned), and every byte of it."""
    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=embeddings())
    report = memory.align(BATCH1, model=StubChatModel())
    assert report.version == 1 and len(memory.principles) == 2
    return memory.backend.path, tree_bytes(memory.backend.path), memory


def files(mem: Path) -> set[str]:
    return set(tree_bytes(mem))


def assert_version_1_intact(mem: Path, before: dict[str, bytes], v1: Memory) -> None:
    now = tree_bytes(mem)
    changed = [name for name, data in before.items() if now.get(name) != data]
    assert not changed, f"committed files changed or vanished: {changed}"
    reopened = Memory.open(mem, embeddings=embeddings())
    assert reopened.version == 1
    assert reopened.principles == v1.principles
    assert reopened.records == v1.records
    assert reopened.episodes.ids == {"r1", "r2"} and len(reopened.episodes) == 2
    assert [v["version"] for v in reopened.backend.versions()] == [0, 1]


def committed_layout(version: int, episode_dirs: list[int], logs: list[int]) -> set[str]:
    # principle_vectors.npz: the principles' vectors (a cache, written after each commit that has principles);
    # calibration.npz: the current version's calibration head (a cache, written after each commit whose episodes
    # carry expert values, as every batch here does)
    out = {"memalign.json", "principle_vectors.npz", "calibration.npz"}
    out |= {f"principles/v{v:06d}.json" for v in range(version + 1)}
    for e in episode_dirs:
        out |= {f"episodes/e{e:06d}/index.faiss", f"episodes/e{e:06d}/episodes.jsonl"}
    return out | {f"episodes/log/v{v:06d}.jsonl" for v in logs}


def assert_realign_completes(mem: Path) -> None:
    memory = Memory.open(mem, embeddings=embeddings())
    report = memory.align(BATCH2, model=StubChatModel())
    assert report.version == 2 and report.added == ["r3", "r4"] and not report.failed
    reopened = Memory.open(mem, embeddings=embeddings())
    assert reopened.version == 2
    assert sorted(reopened.records) == ["r1", "r2", "r3", "r4"]
    assert all(entry["distilled"] for entry in reopened.records.values())
    assert reopened.episodes.ids == {"r1", "r2", "r3", "r4"} and len(reopened.episodes) == 4
    texts = [p["text"] for p in reopened.principles]
    assert len(texts) == len(set(texts)) == 4, texts
    assert {s for p in reopened.principles for s in p["sources"]} == {"r1", "r2", "r3", "r4"}
    # nothing of the crash is left: exactly the files of committed versions 0-2
    assert files(mem) == committed_layout(2, [1, 2], [1, 2])
    assert not [p for p in mem.rglob("*") if p.is_dir() and p.name.startswith(".tmp")]


# point -> what the killed writer left beside version 1 (glob patterns, each matching one file)
LEFTOVERS = {
    "distill": [],
    "log": ["episodes/log/.v000002.jsonl.*.tmp"],
    "index": ["episodes/log/v000002.jsonl", "episodes/.tmp-*/index.faiss"],
    "principles": [
        "episodes/log/v000002.jsonl",
        "episodes/e000002/index.faiss",
        "episodes/e000002/episodes.jsonl",
        "principles/.v000002.json.*.tmp",
    ],
    "manifest": [
        "episodes/log/v000002.jsonl",
        "episodes/e000002/index.faiss",
        "episodes/e000002/episodes.jsonl",
        "principles/v000002.json",
        ".memalign.json.*.tmp",
    ],
}


@pytest.mark.parametrize("point", list(LEFTOVERS))
def test_kill_during_align_keeps_last_version_and_realign_completes(point, committed, tmp_path):
    mem, before, v1 = committed
    kill_writer_at(point, mem, tmp_path)
    new = sorted(files(mem) - set(before))
    patterns = LEFTOVERS[point]
    assert len(new) == len(patterns) and all(
        any(fnmatch.fnmatch(name, pattern) for name in new) for pattern in patterns
    ), new  # the writer died where intended
    if point == "principles":  # the checkpoint was half written when the writer died
        (tmp,) = (mem / "principles").glob(".v000002.json.*.tmp")
        with pytest.raises(json.JSONDecodeError):
            json.loads(tmp.read_text())
    assert_version_1_intact(mem, before, v1)
    assert_realign_completes(mem)


def test_kill_after_the_manifest_keeps_the_new_version(committed, tmp_path):
    """Killed after the commit point (in garbage collection): version 2 is committed; align again is a no-op."""
    mem, _, _ = committed
    kill_writer_at("gc", mem, tmp_path)
    memory = Memory.open(mem, embeddings=embeddings())
    assert memory.version == 2 and memory.episodes.ids == {"r1", "r2", "r3", "r4"}
    assert files(mem) == committed_layout(2, [0, 1, 2], [1, 2])  # e000000 not yet collected
    report = memory.align(BATCH2, model=StubChatModel())
    assert report.version == 2 and report.unchanged == ["r3", "r4"] and len(memory.principles) == 4


def test_uncommitted_batch_leaves_no_trace_once_another_change_commits(committed, tmp_path):
    """Killed after the episode log of version 2 was written: the next writer's commit is version 2.

    The dead writer's episode log, index snapshot and temp files must not survive as
    the history of that other version 2 (a rollback or forget would misread them, and
    the batch's text would stay on disk where no forget can reach it).
    """
    mem, before, v1 = committed
    kill_writer_at("index", mem, tmp_path)
    assert SECRET.encode() in b"".join(tree_bytes(mem).values())
    memory = Memory.open(mem, embeddings=embeddings())
    memory.add_principle("Prefer explicit column lists.")
    assert memory.version == 2
    assert SECRET.encode() not in b"".join(tree_bytes(mem).values())
    assert files(mem) == committed_layout(2, [1], [1])
    assert memory.backend.episode_history({("r4", record_hash(BATCH2[1]))}) == {}  # not history of version 2
    report = memory.rollback(1)
    assert report.version == 3 and Memory.open(mem, embeddings=embeddings()).principles == v1.principles
    report = memory.align(BATCH2, model=StubChatModel())
    assert report.version == 4 and sorted(memory.records) == ["r1", "r2", "r3", "r4"]
    assert [v["version"] for v in memory.backend.versions()] == [0, 1, 2, 3, 4]
    assert tree_bytes(mem)["principles/v000001.json"] == before["principles/v000001.json"]


# --- forget: a privacy deletion killed half-way ---------------------------------------------------------------------


def contradicting(relation: str):
    def respond(messages, kwargs):
        prompt = "\n".join(m.text for m in messages)
        if '"verdicts"' in prompt:
            return json.dumps({"verdicts": [{"pair": 1, "relation": relation}]})
        return default_responder(messages, kwargs)

    return StubChatModel(responder=respond)


@pytest.fixture
def superseded(tmp_path: Path) -> Memory:
    """r1's rule (with SECRET) superseded by r2's: it lives on in the history of r2's principle."""
    memory = Memory.create(tmp_path / "kw", CATEGORICAL, embeddings=KeywordEmbeddings(size=256))
    memory.align(
        [
            feedback("r1", "SELECT * FROM raw.orders", text=f"Never use raw tables, {SECRET}."),
            feedback("r4", "SELECT id FROM orders", text="Always filter cancelled orders."),
        ],
        model=contradicting("different"),
    )
    memory.align(
        [feedback("r2", "SELECT * FROM raw.payments", value="pass", text="Raw tables are fine to use now.")],
        model=contradicting("contradicts"),
        consolidate_threshold=0.5,
    )
    (current,) = [p for p in memory.principles if p["sources"] == ["r2"]]
    assert current["history"][0]["sources"] == ["r1"] and SECRET in current["history"][0]["text"]
    return memory


def test_forget_killed_during_purge_can_be_finished(superseded, tmp_path):
    """Killed while purging the episode log: the ids are still known, so forgetting again finishes the erasure."""
    mem = superseded.backend.path
    kill_writer_at("purge-log", mem, tmp_path, forget=["r1"], embeddings="keyword")
    memory = Memory.open(mem, embeddings=KeywordEmbeddings(size=256))
    assert memory.version == 3 and "r1" not in memory.records  # the forget itself was committed
    assert SECRET.encode() in b"".join(tree_bytes(mem).values())  # but the erasure was not finished
    report = memory.forget(["r1"])  # no KeyError: older versions still name r1
    assert report.version == 4
    assert SECRET.encode() not in b"".join(tree_bytes(mem).values())  # history of r2's principle included
    reopened = Memory.open(mem, embeddings=KeywordEmbeddings(size=256))
    assert sorted(reopened.records) == ["r2", "r4"] and reopened.episodes.ids == {"r2", "r4"}
    assert all(not p.get("history") for p in reopened.principles)
    assert not [p for p in mem.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]


def test_forget_leaves_no_superseded_text_in_the_live_memory(superseded):
    superseded.forget(["r1"])
    assert all(not p.get("history") for p in superseded.principles)
    superseded.add_principle("Prefer explicit column lists.")  # a later commit from the same object
    assert SECRET.encode() not in b"".join(tree_bytes(superseded.backend.path).values())
