"""Episodes in LangChain's FAISS store: building it, reading its parts, and the compact docstore.

The file backend keeps its episodes this way on disk (:mod:`memalign_graph.backends.file`);
the PostgreSQL and LangGraph-store backends rebuild one in memory from stored vectors
(:func:`faiss_from_vectors`) and read it back out (:func:`faiss_episodes`). Nothing here
reads or writes a file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memalign_graph.spec import case_text

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy


def _single_threaded_search() -> None:
    """One judgment searches one vector: OpenMP threads only add start-up and contend with the embedder.

    Measured here: k=5 over 100 000 vectors, 14 ms with 2 threads, 6 ms with 1.
    """
    import faiss

    faiss.omp_set_num_threads(1)


def faiss_store(embeddings: Embeddings, index: Any, docstore: CompactDocstore) -> FAISS:
    """A FAISS store over ``index`` and ``docstore`` (episodes in index order), scored by inner product.

    Inner product is cosine here: :class:`~memalign_graph.episodic.EpisodicMemory` stores unit vectors.
    """
    _single_threaded_search()
    return FAISS(
        embedding_function=embeddings,
        index=index,
        docstore=docstore,
        index_to_docstore_id=dict(enumerate(docstore.order)),
        normalize_L2=False,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
    )


def new_faiss(embeddings: Embeddings, dim: int) -> FAISS:
    """An empty FAISS store of ``dim``-dimensional vectors (see :func:`faiss_store`)."""
    import faiss

    return faiss_store(embeddings, faiss.IndexFlatIP(dim), CompactDocstore())


def faiss_from_vectors(embeddings: Embeddings, dim: int, ids: list[str], raw: list[str], vectors: Any) -> FAISS:
    """A FAISS store of stored episodes, built from their stored vectors (nothing is embedded again).

    Args:
        embeddings: what the store embeds queries with.
        dim: vector length.
        ids: episode ids, in index order.
        raw: each episode as JSON text (see :class:`CompactDocstore`), in the same order.
        vectors: unit vectors, shape ``(len(ids), dim)``, float32.
    """
    vectorstore = new_faiss(embeddings, dim)
    if ids:
        vectorstore.index.add(vectors)
        vectorstore.docstore = CompactDocstore(dict(zip(ids, raw)), list(ids))
        vectorstore.index_to_docstore_id = dict(enumerate(ids))
    return vectorstore


def faiss_episodes(vectorstore: VectorStore) -> tuple[list[str], dict[str, str], Any]:
    """``(ids in index order, id -> episode JSON text, FAISS index)`` of a store built by :func:`new_faiss`.

    Raises:
        TypeError: for any other vector store.
    """
    docstore = getattr(vectorstore, "docstore", None)
    mapping = getattr(vectorstore, "index_to_docstore_id", None)
    if not isinstance(docstore, CompactDocstore) or mapping is None:
        raise TypeError(f"episodes must be in a FAISS store with a CompactDocstore, got {type(vectorstore).__name__}")
    return [mapping[i] for i in range(len(mapping))], docstore.raw, vectorstore.index  # type: ignore[attr-defined]


class CompactDocstore(InMemoryDocstore):
    """Episodes kept as their JSON text, decoded only when retrieved.

    A docstore for LangChain's ``FAISS`` that holds one string per episode
    instead of a ``Document`` with nested dicts: about a fifth of the memory at
    100 000 episodes, and loading needs no JSON decoding of every episode. The
    document text (the case) is rebuilt from the episode on retrieval.

    File form (``episodes.jsonl``): one line per episode in index order,
    ``JSON(id) TAB JSON(episode)``.
    """

    def __init__(self, raw: dict[str, str] | None = None, order: list[str] | None = None) -> None:
        super().__init__({})
        self.raw: dict[str, str] = raw or {}
        self.order: list[str] = order or list(self.raw)

    @classmethod
    def read(cls, lines: Iterable[str], where: str) -> CompactDocstore:
        """Load the lines of an ``episodes.jsonl`` (``where`` names it in errors).

        Raises:
            ValueError: for a line that is not ``JSON(id) TAB JSON``.
        """
        raw: dict[str, str] = {}
        order: list[str] = []
        for lineno, line in enumerate(lines, start=1):
            key, sep, episode = line.rstrip("\n").partition("\t")
            if not sep:
                raise ValueError(f"{where}:{lineno}: not an episode line")
            episode_id = json.loads(key)
            raw[episode_id] = episode
            order.append(episode_id)
        return cls(raw, order)

    def add(self, texts: dict[str, Document]) -> None:  # noqa: D102
        overlapping = set(texts) & set(self.raw)
        if overlapping:
            raise ValueError(f"Tried to add ids that already exist: {overlapping}")
        for episode_id, doc in texts.items():
            self.raw[episode_id] = json.dumps(doc.metadata["episode"], ensure_ascii=False)

    def delete(self, ids: list) -> None:  # noqa: D102
        if not set(ids) & set(self.raw):
            raise ValueError(f"Tried to delete ids that do not exist: {ids}")
        for episode_id in ids:
            self.raw.pop(episode_id, None)

    def search(self, search: str) -> Document | str:  # noqa: D102
        text = self.raw.get(search)
        if text is None:
            return f"ID {search} not found."
        episode = json.loads(text)
        return Document(id=search, page_content=case_text(episode), metadata={"episode": episode})


__all__ = ["CompactDocstore", "faiss_episodes", "faiss_from_vectors", "faiss_store", "new_faiss"]
