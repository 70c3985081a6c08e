"""The LangGraph store backend: graphs on ``runtime.store``, lost updates, consistent reads, writers in threads.

The contract suites (test_memory, test_lifecycle, test_graph, ...) run on it through the
``langgraph`` backend of ``tests/conftest.py``; these are the behaviours only it has.
"""

import json
import threading

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langgraph.store.memory import InMemoryStore

from memalign_graph import Context, Memory, build_align_graph, build_judge_graph
from memalign_graph.backends.store import StoreBackend, judge_from_label, store_label
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, feedback, new_store, store_items

EMB = DeterministicFakeEmbedding(size=32)
CASE = {"id": "q-1", "inputs": "Weekly revenue", "outputs": "SELECT * FROM raw.payments"}


def test_graph_compiled_with_a_store_aligns_and_judges_from_it():
    store = new_store()
    Memory.create(StoreBackend(store, "default"), CATEGORICAL, embeddings=EMB)
    context = Context(store="langgraph", model=StubChatModel(), embeddings=EMB)
    correction = {**CASE, "value": "fail", "feedback": "Never use raw tables; use the certified view."}
    report = build_align_graph().compile(store=store).invoke({"feedback": [correction]}, context=context)["report"]
    assert report["version"] == 1 and report["added"] == ["q-1"]
    judgment = build_judge_graph().compile(store=store).invoke(CASE, context=context)["judgment"]
    assert judgment["precedent"] == "q-1" and judgment["value"] == "fail"
    # What Studio's memory view and store.search read: the episodes and principles, by meaning too.
    (hit,) = store.search(("memalign", "default", "episodes"), query="Weekly revenue raw payments", limit=1)
    assert hit.value["id"] == "q-1" and "raw.payments" in hit.value["text"]
    principles = store.search(("memalign", "default", "principles"))
    assert [p.value["text"] for p in principles] == ["Never use raw tables; use the certified view."]


def test_langgraph_location_without_a_store_names_the_problem():
    context = Context(store="langgraph:sql", model=StubChatModel(), embeddings=EMB)
    with pytest.raises(ValueError, match=r"store='langgraph:sql'.*runs without one: compile it with store="):
        build_judge_graph().compile().invoke(CASE, context=context)


def test_judge_is_created_from_its_definition_on_first_use(monkeypatch):
    store = new_store()
    monkeypatch.setenv("MEMALIGN_JUDGE_SPECS", json.dumps({"sql v1.2": CATEGORICAL.to_dict()}))
    context = Context(store="langgraph:sql v1.2", model=StubChatModel(), embeddings=EMB)
    out = build_judge_graph().compile(store=store).invoke(CASE, context=context)["judgment"]
    assert out["value"] in ("pass", "fail")
    assert ("memalign", "sql v1%2E2") in store.list_namespaces(prefix=("memalign",), max_depth=2)
    assert Memory.open(StoreBackend(store, "sql v1.2"), embeddings=EMB).spec == CATEGORICAL
    unknown = Context(store="langgraph:other", model=StubChatModel(), embeddings=EMB)
    with pytest.raises(Exception, match="no judge 'other' in the graph's LangGraph store, and MEMALIGN_JUDGE_SPECS"):
        build_judge_graph().compile(store=store).invoke(CASE, context=unknown)


def test_judge_names_become_valid_namespace_labels():
    assert store_label("v1.2%x") == "v1%2E2%25x" and judge_from_label("v1%2E2%25x") == "v1.2%x"
    for bad in ("", "  ", "a\x00b", "a\nb", "x" * 201):
        with pytest.raises(ValueError, match="judge name"):
            StoreBackend(InMemoryStore(), bad)


def test_a_change_prepared_from_an_older_version_is_refused_and_leaves_nothing():
    """Two writers prepare version 1 from version 0: the second is refused; nothing of it stays."""
    store = new_store()
    first = Memory.create(StoreBackend(store, "j"), CATEGORICAL, embeddings=EMB)
    second = Memory.open(StoreBackend(store, "j"), embeddings=EMB)
    first.align([feedback("a", "SELECT a FROM raw.x", text="Rule A.")], model=StubChatModel())
    committed = store_items(store)
    draft = second.episodes.draft()
    draft.upsert([{"id": "b", "inputs": "request b", "outputs": "SELECT b", "value": "fail"}])
    stale = {**second.checkpoint, "version": 1, "records": {"b": {"hash": "h", "distilled": True}}}
    with pytest.raises(RuntimeError, match="moved to version 1 while this change was prepared from version 0"):
        second.backend.commit(stale, draft.vectorstore, embeddings_changed=True)
    assert store_items(store) == committed


def test_a_commit_overtaken_between_its_writes_is_refused_and_cleaned_up(monkeypatch):
    """Without a shared lock a writer can pass the first check; the second check before ``head`` still refuses it."""
    store = new_store()
    loser = Memory.create(StoreBackend(store, "j"), CATEGORICAL, embeddings=EMB)
    winner = Memory.open(StoreBackend(store, "j"), embeddings=EMB)
    draft = loser.episodes.draft()
    draft.upsert([{"id": "lost", "inputs": "request lost", "outputs": "SELECT 'lost text'", "value": "fail"}])
    backend = loser.backend
    real_put = backend._put

    def put(namespace, key, value, index=False):  # the winner commits while the loser is half-way
        real_put(namespace, key, value, index)
        if namespace[-1] == "manifests":
            assert "lost text" in json.dumps(list(store_items(store).values()))  # half-written
            winner.align([feedback("won", "SELECT 1 FROM raw.w", text="Rule W.")], model=StubChatModel())

    monkeypatch.setattr(backend, "_put", put)
    stale = {**loser.checkpoint, "version": 1, "records": {"lost": {"hash": "h", "distilled": True}}}
    with pytest.raises(RuntimeError, match="moved to version 1"):
        backend.commit(stale, draft.vectorstore, embeddings_changed=True)
    monkeypatch.undo()
    reader = Memory.open(StoreBackend(store, "j"), embeddings=EMB)
    assert reader.version == 1 and reader.episodes.ids == {"won"} and set(reader.records) == {"won"}
    # The winner, taking the writer lock, found the loser's "pending" marker and removed what no
    # committed version has; the loser's version 1 checkpoint was replaced by the winner's.
    assert "lost" not in json.dumps(list(store_items(store).values()))
    assert Memory.open(StoreBackend(store, "j"), embeddings=EMB).episodes.ids == {"won"}


def test_writers_in_threads_lose_nothing_and_readers_never_see_a_mix():
    store = new_store()
    Memory.create(StoreBackend(store, "j"), CATEGORICAL, embeddings=EMB)
    writers, batches, per_batch = 4, 3, 3
    stop = threading.Event()
    problems: list[str] = []
    loads = [0]

    def write(w: int) -> None:
        memory = Memory.open(StoreBackend(store, "j"), embeddings=EMB)  # its own Memory, as another request would
        for b in range(batches):
            records = [feedback(f"w{w}-b{b}-r{j}", f"SELECT {j}", text=f"Rule {w}.{b}.{j}.") for j in range(per_batch)]
            memory.align(records, model=StubChatModel())

    def read() -> None:
        backend = StoreBackend(store, "j")
        while not stop.is_set():
            loaded = backend.load(EMB)
            ids = set(loaded.vectorstore.index_to_docstore_id.values())
            if ids != set(loaded.checkpoint["records"]):
                problems.append(f"version {loaded.checkpoint['version']}: episodes {sorted(ids)}")
            loads[0] += 1

    readers = [threading.Thread(target=read) for _ in range(2)]
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    memory = Memory.open(StoreBackend(store, "j"), embeddings=EMB)
    expected = {f"w{w}-b{b}-r{j}" for w in range(writers) for b in range(batches) for j in range(per_batch)}
    assert set(memory.records) == expected and memory.episodes.ids == expected
    assert memory.version == writers * batches
    assert [v["version"] for v in memory.backend.versions()] == list(range(writers * batches + 1))
    assert not problems and loads[0] > 0


def test_a_store_failing_mid_commit_names_the_version_that_stays_current():
    """A store that fails while a version is written: MemoryWriteError says memory is unchanged; reopening agrees."""
    from memalign_graph.errors import MemoryWriteError

    class FailingStore(InMemoryStore):
        fail_at: int | None = None  # the Nth batch holding a put fails ("disk full")
        puts = 0

        def batch(self, ops):
            ops = list(ops)
            if self.fail_at is not None and any(type(op).__name__ == "PutOp" for op in ops):
                self.puts += 1
                if self.puts == self.fail_at:
                    raise OSError("disk full")
            return super().batch(ops)

    store = FailingStore()
    memory = Memory.create(StoreBackend(store, "sql"), CATEGORICAL, embeddings=DeterministicFakeEmbedding(size=32))
    memory.align([feedback("r1", "fail")], model=StubChatModel())
    store.fail_at = 2  # after the pending marker, before head: a half-written version
    with pytest.raises(MemoryWriteError, match="memory unchanged at version 1") as exc:
        memory.align([feedback("r2", "pass")], model=StubChatModel())
    assert exc.value.version == 1 and "disk full" in str(exc.value)
    store.fail_at = None
    again = Memory.open(StoreBackend(store, "sql"), embeddings=DeterministicFakeEmbedding(size=32))
    assert again.version == 1 and set(again.records) == {"r1"}
