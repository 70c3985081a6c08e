"""How the MemAlign graphs' nodes reach a run's memory, model and caller (see :mod:`memalign_graph.graph`).

Every node reads its :class:`Context` through :func:`run_context`, opens the memory it names with
:func:`run_memory` (a run's first node refreshes it, and on a served judge within
:data:`STORAGE_TIMEOUT_S`), and gets its chat model from :func:`chat_model`. :func:`node` wraps a
node's sync and async forms; on served graphs it swaps the client's context for the server's
(:func:`served_runtime`) and turns a server-side configuration error into a
:class:`ServedJudgeError` the client can read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.config import get_config
from langgraph.runtime import Runtime, get_runtime

from memalign_graph.backends.names import is_postgres_url, is_store_location, redact, store_judge
from memalign_graph.backends.store import StoreBackend
from memalign_graph.context import (
    Context,
    context_from_configurable,
    judge_specs,
    memory_location,
    resolve_context,
    served_context,
)
from memalign_graph.errors import MemAlignError, MemoryFormatError, MissingDependencyError
from memalign_graph.modelfiles import ModelFileError
from memalign_graph.models import resolve_chat_model
from memalign_graph.spec import CASE_KEYS, JudgeSpec, parse_record
from memalign_graph.state import JudgeState
from memalign_graph.versions import VersionedMemory, calibration_mode, shared_memory

logger = logging.getLogger(__name__)


def memory_target(ctx: Context, store: Any) -> Any:
    """Where the memory ``ctx`` names lives, for a graph running with LangGraph store ``store`` (or ``None``).

    ``"langgraph"`` / ``"langgraph:NAME"`` become :class:`~memalign_graph.backends.store.StoreBackend`
    ``(store, NAME)``; any other location is returned as it is.

    Raises:
        ValueError: for a ``langgraph`` location when the graph runs without a store.
    """
    location = memory_location(ctx)
    if not is_store_location(location):
        return location
    if store is None:
        raise ValueError(
            f"Context.store={location!r} keeps the judge's memory in the graph's LangGraph store, but this graph "
            "runs without one: compile it with store=... (e.g. InMemoryStore()), or run it on LangGraph Server"
        )
    return StoreBackend(store, store_judge(location))


STORAGE_TIMEOUT_S = 30.0
"""Longest a served run waits for its memory to open or refresh (``MEMALIGN_STORAGE_TIMEOUT_S`` overrides)."""
_storage = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="memalign-storage")


def _open(ctx: Context, target: Any, refresh: bool) -> VersionedMemory:
    """The memory of a run's first node (``refresh``) or a later one; on a served judge, within a time bound.

    On a served judge (``ctx.roles`` set) a storage that never answers (a stuck network file
    system, a lock held by a dead host) must not hold the run, and the server's worker with it,
    forever: the open (creating a store judge from ``MEMALIGN_JUDGE_SPECS`` when the server's
    store has none yet, and reading the current version's calibration head) runs in a small pool
    of its own, and the run fails when :data:`STORAGE_TIMEOUT_S` passes (the open's thread is left
    to finish). The later nodes of a run (``refresh=False``) use the memory its first node opened,
    so they need no storage and no bound.

    Raises:
        TimeoutError: on a served judge, when the memory did not open within the bound.
        MemoryFormatError: when there is no judge at ``target`` (see :func:`_open_or_create`).
    """
    if ctx.roles is None or not refresh:  # library use: the caller's own process waits as long as its storage does
        return _open_or_create(ctx, target, refresh)
    limit = float(os.environ.get("MEMALIGN_STORAGE_TIMEOUT_S") or STORAGE_TIMEOUT_S)
    opening = _storage.submit(_open_served, ctx, target)
    try:
        return opening.result(timeout=limit)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(
            f"the judge's memory did not open within {limit:g} s (MEMALIGN_STORAGE_TIMEOUT_S): its storage is not "
            "answering; nothing was written"
        ) from None


def _open_served(ctx: Context, target: Any) -> VersionedMemory:
    """:func:`_open_or_create`, then the calibration head read (or refitted) now, inside the served bound.

    The judge node would otherwise read it from storage, and may take the writer lock to store a
    refit, outside the bound.
    """
    memory = _open_or_create(ctx, target, True)
    if memory.spec.kind != "pairwise" and calibration_mode(memory, ctx.calibration) != "off":
        try:
            memory.calibration_head()
        except Exception:  # noqa: BLE001 - the judge node reports a head it cannot use, as in library use
            pass
    return memory


def _open_or_create(ctx: Context, target: Any, refresh: bool) -> VersionedMemory:
    """:func:`shared_memory` for ``target``; a judge missing from the server's LangGraph store is created first.

    Raises:
        MemoryFormatError: no judge at ``target``; for the server's store, when ``MEMALIGN_JUDGE_SPECS``
            defines none under that name either (the message says how to create it).
    """
    try:
        return shared_memory(target, ctx.embeddings, refresh=refresh)
    except MemoryFormatError:
        if not isinstance(target, StoreBackend) or target.exists():
            raise
        if not create_store_judge(target, ctx.embeddings):
            judge = target.judge
            raise MemoryFormatError(
                f"no judge {judge!r} in the graph's LangGraph store, and MEMALIGN_JUDGE_SPECS defines none under that "
                f'name to create it from: add {{"{judge}": {{"name": ..., "criterion": ..., "kind": "categorical", '
                f'"labels": [...]}}}} to MEMALIGN_JUDGE_SPECS, or create the judge first '
                f"(Memory.create(StoreBackend(store, {judge!r}), spec); for a PostgresStore "
                f"`memalign init 'postgresql://…?judge={judge}&store=langgraph' --name ...`)"
            ) from None
    return shared_memory(target, ctx.embeddings, refresh=refresh)


def run_context(runtime: Runtime[Any]) -> Context:
    """The :class:`Context` of this run: ``runtime.context`` (see :func:`resolve_context`).

    A run given no context whose ``config["configurable"]`` holds :class:`Context` fields (how
    options were passed before LangGraph 0.6) is read from there, with a deprecation warning
    (:func:`~memalign_graph.context.context_from_configurable`), instead of silently falling
    back to every default (memory in ``./.memalign``).
    """
    if runtime.context is None:
        legacy = context_from_configurable(get_config().get("configurable"))
        if legacy is not None:
            return legacy
    return resolve_context(runtime.context)


def run_memory(runtime: Runtime[Context], *, refresh: bool = True) -> tuple[Context, VersionedMemory]:
    """This run's :class:`Context` and memory; ``refresh`` (a run's first node) picks up a newer committed version.

    Raises:
        TimeoutError: on a served judge whose storage does not answer (see :func:`_open`).
        MemoryFormatError: when there is no judge at the context's location.
    """
    ctx = run_context(runtime)
    return ctx, _open(ctx, memory_target(ctx, runtime.store), refresh)


def chat_model(ctx: Context) -> BaseChatModel:
    """The run's chat model: ``ctx.model`` as it is, or resolved from its name and ``ctx.base_url``.

    Raises:
        ValueError: for a name that names no known form (see :func:`~memalign_graph.models.resolve_chat_model`).
        MissingDependencyError: naming the extra to install, for the embedded model without its runtime.
        ModelFileError: if the embedded model's files are missing or do not match their pinned SHA-256.
    """
    return resolve_chat_model(ctx.model, base_url=ctx.base_url)


def create_store_judge(backend: StoreBackend, embeddings: Any) -> bool:
    """Create ``backend``'s judge, empty, from its definition in ``MEMALIGN_JUDGE_SPECS``, if it is not stored yet.

    Returns:
        Whether the judge is now stored (``False``: no definition for it, or there is no such store judge).

    Raises:
        ValueError: if ``MEMALIGN_JUDGE_SPECS`` or the judge's definition there is malformed.
    """
    spec = judge_specs().get(backend.judge)
    if spec is None:
        return False
    try:
        VersionedMemory.create(backend, JudgeSpec.from_dict(spec), embeddings=embeddings)
    except FileExistsError:  # another run created it first
        pass
    return True


def read_case(state: JudgeState, memory: Any) -> dict[str, Any]:
    """The case in ``state``, validated against the judge (for nodes that may run first, e.g. on resume).

    Raises:
        RecordError: if the case is malformed, naming the field (``where="judge input"``).
    """
    raw = {k: state[k] for k in CASE_KEYS if k in state}  # type: ignore[literal-required]
    return dict(parse_record(raw, memory.spec, where="judge input"))


class ServedJudgeError(MemAlignError, ValueError):
    """The server's configuration of a served judge does not work; raised to the API client who ran the graph.

    LangGraph Server shows a client the message of a ``ValueError`` (and a few other built-in
    errors) and replaces any other error's with "An internal error occurred", keeping the real
    one in its log. A missing judge, a memory that cannot be opened or an extra the server lacks
    are the operator's to fix, but the client is the one who sees the run fail: the message says
    what is wrong, with the judge's memory location left out (it may name a host, a path or a password).
    """


def _client_error(exc: BaseException, runtime: Runtime[Context]) -> ServedJudgeError:
    """``exc`` as the client may read it: the served judge's name in place of its memory location.

    The server's log keeps the original message (locations in it are password-free).
    """
    logger.error("served run: %s: %s", type(exc).__name__, exc)
    text = str(exc)
    location = memory_location(runtime.context)
    if isinstance(location, str):
        judge = store_judge(location) if is_store_location(location) else None
        shown = f"judge {judge!r}" if judge else "the judge's memory"
        spellings = {location, redact(location)} if is_postgres_url(location) else {location}
        if not is_postgres_url(location) and not is_store_location(location):
            spellings.add(str(Path(location).expanduser().resolve()))
        for spelled in sorted(spellings, key=len, reverse=True):
            text = text.replace(spelled, shown)
    return ServedJudgeError(f"the server cannot run this judge: {text}")


_SERVER_SIDE = (MemoryFormatError, MissingDependencyError, ModelFileError)
"""Errors that say the server's configuration of the judge is wrong (see :class:`ServedJudgeError`)."""


def served_runtime(runtime: Runtime[Any]) -> Runtime[Context]:
    """``runtime`` with the client's served context replaced by the server's.

    The client's context is a served one (e.g. :class:`~memalign_graph.context.ServedContext`).

    The author is the user LangGraph Server authenticated (``runtime.server_info.user``), and
    their roles (its ``role:*`` permissions, see :mod:`memalign_graph.auth`) decide what they may
    do (:mod:`memalign_graph.duties`).

    Raises:
        ValueError: for a judge the server does not expose or an option out of range.
    """
    user = runtime.server_info.user if runtime.server_info is not None else None
    author = getattr(user, "identity", None) if user is not None else None
    roles = None
    if user is not None:
        roles = [p.removeprefix("role:") for p in getattr(user, "permissions", None) or () if p.startswith("role:")]
    return runtime.override(context=served_context(runtime.context, author=author, roles=roles))


def serve(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func(state, runtime)`` run with :func:`served_runtime` (for conditional edges of served graphs)."""

    @functools.wraps(func)
    def wrapped(state: Any, runtime: Runtime[Any]) -> Any:
        served = served_runtime(runtime)
        try:
            return func(state, served)
        except _SERVER_SIDE as exc:
            raise _client_error(exc, served) from exc

    return wrapped


class _Node(Runnable[Any, Any]):
    """A graph node's sync and async forms as one runnable (see :func:`node`).

    A plain ``Runnable``: LangGraph's own step traces the node, and nothing here inspects
    signatures or opens a callback run on every call, as a ``RunnableLambda`` would.
    """

    def __init__(self, func: Callable[..., Any], afunc: Callable[..., Any] | None, served: bool) -> None:
        self.func, self.afunc, self.served = func, afunc, served
        self.name = func.__name__

    def _runtime(self) -> Runtime[Any]:
        runtime = get_runtime()
        return served_runtime(runtime) if self.served else runtime

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: D102
        runtime = self._runtime()
        try:
            return self.func(input, runtime)
        except _SERVER_SIDE as exc:
            if self.served:
                raise _client_error(exc, runtime) from exc
            raise

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: D102
        runtime = self._runtime()
        try:
            if self.afunc is not None:
                return await self.afunc(input, runtime)
            return await asyncio.to_thread(self.func, input, runtime)
        except _SERVER_SIDE as exc:
            if self.served:
                raise _client_error(exc, runtime) from exc
            raise


def node(func: Callable[..., Any], afunc: Callable[..., Any] | None = None, *, served: bool = False) -> Runnable:
    """A graph node with sync and async forms, both called as ``(state, runtime)``; named after ``func``.

    Without ``afunc`` the async form runs ``func`` in a worker thread, so blocking
    I/O never reaches the event loop (``langgraph dev`` forbids it). With ``served``
    the node sees :func:`served_runtime` instead of the client's context, and an error in the
    server's configuration of the judge reaches the client as a :class:`ServedJudgeError`.
    """
    return _Node(func, afunc, served)
