"""Semantic memory: principles distilled from expert feedback.

A principle is a short, generalisable rule ("prefer the certified view over raw
tables"). Every principle keeps the ids of the feedback records it came from
(as MLflow's judge optimizers do), so forgetting a record can remove exactly
what it caused. All principles go into every judgment (MemAlign, Databricks 2025).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal, NotRequired, TypedDict

import numpy as np
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


Relation = Literal["same", "contradicts", "different"]


def _unit(vectors: list[list[float]]) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1.0, norms)


class PrincipleVectors:
    """Embeddings of principle texts, cached by text (principles are embedded once per process)."""

    def __init__(self, embeddings: Embeddings) -> None:
        self.embeddings = embeddings
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for ``texts``, shape ``(len(texts), dim)``."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            for text, vector in zip(missing, _unit(self.embeddings.embed_documents(missing))):
                self._cache[text] = vector
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


def related_pairs(
    existing: list[Principle], candidates: list[Principle], vectors: PrincipleVectors, *, threshold: float
) -> list[tuple[str, str, float]]:
    """Pairs (candidate id, other id, cosine) of similar principles, for the LLM to classify.

    For each candidate, its most similar principle among ``existing`` and the
    candidates before it, if their cosine similarity is at least ``threshold``.
    Similar is not the same: "Exclude cancelled orders from revenue." and "Include
    cancelled orders in revenue." score 0.97 under e5, so every such pair goes to the
    LLM (see :func:`memalign_graph.distill.aclassify_pairs`), however high its score.
    A candidate whose text equals one of those principles (after lower-casing and
    dropping punctuation) is left out: :func:`merge_principles` merges it without asking.
    Every text is embedded in one call (:class:`PrincipleVectors` embeds what it has not seen).
    """
    if not candidates or (not existing and len(candidates) < 2):
        return []
    others = existing + candidates
    matrix = vectors([p["text"] for p in others])
    sims = matrix[len(existing) :] @ matrix.T
    seen = {_normalise(p["text"]) for p in existing}
    pairs = []
    for i, cand in enumerate(candidates):
        key = _normalise(cand["text"])
        if key in seen:
            continue
        seen.add(key)
        row = sims[i, : len(existing) + i]  # existing principles and earlier candidates only
        if row.size == 0:
            continue
        j = int(np.argmax(row))
        if float(row[j]) >= threshold:
            pairs.append((cand["id"], others[j]["id"], round(float(row[j]), 4)))
    return pairs


def merge_principles(
    existing: list[Principle],
    candidates: list[Principle],
    *,
    relations: dict[str, tuple[str, Relation]] | None = None,
) -> tuple[list[Principle], list[str], dict[str, str]]:
    """Add ``candidates`` to ``existing`` without repeating a principle.

    A candidate repeats a principle when their texts are equal after lower-casing
    and dropping punctuation, or when ``relations`` (the LLM's verdict) says it is
    the ``same`` as one; similarity of embeddings alone never merges (a rule and its
    negation embed alike). A repeating candidate is not added, and its sources are
    merged into the principle it repeats (unless that one is hand-written: it keeps
    no sources, so it never depends on a record that merely repeated it). A
    candidate that ``contradicts`` an existing principle (the expert changed the
    rule) replaces it: the newer feedback wins, and the replaced principle is kept
    in the new one's ``history``. A relation may name an earlier candidate; if that
    one was itself merged, the principle it was merged into is meant.

    Args:
        existing: current principles (not modified).
        candidates: new principles from distillation, newer than ``existing``, oldest first.
        relations: candidate id -> (other id, ``same``/``contradicts``/``different``),
            as confirmed by an LLM.

    Returns:
        ``(principles, added_ids, merged)`` where ``merged`` maps each dropped or
        superseding candidate's id to the id of the existing principle concerned.
    """
    result = [Principle(**p) for p in existing]  # type: ignore[typeddict-item]
    for p in result:
        p["sources"] = list(p["sources"])
    added: list[str] = []
    merged: dict[str, str] = {}
    relations = relations or {}
    for cand in candidates:
        by_id = {p["id"]: p for p in result}
        twin = None
        other_id, relation = relations.get(cand["id"], ("", "different"))
        while other_id in merged and other_id not in by_id:
            other_id = merged[other_id]
        if relation == "same" and other_id in by_id:
            twin = by_id[other_id]
        elif relation == "contradicts" and other_id in by_id:
            old = by_id[other_id]
            result = [p for p in result if p["id"] != other_id]
            history = [
                *old.get("history", []),
                {**{k: v for k, v in old.items() if k != "history"}, "superseded_at": now_iso()},
            ]
            result.append(Principle(**{**cand, "history": history}))  # type: ignore[typeddict-item]
            added = [a for a in added if a != other_id]  # an earlier candidate replaced in the same alignment
            added.append(cand["id"])
            merged[cand["id"]] = other_id
            continue
        if twin is None:
            for p in result:
                if _normalise(p["text"]) == _normalise(cand["text"]):
                    twin = p
                    break
        if twin is None:
            result.append(Principle(**cand))  # type: ignore[typeddict-item]
            added.append(cand["id"])
        else:
            # A hand-written principle (no sources) stays hand-written: a record that repeats it did not
            # write it, and forgetting or replacing that record must not take the expert's rule away.
            new_sources = sorted(set(twin["sources"]) | set(cand["sources"])) if twin["sources"] else []
            if new_sources != twin["sources"]:
                twin["sources"] = new_sources
                twin["updated_at"] = now_iso()
            merged[cand["id"]] = twin["id"]
    return result, added, merged


def drop_sources(principles: list[Principle], record_ids: set[str]) -> tuple[list[Principle], list[str]]:
    """Remove ``record_ids`` from every principle's sources, and from the earlier forms in its ``history``.

    A principle whose every source is removed goes with them; hand-written
    principles (no sources) are never removed here. The same holds inside each
    kept principle's ``history`` (principles it superseded, earlier texts): an
    entry whose every source is removed is dropped, so a forgotten record's words
    do not survive in the history of a principle that replaced theirs. The input
    is not modified.

    Returns:
        ``(principles, removed_ids)``; ``removed_ids`` lists top-level principles only.
    """
    kept: list[Principle] = []
    removed: list[str] = []
    for p in principles:
        history = p.get("history")
        if history:
            cleaned, _ = drop_sources(history, record_ids)  # type: ignore[arg-type]
            if cleaned != history:
                p = Principle(**{**p, "history": cleaned})  # type: ignore[typeddict-item]
        sources = p.get("sources") or []
        if not sources or not set(sources) & record_ids:
            kept.append(p)
            continue
        remaining = [s for s in sources if s not in record_ids]
        if remaining:
            kept.append(Principle(**{**p, "sources": remaining, "updated_at": now_iso()}))  # type: ignore[typeddict-item]
        else:
            removed.append(p["id"])
    return kept, removed
