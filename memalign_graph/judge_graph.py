"""The judge graph: ``retrieve_principles`` → ``retrieve_episodes`` → ``judge`` (working memory, then the judge).

The same three nodes start the review graph (:func:`judging_graph`, :mod:`memalign_graph.review_graph`).
Nodes are thin: each reads state, calls one domain function and returns a partial update; under
``ainvoke`` the model call is awaited and file or embedding work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from memalign_graph.backends.names import is_postgres_url, is_store_location
from memalign_graph.context import (
    Context,
    ServedJudgeContext,
    memory_location,
)
from memalign_graph.errors import JudgeBatchError
from memalign_graph.judge import JudgeSettings, Judgment, arun_judge, find_precedent, precedent_judgment, run_judge
from memalign_graph.nodes import chat_model, node, read_case, run_context, run_memory
from memalign_graph.spec import CASE_KEYS
from memalign_graph.state import (
    JudgeInput,
    JudgeOutput,
    JudgeState,
    ServedJudgeOutput,
)
from memalign_graph.working_memory import (
    acalibrate_judgment,
    calibrate_judgment,
    calibration_mode,
    finish_judgment,
    judge_settings,
)


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
    ctx, memory = run_memory(runtime)
    case = read_case(state, memory)
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
    ctx, memory = run_memory(runtime, refresh=False)
    if not ctx.use_episodes:
        return {"episodes": []}
    handoff = state.get("query_handoff")
    return {"episodes": memory.retrieve_episodes(_validated_case(state), ctx.k, handoff=handoff)}


def _judge_inputs(state: JudgeState, runtime: Runtime[Context]) -> tuple[Context, Any, dict[str, Any], Any]:
    ctx, memory = run_memory(runtime, refresh=False)
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
        model = chat_model(ctx)
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
            else await asyncio.to_thread(chat_model, ctx)
        )
        judgment = await arun_judge(model, memory.spec, case, principles, episodes, _judge_settings(ctx))
        judgment = await acalibrate_judgment(memory, case, judgment, mode, model)
    return _finish_judgment(state, case, judgment)


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


def judging_graph(
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
    or with ``served`` the client's :class:`ServedJudgeContext` (see :mod:`memalign_graph.graph`); served,
    the output also carries the working memory (:class:`ServedJudgeOutput`), since LangGraph
    Server streams a node's update only for output keys.
    """
    builder = judging_graph(JudgeState, JudgeOutput, ServedJudgeOutput, ServedJudgeContext, served)
    builder.add_edge("judge", END)
    return builder


def judge_many(
    graph: Any,
    cases: list[dict[str, Any]],
    context: Any,
    concurrency: int = 2,
    on_done: Callable[[], None] | None = None,
) -> list[Judgment]:
    """Judge ``cases`` with a compiled judge graph, ``concurrency`` at a time.

    Only ``id``, ``inputs``, ``outputs`` and ``expectations`` reach the judge (an
    expert's value in the record is never shown to it). A case that fails does not
    stop the others; the failures are raised together once every case has run.

    Returns:
        The judgments, in the order of ``cases``.

    Raises:
        JudgeBatchError: if any case could not be judged (e.g. a
            :class:`~memalign_graph.errors.JudgeError` after its retries, or a
            :class:`~memalign_graph.errors.JudgmentParseError`); it names every failed
            case id (``"#N"`` for the N-th case when it has no id), carries each error,
            and the judgments of the cases that succeeded. The first error is its ``__cause__``.
    """
    inputs = [{k: c[k] for k in CASE_KEYS if k in c} for c in cases]
    results: list[Any] = [None] * len(inputs)
    errors: dict[int, BaseException] = {}
    for index, output in graph.batch_as_completed(
        inputs, {"max_concurrency": concurrency}, return_exceptions=True, context=context
    ):
        if isinstance(output, BaseException):
            errors[index] = output
            continue
        results[index] = output["judgment"]
        if on_done:
            on_done()
    if errors:
        named: dict[str, BaseException] = {}
        for index in sorted(errors):
            rid = str(inputs[index].get("id", f"#{index}"))
            named[rid if rid not in named else f"{rid}#{index}"] = errors[index]
        failed = {rid: str(exc) for rid, exc in named.items()}
        raise JudgeBatchError(failed, named, results) from errors[min(errors)]
    return results
