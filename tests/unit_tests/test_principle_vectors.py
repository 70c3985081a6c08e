"""Principle vectors are stored with the memory: a new process does not embed every principle again."""

import numpy as np
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Memory
from memalign_graph.backends.base import principle_digest
from memalign_graph.semantic import PrincipleVectors, merge_principles, new_principle, related_pairs
from tests.conftest import CATEGORICAL, feedback, location_of


class CountingEmbeddings(DeterministicFakeEmbedding):
    """Deterministic vectors that count the texts embedded as documents."""

    name: str = "counting-test-embeddings"
    documents: int = 0
    calls: int = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.documents += len(texts)
        return super().embed_documents(texts)


def rules(n: int) -> list[dict]:
    return [feedback(f"r{i}", f"SELECT {i} FROM raw.t{i}", text=f"Rule number {i} about table t{i}.") for i in range(n)]


def test_reopened_memory_selects_principles_without_embedding_them(new_location, stub):
    memory = Memory.create(new_location("mem"), CATEGORICAL, embeddings=CountingEmbeddings(size=32))
    memory.align(rules(6), model=stub)
    texts = [p["text"] for p in memory.principles]
    assert len(texts) >= 3  # a distillation answer may give one principle per five records, at least 3
    stored = memory.backend.load_principle_vectors()
    assert set(stored) == {principle_digest(t) for t in texts}
    counting = CountingEmbeddings(size=32)
    reopened = Memory.open(location_of(memory), embeddings=counting)
    selected, omitted = reopened.select_principles({"inputs": "q", "outputs": "SELECT 1"}, token_budget=20)
    assert omitted and selected  # the budget forced a ranking by similarity
    assert counting.documents == 0  # no principle was embedded again
    assert np.allclose(reopened.semantic.vectors(texts), memory.semantic.vectors(texts))


def test_forget_drops_the_vectors_of_removed_principles(memory, stub):
    memory.align(rules(3), model=stub)
    gone = next(p for p in memory.principles if p["sources"] == ["r1"])
    memory.forget(["r1"])
    stored = memory.backend.load_principle_vectors()
    assert principle_digest(gone["text"]) not in stored
    assert set(stored) == {principle_digest(p["text"]) for p in memory.principles}


def test_unreadable_vector_file_only_costs_embedding(tmp_path, stub):
    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=CountingEmbeddings(size=32))
    memory.align(rules(2), model=stub)
    (tmp_path / "mem" / "principle_vectors.npz").write_bytes(b"not a numpy file")
    counting = CountingEmbeddings(size=32)
    reopened = Memory.open(tmp_path / "mem", embeddings=counting)
    reopened.select_principles({"inputs": "q", "outputs": "a"}, token_budget=5)
    assert counting.documents == 2  # embedded again, nothing failed


def test_merge_embeds_candidates_in_one_call_and_finds_duplicates():
    counting = CountingEmbeddings(size=64)
    vectors = PrincipleVectors(counting)
    existing = [new_principle(f"Existing rule {i}.", [f"e{i}"], "t") for i in range(50)]
    candidates = [new_principle(f"Candidate rule {i}.", [f"c{i}"], "t") for i in range(40)]
    candidates.append(new_principle("Existing rule 7.", ["c-dup"], "t"))  # exact repeat
    candidates.append({**candidates[0], "id": "p-again", "sources": ["c-again"]})  # repeats an earlier candidate
    # Similar pairs for the LLM: every text embedded in one call, exact repeats left to the merge.
    pairs = related_pairs(existing, candidates, vectors, threshold=0.95)
    assert counting.calls == 1
    assert {c for c, _, _ in pairs}.isdisjoint({candidates[-2]["id"], "p-again"})
    merged, added, absorbed = merge_principles(existing, candidates)
    assert counting.calls == 1  # merging embeds nothing: similarity alone never merges
    assert len(added) == 40 and len(merged) == 90
    assert absorbed[candidates[-2]["id"]] == existing[7]["id"]
    assert absorbed["p-again"] == candidates[0]["id"]
    assert next(p for p in merged if p["id"] == candidates[0]["id"])["sources"] == ["c-again", "c0"]


def test_selection_matches_a_plain_greedy_ranking(tmp_path, stub):
    import math

    memory = Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=CountingEmbeddings(size=32))
    memory.align(rules(12), model=stub)
    memory.add_principle("Hand-written: always name the columns.")
    case = {"inputs": "report", "outputs": "SELECT * FROM raw.t3"}
    principles = memory.principles
    query = np.asarray(memory.embeddings.embed_query("Input: report\nOutput: SELECT * FROM raw.t3"), dtype=np.float32)
    sims = memory.semantic.vectors([p["text"] for p in principles]) @ (query / np.linalg.norm(query))
    supports = [math.log1p(len(p["sources"])) if p["sources"] else None for p in principles]
    best = max(s for s in supports if s is not None)
    scores = [float(x) + 0.25 * ((s if s is not None else best) / best) for x, s in zip(sims, supports)]
    costs = [math.ceil(len(p["text"]) / 4) + 2 for p in principles]
    chosen, used = set(), 0
    for i in sorted(range(len(principles)), key=lambda i: -scores[i]):
        if used + costs[i] <= 40:
            chosen.add(principles[i]["id"])
            used += costs[i]
    selected, omitted = memory.select_principles(case, 40)
    assert {p["id"] for p in selected} == chosen and set(omitted) == {p["id"] for p in principles} - chosen
    assert [p["id"] for p in selected] == [p["id"] for p in principles if p["id"] in chosen]  # stored order
