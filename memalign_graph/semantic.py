"""Semantic memory: principles distilled from expert feedback.

A principle is a short, generalisable rule ("prefer the certified view over raw
tables"). Every principle keeps the ids of the feedback records it came from
(as MLflow's judge optimizers do), so forgetting a record can remove exactly
what it caused. All principles go into every judgment (MemAlign, Databricks 2025);
:class:`SemanticMemory` ranks them when they exceed a token budget.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired

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


_PUNCTUATION = re.compile(r"[^\w\s]|_")


def _normalise(text: str) -> str:
    """Lower case, letters, digits and single spaces only (what exact repeats are compared by)."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


Relation = Literal["same", "contradicts", "different"]


def _unit(vectors: list[list[float]]) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1.0, norms)


class PrincipleVectors:
    """Embeddings of principle texts, cached by text (each text is embedded once, in batched calls).

    The cache can be seeded from vectors persisted with the memory (:meth:`seed`), so a
    new process does not re-embed every principle.

    Args:
        embeddings: the embeddings principles are compared with.
        batch_size: most texts per ``embed_documents`` call.
    """

    def __init__(self, embeddings: Embeddings, batch_size: int = 256) -> None:
        self.embeddings = embeddings
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for ``texts``, shape ``(len(texts), dim)`` (float32)."""
        missing = sorted({t for t in texts if t not in self._cache})
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            for text, vector in zip(chunk, _unit(self.embeddings.embed_documents(chunk))):
                self._cache[text] = vector
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def __contains__(self, text: object) -> bool:
        return text in self._cache

    def seed(self, texts: list[str], vectors: np.ndarray) -> None:
        """Cache known unit vectors (shape ``(len(texts), dim)``) for ``texts`` without embedding them.

        Raises:
            ValueError: if the shapes do not match.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"principle vectors: {len(texts)} texts but an array of shape {vectors.shape}")
        for text, vector in zip(texts, vectors):
            self._cache[text] = vector

    def known(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """The cached subset of ``texts`` (de-duplicated, in order) and their vectors, for persistence."""
        kept = [t for t in dict.fromkeys(texts) if t in self._cache]
        if not kept:
            return [], np.zeros((0, 0), dtype=np.float32)
        return kept, np.stack([self._cache[t] for t in kept])


def _index(base: np.ndarray) -> Any:
    """An exact FAISS inner-product index (``IndexFlatIP``) over unit vectors ``base`` (shape ``(n, dim)``).

    Exact at every size: it is built for one alignment and searched by that alignment's
    candidates only, and building an approximate graph costs more than it saves. Measured on
    2 idle cores, 40 000 principles of 384 dimensions: an HNSW graph (M = 32, efSearch = 128)
    took 8.4 s to build and 0.59 s to search 1 000 candidates; the exact index searched them in
    0.23 s, and 20 000 candidates in 4.4 s (HNSW: 11 s).
    """
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    return index


def _best_earlier(cand: np.ndarray, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each row ``i`` of ``cand`` (shape ``(n, dim)``, unit rows), the most similar row ``j < i``.

    Computed ``block`` rows at a time against the rows before them, so memory stays at
    ``block x n`` floats (20 000 candidates: 41 MB, not the 1.6 GB of a full ``n x n`` matrix).
    Time grows with ``n**2``: 1.2 s for 20 000 candidates of 384 dimensions, 4.4 s for 40 000
    (2 idle cores). An HNSW graph grown block by block took 59 s for 40 000 (2 busy cores), and
    building one over 40 000 rows takes 8.4 s on idle ones (see :func:`_index`): exact search stays.
    The maximum is the full matrix's (of equal scores, BLAS rounding may favour either row).
    Row 0 gets ``(-inf, -1)``.

    Returns:
        ``(similarities, rows)``: float64 and int64 arrays of shape ``(n,)``.
    """
    n = len(cand)
    sims = np.full(n, -np.inf, dtype=np.float64)
    rows = np.full(n, -1, dtype=np.int64)
    for start in range(1, n, block):
        stop = min(start + block, n)
        scores = cand[start:stop] @ cand[:stop].T  # (stop - start, stop)
        scores[np.arange(stop - start)[:, None] + start <= np.arange(stop)[None, :]] = -np.inf  # only j < i
        best = np.argmax(scores, axis=1)
        rows[start:stop] = best
        sims[start:stop] = scores[np.arange(stop - start), best]
    return sims, rows


def related_pairs(
    existing: list[Principle], candidates: list[Principle], vectors: PrincipleVectors, *, threshold: float
) -> list[tuple[str, str, float]]:
    """Pairs (candidate id, other id, cosine) of similar principles, for the LLM to classify.

    For each candidate, its most similar principle among ``existing`` and the
    candidates before it, if their cosine similarity is at least ``threshold``.
    Similar is not the same: "Exclude cancelled orders from revenue." and "Include
    cancelled orders in revenue." score 0.935 under MiniLM int8 (0.97 under e5), so every such pair goes to the
    LLM (see :func:`memalign_graph.classify.aclassify_pairs`), however high its score.
    A candidate whose text equals one of those principles (after lower-casing and
    dropping punctuation) is left out: :func:`merge_principles` merges it without asking.
    Every text is embedded in one call (:class:`PrincipleVectors` embeds what it has not seen);
    the existing principles are searched through a vector index, and the candidates against each other
    in blocks (no all-pairs matrix).
    """
    if not candidates or (not existing and len(candidates) < 2):
        return []
    others = existing + candidates
    matrix = vectors([p["text"] for p in others])
    cand = np.ascontiguousarray(matrix[len(existing) :])
    best_sim = np.full(len(candidates), -np.inf, dtype=np.float64)
    best_row = np.full(len(candidates), -1, dtype=np.int64)
    if existing:
        sims, rows = _index(np.ascontiguousarray(matrix[: len(existing)])).search(cand, 1)
        best_sim, best_row = sims[:, 0].astype(np.float64), rows[:, 0].astype(np.int64)
    among_sim, among_row = _best_earlier(cand)
    seen = {_normalise(p["text"]) for p in existing}
    pairs = []
    for i, c in enumerate(candidates):
        key = _normalise(c["text"])
        if key in seen:
            continue
        seen.add(key)
        sim, row = float(best_sim[i]), int(best_row[i])
        if i and float(among_sim[i]) > sim:
            sim, row = float(among_sim[i]), len(existing) + int(among_row[i])
        if row >= 0 and sim >= threshold:
            pairs.append((c["id"], others[row]["id"], round(sim, 4)))
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
    A hand-written principle is never replaced: a candidate said to contradict one is
    handled as ``different`` here (both kept; see
    :func:`memalign_graph.governance.govern_candidates`, which holds such a candidate for
    an expert before it gets here). Exact repeats are found through a text index, so the
    cost grows with the number of candidates, not with principles times candidates.

    Args:
        existing: current principles (not modified).
        candidates: new principles from distillation, newer than ``existing``, oldest first.
        relations: candidate id -> (other id, ``same``/``contradicts``/``different``),
            as confirmed by an LLM.

    Returns:
        ``(principles, added_ids, merged)`` where ``merged`` maps each dropped or
        superseding candidate's id to the id of the existing principle concerned.
    """
    # Kept principles by id, in order (a dict keeps insertion order; a superseding candidate goes last).
    result: dict[str, Principle] = {}
    for p in existing:
        result[p["id"]] = Principle(**{**p, "sources": list(p["sources"])})  # type: ignore[typeddict-item]
    by_text: dict[str, list[str]] = {}
    for pid, p in result.items():
        by_text.setdefault(_normalise(p["text"]), []).append(pid)
    added: dict[str, None] = {}  # ids in order (a dict: an earlier candidate is removed in O(1))
    merged: dict[str, str] = {}
    grown: dict[str, set[str]] = {}  # principle id -> its sources with the candidates merged into it so far

    def settle(pid: str) -> None:
        """Write a principle's grown sources back (sorted once, not once per merged candidate)."""
        sources = grown.pop(pid, None)
        if sources is not None and sorted(sources) != result[pid]["sources"]:
            result[pid]["sources"] = sorted(sources)
            result[pid]["updated_at"] = now_iso()

    relations = relations or {}
    for cand in candidates:
        twin = None
        other_id, relation = relations.get(cand["id"], ("", "different"))
        while other_id in merged and other_id not in result:
            other_id = merged[other_id]
        if relation == "same" and other_id in result:
            twin = result[other_id]
        elif relation == "contradicts" and other_id in result and not is_hand_written(result[other_id]):
            settle(other_id)
            old = result.pop(other_id)
            history = [
                *old.get("history", []),
                {**{k: v for k, v in old.items() if k != "history"}, "superseded_at": now_iso()},
            ]
            result[cand["id"]] = Principle(**{**cand, "history": history})  # type: ignore[typeddict-item]
            by_text.setdefault(_normalise(cand["text"]), []).append(cand["id"])
            added.pop(other_id, None)  # an earlier candidate replaced in the same alignment
            added[cand["id"]] = None
            merged[cand["id"]] = other_id
            continue
        key = _normalise(cand["text"])
        if twin is None:
            twin = next((result[i] for i in by_text.get(key, []) if i in result), None)
        if twin is None:
            result[cand["id"]] = Principle(**cand)  # type: ignore[typeddict-item]
            by_text.setdefault(key, []).append(cand["id"])
            added[cand["id"]] = None
        else:
            # A hand-written principle (no sources) stays hand-written: a record that repeats it did not
            # write it, and forgetting or replacing that record must not take the expert's rule away.
            if twin["sources"]:
                grown.setdefault(twin["id"], set(twin["sources"])).update(cand["sources"])
            merged[cand["id"]] = twin["id"]
    for pid in list(grown):
        settle(pid)
    return list(result.values()), list(added), merged


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


class SemanticMemory:
    """The principles of one committed version, and their selection for working memory.

    The counterpart of :class:`~memalign_graph.episodic.EpisodicMemory`: a memory builds one for
    each version it loads or commits and never changes it (a new version gets a new one), so
    readers in other threads need no lock. Every version shares one :class:`PrincipleVectors`
    cache, so a principle is embedded once per process, not once per version.

    Args:
        principles: the version's principles in working memory, in stored order.
        vectors: the embeddings of principle texts.
        token_cost: estimated tokens of a text (the memory passes
            :func:`memalign_graph.distill.estimate_tokens`: characters / 4).
    """

    def __init__(
        self, principles: list[Principle], vectors: PrincipleVectors, token_cost: Callable[[str], int]
    ) -> None:
        self._principles = list(principles)
        self.vectors = vectors
        self._token_cost = token_cost
        self._table: tuple[np.ndarray, np.ndarray] | None = None  # costs and supports, on first ranking
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._principles)

    @property
    def principles(self) -> list[Principle]:
        """All principles of this version (a new list)."""
        return list(self._principles)

    def _costs_and_supports(self) -> tuple[np.ndarray, np.ndarray]:
        """Token costs (text + 2 for its line) and supports (``log(1 + sources)``; NaN: hand-written), once."""
        if self._table is None:
            costs = np.array([self._token_cost(p["text"]) + 2 for p in self._principles], dtype=np.int64)
            supports = np.array(
                [math.log1p(len(p["sources"])) if p["sources"] else np.nan for p in self._principles],
                dtype=np.float64,
            )
            self._table = (costs, supports)
        return self._table

    def select(
        self,
        token_budget: int | None,
        query: Callable[[], np.ndarray],
        *,
        support_weight: float = 0.25,
    ) -> tuple[list[Principle], list[str]]:
        """The principles for working memory, within ``token_budget`` estimated tokens.

        All principles when they fit (MemAlign's default: all of them in every judgment).
        Otherwise the most useful ones that fit: ranked by cosine similarity to the case plus
        ``support_weight`` times their support (``log(1 + sources)`` relative to the
        best-supported principle; hand-written principles count as the best supported), taken
        greedily in that order while they fit, and returned in their stored order.

        Args:
            token_budget: estimated tokens for principle texts; ``None``: no limit.
            query: gives the case's unit query vector (shape ``(dim,)``); called only when the
                principles must be ranked.
            support_weight: weight of support against similarity, in [0, 1].

        Returns:
            ``(selected principles, ids of principles left out)``.
        """
        costs, supports = self._costs_and_supports()
        if token_budget is None or int(costs.sum()) <= token_budget:
            return list(self._principles), []
        if self._matrix is None:
            self._matrix = self.vectors([p["text"] for p in self._principles])
        vector = query()
        known = supports[~np.isnan(supports)]
        best = float(known.max()) if known.size and known.max() > 0 else 1.0
        scores = self._matrix @ vector + support_weight * np.where(np.isnan(supports), best, supports) / best
        chosen = np.zeros(len(self._principles), dtype=bool)
        used, cheapest = 0, int(costs.min())
        for i in np.argsort(-scores, kind="stable"):
            if used + costs[i] <= token_budget:
                chosen[i] = True
                used += int(costs[i])
                if token_budget - used < cheapest:
                    break
        return [p for i, p in enumerate(self._principles) if chosen[i]], [
            p["id"] for i, p in enumerate(self._principles) if not chosen[i]
        ]
