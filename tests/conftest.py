"""Shared fixtures: a deterministic chat model, deterministic embeddings, fresh memories."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memalign_graph import Context, JudgeSpec, Memory
from memalign_graph.testing import StubChatModel, default_responder

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CATEGORICAL = JudgeSpec.categorical("sql-house-rules", "Does the SQL follow the house rules?", ["pass", "fail"])
NUMERIC = JudgeSpec.numeric("support-tone", "How well does the reply follow our tone rules?", 1, 5)
PAIRWISE = JudgeSpec.pairwise("helpfulness", "Which output answers the request better?")


@pytest.fixture
def embeddings() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=32)


@pytest.fixture
def stub() -> StubChatModel:
    return StubChatModel()


@pytest.fixture
def memory(tmp_path: Path, embeddings: DeterministicFakeEmbedding) -> Memory:
    return Memory.create(tmp_path / "mem", CATEGORICAL, embeddings=embeddings)


@pytest.fixture
def context(memory: Memory, stub: StubChatModel, embeddings: DeterministicFakeEmbedding) -> Context:
    return Context(memory_dir=memory.backend.location, model=stub, embeddings=embeddings)


def feedback(rid: str, outputs: str, value: str = "fail", text: str | None = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": rid, "inputs": f"request {rid}", "outputs": outputs, "value": value}
    if text is not None:
        record["feedback"] = text
    record.update(extra)
    return record


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (to prove nothing changed)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def value_from_principles(messages: list, kwargs: dict) -> str:
    """A judge that follows its principles: 'fail' if a principle names a word in the output."""
    if "<feedback id=" in messages[-1].text:
        return default_responder(messages, kwargs)
    system, user = messages[0].text, messages[-1].text
    rules = re.findall(r"- Never use (\w+)", system)
    output = user.split("Case to judge:")[-1]
    value = "fail" if any(rule in output for rule in rules) else "pass"
    return json.dumps({"rationale": f"rules {rules}", "value": value})


class KeywordEmbeddings(DeterministicFakeEmbedding):
    """Bag-of-words hashing: texts sharing words are similar (paraphrase tests need that)."""

    name: str = "keyword-test-embeddings"

    def _vector(self, text: str) -> list[float]:
        import hashlib

        vec = [0.0] * self.size
        for word in re.findall(r"[a-z]+", text.lower()):
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.size] += 1.0
        return vec

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)
