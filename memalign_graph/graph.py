"""The MemAlign graphs: judging and alignment.

Judging: ``retrieve_principles`` → ``retrieve_episodes`` → ``judge``. Alignment: ``distill``.

Both are plain ``StateGraph`` s with JSON-like state and a :class:`Context`
``context_schema``; compile them with any checkpointer, or use them as a node
in a larger graph. Nodes are thin: each reads state, calls one domain
function and returns a partial update. Under ``ainvoke`` LangGraph runs them
in a worker thread, so no blocking I/O reaches the event loop.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from memalign_graph.context import Context, resolve_context
from memalign_graph.judge import find_precedent, precedent_judgment, run_judge
from memalign_graph.memory import open_memory
from memalign_graph.models import resolve_chat_model
from memalign_graph.spec import parse_record
from memalign_graph.state import AlignInput, AlignOutput, AlignState, JudgeInput, JudgeOutput, JudgeState


def _memory(runtime: Runtime[Context]) -> tuple[Context, Any]:
    ctx = resolve_context(runtime.context)
    return ctx, open_memory(ctx.memory_dir, ctx.embeddings)


def _case(state: JudgeState, memory: Any) -> dict[str, Any]:
    raw = {k: state[k] for k in ("id", "inputs", "outputs", "expectations") if k in state}  # type: ignore[literal-required]
    return dict(parse_record(raw, memory.spec, where="judge input"))


def retrieve_principles(state: JudgeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Semantic memory: every principle (none if ``use_principles`` is off). Validates the case first."""
    ctx, memory = _memory(runtime)
    _case(state, memory)
    return {"principles": memory.principles if ctx.use_principles else []}


def retrieve_episodes(state: JudgeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Episodic memory: the ``k`` episodes most similar to the case (none if ``use_episodes`` is off)."""
    ctx, memory = _memory(runtime)
    if not ctx.use_episodes:
        return {"episodes": []}
    return {"episodes": memory.retrieve_episodes(_case(state, memory), ctx.k)}


def judge(state: JudgeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The judgment from working memory (or the expert precedent, when it applies)."""
    ctx, memory = _memory(runtime)
    case = _case(state, memory)
    principles, episodes = state.get("principles", []), state.get("episodes", [])
    precedent = find_precedent(case, episodes, ctx.precedent, ctx.precedent_threshold)  # type: ignore[arg-type]
    if precedent is not None:
        judgment = precedent_judgment(precedent, principles, episodes)
    else:
        judgment = run_judge(
            resolve_chat_model(ctx.model, base_url=ctx.base_url),
            memory.spec,
            case,
            principles,
            episodes,
            {
                "max_retries": ctx.max_retries,
                "structured_output": ctx.structured_output,
                "rationale_max_chars": ctx.rationale_max_chars,
            },
        )
    if "id" in case:
        judgment["id"] = case["id"]
    return {"judgment": judgment}


def distill(state: AlignState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Alignment: feedback becomes episodes and, through distillation, principles; one new version."""
    ctx, memory = _memory(runtime)
    report = memory.align(
        state["feedback"],
        model=resolve_chat_model(ctx.model, base_url=ctx.base_url),
        batch_size=ctx.batch_size,
        token_budget=ctx.token_budget,
        concurrency=ctx.concurrency,
        author=state.get("author", "expert"),
        reason=state.get("reason"),
    )
    return {"report": report.to_dict()}


def build_judge_graph() -> StateGraph:
    """The judge graph, uncompiled: ``START → retrieve_principles → retrieve_episodes → judge → END``.

    Input: :class:`JudgeInput`; output: ``{"judgment": Judgment}``.
    """
    builder = StateGraph(JudgeState, context_schema=Context, input_schema=JudgeInput, output_schema=JudgeOutput)
    builder.add_node("retrieve_principles", retrieve_principles)
    builder.add_node("retrieve_episodes", retrieve_episodes)
    builder.add_node("judge", judge)
    builder.add_edge(START, "retrieve_principles")
    builder.add_edge("retrieve_principles", "retrieve_episodes")
    builder.add_edge("retrieve_episodes", "judge")
    builder.add_edge("judge", END)
    return builder


def build_align_graph() -> StateGraph:
    """The alignment graph, uncompiled: ``START → distill → END``.

    Input: :class:`AlignInput` (``{"feedback": [records]}``); output: ``{"report": {...}}``.
    """
    builder = StateGraph(AlignState, context_schema=Context, input_schema=AlignInput, output_schema=AlignOutput)
    builder.add_node("distill", distill)
    builder.add_edge(START, "distill")
    builder.add_edge("distill", END)
    return builder
