"""The MemAlign graphs: judging, alignment, and judging with expert review.

Judging: ``retrieve_principles`` → ``retrieve_episodes`` → ``judge``. Alignment: one
node per step of :mod:`memalign_graph.alignment`, ``episodes`` → ``distill`` →
``consolidate`` → ``govern`` → ``commit``, so the state after each node shows what that
step decided (a refused principle in ``distillation``, a merged or held one in
``governance``); the commit is still one write, and it starts again at ``episodes`` if
another writer committed meanwhile. Review: judging → ``collect_feedback``
(``interrupt``) → ``distill`` → ``approve_principles`` (``interrupt``, only when
distillation held principles for an expert; see :mod:`memalign_graph.governance`).

All are plain ``StateGraph`` s with JSON-like state and a :class:`Context`
``context_schema``; compile them with any checkpointer, or use them as a node
in a larger graph. Built with ``served=True`` (the ``langgraph.json`` graphs)
their context schema is a served one instead (:class:`ServedJudgeContext`,
:class:`ServedContext` for review, :class:`ServedAlignContext` for alignment): a
client names a judge and the options that apply to that graph, every node sees
the server's configuration for that judge (:func:`served_context`), the
authenticated user is the author of what the run stores, and a problem with the
server's configuration of the judge reaches the client as a ``ValueError`` with
the message (:class:`ServedJudgeError`; LangGraph Server shows clients the message
of a ``ValueError`` only). A run without a context reads options a caller put
under ``config["configurable"]`` (deprecated; :func:`run_context`). Nodes are thin: each reads state, calls one domain
function and returns a partial update. Each node has a sync and an async form
(:func:`node`): under ``ainvoke`` the model call is awaited and file or
embedding work runs in a worker thread, so no blocking I/O reaches the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Send, interrupt

from memalign_graph import alignment, duties, lifecycle
from memalign_graph.alignment import Phases
from memalign_graph.backends.postgres import is_postgres_url, redact
from memalign_graph.backends.store import StoreBackend, is_store_location, store_judge
from memalign_graph.context import (
    Context,
    ServedAlignContext,
    ServedContext,
    ServedJudgeContext,
    context_from_configurable,
    judge_specs,
    memory_location,
    resolve_context,
    served_context,
)
from memalign_graph.episodic import ModelJudgment, episode_from_record
from memalign_graph.errors import DutiesError, MemAlignError, MemoryFormatError, MissingDependencyError
from memalign_graph.governance import check_policy
from memalign_graph.judge import JudgeSettings, Judgment, arun_judge, find_precedent, precedent_judgment, run_judge
from memalign_graph.modelfiles import ModelFileError
from memalign_graph.models import resolve_chat_model, run_sync
from memalign_graph.review import (
    corrected_judgment,
    needs_review,
    principles_answer_model,
    principles_payload,
    record_from_review,
    review_answer_model,
    review_payload,
    review_record_id,
)
from memalign_graph.spec import JudgeSpec, parse_record
from memalign_graph.state import (
    AlignInput,
    AlignOutput,
    AlignState,
    BatchReviewInput,
    BatchReviewState,
    JudgeInput,
    JudgeOutput,
    JudgeState,
    PrinciplesInput,
    PrinciplesOutput,
    PrinciplesState,
    ReviewOutput,
    ReviewState,
    ServedAlignInput,
    ServedAlignOutput,
    ServedJudgeOutput,
    ServedReviewOutput,
)
from memalign_graph.versions import VersionedMemory, shared_memory
from memalign_graph.working_memory import (
    CASE_KEYS,
    acalibrate_judgment,
    calibrate_judgment,
    calibration_mode,
    finish_judgment,
    judge_settings,
)

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


def _memory(runtime: Runtime[Context], *, refresh: bool = True) -> tuple[Context, VersionedMemory]:
    ctx = run_context(runtime)
    return ctx, _open(ctx, memory_target(ctx, runtime.store), refresh)


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


def _case(state: JudgeState, memory: Any) -> dict[str, Any]:
    """The case, validated against the judge (for nodes that may run first, e.g. on resume)."""
    raw = {k: state[k] for k in CASE_KEYS if k in state}  # type: ignore[literal-required]
    return dict(parse_record(raw, memory.spec, where="judge input"))


def _validated_case(state: JudgeState) -> dict[str, Any]:
    """The case as ``retrieve_principles`` validated and wrote it back to the state (no second check)."""
    return {k: state[k] for k in CASE_KEYS if k in state and state[k] is not None}  # type: ignore[literal-required]


def retrieve_principles(state: JudgeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Semantic memory: every principle, or the most relevant that fit ``principles_token_budget``.

    None if ``use_principles`` is off. The first node of a judgment: it validates the case once
    (writing its canonical form back to the state for the nodes after it) and picks up a newer
    version of memory if one was committed; the later nodes of the judgment use that version.

    Raises:
        RecordError: if the case is malformed.
    """
    ctx, memory = _memory(runtime)
    case = _case(state, memory)
    update: dict[str, Any] = {k: case[k] for k in CASE_KEYS if k in case}
    update["query_handoff"] = None  # an earlier judgment's token in a checkpointed thread is not this one's
    if not ctx.use_principles:
        return {**update, "principles": [], "principles_omitted": []}
    handoff = memory.episodes.new_handoff() if ctx.use_episodes and ctx.k else None
    selected, omitted = memory.select_principles(case, ctx.principles_token_budget, handoff=handoff)
    if omitted:  # ranked: the case's vector is held (if handoff) for this judgment's episode search
        update["query_handoff"] = handoff
    return {**update, "principles": selected, "principles_omitted": omitted}


def retrieve_episodes(state: JudgeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Episodic memory: the ``k`` episodes most similar to the case (none if ``use_episodes`` is off)."""
    ctx, memory = _memory(runtime, refresh=False)
    if not ctx.use_episodes:
        return {"episodes": []}
    handoff = state.get("query_handoff")
    return {"episodes": memory.retrieve_episodes(_validated_case(state), ctx.k, handoff=handoff)}


def _judge_inputs(state: JudgeState, runtime: Runtime[Context]) -> tuple[Context, Any, dict[str, Any], Any]:
    ctx, memory = _memory(runtime, refresh=False)
    case = _validated_case(state)
    episodes = state.get("episodes", [])
    precedent = find_precedent(case, episodes, ctx.precedent, ctx.precedent_threshold)  # type: ignore[arg-type]
    return ctx, memory, case, precedent


def _judge_settings(ctx: Context) -> JudgeSettings:
    # Backoff of transient-error retries is also read from a parent graph's context object, if it has them.
    return judge_settings(
        ctx.max_retries,
        ctx.structured_output,
        ctx.rationale_max_chars,
        getattr(ctx, "retry_backoff_s", None),
        getattr(ctx, "retry_backoff_max_s", None),
        ctx.context_window,
    )


def _finish_judgment(state: JudgeState, case: dict[str, Any], judgment: Judgment) -> dict[str, Any]:
    return {"judgment": finish_judgment(judgment, case, state.get("principles_omitted", []))}


def judge(state: JudgeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The judgment from working memory (or the expert precedent, when it applies).

    After the model, the memory's calibration head may decide the value (``Context.calibration``;
    served graphs: the server's ``MEMALIGN_CALIBRATION`` only): the judgment keeps the model's own
    value in ``model_value`` and says what the head said in ``calibration``.

    Raises:
        JudgeError: the model call failed (transient errors after ``max_retries`` retries with backoff,
            other errors at once), naming the case id (state ``"id"``) and the model.
        JudgmentParseError: no usable answer after ``max_retries`` repairs, naming the case id.
        RecordError: if the case is malformed.
    """
    ctx, memory, case, precedent = _judge_inputs(state, runtime)
    principles, episodes = state.get("principles", []), state.get("episodes", [])
    if precedent is not None:
        judgment = precedent_judgment(precedent, principles, episodes)
    else:
        mode = calibration_mode(memory, ctx.calibration)
        model = resolve_chat_model(ctx.model, base_url=ctx.base_url)
        judgment = run_judge(model, memory.spec, case, principles, episodes, _judge_settings(ctx))
        judgment = calibrate_judgment(memory, case, judgment, mode, model)
    return _finish_judgment(state, case, judgment)


async def ajudge(state: JudgeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Async :func:`judge`: the model is awaited (backoff waits too), so waiting holds no worker thread.

    Raises:
        JudgeError: as :func:`judge`.
        JudgmentParseError: as :func:`judge`.
        RecordError: as :func:`judge`.
    """
    # Without I/O (the first node of the judgment refreshed memory; an absolute path or a URL needs no
    # file system to be found) no worker-thread hop: under concurrency those queue behind embeddings.
    location = memory_location(run_context(runtime))
    if (
        isinstance(location, str)
        and not is_store_location(location)
        and (is_postgres_url(location) or os.path.isabs(location))
    ):
        ctx, memory, case, precedent = _judge_inputs(state, runtime)
    else:
        ctx, memory, case, precedent = await asyncio.to_thread(_judge_inputs, state, runtime)
    principles, episodes = state.get("principles", []), state.get("episodes", [])
    if precedent is not None:
        judgment = precedent_judgment(precedent, principles, episodes)
    else:
        mode = calibration_mode(memory, ctx.calibration)
        model = (
            ctx.model
            if isinstance(ctx.model, BaseChatModel)  # an instance is used as it is; a name may load a model
            else await asyncio.to_thread(resolve_chat_model, ctx.model, base_url=ctx.base_url)
        )
        judgment = await arun_judge(model, memory.spec, case, principles, episodes, _judge_settings(ctx))
        judgment = await acalibrate_judgment(memory, case, judgment, mode, model)
    return _finish_judgment(state, case, judgment)


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
    """``runtime`` with the client's served context (e.g. :class:`ServedContext`) replaced by the server's.

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


def _serve(func: Callable[..., Any]) -> Callable[..., Any]:
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


def _add_judging(builder: StateGraph, served: bool) -> None:
    """``START → retrieve_principles → retrieve_episodes → judge``, shared by the judge and review graphs."""
    if served:  # the served runtime (server configuration, authenticated user) replaces the client's context
        builder.add_node("retrieve_principles", node(retrieve_principles, served=True))
        builder.add_node("retrieve_episodes", node(retrieve_episodes, served=True))
    else:  # plain functions: LangGraph calls them directly, and in a worker thread under ``ainvoke``
        builder.add_node("retrieve_principles", retrieve_principles)
        builder.add_node("retrieve_episodes", retrieve_episodes)
    builder.add_node("judge", node(judge, ajudge, served=served))
    builder.add_edge(START, "retrieve_principles")
    builder.add_edge("retrieve_principles", "retrieve_episodes")
    builder.add_edge("retrieve_episodes", "judge")


def _judging_graph(
    state: type, output: type, served_output: type, served_context_schema: type, served: bool
) -> StateGraph:
    """A graph of ``state`` that starts by judging (see :func:`_add_judging`), with its context and schemas."""
    builder = StateGraph(
        state,
        context_schema=served_context_schema if served else Context,
        input_schema=JudgeInput,
        output_schema=served_output if served else output,
    )
    _add_judging(builder, served)
    return builder


def build_judge_graph(*, served: bool = False) -> StateGraph:
    """The judge graph, uncompiled: ``START → retrieve_principles → retrieve_episodes → judge → END``.

    Input: :class:`JudgeInput`; output: ``{"judgment": Judgment}``. Context: :class:`Context`,
    or with ``served`` the client's :class:`ServedJudgeContext` (see the module docstring); served,
    the output also carries the working memory (:class:`ServedJudgeOutput`), since LangGraph
    Server streams a node's update only for output keys.
    """
    builder = _judging_graph(JudgeState, JudgeOutput, ServedJudgeOutput, ServedJudgeContext, served)
    builder.add_edge("judge", END)
    return builder


# The alignment graph: one node per step of memalign_graph.alignment.

MAX_ALIGN_PASSES = 3
"""Passes the alignment graph makes when other writers commit while it prepares its version; then it fails."""


def _align_llm(ctx: Context) -> dict[str, Any]:
    """The LLM and its call settings, as the distill and consolidate steps take them."""
    return {
        "chat": resolve_chat_model(ctx.model, base_url=ctx.base_url),
        "max_retries": ctx.max_retries,
        "backoff_s": ctx.retry_backoff_s,
        "concurrency": ctx.concurrency,
        "phases": Phases(),
    }


def _align_author(ctx: Context, state: AlignState) -> str:
    return ctx.author or state.get("author", "expert")


def align_episodes(state: AlignState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Validate the feedback and compare it with the ledger (:func:`~memalign_graph.alignment.plan_episodes`).

    With nothing to change (every record aligned before with the same content) the graph ends
    here and ``report`` says so; nothing is written.

    Raises:
        RecordError: for an invalid record (nothing is written).
        ValueError: for a principles policy other than ``auto``/``review``.
        DutiesError: for a served user without the reviewer role (:func:`~memalign_graph.duties.check_feedback`).
    """
    ctx, memory = _memory(runtime)
    duties.check_feedback(ctx.author or "anonymous", ctx.roles)
    if ctx.principles_policy is not None:
        check_policy(ctx.principles_policy, "align")
    plan = alignment.plan_episodes(memory, alignment.validate_feedback(memory.spec, state["feedback"]))
    moved = state.get("moved")
    update: dict[str, Any] = {"plan": plan, "passes": moved["passes"] + 1 if moved else 1, "moved": None}
    if not alignment.has_work(plan):
        report = alignment.alignment_report({"plan": plan}, version=plan["version"], timings={})
        report.seconds = round(time.time() - plan["started_at"], 3)
        update["report"] = report.to_dict()
    return update


def route_plan(state: AlignState) -> str:
    """Distill the planned records, or finish when the plan changes nothing."""
    return "distill" if alignment.has_work(state["plan"]) else END


def align_distill(state: AlignState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The salient records distilled into candidate principles by the LLM (:func:`~memalign_graph.alignment.distill`).

    Raises:
        ValueError: if the model's known context window leaves no room for records.
    """
    ctx, memory = _memory(runtime, refresh=False)
    distillation = alignment.distill(
        spec=memory.spec,
        plan=state["plan"],
        batch_size=ctx.batch_size,
        token_budget=ctx.token_budget,
        **_align_llm(ctx),
    )
    return {"distillation": run_sync(distillation)}


def align_consolidate(state: AlignState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Each candidate against its most similar principle, as the LLM judged them (see :func:`alignment.consolidate`)."""
    ctx, memory = _memory(runtime, refresh=False)
    consolidation = alignment.consolidate(
        vectors=memory.principle_vectors,
        plan=state["plan"],
        distillation=state["distillation"],
        threshold=alignment.CONSOLIDATE_THRESHOLD,
        spec=memory.spec,
        **_align_llm(ctx),
    )
    return {"consolidation": run_sync(consolidation)}


def align_govern(state: AlignState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Which candidates enter working memory, merged, and which are held (:func:`~memalign_graph.alignment.govern`)."""
    ctx, memory = _memory(runtime, refresh=False)
    governance = alignment.govern(
        memory,
        state["plan"],
        state["distillation"],
        state["consolidation"],
        principles_policy=ctx.principles_policy,
        phases=Phases(),
    )
    return {"governance": governance}


def align_commit(state: AlignState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Everything as one new version, under the writer locks (:func:`~memalign_graph.alignment.commit`).

    The new records are judged first when ``Context.score_feedback`` says so (the calibration gate's
    evidence, see :func:`~memalign_graph.alignment.judge_new_records`), and the new episodes are
    embedded here (vectors never enter the graph's state). If another
    writer committed since the ``episodes`` step, nothing is written: the update is ``moved``
    (``{"from", "to", "passes"}``) and the graph goes back to ``episodes`` to plan again from
    the new version, :data:`MAX_ALIGN_PASSES` passes at most.

    Raises:
        RuntimeError: if another writer committed during every one of those passes (nothing was written).
    """
    ctx, memory = _memory(runtime, refresh=False)
    plan, phases = state["plan"], Phases()
    judged: dict[str, Any] = {}
    chat = resolve_chat_model(ctx.model, base_url=ctx.base_url)
    scoring_started = time.perf_counter()
    if alignment.scores_feedback(ctx.score_feedback, chat):
        scoring = alignment.judge_new_records(
            memory, plan, chat, concurrency=ctx.concurrency, max_retries=ctx.max_retries, backoff_s=ctx.retry_backoff_s
        )
        judged = run_sync(scoring)
    score_s = round(time.perf_counter() - scoring_started, 3)
    episodes = [episode_from_record(r, judged.get(r["id"])) for r in plan["fresh"]]
    started = time.perf_counter()
    vectors = alignment.embed_episodes(memory.embeddings, episodes, phases)
    timings = {"embed_s": round(time.perf_counter() - started, 3), **({"score_s": score_s} if judged else {})}
    with memory.writing():
        if memory.version != plan["version"]:
            passes = state.get("passes", 1)
            if passes >= MAX_ALIGN_PASSES:
                raise RuntimeError(
                    f"{memory.backend.location}: memory moved to version {memory.version} while this alignment was "
                    f"prepared from version {plan['version']}, in each of {passes} passes; nothing was written; "
                    "run it again"
                )
            return {"moved": {"from": plan["version"], "to": memory.version, "passes": passes}}
        report = alignment.commit(
            memory,
            state,
            episodes,
            vectors,
            author=_align_author(ctx, state),
            reason=state.get("reason"),
            via="align",
            phases=phases,
            timings=timings,
        )
    report.seconds = round(time.time() - plan["started_at"], 3)
    return {"report": report.to_dict()}


def route_commit(state: AlignState) -> str:
    """Plan again when the memory moved before the commit, else finish."""
    return "episodes" if state.get("moved") else END


def build_align_graph(*, served: bool = False) -> StateGraph:
    """The alignment graph, uncompiled: ``START → episodes → distill → consolidate → govern → commit → END``.

    Each node runs one step of :mod:`memalign_graph.alignment` and adds its result to the state
    (``plan``, ``distillation``, ``consolidation``, ``governance``, ``report``), so Studio shows where
    a principle was refused, merged or held. ``episodes`` ends the run when there is nothing to
    change; ``commit`` goes back to ``episodes`` when another writer committed meanwhile.

    Input: :class:`AlignInput` (``{"feedback": [records]}``); output: ``{"report": {...}}``. With
    ``served``: context :class:`ServedAlignContext` (a judge name only), input :class:`ServedAlignInput`
    (no ``author``: the author is the authenticated user), and the output also carries each step's result
    (:class:`ServedAlignOutput`), since LangGraph Server streams a node's update only for output keys.
    """
    builder = StateGraph(
        AlignState,
        context_schema=ServedAlignContext if served else Context,
        input_schema=ServedAlignInput if served else AlignInput,
        output_schema=ServedAlignOutput if served else AlignOutput,
    )
    for name, step in (
        ("episodes", align_episodes),
        ("distill", align_distill),
        ("consolidate", align_consolidate),
        ("govern", align_govern),
        ("commit", align_commit),
    ):
        builder.add_node(name, node(step, served=served))
    builder.add_edge(START, "episodes")
    builder.add_conditional_edges("episodes", route_plan, ["distill", END])
    builder.add_edge("distill", "consolidate")
    builder.add_edge("consolidate", "govern")
    builder.add_edge("govern", "commit")
    builder.add_conditional_edges("commit", route_commit, ["episodes", END])
    return builder


def route_review(state: ReviewState, runtime: Runtime[Context]) -> str:
    """Send the judgment to ``collect_feedback`` if the review policy selects it, else finish."""
    ctx, memory = _memory(runtime)
    selected = needs_review(
        state["judgment"],
        memory.spec,
        _case(state, memory),
        ctx.review,
        min_margin=ctx.review_margin,
        sample_rate=ctx.review_sample_rate,
    )
    return "collect_feedback" if selected else END


def collect_feedback(state: ReviewState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Pause for the expert (``interrupt``) and return their validated answer.

    Nothing before the ``interrupt()`` has side effects, so LangGraph's re-run
    of this node on resume is safe. On a served judge the expert needs the reviewer
    role, and an answer with ``replace: true`` for another author's record needs the
    admin role (:func:`~memalign_graph.duties.replace_refusal`): such an answer is not
    taken; the question is asked again with the reason in its payload's ``refused``.

    Raises:
        DutiesError: for a served user without the reviewer role (before the question).
    """
    ctx, memory = _memory(runtime)
    duties.check_feedback(ctx.author or "anonymous", ctx.roles)
    case = _case(state, memory)
    seen = state.get("principles", []), state.get("episodes", [])
    payload = review_payload(memory.spec, case, state["judgment"], *seen)
    while True:  # each refused answer is followed by a new interrupt (resumes match interrupts by order)
        answer = interrupt(payload, response_schema=review_answer_model(memory.spec))
        review = answer.model_dump(exclude_none=True)
        if ctx.author:
            review["reviewer"] = ctx.author
        refused = _replace_refusal(ctx, memory, case, state["judgment"], review)
        if refused is None:
            return {"review": review}
        payload = {**payload, "refused": refused}


def _replace_refusal(
    ctx: Context, memory: VersionedMemory, case: dict[str, Any], judgment: Any, review: dict[str, Any]
) -> str | None:
    """Why this served answer may not replace the stored record it names, or ``None``."""
    if ctx.roles is None or not review.get("replace"):
        return None
    record = record_from_review(case, judgment, review, store_accepted=ctx.store_accepted)
    if record is None:
        return None
    reviewer = ctx.author or "anonymous"
    return duties.replace_refusal(reviewer, ctx.roles, record["id"], memory.records.get(record["id"]))


def distill_review(state: ReviewState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write the expert's correction into memory through the same path as batch alignment.

    The record keeps the case's id unless another author's record has it (then it gets
    its own ``review-…`` id; see :func:`~memalign_graph.review.review_record_id`).
    Re-running it is harmless: aligning an identical record again is a no-op.
    """
    ctx, memory = _memory(runtime)
    review = state["review"] or {}
    record = record_from_review(_case(state, memory), state["judgment"], review, store_accepted=ctx.store_accepted)
    reviewer = ctx.author or review.get("reviewer") or "expert"
    if record is not None:
        record = review_record_id(record, memory.records, reviewer, replace=bool(review.get("replace")))
    update: dict[str, Any] = {"report": None}
    if review.get("action") == "correct" and review.get("value") is not None:
        update["judgment"] = corrected_judgment(state["judgment"], review)
    if record is None:
        return update
    judgment = state["judgment"]
    judged = None
    if not judgment.get("precedent"):  # the model's own judgment, made before the expert answered
        own = ModelJudgment(
            value=judgment.get("model_value", judgment["value"]),
            scores=judgment.get("scores"),
            model=judgment["model"],
            via="review",
        )
        judged = {record["id"]: own}
    report = alignment.align(
        memory,
        [record],
        model=resolve_chat_model(ctx.model, base_url=ctx.base_url),
        judged=judged,
        score_feedback=ctx.score_feedback,
        batch_size=ctx.batch_size,
        token_budget=ctx.token_budget,
        max_retries=ctx.max_retries,
        backoff_s=ctx.retry_backoff_s,
        author=reviewer,
        reason=f"review of {record['id']}: {review['action']}",
        principles_policy=ctx.principles_policy,
        via="review",
    )
    return {**update, "report": report.to_dict()}


def route_principles(state: ReviewState) -> str:
    """Ask the expert about principles distillation held (``approve_principles``), or finish."""
    report = state.get("report") or {}
    return "approve_principles" if report.get("proposed_principles") else END


def approve_principles(state: ReviewState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Pause for the expert (``interrupt``) to approve or reject the principles this review's distillation proposed.

    The answer (``{"approve": [ids], "reject": [ids], "reviewer"?}``, validated by
    :func:`~memalign_graph.review.principles_answer_model`) is applied with
    :func:`~memalign_graph.lifecycle.decide_principles` as one new version;
    proposals left unanswered stay pending (``memalign principles STORE --pending``).
    Nothing before the ``interrupt()`` has side effects, and proposals already
    decided (by another expert, or before a re-run) are left out. On a served judge
    the decisions must be the user's to make (:func:`~memalign_graph.duties.check_decisions`:
    the approver role, and never approving a principle from one's own feedback); if one
    is not, none is applied, ``principles_review`` says why (``refused``) and the proposals
    stay pending for another approver (the served ``principles`` graph).
    """
    ctx, memory = _memory(runtime)
    wanted = set((state.get("report") or {}).get("proposed_principles") or {})
    proposals = [p for p in memory.pending_principles if p["id"] in wanted]
    if not proposals:
        return {"principles_review": None}
    answer = interrupt(
        principles_payload(proposals), response_schema=principles_answer_model([p["id"] for p in proposals])
    )
    decision = answer.model_dump(exclude_none=True)
    still = {p["id"] for p in memory.pending_principles}
    approve = [i for i in decision.get("approve", []) if i in still]
    reject = [i for i in decision.get("reject", []) if i in still]
    if approve or reject:
        author = ctx.author or decision.get("reviewer") or (state.get("review") or {}).get("reviewer") or "expert"
        try:
            change = lifecycle.decide_principles(memory, approve, reject, author=author, roles=ctx.roles)
        except DutiesError as exc:  # separation of duties: the proposals stay pending for an approver
            return {"principles_review": {**decision, "refused": str(exc)}}
        decision["version"] = change.version
    return {"principles_review": decision}


def build_review_graph(*, served: bool = False) -> StateGraph:
    """The judge graph with interrupt-driven expert review, uncompiled.

    ``retrieve_principles → retrieve_episodes → judge → [collect_feedback → distill
    → [approve_principles]] → END``; the review policy (``Context.review``) decides
    whether a judgment goes to the expert, and ``approve_principles`` runs when
    distillation held principles for an expert (principles policy ``review``, or the
    gate in :mod:`memalign_graph.governance`). Compile with a checkpointer to pause
    and resume. Output: ``{"judgment", "review", "report", "principles_review"}``;
    when the expert corrected the value, ``judgment`` carries the expert's value
    (see :func:`corrected_judgment`). With ``served``: context :class:`ServedContext`,
    the reviewer and approver are the authenticated user, and the output also carries
    the working memory (:class:`ServedReviewOutput`).
    """
    builder = _judging_graph(ReviewState, ReviewOutput, ServedReviewOutput, ServedContext, served)
    builder.add_node("collect_feedback", node(collect_feedback, served=served))
    builder.add_node("distill", node(distill_review, served=served))
    builder.add_conditional_edges("judge", _serve(route_review) if served else route_review, ["collect_feedback", END])
    builder.add_node("approve_principles", node(approve_principles, served=served))
    builder.add_edge("collect_feedback", "distill")
    builder.add_conditional_edges("distill", route_principles, ["approve_principles", END])
    builder.add_edge("approve_principles", END)
    return builder


# The principles graph: decisions on principles held for approval, from the memory's pending list.


def decide_held(state: PrinciplesState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Apply the input's decisions (if any) as one new version, then list the proposals still pending.

    The decider is ``Context.author`` (served: the authenticated user). On a served judge each
    decision must be theirs to make, checked under the writer lock
    (:func:`~memalign_graph.duties.check_decisions`: the approver role, and never approving a
    principle distilled from one's own feedback). This is how an approver reaches a principle
    held from another expert's review: from the memory's pending list, never through that
    expert's review thread, which stays theirs alone.

    Raises:
        DutiesError: (a ``PermissionError``) for a decision that is not the user's to make; nothing is written.
        KeyError: naming ids that are not pending proposals; nothing is written.
        ValueError: for ids that are not lists of strings, or one both approved and rejected; nothing is written.
    """
    ctx, memory = _memory(runtime)
    approve, reject = state.get("approve") or [], state.get("reject") or []
    if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in (approve, reject)):
        raise ValueError("approve and reject must be lists of proposal ids")
    decision = None
    if approve or reject:
        author = ctx.author or "expert"
        change = lifecycle.decide_principles(
            memory, approve, reject, author=author, reason=state.get("reason"), roles=ctx.roles
        )
        decision = {"approve": approve, "reject": reject, "version": change.version, "decided_by": author}
    pending = duties.pending_view(memory.pending_principles, memory.records, ctx.author or "expert", ctx.roles)
    return {"decision": decision, "pending": pending}


def build_principles_graph(*, served: bool = False) -> StateGraph:
    """The principles graph, uncompiled: ``START → decide → END``.

    Input: :class:`PrinciplesInput` (``{"approve": [ids], "reject": [ids], "reason"?}``, or ``{}``
    to list only); output: :class:`PrinciplesOutput` (``{"decision", "pending"}``). With
    ``served``: context :class:`ServedAlignContext` (the judge's name only), and the decider is the
    authenticated user, whose roles the decisions must allow (see :func:`decide_held`).
    """
    builder = StateGraph(
        PrinciplesState,
        context_schema=ServedAlignContext if served else Context,
        input_schema=PrinciplesInput,
        output_schema=PrinciplesOutput,
    )
    builder.add_node("decide", node(decide_held, served=served))
    builder.add_edge(START, "decide")
    builder.add_edge("decide", END)
    return builder


_review_subgraph = None


def _review_graph() -> Any:
    global _review_subgraph
    if _review_subgraph is None:
        _review_subgraph = build_review_graph().compile()
    return _review_subgraph


def fan_out(state: BatchReviewState) -> list[Send]:
    """One ``review_case`` branch per case."""
    return [Send("review_case", {"case": case}) for case in state["cases"]]


def review_case(state: dict[str, Any], runtime: Runtime[Context]) -> dict[str, Any]:
    """Judge and (if the policy says so) review one case; runs the review graph as a subgraph."""
    case = state["case"]
    out = _review_graph().invoke(case, context=runtime.context)
    return {"results": [{"id": case.get("id"), **out}]}


def build_batch_review_graph() -> StateGraph:
    """Judge and review many cases in one run, uncompiled.

    Each case gets its own branch (``Send``), so several reviews can be pending
    at once; resume them one at a time with ``Command(resume={interrupt_id: answer})``.
    Input ``{"cases": [...]}``; output ``{"results": [{"id", "judgment", "review", "report"}]}``.
    """
    builder = StateGraph(BatchReviewState, context_schema=Context, input_schema=BatchReviewInput)
    builder.add_node("review_case", review_case)
    builder.add_conditional_edges(START, fan_out, ["review_case"])
    builder.add_edge("review_case", END)
    return builder
