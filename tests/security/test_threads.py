"""One process, many threads: readers never see a half-built or uncommitted vector store.

Attack (issue 11): 4 reader threads searching one shared ``Memory`` while a writer
aligns in the same process raised ``KeyError`` from FAISS's ``index_to_docstore_id``
(217 in 14 918 reads) and returned episodes of versions not yet committed. Writers
now change a draft and swap it in after the commit (``EpisodicMemory.draft``).
"""

from __future__ import annotations

import threading
import traceback

from memalign_graph import Memory
from memalign_graph.testing import StubChatModel
from tests.conftest import feedback, stored_state

READERS = 4
BATCHES = 12
PER_BATCH = 20


def test_readers_see_only_committed_complete_stores(memory: Memory, stub: StubChatModel) -> None:
    memory.align([feedback(f"seed-{i}", f"SELECT {i} FROM seed") for i in range(20)], model=stub)
    start = memory.version
    introduced: dict[str, int] = {f"seed-{i}": start for i in range(20)}
    batches = []
    for b in range(BATCHES):
        batch = [feedback(f"w{b}-{i}", f"SELECT {i} FROM t{b} -- {b}") for i in range(PER_BATCH)]
        batches.append(batch)
        introduced.update({r["id"]: start + b + 1 for r in batch})

    done = threading.Event()
    errors: list[str] = []
    reads = [0] * READERS

    def reader(n: int) -> None:
        i = 0
        while not done.is_set():
            i += 1
            case = {"inputs": f"request w{i % BATCHES}-{i % PER_BATCH}", "outputs": f"SELECT {i} FROM t{i % 7}"}
            try:
                episodes = memory.retrieve_episodes(case, k=5)
                principles = memory.principles
                committed = memory.backend.current_version()
            except Exception:  # noqa: BLE001 - every failure a reader meets is the finding
                errors.append(traceback.format_exc(limit=3))
                continue
            reads[n] += 1
            for e in episodes:
                if introduced[e["id"]] > committed:
                    errors.append(f"episode {e['id']} of version {introduced[e['id']]} seen at version {committed}")
                if "value" not in e or "case_hash" not in e:
                    errors.append(f"half-read episode {e}")
            for p in principles:
                if any(introduced.get(s, 0) > committed for s in p["sources"]):
                    errors.append(f"principle {p['id']} from an uncommitted version seen at version {committed}")

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
    for t in threads:
        t.start()
    try:
        for batch in batches:
            memory.align(batch, model=stub)
        memory.forget([f"w0-{i}" for i in range(PER_BATCH)])
        memory.rollback(start + 3)
    finally:
        done.set()
        for t in threads:
            t.join()

    assert sum(reads) > 100, reads
    assert errors == [], f"{len(errors)} bad reads of {sum(reads)}; first: {errors[:3]}"
    # What the threads saw last is what is stored: a fresh load gives the same memory.
    again = Memory.open(memory.backend, embeddings=memory.embeddings)
    assert again.version == memory.version == start + BATCHES + 2
    assert again.episodes.ids == memory.episodes.ids
    assert again.principles == memory.principles
    assert stored_state(again) == stored_state(memory)


def test_a_failed_commit_leaves_readers_on_the_committed_store(memory: Memory, stub: StubChatModel) -> None:
    memory.align([feedback("a", "SELECT 1 FROM raw.a")], model=stub)
    before_ids, before_state = memory.episodes.ids, stored_state(memory)
    live = memory.episodes

    def fail(*args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    commit, memory.backend.commit = memory.backend.commit, fail  # type: ignore[method-assign]
    try:
        try:
            memory.align([feedback("b", "SELECT 2 FROM raw.b")], model=stub)
        except OSError:
            pass
        else:
            raise AssertionError("the failing commit was not reported")
    finally:
        memory.backend.commit = commit  # type: ignore[method-assign]
    assert live.ids == before_ids == memory.episodes.ids  # the store readers held was never touched
    assert stored_state(memory) == before_state
