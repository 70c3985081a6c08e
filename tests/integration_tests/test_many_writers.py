"""Many processes on one judge: 4 aligning different feedback at once while 8 judge, on both backends.

Writers are serialised by the backend's lock (PostgreSQL: an advisory lock per judge;
files: fcntl), each reloads what the one before it committed and merges its own
principles into those; the commit itself refuses a change prepared from an older
version. The test counts: every record of every writer is in the ledger and has its
episode, every version is there once, no principle text appears twice, and the
shared principle carries the sources of all four writers. Judges never fail and
see versions only move forward.
"""

import json
import subprocess
import sys
import textwrap
import time

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Memory
from memalign_graph.distill import allowed_principles
from tests.conftest import CATEGORICAL

WRITERS, JUDGES, BATCHES, PER_BATCH = 4, 8, 3, 5
SHARED = "Always filter cancelled orders."

ALIGNER = textwrap.dedent(
    """
    import json, sys
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from memalign_graph import Memory
    from memalign_graph.testing import StubChatModel

    store, shared = sys.argv[1], sys.argv[5]
    worker, batches, per_batch = (int(a) for a in sys.argv[2:5])
    memory = Memory.open(store, embeddings=DeterministicFakeEmbedding(size=32))
    versions = []
    for b in range(batches):
        records = []
        for j in range(per_batch):
            rid = f"w{worker}-b{b}-r{j}"
            # Every writer teaches the shared rule once, and one rule of its own per record.
            text = shared if (b, j) == (0, 0) else f"Rule {rid} of writer {worker} applies."
            records.append({"id": rid, "inputs": f"request {rid}", "outputs": f"SELECT {j}", "value": "fail",
                            "feedback": text})
        report = memory.align(records, model=StubChatModel(latency_s=0.05))
        assert not report.failed, report.failed
        versions.append(report.version)
    print(json.dumps(versions))
    """
)

JUDGE = textwrap.dedent(
    """
    import json, os, sys, time
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from memalign_graph import Context, build_judge_graph
    from memalign_graph.memory import open_memory
    from memalign_graph.testing import StubChatModel

    store, stop_file = sys.argv[1], sys.argv[2]
    emb = DeterministicFakeEmbedding(size=32)
    graph = build_judge_graph().compile()
    ctx = Context(store=store, model=StubChatModel(), embeddings=emb, precedent="off")
    seen, judged = [], 0
    while not os.path.exists(stop_file) or judged < 3:
        out = graph.invoke({"id": f"case-{judged}", "inputs": "weekly report", "outputs": "SELECT * FROM orders"},
                           context=ctx)
        assert out["judgment"]["value"] in ("pass", "fail"), out
        seen.append(open_memory(store, emb).version)
        judged += 1
        time.sleep(0.02)
    print(json.dumps({"judged": judged, "versions": seen}))
    """
)


def spawn(code, *args):
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.location_string
def test_four_writers_and_eight_judges_lose_nothing(tmp_path, new_location, backend_kind):
    store = new_location("many")
    Memory.create(store, CATEGORICAL, embeddings=DeterministicFakeEmbedding(size=32))
    stop = tmp_path / "stop"
    judges = [spawn(JUDGE, store, stop) for _ in range(JUDGES)]
    time.sleep(1.0)
    started = time.perf_counter()
    writers = [spawn(ALIGNER, store, w, BATCHES, PER_BATCH, SHARED) for w in range(WRITERS)]
    written = [finish(p) for p in writers]
    align_s = time.perf_counter() - started
    stop.touch()
    judged = [finish(p) for p in judges]

    memory = Memory.open(store, embeddings=DeterministicFakeEmbedding(size=32))
    expected = {f"w{w}-b{b}-r{j}" for w in range(WRITERS) for b in range(BATCHES) for j in range(PER_BATCH)}
    # No lost record: every record of every writer is in the ledger, with its episode.
    assert set(memory.records) == expected and memory.episodes.ids == expected
    assert all(entry["distilled"] for entry in memory.records.values())
    # Every alignment made exactly one version; versions handed out once each, in order.
    versions = sorted(v for vs in written for v in vs)
    assert versions == list(range(1, WRITERS * BATCHES + 1)) and memory.version == WRITERS * BATCHES
    assert [v["version"] for v in memory.backend.versions()] == list(range(WRITERS * BATCHES + 1))
    # No duplicate principle; the rule all four taught is one principle with four sources. (The stub
    # gives one principle per record; each answer is cut to what its call allows, the first ones kept.)
    kept = min(PER_BATCH, allowed_principles(PER_BATCH))
    texts = [p["text"] for p in memory.principles]
    assert len(texts) == len(set(texts)) == 1 + WRITERS * (BATCHES * kept - 1)
    shared = next(p for p in memory.principles if p["text"] == SHARED)
    assert sorted(shared["sources"]) == sorted(f"w{w}-b0-r0" for w in range(WRITERS))
    # Every principle's sources exist.
    assert all(set(p["sources"]) <= expected for p in memory.principles)
    # Judges: no failure, and the version they saw only moved forward.
    assert all(j["versions"] == sorted(j["versions"]) for j in judged)
    total = sum(j["judged"] for j in judged)
    assert total >= JUDGES * 3
    print(f"\n{backend_kind}: aligned {len(expected)} records in {align_s:.1f} s; {total} judgments meanwhile")
