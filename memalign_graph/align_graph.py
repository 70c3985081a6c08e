"""The alignment graph: one node per step of :mod:`memalign_graph.alignment`.

``episodes`` → ``distill`` → ``consolidate`` → ``govern`` → ``commit``, over plain JSON-like state,
so the state after each node shows what that step decided (a refused principle in
``distillation``, a merged or held one in ``governance``); the commit is one write, and the graph
starts again at ``episodes`` if another writer committed meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from memalign_graph import alignment, duties
from memalign_graph.alignment import Phases
from memalign_graph.context import (
    Context,
    ServedAlignContext,
)
from memalign_graph.episodic import episode_from_record
from memalign_graph.governance import check_policy
from memalign_graph.models import run_sync
from memalign_graph.nodes import chat_model, node, run_memory
from memalign_graph.state import (
    AlignInput,
    AlignOutput,
    AlignState,
    ServedAlignInput,
    ServedAlignOutput,
)

MAX_ALIGN_PASSES = 3
"""Passes the alignment graph makes when other writers commit while it prepares its version; then it fails."""


def _align_llm(ctx: Context) -> dict[str, Any]:
    """The LLM and its call settings, as the distill and consolidate steps take them."""
    return {
        "chat": chat_model(ctx),
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
    ctx, memory = run_memory(runtime)
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
    ctx, memory = run_memory(runtime, refresh=False)
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
    ctx, memory = run_memory(runtime, refresh=False)
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
    ctx, memory = run_memory(runtime, refresh=False)
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
    ctx, memory = run_memory(runtime, refresh=False)
    plan, phases = state["plan"], Phases()
    judged: dict[str, Any] = {}
    chat = chat_model(ctx)
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
