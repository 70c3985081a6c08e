import json

import pytest

from memalign_graph import Memory, MemoryFormatError, RecordError
from memalign_graph.backends import file as file_backend
from memalign_graph.testing import StubChatModel
from tests.conftest import CATEGORICAL, NUMERIC, feedback, location_of, stored_state

FILE_ONLY = pytest.mark.parametrize("backend_kind", ["file"])


def test_create_and_reopen_empty(memory, embeddings):
    assert memory.version == 0 and memory.principles == [] and len(memory.episodes) == 0
    again = Memory.open(location_of(memory), embeddings=embeddings)
    assert again.spec == CATEGORICAL
    with pytest.raises(FileExistsError):
        Memory.create(location_of(memory), CATEGORICAL, embeddings=embeddings)


def test_align_stores_episodes_and_principles_with_sources(memory, stub, embeddings):
    report = memory.align(
        [
            feedback(
                "r1", "SELECT * FROM raw.orders", text="Prefer the certified view over raw tables. It is audited."
            ),
            feedback("r2", "SELECT 1", value="pass", judge_value="pass"),
        ],
        model=stub,
    )
    assert report.version == 1 == memory.version
    assert sorted(report.added) == ["r1", "r2"]
    assert report.distilled == ["r1"]  # r2 agrees with the judge and says nothing: not salient
    assert report.llm_calls == 2 and report.usage["total_tokens"] > 0  # distillation, the verdict-directive check
    assert [(p["text"], p["sources"]) for p in memory.principles] == [
        ("Prefer the certified view over raw tables.", ["r1"])
    ]
    assert memory.episodes.ids == {"r1", "r2"}
    reopened = Memory.open(location_of(memory), embeddings=embeddings)
    assert reopened.principles == memory.principles
    assert reopened.episodes.ids == {"r1", "r2"}
    episode = reopened.retrieve_episodes({"inputs": "request r1", "outputs": "SELECT * FROM raw.orders"}, k=1)[0]
    assert episode["id"] == "r1" and episode["value"] == "fail" and episode["score"] == pytest.approx(1.0, abs=1e-4)
    assert reopened.records["r1"]["distilled"] and reopened.records["r2"]["salient"] is False


def test_realigning_identical_records_is_a_noop(memory, stub):
    batch = [feedback("r1", "x", text="Never use SELECT star.")]
    memory.align(batch, model=stub)
    before = stored_state(memory)
    report = memory.align(batch, model=stub)
    assert report.unchanged == ["r1"] and report.version == 1 and report.llm_calls == 0
    assert stored_state(memory) == before


def test_duplicate_principles_merge_sources(memory, stub):
    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    report = memory.align([feedback("r2", "y", text="never use select STAR!")], model=stub)
    assert report.new_principles == [] and len(report.merged_principles) == 1
    assert [(p["text"], p["sources"]) for p in memory.principles] == [("Never use SELECT star.", ["r1", "r2"])]


def test_changed_record_overwrites_episode_and_rederives_principles(memory, stub):
    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    old_id = memory.principles[0]["id"]
    report = memory.align([feedback("r1", "x", value="pass", text="Raw tables are fine for audits.")], model=stub)
    assert report.replaced == ["r1"] and report.removed_principles == [old_id]
    assert [p["text"] for p in memory.principles] == ["Raw tables are fine for audits."]
    assert memory.episodes.get(["r1"])[0]["value"] == "pass"
    assert len(memory.episodes) == 1


def test_failed_distillation_is_retried_by_next_alignment(memory):
    broken = StubChatModel(responder=lambda m, k: "garbage")
    report = memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=broken, max_retries=0)
    assert report.failed.keys() == {"r1"} and memory.records["r1"]["distilled"] is False
    assert memory.episodes.ids == {"r1"}  # the episode is stored; only distillation is pending
    report = memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=StubChatModel())
    assert report.distilled == ["r1"] and not report.failed and memory.records["r1"]["distilled"]
    assert len(memory.principles) == 1


def test_invalid_batch_writes_nothing(memory, stub):
    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    before = stored_state(memory)
    with pytest.raises(RecordError, match="record 1.*value 'maybe'"):
        memory.align([feedback("r2", "y"), feedback("r3", "z", value="maybe")], model=stub)
    with pytest.raises(RecordError, match="duplicate id 'r2'"):
        memory.align([feedback("r2", "y"), feedback("r2", "z")], model=stub)
    with pytest.raises(RecordError, match="field 'id'"):
        memory.align([{"inputs": "q", "outputs": "a", "value": "pass"}], model=stub)
    assert stored_state(memory) == before and stub.calls == 2  # the first alignment's two calls


@FILE_ONLY
def test_crash_before_manifest_keeps_previous_version(memory, stub, embeddings, monkeypatch):
    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    real = file_backend.atomic_write_json

    def crash_on_manifest(path, data):
        if path.name == file_backend.MANIFEST:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(file_backend, "atomic_write_json", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        memory.align([feedback("r2", "y", text="Always filter cancelled orders.")], model=stub)
    assert memory.version == 1 and memory.episodes.ids == {"r1"}  # in-process view rolled back too
    monkeypatch.setattr(file_backend, "atomic_write_json", real)
    reopened = Memory.open(location_of(memory), embeddings=embeddings)
    assert reopened.version == 1 and reopened.episodes.ids == {"r1"} and len(reopened.principles) == 1
    report = reopened.align([feedback("r2", "y", text="Always filter cancelled orders.")], model=stub)
    assert report.version == 2 and reopened.episodes.ids == {"r1", "r2"}


def test_every_alignment_is_a_version(memory, stub):
    for i in range(3):
        memory.align(
            [feedback(f"r{i}", f"x{i}", text=f"Rule number {i} applies.")],
            model=stub,
            author="ana",
            reason=f"batch {i}",
        )
    versions = memory.backend.versions()
    assert [v["version"] for v in versions] == [0, 1, 2, 3]
    assert [len(v["principles"]) for v in versions] == [0, 1, 2, 3]
    assert versions[-1]["author"] == "ana" and versions[-1]["reason"] == "batch 2"


def test_stale_writer_is_refused(memory, stub, embeddings):
    other = Memory.open(location_of(memory), embeddings=embeddings)
    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    # `other` still holds version 0, but align refreshes under the lock instead of losing r1.
    other.align([feedback("r2", "y", text="Always filter cancelled orders.")], model=stub)
    assert Memory.open(location_of(memory), embeddings=embeddings).episodes.ids == {"r1", "r2"}
    stale = dict(other.checkpoint, version=other.version)  # prepared from an old version
    with pytest.raises(RuntimeError, match="moved to version"):
        other.backend.commit(stale, None, embeddings_changed=False)


@FILE_ONLY
def test_no_pickles_and_plain_json(memory, stub):
    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    files = [p for p in memory.backend.path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".pkl", ".pickle"}]
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())


@FILE_ONLY
def test_open_errors(tmp_path, embeddings, memory):
    with pytest.raises(MemoryFormatError, match="no such memory directory"):
        Memory.open(tmp_path / "nowhere", embeddings=embeddings)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "memalign.json").write_text('{"hello": 1}')
    with pytest.raises(MemoryFormatError, match="not a memalign-graph manifest"):
        Memory.open(tmp_path / "foreign", embeddings=embeddings)
    manifest = memory.backend.path / "memalign.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(MemoryFormatError, match="newer memalign-graph"):
        Memory.open(location_of(memory), embeddings=embeddings)


def test_embeddings_mismatch_is_refused(memory):
    from langchain_core.embeddings import DeterministicFakeEmbedding

    class Other(DeterministicFakeEmbedding):
        name: str = "other-embedder"

    with pytest.raises(MemoryFormatError, match="embedded with"):
        Memory.open(location_of(memory), embeddings=Other(size=32))


def test_numeric_memory_round_trip(new_location, embeddings, stub):
    location = new_location("n")
    memory = Memory.create(location, NUMERIC, embeddings=embeddings)
    memory.align(
        [
            {
                "id": "t1",
                "inputs": "My order is late",
                "outputs": "Check the tracking page.",
                "value": 2,
                "feedback": "Open with reassurance before instructions.",
            }
        ],
        model=stub,
    )
    episode = Memory.open(location, embeddings=embeddings).episodes.get(["t1"])[0]
    assert episode["value"] == 2


@pytest.mark.parametrize("backend_kind", ["postgres"])
def test_open_errors_postgres(memory, embeddings):
    import psycopg

    url = memory.backend.location
    missing = url.replace("judge=", "judge=nobody-")
    with pytest.raises(MemoryFormatError, match="no judge 'nobody-"):
        Memory.open(missing, embeddings=embeddings)
    with psycopg.connect(memory.backend.conninfo, autocommit=True) as conn:
        conn.execute("UPDATE memalign_judge SET format_version = 99 WHERE name = %s", (memory.backend.judge,))
    with pytest.raises(MemoryFormatError, match="newer memalign-graph"):
        Memory.open(url, embeddings=embeddings)
    with pytest.raises(MemoryFormatError, match="cannot connect"):
        Memory.open("postgresql://nobody@127.0.0.1:1/none?judge=x", embeddings=embeddings)


@pytest.mark.parametrize("backend_kind", ["postgres"])
def test_postgres_rows_are_plain_json_and_vectors(memory, stub, embeddings):
    import psycopg

    memory.align([feedback("r1", "x", text="Never use SELECT star.")], model=stub)
    with psycopg.connect(memory.backend.conninfo) as conn:
        kind, dims, rid = conn.execute(
            "SELECT json_typeof(episode), vector_dims(embedding), episode->>'id' FROM memalign_episode "
            "WHERE judge = %s",
            (memory.backend.judge,),
        ).fetchone()
        checkpoint_kind = conn.execute(
            "SELECT json_typeof(checkpoint) FROM memalign_principles WHERE judge = %s AND version = 1",
            (memory.backend.judge,),
        ).fetchone()[0]
    assert (kind, dims, rid, checkpoint_kind) == ("object", 32, "r1", "object")
    again = Memory.open(location_of(memory), embeddings=embeddings)
    assert again.episodes.get(["r1"])[0]["feedback"] == "Never use SELECT star."


def test_episodes_added_in_chunks_are_the_episodes_added_at_once(tmp_path, embeddings):
    """``upsert_with_vectors`` adds in chunks: ids, order, vectors and search are what one call gives."""
    import numpy as np

    from memalign_graph.episodic import episode_from_record

    records = [feedback(f"r{i}", f"case number {i} about topic {i % 3}", "pass" if i % 2 else "fail") for i in range(7)]
    episodes = [episode_from_record(r) for r in records]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((7, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stores = []
    for name, chunk in (("once", 100), ("chunked", 3)):
        memory = Memory.create(tmp_path / name, CATEGORICAL, embeddings=embeddings)
        draft = memory.episodes.draft()
        draft.upsert_with_vectors(episodes, vectors, chunk=chunk)
        stores.append(draft)
    once, chunked = stores
    assert once.ids == chunked.ids == {f"r{i}" for i in range(7)}
    assert once.vectorstore.index_to_docstore_id == chunked.vectorstore.index_to_docstore_id
    assert once.vectors(sorted(once.ids)) == chunked.vectors(sorted(chunked.ids))
    assert once.get(["r4", "r6"]) == chunked.get(["r4", "r6"]) == [episodes[4], episodes[6]]
    case = {"inputs": "case number 4 about topic 1", "outputs": records[4]["outputs"]}
    assert once.search(case, 3) == chunked.search(case, 3)


def test_each_distinct_case_is_embedded_once_and_shares_its_vector(embeddings):
    """Alignment embeds each distinct episode text once, in chunks; every episode gets its own text's vector."""
    import numpy as np

    from memalign_graph.alignment import Phases, embed_episodes
    from memalign_graph.episodic import episode_from_record
    from memalign_graph.spec import embedding_text

    cases = [f"case {i % 5} about topic {i % 5}" for i in range(12)]  # 12 episodes, 5 distinct texts
    episodes = [episode_from_record(feedback(f"r{i}", case, inputs="same request")) for i, case in enumerate(cases)]
    texts = [embedding_text(e) for e in episodes]
    asked: list[list[str]] = []

    class Recorded(type(embeddings)):
        def embed_documents(self, batch):
            asked.append(list(batch))
            return super().embed_documents(batch)

    vectors = embed_episodes(Recorded(size=32), episodes, Phases(), chunk=3)
    assert len(set(texts)) == 5 and [t for batch in asked for t in batch] == list(dict.fromkeys(texts))
    assert [len(batch) for batch in asked] == [3, 2]
    expected = np.asarray(embeddings.embed_documents(texts), dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-6)
