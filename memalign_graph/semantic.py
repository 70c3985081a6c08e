"""Semantic memory: principles distilled from expert feedback.

A principle is a short, generalisable rule ("prefer the certified view over raw
tables"). Every principle keeps the ids of the feedback records it came from
(as MLflow's judge optimizers do), so forgetting a record can remove exactly
what it caused. All principles go into every judgment (MemAlign, Databricks 2025).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import NotRequired, TypedDict

from langchain_core.embeddings import Embeddings


class Principle(TypedDict):
    """One rule in semantic memory.

    Attributes:
        id: stable identifier, ``"p-"`` + 8 hex chars.
        text: the rule, one or two sentences.
        sources: ids of the feedback records it was distilled from; empty if
            written by hand.
        created_at: ISO-8601 UTC timestamp.
        author: who or what wrote it (``"distill:<model>"`` or a person).
        updated_at: when its text or sources last changed.
        history: earlier forms it replaced (edited texts, principles it superseded), oldest first.
    """

    id: str
    text: str
    sources: list[str]
    created_at: str
    author: str
    updated_at: NotRequired[str]
    history: NotRequired[list[dict]]


def now_iso() -> str:
    """Current UTC time as ISO-8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_principle(text: str, sources: list[str], author: str) -> Principle:
    """A fresh principle with a random id.

    Raises:
        ValueError: if ``text`` is blank.
    """
    text = " ".join(text.split())
    if not text:
        raise ValueError("a principle's text must not be empty")
    return Principle(
        id=f"p-{uuid.uuid4().hex[:8]}", text=text, sources=sorted(set(sources)), created_at=now_iso(), author=author
    )


def _normalise(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return dot / (na * nb)


def merge_principles(
    existing: list[Principle],
    candidates: list[Principle],
    embeddings: Embeddings | None = None,
    *,
    threshold: float = 0.95,
) -> tuple[list[Principle], list[str], dict[str, str]]:
    """Add ``candidates`` to ``existing`` without repeating a principle.

    A candidate repeats a principle when their texts are equal after lower-casing
    and dropping punctuation, or (with ``embeddings``) when the cosine similarity
    of their embeddings is at least ``threshold``. A repeat is not added; its
    sources are merged into the principle it repeats.

    Args:
        existing: current principles (not modified).
        candidates: new principles from distillation.
        embeddings: used for near-duplicate detection; ``None`` for exact only.
        threshold: cosine similarity in [0, 1] at or above which two principles
            count as the same.

    Returns:
        ``(principles, added_ids, merged)`` where ``merged`` maps each dropped
        candidate's id to the id of the principle that absorbed it.
    """
    result = [Principle(**p) for p in existing]  # type: ignore[typeddict-item]
    for p in result:
        p["sources"] = list(p["sources"])
    added: list[str] = []
    merged: dict[str, str] = {}
    if not candidates:
        return result, added, merged
    vectors: dict[str, list[float]] = {}
    if embeddings is not None:
        texts = [p["text"] for p in result] + [c["text"] for c in candidates]
        for p, vec in zip(result + list(candidates), embeddings.embed_documents(texts)):
            vectors[p["id"]] = vec
    for cand in candidates:
        twin = None
        for p in result:
            if _normalise(p["text"]) == _normalise(cand["text"]):
                twin = p
                break
            if vectors and _cosine(vectors[p["id"]], vectors[cand["id"]]) >= threshold:
                twin = p
                break
        if twin is None:
            result.append(Principle(**cand))  # type: ignore[typeddict-item]
            added.append(cand["id"])
        else:
            new_sources = sorted(set(twin["sources"]) | set(cand["sources"]))
            if new_sources != twin["sources"]:
                twin["sources"] = new_sources
                twin["updated_at"] = now_iso()
            merged[cand["id"]] = twin["id"]
    return result, added, merged


def drop_sources(principles: list[Principle], record_ids: set[str]) -> tuple[list[Principle], list[str]]:
    """Remove ``record_ids`` from every principle's sources.

    A principle whose every source is removed goes with them; hand-written
    principles (no sources) are never removed here.

    Returns:
        ``(principles, removed_ids)``.
    """
    kept: list[Principle] = []
    removed: list[str] = []
    for p in principles:
        if not p["sources"] or not set(p["sources"]) & record_ids:
            kept.append(p)
            continue
        remaining = [s for s in p["sources"] if s not in record_ids]
        if remaining:
            kept.append(Principle(**{**p, "sources": remaining, "updated_at": now_iso()}))  # type: ignore[typeddict-item]
        else:
            removed.append(p["id"])
    return kept, removed
