import json

import pytest

from memalign_graph import Memory
from memalign_graph.semantic import PrincipleVectors, related_pairs
from memalign_graph.testing import StubChatModel, default_responder
from tests.conftest import CATEGORICAL, KeywordEmbeddings, feedback


def verdicts(relation):
    def respond(messages, kwargs):
        prompt = "\n".join(m.text for m in messages)
        if '"verdicts"' in prompt:
            return json.dumps({"verdicts": [{"pair": 1, "relation": relation}]})
        return default_responder(messages, kwargs)

    return respond


@pytest.fixture
def kw_memory(tmp_path):
    return Memory.create(tmp_path / "kw", CATEGORICAL, embeddings=KeywordEmbeddings(size=256))


def align(memory, record, relation="different"):
    return memory.align([record], model=StubChatModel(responder=verdicts(relation)), consolidate_threshold=0.5)


def test_related_pairs_by_similarity():
    vectors = PrincipleVectors(KeywordEmbeddings(size=256))
    old = [{"id": "p1", "text": "Never use raw tables."}, {"id": "p2", "text": "Convert amounts to EUR."}]
    new = [{"id": "c1", "text": "Do not use the raw tables."}, {"id": "c2", "text": "Greet the customer warmly."}]
    pairs = related_pairs(old, new, vectors, threshold=0.5)
    assert [(c, e) for c, e, _ in pairs] == [("c1", "p1")]


def test_paraphrase_confirmed_by_llm_is_merged(kw_memory):
    align(kw_memory, feedback("r1", "SELECT * FROM raw.orders", text="Never use raw tables."))
    report = align(kw_memory, feedback("r2", "SELECT * FROM raw.pay", text="Do not use the raw tables."), "same")
    assert report.consolidation == {"pairs": 1, "same": 1, "contradicts": 0, "different": 0}
    assert report.new_principles == [] and report.llm_calls == 2
    assert [(p["text"], p["sources"]) for p in kw_memory.principles] == [("Never use raw tables.", ["r1", "r2"])]


def test_similar_but_different_principles_are_both_kept(kw_memory):
    align(kw_memory, feedback("r1", "x", text="Never use raw tables."))
    align(kw_memory, feedback("r2", "y", text="Do not use the raw tables."), "different")
    assert len(kw_memory.principles) == 2


def test_contradiction_is_resolved_for_the_newer_feedback(kw_memory):
    align(kw_memory, feedback("r1", "x", text="Never use raw tables."))
    old_id = kw_memory.principles[0]["id"]
    report = align(kw_memory, feedback("r2", "y", value="pass", text="Raw tables are fine to use now."), "contradicts")
    assert report.consolidation["contradicts"] == 1
    (current,) = kw_memory.principles
    assert current["text"] == "Raw tables are fine to use now." and current["sources"] == ["r2"]
    assert current["history"][0]["id"] == old_id and current["history"][0]["sources"] == ["r1"]
    assert "superseded_at" in current["history"][0]
    assert kw_memory.episodes.ids == {"r1", "r2"}  # both cases stay as episodes


def test_consolidation_failure_falls_back_to_adding(kw_memory):
    align(kw_memory, feedback("r1", "x", text="Never use raw tables."))

    def broken(messages, kwargs):
        if '"verdicts"' in "\n".join(m.text for m in messages):
            return "no idea"
        return default_responder(messages, kwargs)

    report = kw_memory.align(
        [feedback("r2", "y", text="Do not use the raw tables.")],
        model=StubChatModel(responder=broken),
        consolidate_threshold=0.5,
        max_retries=0,
    )
    assert report.consolidation["pairs"] == 1 and len(kw_memory.principles) == 2 and not report.failed


def test_principles_beyond_the_token_budget_are_selected_by_relevance(kw_memory, tmp_path):
    from memalign_graph import Context, build_judge_graph

    rules = ["Never use raw tables.", "Convert amounts to EUR.", "Greet the customer warmly.", "Cite the dashboard."]
    for i, rule in enumerate(rules):
        kw_memory.align([feedback(f"r{i}", f"out {i}", text=rule)], model=StubChatModel())
    case = {"inputs": "revenue", "outputs": "SELECT amount FROM raw tables"}
    selected, omitted = kw_memory.select_principles(case, token_budget=8)
    assert [p["text"] for p in selected] == ["Never use raw tables."] and len(omitted) == 3
    assert kw_memory.select_principles(case, token_budget=10_000) == (kw_memory.principles, [])

    ctx = Context(
        memory_dir=kw_memory.backend.location,
        model=StubChatModel(),
        embeddings=kw_memory.embeddings,
        principles_token_budget=8,
        precedent="off",
    )
    judgment = build_judge_graph().compile().invoke(case, context=ctx)["judgment"]
    assert len(judgment["principle_ids"]) == 1 and sorted(judgment["principles_omitted"]) == sorted(omitted)
