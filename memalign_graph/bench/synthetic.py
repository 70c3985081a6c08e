"""Synthetic data for the benchmarks: hashed-word embeddings, feedback records and ready memories.

Shaped like the real thing (SQL requests and queries, house-rule feedback) so that retrieval,
de-duplication and alignment do the same work as on real data, at sizes real data does not reach.
"""

from __future__ import annotations

import random
import re
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from memalign_graph.spec import JudgeSpec


class HashEmbeddings(Embeddings):
    """Deterministic embeddings from hashed words (feature hashing), optionally sleeping per call.

    Texts that share words get similar vectors, so retrieval and de-duplication
    behave like with a real model while costing microseconds; ``latency_s`` makes
    each ``embed_documents``/``embed_query`` call wait like a request to a remote API.

    Args:
        latency_s: seconds slept per call.
        dim: vector length.
    """

    def __init__(self, latency_s: float = 0.0, dim: int = 384) -> None:
        self.latency_s = latency_s
        self.dim = dim
        self.calls = 0
        self.name = f"bench:hashed-{dim}"

    def _vector(self, text: str) -> list[float]:
        hashes = np.array([zlib.crc32(w.encode("utf-8")) for w in re.findall(r"\w+", text.lower())], dtype=np.int64)
        signs = np.where(hashes & 0x80000000, 1.0, -1.0)
        vec = np.bincount(hashes % self.dim, weights=signs, minlength=self.dim) if len(hashes) else np.zeros(self.dim)
        norm = float(np.linalg.norm(vec))
        return (vec / norm if norm else vec).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        self.calls += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        self.calls += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._vector(text)


SPEC = JudgeSpec.categorical("bench", "Does the SQL follow the house rules?", ["pass", "fail"])
TABLES = ["orders", "payments", "customers", "refunds", "sessions", "invoices", "shipments", "tickets"]
RULES = [
    "Use the certified view, never raw tables.",
    "Filter out cancelled orders.",
    "Convert amounts to EUR before summing.",
    "Name every column; never SELECT star.",
    "Open with reassurance and close with an offer of support.",
]


def synthetic_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` feedback records shaped like real ones (a request, a query, a verdict, a sentence of feedback)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        table = rng.choice(TABLES)
        metric = rng.choice(["count", "sum of amount", "average amount", "distinct customers"])
        period = rng.choice(["day", "week", "month", "quarter"])
        records.append(
            {
                "id": f"bench-{i}",
                "inputs": f"Report the {metric} of {table} per {period} for region {rng.randint(1, 40)}.",
                "outputs": f"SELECT {period}, {metric.split()[0]}(*) FROM raw.{table} "
                f"WHERE region = {rng.randint(1, 40)} GROUP BY {period}",
                "value": rng.choice(["pass", "fail"]),
                "feedback": f"{rng.choice(RULES)} Case {i}: the query reads raw.{table}.",
            }
        )
    return records


def synthetic_memory(
    path: str | Path,
    n: int,
    seed: int = 0,
    *,
    principles: int = 5,
    embeddings: str | Embeddings | None = None,
) -> Any:
    """A memory of ``n`` episodes and ``principles`` principles with random unit vectors.

    Vectors are random so 100 000 episodes take seconds, not an hour of embedding; the
    principles' vectors are stored with the memory as an alignment leaves them.
    """
    from memalign_graph.backends.base import PrinciplesCheckpoint, principle_digest
    from memalign_graph.episodic import episode_from_record
    from memalign_graph.memory import Memory
    from memalign_graph.semantic import new_principle, now_iso

    memory = Memory.create(path, SPEC, embeddings=embeddings)
    dim = memory.backend.load(memory.embeddings).embeddings_info["dim"]
    rng = np.random.default_rng(seed)
    records = synthetic_records(n, seed)
    for start in range(0, n, 20_000):
        chunk = records[start : start + 20_000]
        vectors = rng.standard_normal((len(chunk), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        memory.episodes.upsert_with_vectors([episode_from_record(r) for r in chunk], vectors)
    texts = [RULES[i] if i < len(RULES) else f"{RULES[i % len(RULES)]} (rule {i})" for i in range(principles)]
    rules = [new_principle(text, [f"bench-{i % max(n, 1)}"], "bench") for i, text in enumerate(texts)]
    ledger = {r["id"]: {"hash": episode_from_record(r)["record_hash"], "distilled": True} for r in records}
    checkpoint = PrinciplesCheckpoint(
        version=1,
        created_at=now_iso(),
        author="bench",
        reason=f"{n} synthetic episodes",
        principles=rules,
        records=ledger,  # type: ignore[typeddict-item]
    )
    memory.backend.commit(checkpoint, memory.episodes.vectorstore, embeddings_changed=True)
    vectors = rng.standard_normal((len(texts), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    memory.backend.save_principle_vectors({principle_digest(t): v for t, v in zip(texts, vectors)})
    memory.refresh()
    return memory


def synthetic_cases(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """``count`` cases to judge (inputs and outputs of :func:`synthetic_records`, no verdict)."""
    return [{"inputs": r["inputs"], "outputs": r["outputs"]} for r in synthetic_records(count, seed)]


def principle_texts(n: int, seed: int) -> list[str]:
    """``n`` principle texts of eight words drawn from a small SQL vocabulary (many near-duplicates)."""
    rng = random.Random(seed)
    words = ["view", "raw", "table", "order", "refund", "currency", "column", "filter", "region", "tone", "customer"]
    return [f"Rule {i}: {' '.join(rng.choices(words, k=8))}." for i in range(n)]
