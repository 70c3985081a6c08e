"""Choosing the judge's chat model by configuration, and running async code for synchronous callers.

Chat model (:func:`resolve_chat_model`):

* a LangChain ``BaseChatModel`` instance: used as is;
* ``None`` or ``"embedded"``: the embedded model in-process (offline default: Qwen2.5-Coder-0.5B-Instruct,
  or ``MEMALIGN_EMBEDDED_MODEL``); ``"embedded:NAME"`` for another embedded model
  (``qwen2.5-coder-0.5b``, ``smollm2-135m``; see :mod:`memalign_graph.modelfiles`);
* ``"llamacpp:/path/to/model.gguf"``: any local GGUF file, in-process;
* ``"stub"``: :class:`memalign_graph.testing.StubChatModel`, deterministic, for tests and benchmarks;
* ``"provider:model"``, e.g. ``"openai:gpt-4.1-mini"``: ``langchain.chat_models.init_chat_model``;
* a model name plus ``base_url``: an OpenAI-compatible server (vLLM, llama.cpp
  server, Ollama, LM Studio) through ``langchain_openai.ChatOpenAI``.

Models built from strings get ``temperature=0`` unless their LangChain model profile says the
model takes no temperature (OpenAI's o-series and GPT-5 reasoning models refuse one); no output
cap is set for hosted models, so a reasoning model's thinking is never cut short. OpenAI and
OpenAI-compatible models get an async HTTP client whose connections belong to the event loop
that opened them (:func:`loop_local_transport_class`), so one cached model serves any number of event
loops, one after another or at once.

Event loop for synchronous calls (:func:`run_sync`): the synchronous API (``Memory.align``)
runs its coroutine on one persistent background loop rather than a fresh ``asyncio.run`` loop
per call, so any provider's cached async client stays usable across repeated calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel

from memalign_graph.errors import require
from memalign_graph.modelfiles import EMBEDDED

T = TypeVar("T")


@functools.cache
def loop_local_transport_class(http: Any) -> type:
    """An async transport class of the httpx library ``http`` with one connection pool per event loop.

    A pooled connection belongs to the loop that opened it; reused from another loop (a second
    ``asyncio.run``, a server's loop next to :func:`run_sync`'s) it fails with
    ``RuntimeError: Event loop is closed``. The transport opens a pool (``http.AsyncHTTPTransport``,
    its keyword arguments given to the constructor) for each running loop and forgets it with the loop.

    Args:
        http: the ``httpx`` module, or the API-identical ``httpx2`` that ``openai>=3`` uses.
    """

    class LoopLocalTransport(http.AsyncBaseTransport):
        def __init__(self, **kwargs: Any) -> None:
            self._kwargs = kwargs
            self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
            self._lock = threading.Lock()

        def _pool(self) -> Any:
            loop = asyncio.get_running_loop()
            with self._lock:
                pool = self._pools.get(loop)
                if pool is None:
                    pool = self._pools[loop] = http.AsyncHTTPTransport(**self._kwargs)
                return pool

        async def handle_async_request(self, request: Any) -> Any:
            return await self._pool().handle_async_request(request)

        async def aclose(self) -> None:
            with self._lock:
                pool = self._pools.pop(asyncio.get_running_loop(), None)
            if pool is not None:
                await pool.aclose()

    return LoopLocalTransport


def loop_local_async_client() -> Any:
    """An async HTTP client for the OpenAI SDK (the SDK's defaults) whose connections are per event loop."""
    import openai
    from langchain_openai._compat import httpx as http  # the httpx flavour the installed openai SDK uses

    transport = loop_local_transport_class(http)(
        limits=http.Limits(max_connections=1000, max_keepalive_connections=100)
    )
    return openai.DefaultAsyncHttpxClient(transport=transport)


_loop: tuple[int, asyncio.AbstractEventLoop] | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid() or _loop[1].is_closed():  # a forked child has no loop thread
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="memalign-sync-loop", daemon=True).start()
            _loop = (os.getpid(), loop)
        return _loop[1]


async def _in_context(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    return await asyncio.get_running_loop().create_task(coro, context=context)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code and return its result.

    It runs on one persistent background event loop (a daemon thread started on first use),
    with the caller's context variables (LangChain callbacks, tracing), so async model clients
    cached by a first call still work in the next. Safe to call from any thread, including one
    whose own loop is running (that thread waits).

    Raises:
        RuntimeError: if called from a coroutine running on that background loop (it would wait
            on itself); await the async form there.
        Exception: whatever ``coro`` raises.
    """
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("a synchronous memalign call was made from its own event loop; await the async form")
    future = asyncio.run_coroutine_threadsafe(_in_context(coro, contextvars.copy_context()), loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def _takes_temperature(model: BaseChatModel) -> bool:
    """Whether a temperature may be set: the model has the field and its profile does not refuse one."""
    return "temperature" in type(model).model_fields and (model.profile or {}).get("temperature") is not False


def _openai_compatible(name: str, base_url: str) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    settings: dict[str, Any] = {
        "model": name,
        "base_url": base_url,
        "api_key": os.environ.get("OPENAI_API_KEY") or "not-needed",
        "http_async_client": loop_local_async_client(),
    }
    model = ChatOpenAI(**settings)
    return ChatOpenAI(**settings, temperature=0) if _takes_temperature(model) else model


def _from_provider(spec: str) -> BaseChatModel:
    from langchain.chat_models import init_chat_model

    provider = spec.partition(":")[0]
    settings: dict[str, Any] = {}
    if provider in ("openai", "azure_openai"):
        settings["http_async_client"] = loop_local_async_client()
    model = init_chat_model(spec, **settings)
    return init_chat_model(spec, **settings, temperature=0) if _takes_temperature(model) else model


@functools.lru_cache(maxsize=8)
def _cached_chat_model(spec: str, base_url: str | None) -> BaseChatModel:
    if spec == EMBEDDED or spec.startswith(EMBEDDED + ":") or spec.startswith("llamacpp:"):
        require("xllamacpp", "offline", f"the in-process model {spec!r}")
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
        return _openai_compatible(spec.removeprefix("openai:"), base_url)
    if ":" not in spec:
        raise ValueError(
            f"model {spec!r}: use 'provider:model' (e.g. 'openai:gpt-4.1-mini'), 'embedded', "
            "'llamacpp:/path/model.gguf', or a model name with base_url for an OpenAI-compatible server"
        )
    return _from_provider(spec)


def resolve_chat_model(model: str | BaseChatModel | None = None, *, base_url: str | None = None) -> BaseChatModel:
    """Return the chat model named by ``model`` (see the module docstring).

    Instances built from strings are cached per process, so the embedded model
    is loaded once.

    Args:
        model: a chat model instance, a spec string, or ``None`` for ``MEMALIGN_MODEL`` (else the embedded model).
        base_url: an OpenAI-compatible server's base URL (e.g. ``http://127.0.0.1:8000/v1``), ``model``
            then being its model name; ``None`` for ``MEMALIGN_BASE_URL``.

    Raises:
        ValueError: for a string that names no known form, or ``base_url`` given with a model instance.
        TypeError: if ``model`` is neither a string nor a ``BaseChatModel``.
        MissingDependencyError: (an ``ImportError``) naming the extra to install, if the embedded
            model's runtime is missing.
        ModelFileError: if the embedded model's files are not installed or do not match their pinned SHA-256.
    """
    if isinstance(model, BaseChatModel):
        if base_url:
            raise ValueError(
                f"base_url {base_url!r} was given with a {type(model).__name__} instance; "
                "set the URL on the instance, or name the model by a string"
            )
        return model
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a string or a LangChain BaseChatModel, got {type(model).__name__}")
    base_url = base_url or os.environ.get("MEMALIGN_BASE_URL") or None
    spec = (model or os.environ.get("MEMALIGN_MODEL") or EMBEDDED).strip()
    if spec == EMBEDDED or spec.startswith(EMBEDDED + ":"):
        from memalign_graph.modelfiles import embedded_model

        spec = f"{EMBEDDED}:{embedded_model(spec.partition(':')[2] or None).name}"
    return _cached_chat_model(spec, base_url)


def model_name(model: Any) -> str:
    """The chat model's name for provenance and error messages."""
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__
