"""Alignment reports progress through every phase, and embeds episodes in bounded chunks."""

import threading

from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Memory
from tests.conftest import CATEGORICAL, feedback

PHASES = ["embed", "distill", "consolidate", "merge", "index", "persist"]


class ChunkCounting(DeterministicFakeEmbedding):
    """Records the size of each ``embed_documents`` call."""

    name: str = "chunk-counting-embeddings"
    sizes: list = []

    def embed_documents(self, texts):
        self.sizes.append(len(texts))
        return super().embed_documents(texts)


def test_every_phase_is_reported_and_finishes(tmp_path, stub):
    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=DeterministicFakeEmbedding(size=16))
    seen: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def progress(phase, done, total):
        with lock:
            seen.append((phase, done, total))

    records = [feedback(f"r{i}", f"SELECT {i}", text=f"Rule {i} about table t{i}.") for i in range(7)]
    memory.align(records, model=stub, batch_size=3, progress=progress)
    assert {p for p, _, _ in seen} == set(PHASES)
    for phase in PHASES:
        steps = [(d, t) for p, d, t in seen if p == phase]
        assert steps[0][0] == 0 and steps[-1][0] == steps[-1][1], (phase, steps)
    assert [(d, t) for p, d, t in seen if p == "embed"][-1] == (7, 7)
    assert [(d, t) for p, d, t in seen if p == "distill"][-1] == (7, 7)


def test_episodes_are_embedded_in_chunks(tmp_path, stub):
    embeddings = ChunkCounting(size=16)
    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=embeddings)
    embeddings.sizes.clear()
    records = [feedback(f"r{i}", f"SELECT {i}", value="pass", judge_value="pass") for i in range(600)]
    memory.align(records, model=stub)
    # Not salient: no principle. The episodes, then their outputs alone for the calibration head's features.
    assert embeddings.sizes == [256, 256, 88] * 2
    assert len(memory.episodes) == 600
    hits = memory.retrieve_episodes({"inputs": "q", "outputs": "SELECT 5"}, 3)
    assert len(hits) == 3 and all(-1.0 <= h["score"] <= 1.0001 for h in hits)
