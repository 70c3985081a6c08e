"""A judge in a LangGraph store, as Studio's memory view shows it and as other code names it.

Episode items carry no vector (the vectors have a namespace of their own), a judge stored
in the earlier layout is migrated when it is opened, and a ``BaseStore`` is a memory location.
"""

import base64

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Context, Memory, build_judge_graph
from memalign_graph.backends.store import STORE_FORMAT_VERSION, StoreBackend
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, feedback, new_store, store_items


class CountingEmbeddings(DeterministicFakeEmbedding):
    calls: int = 0

    def embed_documents(self, texts):
        self.calls += len(texts)
        return super().embed_documents(texts)

    def embed_query(self, text):
        self.calls += 1
        return super().embed_query(text)


RECORDS = [
    feedback("r1", "SELECT * FROM raw.payments", "fail", "Never use raw tables."),
    feedback("r2", "SELECT total FROM mart.revenue", "pass"),
    feedback("r3", "SELECT id FROM raw.users", "fail"),
]


def aligned(store, embeddings) -> Memory:
    memory = Memory.create(StoreBackend(store, "sql"), CATEGORICAL, embeddings=embeddings)
    memory.align(RECORDS, model=StubChatModel())
    return memory


def namespace(store, name):
    return {key: value for (ns, key), value in store_items(store).items() if ns == ("memalign", "sql", name)}


def test_episode_items_people_browse_carry_no_vector():
    store = new_store()
    counting = CountingEmbeddings(size=32)
    memory = aligned(store, counting)
    episodes, vectors = namespace(store, "episodes"), namespace(store, "episode_vectors")
    assert sorted(e["id"] for e in episodes.values()) == ["r1", "r2", "r3"]
    assert all(set(e) == {"id", "text", "episode", "version"} for e in episodes.values())
    assert set(vectors) == set(episodes) and all(set(v) == {"vector"} for v in vectors.values())
    # What is stored is what was embedded: reopening embeds nothing and finds the same neighbours.
    counting = CountingEmbeddings(size=32)
    reopened = Memory.open(StoreBackend(store, "sql"), embeddings=counting)
    assert counting.calls == 0
    case = {"inputs": "request r1", "outputs": "SELECT * FROM raw.payments"}
    assert [e["id"] for e in reopened.retrieve_episodes(case, 3)] == [
        e["id"] for e in memory.retrieve_episodes(case, 3)
    ]
    # A change deletes the vectors of the episodes it removes.
    memory.forget(["r3"])
    assert sorted(e["id"] for e in namespace(store, "episodes").values()) == ["r1", "r2"]
    assert set(namespace(store, "episode_vectors")) == set(namespace(store, "episodes"))


def as_format_1(store) -> None:
    """Rewrite a judge into the layout memalign-graph wrote before: vectors inside the episode items."""
    vectors = namespace(store, "episode_vectors")
    for key, value in namespace(store, "episodes").items():
        store.put(("memalign", "sql", "episodes"), key, {**value, "vector": vectors[key]["vector"]}, index=["text"])
        store.delete(("memalign", "sql", "episode_vectors"), key)
    meta = store.get(("memalign", "sql"), "judge").value
    store.put(("memalign", "sql"), "judge", {**meta, "format_version": 1}, index=False)


@pytest.mark.parametrize("cut_short", [False, True])
def test_a_judge_in_the_earlier_layout_is_migrated_on_open(cut_short):
    store = new_store()
    emb = DeterministicFakeEmbedding(size=32)
    before = aligned(store, emb)
    case = {"inputs": "request r1", "outputs": "SELECT * FROM raw.payments"}
    expected = [(e["id"], round(e["score"], 6)) for e in before.retrieve_episodes(case, 3)]
    as_format_1(store)
    if cut_short:  # a migration that died after marking the judge: the next open finishes it
        meta = store.get(("memalign", "sql"), "judge").value
        store.put(("memalign", "sql"), "judge", {**meta, "format_version": 2, "migration": "vectors"}, index=False)
    assert all("vector" in e for e in namespace(store, "episodes").values())
    memory = Memory.open(StoreBackend(store, "sql"), embeddings=emb)
    assert [(e["id"], round(e["score"], 6)) for e in memory.retrieve_episodes(case, 3)] == expected
    assert not any("vector" in e for e in namespace(store, "episodes").values())
    assert set(namespace(store, "episode_vectors")) == set(namespace(store, "episodes"))
    assert store.get(("memalign", "sql"), "judge").value["format_version"] == STORE_FORMAT_VERSION
    assert "migration" not in store.get(("memalign", "sql"), "judge").value
    assert memory.version == before.version and memory.records == before.records
    stored = namespace(store, "episode_vectors")
    assert all(np.frombuffer(base64.b64decode(v["vector"]), "<f4").shape == (32,) for v in stored.values())


def test_a_judge_from_a_newer_layout_is_refused_with_upgrade():
    store = new_store()
    emb = DeterministicFakeEmbedding(size=32)
    aligned(store, emb)
    meta = store.get(("memalign", "sql"), "judge").value
    store.put(("memalign", "sql"), "judge", {**meta, "format_version": STORE_FORMAT_VERSION + 1}, index=False)
    with pytest.raises(Exception, match="newer memalign-graph.*upgrade memalign-graph"):
        Memory.open(StoreBackend(store, "sql"), embeddings=emb)


def test_a_langgraph_store_is_a_memory_location():
    """``Context(store=InMemoryStore())`` as a LangGraph user writes it: judge ``default`` in that store."""
    store = new_store()
    emb = DeterministicFakeEmbedding(size=32)
    Memory.create(store, CATEGORICAL, embeddings=emb).align(RECORDS[:1], model=StubChatModel())
    assert Memory.open(store, embeddings=emb).backend.judge == "default"
    context = Context(store=store, model=StubChatModel(), embeddings=emb)
    case = {"id": "c", "inputs": "request r1", "outputs": "SELECT * FROM raw.payments"}
    judgment = build_judge_graph().compile().invoke(case, context=context)["judgment"]
    assert judgment["precedent"] == "r1" and judgment["value"] == "fail"
