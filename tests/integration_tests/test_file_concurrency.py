"""Concurrent writers on the file backend: the fcntl lock serialises them, and no update is lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Memory
from memalign_graph.episodic import episode_from_record
from memalign_graph.spec import record_hash
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, feedback, tree_bytes

ROOT = Path(__file__).resolve().parents[2]
LATENCY_S = 1.5  # per distillation call: long enough that both writers are inside align at once

WRITER = r"""
import json, sys, time
from pathlib import Path

memdir, ready, go, batch = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
latency = float(sys.argv[5])

from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Memory
from memalign_graph.testing import StubChatModel

memory = Memory.open(memdir, embeddings=DeterministicFakeEmbedding(size=32))
opened_at = memory.version
ready.touch()
while not go.exists():
    time.sleep(0.005)
started = time.time()
report = memory.align(batch, model=StubChatModel(latency_s=latency))
print(json.dumps({"opened_at": opened_at, "version": report.version, "added": report.added,
                  "started": started, "ended": time.time()}))
"""


def batch(prefix: str, n: int) -> list[dict]:
    return [feedback(f"{prefix}{i}", f"SELECT {prefix}{i}", text=f"Rule {prefix} number {i} holds.") for i in range(n)]


def test_two_processes_align_at_once_and_both_batches_land(tmp_path):
    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=DeterministicFakeEmbedding(size=32))
    batches = {"a": batch("a", 3), "b": batch("b", 4)}
    script, go = tmp_path / "writer.py", tmp_path / "go"
    script.write_text(WRITER)
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(memory.backend.path),
                str(tmp_path / f"ready-{name}"),
                str(go),
                json.dumps(records),
                str(LATENCY_S),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, records in batches.items()
    }
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{name}").exists() for name in procs):
            assert all(p.poll() is None for p in procs.values()), {n: p.communicate() for n, p in procs.items()}
            assert time.monotonic() < deadline, "writers never got ready"
            time.sleep(0.02)
        go.touch()  # both start aligning now, both having opened version 0
        out = {}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            out[name] = json.loads(stdout.strip().splitlines()[-1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert out["a"]["opened_at"] == out["b"]["opened_at"] == 0
    assert sorted(r["version"] for r in out.values()) == [1, 2]
    for name, records in batches.items():
        assert out[name]["added"] == [r["id"] for r in records]
    first, second = sorted(out.values(), key=lambda r: r["version"])
    # Serialised by the lock: the second writer distilled only after the first committed, so the
    # whole took two distillation latencies, though both started within moments of each other.
    assert abs(first["started"] - second["started"]) < LATENCY_S
    assert second["ended"] - min(first["started"], second["started"]) >= 2 * LATENCY_S
    assert second["ended"] >= first["ended"] + LATENCY_S

    final = Memory.open(memory.backend.path, embeddings=DeterministicFakeEmbedding(size=32))
    every = [r["id"] for records in batches.values() for r in records]
    assert final.version == 2
    assert sorted(final.records) == sorted(every) and all(e["distilled"] for e in final.records.values())
    assert final.episodes.ids == set(every) and len(final.episodes) == 7
    # One principle per record from the stub, each answer cut to what the call allows (at least 3):
    # batch a keeps 3, batch b 3 of its 4.
    sources = [s for p in final.principles for s in p["sources"]]
    assert len(final.principles) == 6 and len(set(sources)) == 6 and set(sources) <= set(every)
    versions = final.backend.versions()
    assert [v["version"] for v in versions] == [0, 1, 2]
    first_ids = {r["id"] for r in batches["a" if out["a"]["version"] == 1 else "b"]}
    assert set(versions[1]["records"]) == first_ids  # version 1: the first writer's batch alone
    assert set(versions[2]["records"]) == set(every)  # version 2 built on version 1: nothing lost
    logs = sorted(p.name for p in (memory.backend.path / "episodes" / "log").iterdir())
    assert logs == ["v000001.jsonl", "v000002.jsonl"]


def test_change_prepared_from_a_stale_version_is_refused(tmp_path):
    """A writer that bypasses the lock and commits from a stale version gets RuntimeError; nothing is written."""
    emb = DeterministicFakeEmbedding(size=32)
    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=emb)
    stale = Memory.open(memory.backend.path, embeddings=emb)
    memory.align(batch("a", 2), model=StubChatModel())
    before = tree_bytes(memory.backend.path)

    # `stale` still holds version 0 and prepares version 1 from it, behind the lock's back.
    record = feedback("b0", "SELECT b0", text="Rule b holds.")
    episode = episode_from_record(record)
    stale.episodes.upsert([episode])
    checkpoint = {
        **stale.checkpoint,
        "version": stale.version + 1,
        "records": {"b0": {"hash": record_hash(record), "distilled": True, "salient": True}},
    }
    with pytest.raises(RuntimeError, match="memory moved to version 1 while this change was prepared from version 0"):
        stale.backend.commit(checkpoint, stale.episodes.vectorstore, embeddings_changed=True, new_episodes=[episode])
    assert tree_bytes(memory.backend.path) == before  # no log, no snapshot, no checkpoint written

    # Through align, the same writer refreshes under the lock and builds on version 1.
    report = stale.align([record], model=StubChatModel())
    assert report.version == 2
    final = Memory.open(memory.backend.path, embeddings=emb)
    assert sorted(final.records) == ["a0", "a1", "b0"] and final.episodes.ids == {"a0", "a1", "b0"}
