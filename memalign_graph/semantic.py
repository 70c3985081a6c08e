"""Semantic memory: principles distilled from expert feedback.

A principle is a short, generalisable rule ("prefer the certified view over raw
tables"). Every principle keeps the ids of the feedback records it came from
(as MLflow's judge optimizers do), so forgetting a record can remove exactly
what it caused. All principles go into every judgment (MemAlign, Databricks 2025).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal, NotRequired

import numpy as np
from langchain_core.embeddings import Embeddings
from typing_extensions import TypedDict

PrincipleStatus = Literal["active", "pending", "rejected"]


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
        status: governance state (see :mod:`memalign_graph.governance`): absent or ``"active"`` in
            working memory; ``"pending"`` (proposed, awaiting an expert) or ``"rejected"`` in the
            checkpoint's ``proposed`` list, never in working memory.
        held: why a proposal was held for an expert (the policy, the verdict-directive gate, a
            contradicted hand-written principle).
        supersedes: id of the principle a proposal contradicts (applied on approval, unless hand-written).
        decided_by: who approved or rejected it.
        decided_at: when (ISO-8601 UTC).
        restored_at: when it came back because the record whose rule superseded it was forgotten.
    """

    id: str
    text: str
    sources: list[str]
    created_at: str
    author: str
    updated_at: NotRequired[str]
    history: NotRequired[list[dict]]
    status: NotRequired[PrincipleStatus]
    held: NotRequired[str]
    supersedes: NotRequired[str]
    decided_by: NotRequired[str]
    decided_at: NotRequired[str]
    restored_at: NotRequired[str]


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


def is_hand_written(principle: Principle | dict) -> bool:
    """Whether an expert wrote ``principle`` by hand (it cites no feedback record).

    Hand-written principles are never merged away, superseded or removed by
    distillation or by forgetting records.
    """
    return not principle.get("sources")


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
    existing: list[Principle], candidates: list[Principle], vectors: PrincipleVectors, *, low: float, high: float
) -> list[tuple[str, str, float]]:
    """Pairs (candidate id, existing id, cosine) whose similarity lies in ``[low, high)``.

    These may say the same thing in other words, or contradict each other; an
    LLM decides (see :func:`memalign_graph.distill.aclassify_pairs`). At most one
    pair per candidate: its most similar existing principle.
    """
    if not existing or not candidates:
        return []
    sims = vectors([c["text"] for c in candidates]) @ vectors([p["text"] for p in existing]).T
    pairs = []
    for i, cand in enumerate(candidates):
        j = int(np.argmax(sims[i]))
        if low <= float(sims[i, j]) < high:
            pairs.append((cand["id"], existing[j]["id"], round(float(sims[i, j]), 4)))
    return pairs


def merge_principles(
    existing: list[Principle],
    candidates: list[Principle],
    vectors: PrincipleVectors | None = None,
    *,
    threshold: float = 0.95,
    relations: dict[str, tuple[str, Relation]] | None = None,
) -> tuple[list[Principle], list[str], dict[str, str]]:
    """Add ``candidates`` to ``existing`` without repeating a principle.

    A candidate repeats a principle when their texts are equal after lower-casing
    and dropping punctuation, when (with ``vectors``) the cosine similarity of
    their embeddings is at least ``threshold``, or when ``relations`` says it is
    the ``same`` as one: it is not added, and its sources are merged into the
    principle it repeats (unless that one is hand-written: it keeps no sources,
    so it never depends on a record that merely repeated it). A candidate that
    ``contradicts`` an existing principle (the expert changed the rule) replaces
    it: the newer feedback wins, and the replaced principle is kept in the new
    one's ``history``. A hand-written principle is never replaced: a candidate
    said to contradict one is handled as ``different`` here (both kept; see
    :func:`memalign_graph.governance.govern_candidates`, which holds such a
    candidate for an expert before it gets here).

    Args:
        existing: current principles (not modified).
        candidates: new principles from distillation, newer than ``existing``.
        vectors: embeddings for near-duplicate detection; ``None`` for exact only.
        threshold: cosine similarity in [0, 1] at or above which two principles are the same.
        relations: candidate id -> (existing id, ``same``/``contradicts``/``different``),
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
        if relation == "same" and other_id in by_id:
            twin = by_id[other_id]
        elif relation == "contradicts" and other_id in by_id and not is_hand_written(by_id[other_id]):
            old = by_id[other_id]
            result = [p for p in result if p["id"] != other_id]
            history = [
                *old.get("history", []),
                {**{k: v for k, v in old.items() if k != "history"}, "superseded_at": now_iso()},
            ]
            result.append(Principle(**{**cand, "history": history}))  # type: ignore[typeddict-item]
            added.append(cand["id"])
            merged[cand["id"]] = other_id
            continue
        if twin is None:
            for p in result:
                if _normalise(p["text"]) == _normalise(cand["text"]):
                    twin = p
                    break
        if twin is None and vectors is not None and result:
            sims = vectors([cand["text"]]) @ vectors([p["text"] for p in result]).T
            j = int(np.argmax(sims[0]))
            if float(sims[0, j]) >= threshold:
                twin = result[j]
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
    do not survive in the history of a principle that replaced theirs. A
    principle that goes and had superseded another (the expert changed the rule,
    see :func:`merge_principles`) gives the superseded one back: the rule it
    replaced returns to working memory with its own earlier history and a
    ``restored_at`` time (see :func:`superseded_to_restore`). The input is not
    modified.

    Returns:
        ``(principles, removed_ids)``; ``removed_ids`` lists top-level principles only.
    """
    kept: list[Principle] = []
    removed: list[str] = []
    restored: list[Principle] = []
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
            back = superseded_to_restore(p)
            if back is not None:
                restored.append(back)
    for back in restored:
        if all(q["id"] != back["id"] and _normalise(q["text"]) != _normalise(back["text"]) for q in kept):
            kept.append(back)
    return kept, removed


def superseded_to_restore(principle: Principle) -> Principle | None:
    """The principle ``principle`` superseded, as it was, or ``None`` if it superseded none.

    :func:`merge_principles` keeps a superseded principle as an entry with
    ``superseded_at`` in the new one's ``history``, after the superseded
    principle's own history entries. The last such entry with another id is the
    one this principle replaced; what precedes it is its history.
    """
    history = list(principle.get("history") or [])
    for i in range(len(history) - 1, -1, -1):
        entry = history[i]
        if entry.get("superseded_at") and entry.get("id") != principle["id"]:
            back = {k: v for k, v in entry.items() if k != "superseded_at"}
            if history[:i]:
                back["history"] = history[:i]
            back["restored_at"] = now_iso()
            return Principle(**back)  # type: ignore[typeddict-item]
    return None
