"""Episodic memory: concrete past cases with the expert's verdict, in a LangChain vector store.

An episode is a case (inputs, outputs, expectations) plus the expert's value
and feedback and what the judge itself had said. Episodes are embedded by the
case text and the ``k`` most similar are retrieved into working memory for each
judgment (MemAlign, Databricks 2025, uses k=5).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import secrets
import threading
from collections import OrderedDict
from typing import Any, NotRequired

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from typing_extensions import TypedDict

from memalign_graph.embeddings import query_vector, unit_vector
from memalign_graph.spec import FeedbackRecord, Value, case_hash, case_text, embedding_text, record_hash


class ModelJudgment(TypedDict):
    """The judge model's own judgment of a case before an expert's verdict (see :class:`Episode`)."""

    value: Value
    scores: dict[str, float] | None
    model: str
    via: str


class Episode(TypedDict):
    """One past case in episodic memory (JSON-like).

    Attributes:
        id: the feedback record's id.
        inputs, outputs, expectations: the case.
        value: the expert's value, if given.
        feedback: the expert's words, if given.
        judge_value: what the judge said before the expert's verdict, if known (a feedback file may say it).
        model_judgment: the judge model's own judgment of the case, recorded by this library before the
            expert answered (never read from a feedback file): ``{"value", "scores", "model", "via"}``,
            ``via`` ``"review"`` (the review graph) or ``"alignment"`` (scoring feedback at alignment). The
            calibration head's gate measures the model by these (see :mod:`memalign_graph.calibration`).
        case_hash: normalised hash of the case (see :func:`memalign_graph.spec.case_hash`).
        record_hash: hash of the feedback record it came from (see :func:`memalign_graph.spec.record_hash`).
        score: similarity to the case being judged (only on retrieved episodes).
    """

    id: str
    inputs: Any
    outputs: Any
    expectations: NotRequired[Any]
    value: NotRequired[Value]
    feedback: NotRequired[str]
    judge_value: NotRequired[Value]
    model_judgment: NotRequired[ModelJudgment]
    case_hash: str
    record_hash: NotRequired[str]
    score: NotRequired[float]


def unit(vectors: list[list[float]]) -> list[list[float]]:
    """Scale each vector to unit L2 norm, so inner product is cosine similarity."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.where(norms == 0, 1.0, norms)).tolist()


def episode_from_record(record: FeedbackRecord, judged: ModelJudgment | None = None) -> Episode:
    """The episode stored for a feedback record (the record's id becomes the episode's id).

    ``judged``: the model's own judgment of the case that this library recorded (``model_judgment``);
    only trusted callers pass it, never a feedback file.
    """
    episode: dict[str, Any] = {"id": record["id"], "inputs": record["inputs"], "outputs": record["outputs"]}
    for key in ("expectations", "value", "feedback", "judge_value"):
        if key in record:
            episode[key] = record[key]  # type: ignore[literal-required]
    if judged is not None:
        episode["model_judgment"] = dict(judged)
    episode["case_hash"] = case_hash(record)
    episode["record_hash"] = record_hash(record)
    return episode  # type: ignore[return-value]


class EpisodicMemory:
    """Episodes in any LangChain ``VectorStore`` that supports ids and deletion.

    Args:
        vectorstore: the store; documents hold the case text as ``page_content``
            and the episode as ``metadata``.
        embeddings: used to embed cases for search (``embed_query``) and
            episodes for storage (``embed_documents``).
    """

    def __init__(self, vectorstore: VectorStore, embeddings: Embeddings) -> None:
        self.vectorstore = vectorstore
        self.embeddings = embeddings
        self._ids: set[str] = set()
        self._queries: OrderedDict[bytes, np.ndarray] = OrderedDict()  # held query vectors (see query)
        self._queries_lock = threading.Lock()
        docstore = getattr(vectorstore, "docstore", None)
        mapping = getattr(vectorstore, "index_to_docstore_id", None)
        if docstore is not None and mapping is not None:
            self._ids = set(mapping.values())

    def draft(self) -> EpisodicMemory:
        """A copy to change aside, for a writer, while readers keep searching this one.

        :class:`~memalign_graph.versions.VersionedMemory` changes the draft, commits it, and
        only then swaps it in, so no reader ever sees a half-built or uncommitted
        store. The FAISS index, the id mapping and the docstore are copied (the
        vectors once: about 1.5 KB per episode at 384 dimensions); this episodic
        memory is left as it was.

        Raises:
            TypeError: for a vector store other than LangChain's ``FAISS`` with the
                file backend's ``CompactDocstore`` (the stores the backends load).
        """
        store = self.vectorstore
        index = getattr(store, "index", None)
        mapping = getattr(store, "index_to_docstore_id", None)
        docstore = getattr(store, "docstore", None)
        if index is None or mapping is None or not hasattr(docstore, "raw"):
            raise TypeError(f"cannot copy a {type(store).__name__} aside; episodic memory needs a FAISS store")
        import faiss

        clone = copy.copy(store)
        clone.index = faiss.clone_index(index)  # type: ignore[attr-defined]
        clone.index_to_docstore_id = dict(mapping)  # type: ignore[attr-defined]
        clone.docstore = type(docstore)(dict(docstore.raw), list(docstore.order))  # type: ignore[attr-defined,union-attr]
        return EpisodicMemory(clone, self.embeddings)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, episode_id: object) -> bool:
        return episode_id in self._ids

    @property
    def ids(self) -> set[str]:
        """Ids of all stored episodes."""
        return set(self._ids)

    def get(self, ids: list[str]) -> list[Episode]:
        """The stored episodes with these ids (unknown ids are skipped)."""
        docs = self.vectorstore.get_by_ids([i for i in ids if i in self._ids])
        return [doc.metadata["episode"] for doc in docs]

    def verdicts(self, held: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, Value, Value | None]]:
        """``(id, expert value, recorded model value or None)`` of every episode with an expert value, by id.

        What a calibration head is fitted on (:func:`memalign_graph.memory_head.fit_memory_head`); the
        model value is the ``model_judgment`` this library recorded, never a file's ``judge_value``.

        Args:
            held: ids left out (records held by governance).
        """
        raw = getattr(getattr(self.vectorstore, "docstore", None), "raw", None)
        if raw is not None:  # the backends' CompactDocstore: the JSON text of each episode
            pairs = ((i, json.loads(raw[i])) for i in sorted(self._ids - set(held)))
        else:
            pairs = ((e["id"], e) for e in sorted(self.get(sorted(self._ids - set(held))), key=lambda e: e["id"]))
        out = []
        for episode_id, episode in pairs:
            if episode.get("value") is None:
                continue
            judged = episode.get("model_judgment")
            out.append((episode_id, episode["value"], judged.get("value") if isinstance(judged, dict) else None))
        return out

    def upsert(self, episodes: list[Episode]) -> None:
        """Store episodes; an episode whose id exists replaces the old one.

        Raises:
            ValueError: if two episodes share an id.
        """
        if not episodes:
            return
        ids = [e["id"] for e in episodes]
        if len(set(ids)) != len(ids):
            raise ValueError("episodes to store share an id")
        self.delete([i for i in ids if i in self._ids])
        texts = [case_text(e) for e in episodes]
        vectors = unit(self.embeddings.embed_documents([embedding_text(e) for e in episodes]))
        docs_meta = [{"episode": dict(e)} for e in episodes]
        add_embeddings = getattr(self.vectorstore, "add_embeddings", None)
        if add_embeddings is not None:
            add_embeddings(list(zip(texts, vectors)), metadatas=docs_meta, ids=ids)
        else:
            self.vectorstore.add_documents(
                [Document(page_content=t, metadata=m, id=i) for t, m, i in zip(texts, docs_meta, ids)], ids=ids
            )
        self._ids.update(ids)

    def vectors(self, ids: list[str]) -> dict[str, list[float]]:
        """Stored (unit) vectors of these episodes, for re-use without re-embedding (FAISS stores only)."""
        index = getattr(self.vectorstore, "index", None)
        mapping = getattr(self.vectorstore, "index_to_docstore_id", None)
        if index is None or mapping is None:
            return {}
        position = {episode_id: i for i, episode_id in mapping.items()}
        return {i: index.reconstruct(position[i]).tolist() for i in ids if i in position}

    def upsert_with_vectors(
        self, episodes: list[Episode], vectors: np.ndarray | list[list[float]], *, chunk: int = 2048
    ) -> None:
        """Store episodes with known unit vectors (replacing episodes with the same ids).

        Added ``chunk`` episodes at a time, so the store's per-call copies (its documents and a
        float32 array of the vectors) stay bounded: at 100 000 episodes they are a few MB, not
        hundreds.

        Args:
            episodes: the episodes, ``n`` of them.
            vectors: their unit vectors, shape ``(n, dim)``.
            chunk: most episodes per call to the store's ``add_embeddings``.
        """
        if not episodes:
            return
        ids = [e["id"] for e in episodes]
        self.delete([i for i in ids if i in self._ids])
        for start in range(0, len(episodes), chunk):
            part = episodes[start : start + chunk]
            self.vectorstore.add_embeddings(  # type: ignore[attr-defined]
                [(case_text(e), v) for e, v in zip(part, vectors[start : start + chunk])],
                metadatas=[{"episode": dict(e)} for e in part],
                ids=ids[start : start + chunk],
            )
        self._ids.update(ids)

    def delete(self, ids: list[str]) -> list[str]:
        """Delete episodes by id; returns the ids that were present."""
        present = [i for i in ids if i in self._ids]
        if present:
            self.vectorstore.delete(present)
            self._ids.difference_update(present)
        return present

    QUERY_HANDOFF_SIZE = 256
    """Most query vectors held between two steps of judgments (32-byte key + 1.5 KB each at 384 dimensions)."""

    @staticmethod
    def new_handoff() -> str:
        """A fresh hand-off token for one judgment (128 random bits, hex): see :meth:`query`."""
        return secrets.token_hex(16)

    @staticmethod
    def _handoff_key(handoff: str, text: str) -> bytes:
        # A digest, never the text: a case may be 400 000 characters, and no case text outlives its judgment
        # here. The judgment's secret token is part of it, so no other judgment can take (or time) the vector.
        if not isinstance(handoff, str) or not handoff:
            raise ValueError(f"handoff must be a non-empty string from new_handoff(), got {handoff!r}")
        digest = hashlib.sha256(handoff.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()

    def _take_query(self, key: bytes) -> np.ndarray | None:
        with self._queries_lock:
            return self._queries.pop(key, None)

    def _hold_query(self, key: bytes, vector: np.ndarray) -> np.ndarray:
        vector.setflags(write=False)  # handed to the step that takes it
        with self._queries_lock:
            self._queries[key] = vector
            while len(self._queries) > self.QUERY_HANDOFF_SIZE:  # runs stopped between the two steps
                self._queries.popitem(last=False)
        return vector

    def query(self, text: str, *, handoff: str | None = None, hold: bool = False) -> np.ndarray:
        """The unit query vector of ``text`` (float32, shape ``(dim,)``).

        One judgment needs its case's vector twice when the principles exceed the token budget:
        to rank them and to search episodes. With a ``handoff`` token (:meth:`new_handoff`, one
        per judgment) the ranking step embeds the case and holds the vector (``hold=True``) and
        the episode search of the same judgment takes it (``hold=False``), so the case is
        embedded once (with a hosted embedder, one request less per judgment). A vector is held
        under a SHA-256 of the token and the text, never the text, and only until it is taken
        (at most ``QUERY_HANDOFF_SIZE``, oldest dropped first, for runs stopped between the
        steps). Nothing is shared between judgments: without the token a held vector cannot be
        found, so no caller learns from timing what another one judged. Without ``handoff``
        the text is embedded and nothing is held.

        Raises:
            ValueError: ``handoff`` is not a non-empty string.
        """
        if handoff is None:
            return query_vector(self.embeddings, text)
        key = self._handoff_key(handoff, text)
        if hold:
            return self._hold_query(key, query_vector(self.embeddings, text))
        vector = self._take_query(key)
        return query_vector(self.embeddings, text) if vector is None else vector

    async def aquery(self, text: str, *, handoff: str | None = None, hold: bool = False) -> np.ndarray:
        """Async :meth:`query`: an offline embedder runs in a worker thread, a hosted one through its async call."""
        key = None if handoff is None else self._handoff_key(handoff, text)
        if key is not None and not hold:
            vector = self._take_query(key)
            if vector is not None:
                return vector
        if hasattr(self.embeddings, "embed_query_array"):
            vector = await asyncio.to_thread(query_vector, self.embeddings, text)
        else:  # the embedder's own async form (a hosted API's is a request, not a thread)
            vector = unit_vector(np.asarray(await self.embeddings.aembed_query(text), dtype=np.float32))
        return self._hold_query(key, vector) if key is not None and hold else vector

    def _release(self, case: dict[str, Any], handoff: str | None) -> None:
        """Drop a vector held for a search that needs none (no episodes, ``k`` 0)."""
        if handoff is not None:
            self._take_query(self._handoff_key(handoff, embedding_text(case)))

    def _to_episodes(self, hits: list[tuple[Document, float]]) -> list[Episode]:
        episodes = []
        for doc, score in hits:
            episode = dict(doc.metadata["episode"])
            episode["score"] = round(float(score), 4)
            episodes.append(episode)
        return episodes  # type: ignore[return-value]

    def _by_vector(self, vector: np.ndarray) -> Any:
        """The query vector as the store takes it: FAISS takes the array as it is, others a list."""
        return vector if hasattr(self.vectorstore, "index") else vector.tolist()

    def search(self, case: dict[str, Any], k: int = 5, *, handoff: str | None = None) -> list[Episode]:
        """The ``k`` episodes most similar to ``case``, most similar first, with ``score`` (cosine).

        ``handoff``: the judgment's token, to take the query vector its principle ranking held (see :meth:`query`).
        """
        if k <= 0 or not self._ids:
            self._release(case, handoff)
            return []
        vector = self.query(embedding_text(case), handoff=handoff)
        hits = self.vectorstore.similarity_search_with_score_by_vector(
            self._by_vector(vector), k=min(k, len(self._ids))
        )
        return self._to_episodes(hits)

    async def asearch(self, case: dict[str, Any], k: int = 5, *, handoff: str | None = None) -> list[Episode]:
        """Async :meth:`search`: an offline embedder and the index search run in a worker thread."""
        if k <= 0 or not self._ids:
            self._release(case, handoff)
            return []
        vector = await self.aquery(embedding_text(case), handoff=handoff)
        hits = await self.vectorstore.asimilarity_search_with_score_by_vector(
            self._by_vector(vector), k=min(k, len(self._ids))
        )
        return self._to_episodes(hits)
